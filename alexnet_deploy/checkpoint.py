"""The checkpoint our training writes and every later step reads.

One ``torch.save`` file holding plain tensors and plain Python values (so it loads
with ``weights_only=True``): the state dict plus everything later steps must not
guess — architecture config, class names, preprocessing, the data split that keeps
calibration/val images held out, the LRN convention and the validation accuracy.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

import torch

from .data.preprocessing import Preprocessing
from .data.split import Split
from .errors import DeployError
from .files import atomic_output, require_file, sha256_file
from .lrn import CONVENTION
from .model import AlexNet, AlexNetConfig, expected_shapes

FORMAT = "alexnet-deploy/checkpoint/1"


@dataclass
class Checkpoint:
    config: AlexNetConfig
    state_dict: dict[str, torch.Tensor]
    classes: list[str]
    preprocessing: Preprocessing
    data_source: str
    split: Split = field(default_factory=Split)
    metrics: dict = field(default_factory=dict)  # last epoch's val top-1/top-5 etc.
    lrn_convention: str = CONVENTION
    # Dataset ids of the classes, where they have any (ImageNet's WordNet synsets for an
    # imported model): a labelled folder may name its class folders by them. Empty for
    # models trained here, whose class names are their folder names.
    class_ids: list[str] = field(default_factory=list)
    # Where an imported model came from (file, sha256, producer, opset, what was dropped);
    # empty for models trained here.
    origin: dict = field(default_factory=dict)

    def check_weights(self) -> None:
        """Names and shapes against the architecture (on the meta device, so before any
        allocation), then finiteness: a NaN model must never reach export."""
        expected = expected_shapes(self.config)
        if not isinstance(self.state_dict, dict) or not all(
            isinstance(v, torch.Tensor) for v in self.state_dict.values()
        ):
            raise DeployError("checkpoint weights are not a dictionary of tensors")
        missing, unexpected = (
            sorted(expected.keys() - self.state_dict.keys()),
            sorted(self.state_dict.keys() - expected.keys()),
        )
        if missing or unexpected:
            raise DeployError(
                f"checkpoint does not match the AlexNet architecture {self.config}: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        for name, shape in expected.items():
            if tuple(self.state_dict[name].shape) != shape:
                raise DeployError(
                    f"checkpoint does not match the AlexNet architecture {self.config}: "
                    f"{name} has shape {tuple(self.state_dict[name].shape)}, expected {shape}"
                )
        for name, tensor in self.state_dict.items():
            if not bool(torch.isfinite(tensor).all()):
                raise DeployError(f"checkpoint weights {name} hold NaN or infinite values (training diverged?)")

    def build_model(self) -> AlexNet:
        """An AlexNet in eval mode carrying these weights; a mismatch is a DeployError."""
        self.check_weights()
        model = AlexNet(self.config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0:2]
            raise DeployError(
                f"checkpoint does not match the AlexNet architecture {self.config}: {' '.join(first)}"
            ) from None
        return model.eval()

    def to_payload(self) -> dict:
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "state_dict": self.state_dict,
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "data_source": self.data_source,
            "split": self.split.to_dict(),
            "metrics": self.metrics,
            "lrn_convention": self.lrn_convention,
            "class_ids": list(self.class_ids),
            "origin": self.origin,
        }


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write ``checkpoint`` to ``path``, only if every loader will read it back: a
    checkpoint whose metadata (its class names, mostly) pickles to more than
    :data:`MAX_PICKLE_BYTES` is refused here, before and after it is written, rather
    than written and then refused by every later step."""
    check_names_fit([*checkpoint.classes, *checkpoint.class_ids], f"cannot write {path}")
    with atomic_output(Path(path)) as tmp:
        save_payload(checkpoint.to_payload(), tmp)
        with zipfile.ZipFile(tmp) as archive:
            pickled = max(e.file_size for e in archive.infolist() if e.filename.endswith("/data.pkl"))
        if pickled > MAX_PICKLE_BYTES:
            raise _too_large(f"cannot write {path}", pickled)


