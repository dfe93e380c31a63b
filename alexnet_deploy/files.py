"""File helpers shared by every step: atomic writes, content hashes, and the checks
that keep a command from writing over its own inputs.

Every artifact is written to a temporary file beside its destination and renamed into
place only once complete, so a crash leaves the old file or the new one, never half
of one. The temporary name carries our tag and the writer's pid
(``.alexnet.onnx.adtmp-<pid>-<random>.tmp``), so a later write into the same folder
can tell a leftover of a killed run (its pid is gone) from a write in progress and
remove only the former (:func:`sweep_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import DeployError

TEMP_TAG = "adtmp"
TEMP_PATTERN = re.compile(rf"^\..+\.{TEMP_TAG}-(?P<pid>[1-9][0-9]*)-[^/]+\.tmp$")
# A leftover must also be this old: a writer in another pid namespace (a container
# sharing the folder) looks dead from here, but its write is done within seconds.
STALE_AFTER_S = 60.0


def _write_error(path: Path, error: OSError) -> DeployError:
    return DeployError(f"cannot write {path}: {error.strerror or error}")


def is_special_file(path: Path) -> bool:
    """An existing target that is not a regular file or a folder (device, FIFO,
    socket): it is written through, never replaced by a rename."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def destination(path: Path) -> Path:
    """Where a write to ``path`` really lands: a symlink is followed to its target,
    so the target is replaced and the link kept."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_writable_destination(path: Path) -> None:
    """Fail early, before any long work, if ``path`` cannot be written."""
    path = destination(Path(path))
    if path.is_dir():
        raise DeployError(f"output path {path} is a directory, expected a file path")
    if is_special_file(path):
        if not os.access(path, os.W_OK):
            raise DeployError(f"output {path} is not writable")
        return
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DeployError(f"output directory {parent} does not exist (for {path})")
    if not os.access(parent, os.W_OK):
        raise DeployError(f"output directory {parent} is not writable (for {path})")
    # os.access says yes to root everywhere (/proc, a read-only bind mount): try it
    try:
        probe = tempfile.NamedTemporaryFile(  # noqa: SIM115 -- opened only to prove it can be, closed below
            prefix=f".{path.name}.{TEMP_TAG}-{os.getpid()}-", suffix=".tmp", dir=parent
        )
    except OSError as error:
        raise _write_error(path, error) from None
    probe.close()


def _same_file(a: Path, b: Path) -> bool:
    """Both name one file: equal after resolving links, or one inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_distinct_paths(inputs: Mapping[str, Path | None], outputs: Mapping[str, Path | None]) -> None:
    """No output may be one of the inputs, and no two outputs may be one file.

    Keys are how the user named each path (``--output``, ``--json``...), so the error
    says which two options collide. Special files (``/dev/null``) are exempt: writing
    several outputs through to them replaces nothing."""
    named_outputs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    for name, path in named_outputs:
        if is_special_file(destination(path)):
            continue
        for input_name, input_path in inputs.items():
            if input_path is not None and _same_file(path, Path(input_path)):
                raise DeployError(
                    f"{name} {path} is the same file as {input_name} {input_path}: writing it would destroy the input; "
                    "choose another output path"
                )
    for i, (name, path) in enumerate(named_outputs):
        for other_name, other in named_outputs[i + 1 :]:
            if not is_special_file(destination(path)) and _same_file(path, other):
                raise DeployError(f"{name} and {other_name} are the same file ({path}): give each output its own path")


def _inside(path: Path, folder: Path) -> bool:
    """``path`` (which may not exist yet) would land inside ``folder``, links resolved."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))
    except OSError:
        return False


STDOUT_NAME = "-"


def check_output_paths(
    inputs: Mapping[str, Path | None],
    outputs: Mapping[str, Path | None],
    folders: Mapping[str, Path | None] | None = None,
) -> None:
    """The one rule every command's output options go through, before any work: no
    output may be one of the ``inputs`` (a file the command reads, an artifact it
    opens), a file inside one of the input ``folders`` (images it reads, a folder it
    walks), another output, or ``-``; and each must be writable. Keys name each path
    as the user gave it (``--json``, ``--data``...), so the error names both options.

    ``-`` is refused rather than written as a file named "-" in the working folder
    (every report is printed as well)."""
    named = {name: Path(p) for name, p in outputs.items() if p is not None}
    for name, path in named.items():
        if str(path) == STDOUT_NAME:
            raise DeployError(f"{name} -: give a file path ('-' is not taken to mean stdout; /dev/stdout is)")
    check_distinct_paths(inputs, named)
    for name, path in named.items():
        if is_special_file(destination(path)):
            continue
        for folder_name, folder in (folders or {}).items():
            if folder is not None and Path(folder).is_dir() and _inside(path, Path(folder)):
                raise DeployError(
                    f"{name} {path} is inside {folder_name} {folder}, which the command reads: writing it would "
                    "change that input; choose an output path outside it"
                )
    for path in named.values():
        check_writable_destination(path)


def check_png_path(path: Path, option: str) -> None:
    """Pictures are written as PNG only; a path naming another format would get PNG
    bytes under a misleading suffix, so it is refused instead. A folder is refused as
    a folder, whatever its name ends in."""
    target = destination(Path(path))
    if target.is_dir():
        raise DeployError(f"output path {target} is a directory, expected a file path")
    if Path(path).suffix.lower() != ".png" and not is_special_file(target):
        raise DeployError(f"{option} {path}: pictures are written as PNG; give a path ending in .png")


def require_file(path: Path, what: str, hint: str) -> None:
    """``path`` is an existing regular file (a symlink to one counts) to read as
    ``what``; otherwise the message says what it is instead of "not found" for all."""
    path = Path(path)
    if path.is_file():
        return
    if path.is_dir():
        raise DeployError(f"{what} {path} is a directory, not a file ({hint})")
    if path.exists():
        raise DeployError(f"{what} {path} is not a regular file (a device, FIFO or socket)")
    raise DeployError(f"{what} {path} not found ({hint})")


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def sweep_stale_temporaries(directory: Path, now: float | None = None) -> list[Path]:
    """Remove temporary files our atomic writes left in ``directory`` when their
    writer was killed (SIGKILL, power loss): files of our naming pattern whose pid is
    no longer running and that are older than :data:`STALE_AFTER_S`. Anything else
    (other programs' files, writes in progress) is left alone. Returns what it removed."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = TEMP_PATTERN.match(entry.name)
        if match is None or int(match["pid"]) == os.getpid():
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < STALE_AFTER_S or _pid_alive(int(match["pid"])):
                continue
            os.unlink(entry.path)
        except OSError:  # gone already, or not ours to remove
            continue
        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    A crash or an exception leaves neither a half-written file nor the temporary one.
    The file gets the mode a plain ``open`` would give it (0666 less the umask), not
    ``mkstemp``'s 0600. A symlink is followed (its target is replaced). A device or
    FIFO (``/dev/null``, ``/dev/stdout``) cannot be replaced by a rename, so the
    finished content is copied into it instead. ``OSError`` (full disk, read-only or
    special folder) becomes one :class:`DeployError` naming ``path``.
    """
    path = Path(path)
    target = destination(path)
    check_writable_destination(target)
    special = is_special_file(target)
    folder = Path(tempfile.gettempdir()) if special else target.parent
    sweep_stale_temporaries(folder)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{TEMP_TAG}-{os.getpid()}-", suffix=".tmp", dir=folder)
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
    except OSError as error:
        raise _write_error(path, error) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        if special:
            with open(tmp, "rb") as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
        else:
            os.replace(tmp, target)
    except OSError as error:
        raise _write_error(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
