"""files.py: atomic writes keep their promises under faults — the umask's mode, one
line naming the path for an OSError, write-through for devices and FIFOs, symlinks
followed, stale temporaries of killed writers swept (and nothing else), and the
output-must-not-be-an-input check."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from alexnet_deploy import files
from alexnet_deploy.errors import DeployError
from alexnet_deploy.files import (
    STALE_AFTER_S,
    TEMP_TAG,
    atomic_output,
    check_distinct_paths,
    check_output_paths,
    sweep_stale_temporaries,
    write_text_atomic,
)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_artifacts_get_the_umask_mode_not_mkstemps_0600(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode


def test_an_oserror_while_writing_is_one_line_naming_the_path_and_leaves_nothing(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("good")
    with (
        pytest.raises(DeployError, match=rf"cannot write {target}: No space left on device"),
        atomic_output(target) as tmp,
    ):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_full_device_is_written_through_and_reports_the_full_disk():
    with pytest.raises(DeployError, match="cannot write /dev/full: No space left on device"):
        write_text_atomic(Path("/dev/full"), "x" * 100_000)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_fifo_is_written_through_not_replaced(tmp_path):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    write_text_atomic(fifo, '{"rows": 3}\n')
    reader.join(timeout=10)
    assert received == ['{"rows": 3}\n'] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_symlink_is_followed_its_target_replaced_and_the_link_kept(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "r.json"
    target.write_text("old")
    link = tmp_path / "r.json"
    link.symlink_to(target)
    write_text_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_text() == "new"
    assert not list((tmp_path / "real").glob(f".*{TEMP_TAG}*")) and not list(tmp_path.glob(f".*{TEMP_TAG}*"))


def test_an_unwritable_special_folder_is_one_line(tmp_path):
    with pytest.raises(DeployError, match=r"/proc/x.pt"):
        write_text_atomic(Path("/proc/x.pt"), "x")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _temp(folder: Path, name: str, age_s: float) -> Path:
    path = folder / name
    path.write_text("partial")
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


def test_sweep_removes_only_old_temporaries_of_dead_writers_of_ours(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = _temp(tmp_path, f".a.onnx.{TEMP_TAG}-{dead}-x1y2.tmp", STALE_AFTER_S + 5)
    kept = [
        _temp(tmp_path, f".a.onnx.{TEMP_TAG}-{dead}-fresh.tmp", 1),  # too young: maybe another pid namespace
        _temp(tmp_path, f".a.onnx.{TEMP_TAG}-{alive}-live.tmp", STALE_AFTER_S + 5),  # its writer runs
        _temp(tmp_path, ".a.onnx.k3j4.tmp", STALE_AFTER_S + 5),  # not our tag (another program's)
        _temp(tmp_path, f"a.onnx.{TEMP_TAG}-{dead}-x.tmp", STALE_AFTER_S + 5),  # not hidden: not our pattern
    ]
    assert sweep_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and all(p.exists() for p in kept)


def test_a_writer_killed_mid_save_leaves_a_temporary_the_next_write_sweeps(tmp_path):
    """A real SIGKILL inside atomic_output, then an ordinary write into that folder."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from alexnet_deploy.files import atomic_output\n"
        "with atomic_output(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = os.environ | {"PYTHONPATH": str(Path(files.__file__).parents[1])}
    writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "big.pt")], stdout=subprocess.PIPE, env=env)
    assert writer.stdout.readline() == b"writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    leftovers = list(tmp_path.glob(f".big.pt.{TEMP_TAG}-{writer.pid}-*.tmp"))
    assert len(leftovers) == 1 and not (tmp_path / "big.pt").exists()
    past = time.time() - STALE_AFTER_S - 1
    os.utime(leftovers[0], (past, past))
    write_text_atomic(tmp_path / "other.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


def test_outputs_may_not_be_inputs_or_each_other_but_devices_are_exempt(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_text("x")
    (tmp_path / "link.json").symlink_to(model)
    with pytest.raises(DeployError, match=r"--json .*link.json is the same file as --onnx"):
        check_distinct_paths({"--onnx": model}, {"--json": tmp_path / "link.json"})
    with pytest.raises(DeployError, match="--json and --plot are the same file"):
        check_distinct_paths({}, {"--json": tmp_path / "r", "--plot": tmp_path / "." / "r"})
    check_distinct_paths({"--onnx": model}, {"--json": Path("/dev/null"), "--plot": Path("/dev/null")})
    check_distinct_paths({"--onnx": model}, {"--json": tmp_path / "r.json", "--plot": None})


def test_no_output_lands_inside_a_folder_the_command_reads(tmp_path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").symlink_to(data)
    for output in (data / "a" / "x.png", data / "new.json", tmp_path / "elsewhere" / "a" / "x.png"):
        with pytest.raises(DeployError, match=r"--json .* is inside --data .*data, which the command reads"):
            check_output_paths({}, {"--json": output}, {"--data": data})
    check_output_paths({}, {"--json": tmp_path / "beside.json"}, {"--data": data})
    check_output_paths({}, {"--json": Path("/dev/null")}, {"--data": Path("/dev")})  # written through, not replaced


def test_an_output_named_dash_is_refused_not_written_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DeployError, match=r"--json -: give a file path"):
        check_output_paths({}, {"--json": Path("-")})
    assert not (tmp_path / "-").exists()