def check_names_fit(names: list[str], what: str) -> None:
    """Class names (and ids) a checkpoint can hold: their bytes alone, a lower bound of
    its pickle, within :data:`MAX_PICKLE_BYTES`; checked before any long work."""
    size = sum(len(name.encode()) for name in names)
    if size > MAX_PICKLE_BYTES:
        raise _too_large(what, size)


def _too_large(what: str, size: int) -> DeployError:
    return DeployError(
        f"{what}: its class names come to {size / 2**20:.0f} MiB, more than the {MAX_PICKLE_BYTES >> 20} MiB "
        "a checkpoint may hold (every loader would refuse it); shorten them"
    )


class _RecordedWrites:
    """The file object ``save_payload`` hands ``torch.save``: it keeps the first
    OSError a write met. torch's zip writer swallows that error and fails later with a
    RuntimeError about a file position ("unexpected pos"), so a full disk or a
    file-size limit would otherwise surface as a traceback rather than as itself."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as error:
            self.error = self.error or error
            raise


def save_payload(payload: object, path: Path) -> None:
    """``torch.save`` into ``path`` (an ``atomic_output`` temporary); a failed write
    is raised as the OSError it was ("No space left on device"), which
    ``atomic_output`` turns into one line naming the destination."""
    with open(path, "wb") as handle:
        writes = _RecordedWrites(handle)
        try:
            torch.save(payload, cast("IO[bytes]", writes))  # it calls only write() and flush()
        except RuntimeError:
            if writes.error is None:
                raise
            raise writes.error from None


def load_checkpoint(path: Path) -> Checkpoint:
    path = Path(path)
    require_file(path, "checkpoint", "train one with `alexnet-deploy train`")
    return checkpoint_from_payload(load_payload(path, "an alexnet-deploy checkpoint"), path)


# What a checkpoint's (or resume state's) pickle may weigh. It holds the config, the
# class names and references to the tensors, which torch stores beside it: 100,000
# classes (info.MAX_CLASSES) of up to 64 characters come to 8 MiB. torch's weights_only
# unpickler is pure Python, about 1 µs per item (measured: 1e6 class names in 0.9 s), so
# this bound is also what a crafted file can cost before it is refused, a few seconds,
# instead of the minutes a claimed 2e8 class names would take to unpickle.
MAX_PICKLE_BYTES = 8 << 20


# What a checkpoint's (or resume state's) zip may list: one entry per tensor (a resume
# state adds the optimizer's buffers and RNG states) and a few more, under a hundred.
# Reading the central directory costs time and memory per entry, so a crafted file of
# millions is refused from its end record, before zipfile reads any of them.
MAX_ARCHIVE_ENTRIES = 4096


def _claimed_entries(path: Path) -> int | None:
    """How many entries the zip at ``path`` says it holds (its end-of-central-directory
    record, zip64's where the count overflows), or None if there is no such record."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - (1 << 16) - 22))  # the record and a comment of at most 64 KiB
        tail = handle.read()
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or len(tail) < end + 12:
        return None
    count = int.from_bytes(tail[end + 10 : end + 12], "little")
    zip64 = tail.rfind(b"PK\x06\x06", 0, end)
    if count == 0xFFFF and zip64 >= 0 and len(tail) >= zip64 + 40:
        count = int.from_bytes(tail[zip64 + 32 : zip64 + 40], "little")
    return count


def _check_archive(path: Path, what: str) -> None:
    """The cost of loading ``path`` bounded before any of it is paid: a zip archive as
    ``torch.save`` writes one (at most :data:`MAX_ARCHIVE_ENTRIES` entries, every one
    stored, so nothing unpacks to more than the file holds) whose pickle is at most
    :data:`MAX_PICKLE_BYTES`."""
    try:
        claimed = _claimed_entries(path)
    except OSError as error:
        raise DeployError(f"cannot read {path}: {error.strerror or error}") from None
    if claimed is not None and claimed > MAX_ARCHIVE_ENTRIES:
        raise DeployError(
            f"{path} is not {what}: its zip lists {claimed:,} entries, more than the {MAX_ARCHIVE_ENTRIES:,} "
            "a checkpoint needs (refused before reading them)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise DeployError(f"{path} is not {what} (not a zip archive as torch.save writes)") from None
    compressed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise DeployError(f"{path} is not {what} ({compressed[0]} is compressed; torch.save stores every entry)")
    pickles = [e for e in entries if e.filename.rsplit("/", 1)[-1] == "data.pkl"]
    if len(pickles) != 1:
        raise DeployError(f"{path} is not {what} (expected one data.pkl, found {len(pickles)})")
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        raise DeployError(
            f"{path} is not {what}: its pickled metadata is {pickles[0].file_size / 2**20:.0f} MiB, more than the "
            f"{MAX_PICKLE_BYTES >> 20} MiB 100,000 class names need (refused before unpickling)"
        )


def load_payload(path: Path, what: str) -> object:
    """``torch.load`` with ``weights_only=True`` (no code runs from the file), after
    :func:`_check_archive` bounded what it can cost; any failure to read it becomes one
    line saying ``path`` is not ``what``."""
    _check_archive(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- torch raises many types for a foreign or truncated file
        raise DeployError(f"{path} is not {what} ({error.__class__.__name__})") from None


def _typed(payload: dict, key: str, kind: type):
    """``payload[key]`` if it is a ``kind``. What is read back from a file is checked,
    not coerced: ``str()`` or ``dict()`` would turn a damaged entry into a plausible one."""
    value = payload[key]
    if not isinstance(value, kind):
        raise TypeError(f"{key} is a {type(value).__name__}, expected a {kind.__name__}")
    return value


def _class_names(value: object) -> list[str]:
    """A list of non-empty names; a string would otherwise be split into characters."""
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise TypeError(f"classes must be a list of class names, got {str(value)[:60]!r}")
    if len(set(value)) != len(value):  # a prediction could not say which class it means
        duplicate = next(name for name in value if value.count(name) > 1)
        raise ValueError(f"classes lists {duplicate[:60]!r} more than once")
    return value


def _class_ids(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise TypeError(f"class_ids must be a list of ids, got {str(value)[:60]!r}")
    return value


def checkpoint_from_payload(payload: object, path: Path) -> Checkpoint:
    """The checkpoint a saved payload describes, every field checked; ``path`` names
    the file in messages."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DeployError(f"{path} is not an alexnet-deploy checkpoint (expected format {FORMAT!r})")
    try:
        checkpoint = Checkpoint(
            config=AlexNetConfig.from_dict(_typed(payload, "config", dict)),
            state_dict=payload["state_dict"],
            classes=_class_names(payload["classes"]),
            preprocessing=Preprocessing.from_dict(_typed(payload, "preprocessing", dict)),
            data_source=_typed(payload, "data_source", str),
            split=Split(**_typed(payload, "split", dict)),
            metrics=_typed({"metrics": {}} | payload, "metrics", dict),  # optional
            lrn_convention=_typed(payload, "lrn_convention", str),
            # optional: checkpoints written before imports existed have neither
            class_ids=_class_ids(payload.get("class_ids", [])),
            origin=_typed({"origin": {}} | payload, "origin", dict),
        )
    except (KeyError, TypeError, ValueError, AttributeError, DeployError) as error:
        raise DeployError(f"{path} is a damaged alexnet-deploy checkpoint: {error}") from None
    if checkpoint.lrn_convention != CONVENTION:
        raise DeployError(f"{path} uses LRN convention {checkpoint.lrn_convention!r}, this version uses {CONVENTION!r}")
    if len(checkpoint.classes) != checkpoint.config.num_classes:
        raise DeployError(
            f"{path} lists {len(checkpoint.classes)} classes but its model has {checkpoint.config.num_classes}"
        )
    if checkpoint.class_ids and len(checkpoint.class_ids) != len(checkpoint.classes):
        raise DeployError(f"{path} lists {len(checkpoint.class_ids)} class ids for {len(checkpoint.classes)} classes")
    if checkpoint.preprocessing.crop != checkpoint.config.input_size:
        raise DeployError(
            f"{path} crops images to {checkpoint.preprocessing.crop} but its model takes {checkpoint.config.input_size}"
        )
    return checkpoint


def checkpoint_hash(path: Path) -> str:
    return sha256_file(Path(path))
