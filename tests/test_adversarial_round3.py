"""Adversarial catalogue, round 3 (issue 21): the faults the first two rounds' tables
could not stage, and the inputs they let through.

Each row is one bad input or fault: the command line, the exit code, a fragment of the
one ``error:`` line (or, for exit 0, of stdout), what must come out byte for byte
unchanged, what must not exist afterwards and, where something was skipped, the
``warning:`` line that names it. Every row also asserts that no traceback was printed
and no temporary file was left behind, and each row runs under a time limit (a hang
fails the row). How a row runs (``How``):

* ``IN_PROCESS``: Typer's CliRunner, as the other catalogues;
* ``FULL_DISK``: in process, with ``{full}`` a real tmpfs filled to the last byte after
  ``setup`` (needs root's mount(2); skipped where it is refused, the
  ``FILE_SIZE_LIMIT`` rows then stand in for it);
* ``FILE_SIZE_LIMIT``: in a child process whose RLIMIT_FSIZE is 256 KiB, a stand-in
  for a full disk that needs no privilege: every write past it fails with EFBIG
  through the same code paths as ENOSPC;
* ``NO_DAC``: in a child process without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so a
  mode-000 folder is really unreadable even though the tests run as root (a real
  PermissionError from the kernel, no monkeypatching);
* ``NO_TRITONCLIENT``: in a child process where ``import tritonclient`` fails, as on
  the default install (a stand-in: the package is blocked in ``sys.modules``).

Placeholders: ``{tmp}`` the row's folder; ``{run}``/``{state}`` a finished one-epoch
run on 64 digits (groups 2) and ``{run1}``/``{state1}`` another (groups 1), copied per
row; ``{data}`` a 2-class image folder; ``{ckpt}`` a checkpoint ``setup`` crafts;
``{onnx}`` the FP32 export of ``{run}`` in ``{tmp}/export``; ``{full}`` see above.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest
import torch
from conftest import write_image_folder
from onnx import numpy_helper
from PIL import Image
from test_adversarial_train import DATA  # the train catalogue's ImageFolder run
from typer.testing import CliRunner

from alexnet_deploy.cli import app
from alexnet_deploy.digests import seal, set_metadata, weights_digest
from alexnet_deploy.export.run import export
from alexnet_deploy.plots import curves_writer
from alexnet_deploy.train.config import TrainConfig
from alexnet_deploy.train.loop import train


class How(enum.Enum):
    IN_PROCESS = "in process"
    FULL_DISK = "in process, {full} a full tmpfs"
    FILE_SIZE_LIMIT = "child process, RLIMIT_FSIZE 256 KiB"
    NO_DAC = "child process without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH"
    NO_TRITONCLIENT = "child process where tritonclient cannot be imported"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    exit_code: int
    fragment: str  # in the one error line (exit 1) or in stdout (exit 0); placeholders allowed
    setup: Callable[[Place], None] | None = None
    protect: tuple[str, ...] = ()  # paths (placeholders allowed) that must come out unchanged
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards
    warns: str | None = None  # a ``warning:`` line on stderr must hold this
    how: How = How.IN_PROCESS
    timeout_s: int = 120


# ------------------------------------------------------------------ the world


TINY = ("--limit", "64", "--width", "0.0625", "--batch-size", "16", "--epochs", "1")


def _train(root: Path, name: str, data: str = "digits", groups: int = 2) -> None:
    config = TrainConfig(
        data=data, output=root / f"{name}.pt", epochs=1, limit=64, width=0.0625, batch_size=16, groups=groups
    )
    train(config, on_epoch=curves_writer(root / f"{name}.curves.png"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Made once: two finished runs from different runs (groups 2 and 1), the small
    image folder, and the FP32 export of the first run."""
    root = tmp_path_factory.mktemp("round3")
    write_image_folder(root / "data", classes=2, per_class=6)
    _train(root, "run")
    _train(root, "run1", groups=1)
    (root / "export").mkdir()
    export(root / "run.pt", root / "export" / "alexnet.onnx")
    return root


class Place(dict):
    """Placeholder -> path in the row's folder, copied from the world on first use."""

    COPIES: ClassVar[dict[str, tuple[str, ...]]] = {
        "run": ("run.pt", "run.metrics.jsonl", "run.curves.png"),
        "state": ("run.state.pt",),
        "run1": ("run1.pt", "run1.metrics.jsonl", "run1.curves.png"),
        "state1": ("run1.state.pt",),
    }

    def __init__(self, world: Path, root: Path) -> None:
        super().__init__()
        self.world, self.root = world, root

    def __missing__(self, key: str) -> str:
        if key in self.COPIES:
            for name in self.COPIES[key]:
                shutil.copy(self.world / name, self.root / name)
            value = self.root / self.COPIES[key][0]
        elif key == "data":
            value = self.root / "data"
            shutil.copytree(self.world / "data", value, symlinks=True)
        elif key == "onnx":
            value = self.root / "export" / "alexnet.onnx"
            value.parent.mkdir(exist_ok=True)
            shutil.copy(self.world / "export" / "alexnet.onnx", value)
        elif key in ("tmp", "full", "ckpt"):
            value = self.root / {"tmp": "", "full": "full", "ckpt": "crafted.pt"}[key]
        else:
            raise KeyError(key)
        self[key] = str(value)
        return str(value)

    def path(self, key: str) -> Path:
        return Path(self[key])

    def format(self, text: str) -> str:
        return text.format_map(self)


# ------------------------------------------------------------------ how to damage


def copy_into_full(*keys: str) -> Callable[[Place], None]:
    """Copy these placeholders' files into ``{full}`` (before it is filled)."""

    def setup(place: Place) -> None:
        for key in keys:
            source = place.path(key)
            names = Place.COPIES.get(key, (source.name,))
            for name in names:
                shutil.copy(source.parent / name, place.path("full") / name)

    return setup


def image(name: str, size: tuple[int, int] = (40, 47)) -> Callable[[Place], None]:
    """A PNG of random pixels at ``name`` (placeholders allowed), folders made as needed."""

    def setup(place: Place) -> None:
        path = Path(place.format(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(len(name)).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="PNG")

    return setup


def chmod_000(name: str) -> Callable[[Place], None]:
    """Make ``name`` (placeholders allowed) unreadable: mode 000. Only a NO_DAC row
    sees the effect when the tests run as root."""
    return lambda place: os.chmod(place.format(name), 0)


def symlink(name: str, target: str) -> Callable[[Place], None]:
    return lambda place: os.symlink(place.format(target), place.format(name))


def fifo(name: str) -> Callable[[Place], None]:
    def setup(place: Place) -> None:
        path = Path(place.format(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)

    return setup


def huge_class_list(count: int, compressed: bool, key: str = "ckpt", start: str = "run") -> Callable[[Place], None]:
    """Write ``{key}`` as ``{start}``'s payload whose class list has ``count`` entries,
    without building it: torch.save a list of 2,000 references to one name, then repeat
    its second batch of 1,000 references (``MARK BINGET*1000 APPENDS``) in the pickle.
    Deflated, 2e8 entries are a 3 MB file that torch.load would unpickle for minutes."""

    def setup(place: Place) -> None:
        name = "crafted-class-name"
        buffer = io.BytesIO()
        torch.save(torch.load(place[start], weights_only=True) | {"classes": [name] * 2000}, buffer)
        with zipfile.ZipFile(buffer) as archive:
            entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
        method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
        with zipfile.ZipFile(place[key], "w", compression=method, compresslevel=1) as out:
            for filename, data in entries:
                if not filename.endswith("/data.pkl"):
                    out.writestr(filename, data)
                    continue
                put = data.index(b"X" + len(name).to_bytes(4, "little") + name.encode()) + 5 + len(name)
                short = data[put : put + 1] == b"q"  # BINPUT (else LONG_BINPUT): the BINGET that matches
                ref = b"h" + data[put + 1 : put + 2] if short else b"j" + data[put + 1 : put + 5]
                batch = b"(" + ref * 1000 + b"e"
                head, tail = data.split(batch, 1)
                with out.open(filename, "w", force_zip64=True) as entry:
                    entry.write(head)
                    for _ in range(count // 1000 - 1):
                        entry.write(batch)
                    entry.write(tail)

    return setup


def replace_with(key: str, source: str) -> Callable[[Place], None]:
    """``{key}`` becomes a copy of ``{source}`` (another run's file)."""
    return lambda place: shutil.copy(place[source], place[key])


def retrained(key: str) -> Callable[[Place], None]:
    """``{key}`` (a checkpoint) as if from another run with the same options: its fc8
    bias moved, everything else the same."""

    def setup(place: Place) -> None:
        payload = torch.load(place[key], weights_only=True)
        payload["state_dict"]["classifier.fc8.bias"] += 1.0
        torch.save(payload, place[key])

    return setup


def crafted(mutate: Callable[[dict], None], key: str = "ckpt", start: str = "run") -> Callable[[Place], None]:
    """Write ``{key}`` as ``{start}``'s payload after ``mutate``."""

    def setup(place: Place) -> None:
        payload = torch.load(place[start], weights_only=True)
        mutate(payload)
        torch.save(payload, place[key])

    return setup


def in_state(mutate: Callable[[dict], None]) -> Callable[[Place], None]:
    """Rewrite the run's resume state after ``mutate`` (the run's checkpoint copied too)."""
    return all_of(lambda place: place["run"], crafted(mutate, "state", "state"))


def edit_metadata(reseal: bool = False, drop: str | None = None, **values: object) -> Callable[[Place], None]:
    """Set (or ``drop``) metadata entries of ``{onnx}``, weights untouched; ``reseal``
    records fresh digests, as for a file our tools wrote that way (the data it names
    replaced since, say)."""

    def setup(place: Place) -> None:
        path = place.path("onnx")
        model = onnx.load(str(path))
        set_metadata(model, {key: place.format(v) if isinstance(v, str) else v for key, v in values.items()})
        if drop is not None:
            kept = [entry for entry in model.metadata_props if entry.key != drop]
            del model.metadata_props[:]
            model.metadata_props.extend(kept)
        if reseal:
            seal(model)
        onnx.save(model, str(path))

    return setup


def flip_conv1(place: Place) -> None:
    """4 KiB of conv1's weights of ``{onnx}`` bit-flipped, its metadata untouched."""
    path = place.path("onnx")
    model = onnx.load(str(path))
    tensor = next(t for t in model.graph.initializer if len(t.dims) == 4)
    array = numpy_helper.to_array(tensor).copy()
    array.view(np.uint8).reshape(-1)[:4096] ^= 0x55
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(model, str(path))


def reweigh(place: Place) -> None:
    """Record the digest of ``{onnx}``'s present weights, as a careful tamperer would
    (the metadata digest still names the old one)."""
    path = place.path("onnx")
    model = onnx.load(str(path))
    set_metadata(model, {"weights_sha256": weights_digest(model)})
    onnx.save(model, str(path))


def invoke(place: Place, *argv: str) -> None:
    """Run a command that must succeed (a setup step: a good file to be kept)."""
    result = CliRunner().invoke(app, [place.format(a) for a in argv])
    assert result.exit_code == 0, result.output


def all_of(*setups: Callable[[Place], None]) -> Callable[[Place], None]:
    def setup(place: Place) -> None:
        for step in setups:
            step(place)

    return setup


# ------------------------------------------------------------------ the catalogue

FULL = How.FULL_DISK
FSIZE = How.FILE_SIZE_LIMIT
RESUME_FULL = ("train", "--resume", "--output", "{full}/run.pt", "--epochs", "2", "--batch-size", "16")
NO_SPACE = "No space left on device"
BUILD = ("build", "--onnx", "{onnx}", "--calibration", "{tmp}/cal", "--engines", "{tmp}/engines")
BENCH = ("bench", "--onnx", "{onnx}", "--backends", "onnxruntime", "--precisions", "fp32", "--iterations", "1",
         "--warmup", "0", "--max-images", "4", "--engines", "{tmp}/engines")  # fmt: skip
INFO = ("info", "--checkpoint", "{ckpt}")
EDITED = "its metadata (class names, preprocessing, data source...) does not match the digest"
DIGITS = [str(digit) for digit in range(10)]
OTHER_DATA = edit_metadata(reseal=True, data_source="{data}")  # a 2-class folder now where the 10 digits were
DAMAGED = "crafted.pt is a damaged alexnet-deploy checkpoint: "
RESUME = ("train", "--resume", "--output", "{run}", "--epochs", "2", "--batch-size", "16")
PREDICT = ("predict", "{tmp}/img.png", "--onnx", "{onnx}")
PREDICT_URL = ("predict", "{tmp}/img.png", "--url", "127.0.0.1:9", "--json", "{tmp}/p.json")
LOADTEST = ("loadtest", "--url", "127.0.0.1:9", "--requests", "2", "--json", "{tmp}/l.json")
NO_CLIENT = How.NO_TRITONCLIENT
NO_DAC = How.NO_DAC
CAL = (
    "build",
    "--onnx",
    "{onnx}",
    "--int8",
    "--calibration",
    "{tmp}/cal",
    "--calib-images",
    "2",
    "--engines",
    "{tmp}/engines",
)
CAL_IMAGES = all_of(*(image(f"{{tmp}}/cal/{c}/{i}.png") for c in "ab" for i in range(2)))
REPOSITORY = ("repository", "--onnx", "{onnx}", "--output", "{full}/repo", "--engines", "{tmp}/engines")

CASES = [
    # --- 1. a full disk under every writer: one line naming the file, the old files intact
    Case("full-disk-train-second-epoch", RESUME_FULL, 1, "cannot write {full}/run.state.pt: No space left on device",
         copy_into_full("run", "state"), protect=("{full}/run.pt", "{full}/run.state.pt"), how=FULL),
    Case("full-disk-train-fresh", ("train", "--output", "{full}/x.pt", *TINY), 1,
         "cannot write {full}/x.state.pt: No space left on device", absent=("{full}/x.pt", "{full}/x.state.pt"), how=FULL),
    Case("file-size-limit-train-fresh", ("train", "--output", "{tmp}/x.pt", *TINY), 1,
         "cannot write {tmp}/x.state.pt: File too large", absent=("{tmp}/x.pt", "{tmp}/x.state.pt"), how=FSIZE),
    Case("file-size-limit-train-second-epoch", ("train", "--resume", "--output", "{run}", "--epochs", "2"), 1,
         "cannot write {tmp}/run.state.pt: File too large", lambda place: place["state"],
         protect=("{run}", "{state}"), how=FSIZE),
    Case("full-disk-export", ("export", "--checkpoint", "{run}", "--output", "{full}/a.onnx"), 1,
         f"cannot write {{full}}/a.onnx: {NO_SPACE}", absent=("{full}/a.onnx",), how=FULL),
    Case("full-disk-build-fp16", (*BUILD, "--onnx", "{full}/alexnet.onnx", "--fp16"), 1,
         f"cannot write {{full}}/alexnet.fp16.onnx: {NO_SPACE}", copy_into_full("onnx"),
         protect=("{full}/alexnet.onnx",), absent=("{full}/alexnet.fp16.onnx",), how=FULL),
    Case("full-disk-calibration-cache", (*BUILD, "--int8", "--calibration", "{full}/cal"), 1,
         f"cannot write {{full}}/cal/scales.entropy.json: {NO_SPACE}",
         all_of(lambda place: place["onnx"], *(image(f"{{full}}/cal/{i}.png") for i in range(4))),
         protect=("{full}/cal", "{onnx}"), absent=("{tmp}/export/alexnet.int8.onnx",), how=FULL),
    Case("full-disk-calib-from-data", (*BUILD, "--int8", "--calib-from-data", "--calibration", "{full}/cal"), 1,
         NO_SPACE, protect=("{onnx}",), absent=("{tmp}/export/alexnet.int8.onnx",), how=FULL),
    Case("full-disk-bench-json", (*BENCH, "--json", "{full}/r.json"), 1, f"cannot write {{full}}/r.json: {NO_SPACE}",
         protect=("{onnx}",), absent=("{full}/r.json",), how=FULL),
    Case("full-disk-bench-plot", (*BENCH, "--json", "{tmp}/r.json", "--plot", "{full}/r.png"), 1,
         f"cannot write {{full}}/r.png: {NO_SPACE}", protect=("{onnx}",), absent=("{full}/r.png",), how=FULL),
    Case("full-disk-repository", REPOSITORY, 1, f"cannot write {{full}}/repo: {NO_SPACE}",
         lambda place: invoke(place, *REPOSITORY), protect=("{onnx}", "{full}/repo"), how=FULL),
    Case("file-size-limit-export", ("export", "--checkpoint", "{run}", "--output", "{tmp}/a.onnx"), 1,
         "cannot write {tmp}/a.onnx: File too large", absent=("{tmp}/a.onnx",), how=FSIZE),
    Case("file-size-limit-build-fp16", (*BUILD, "--fp16"), 1, "cannot write {tmp}/export/alexnet.fp16.onnx: File too large",
         protect=("{onnx}",), absent=("{tmp}/export/alexnet.fp16.onnx",), how=FSIZE),
    Case("file-size-limit-repository", (*REPOSITORY, "--output", "{tmp}/repo"), 1,
         "cannot write {tmp}/repo: File too large", protect=("{onnx}",), absent=("{tmp}/repo",), how=FSIZE),
    Case("full-disk-info-json", ("info", "--json", "{full}/i.json"), 1, f"cannot write {{full}}/i.json: {NO_SPACE}",
         absent=("{full}/i.json",), how=FULL),
    Case("full-disk-info-filters", ("info", "--filters", "{full}/f.png"), 1,
         f"cannot write {{full}}/f.png: {NO_SPACE}", absent=("{full}/f.png",), how=FULL),
    Case("full-disk-predict-json", (*PREDICT, "--json", "{full}/p.json"), 1,
         f"cannot write {{full}}/p.json: {NO_SPACE}", image("{tmp}/img.png"), absent=("{full}/p.json",), how=FULL),
    # --- 2. a server that is not there, with and without its client package
    Case("predict-url-without-tritonclient", PREDICT_URL, 1, "needs tritonclient[http]", image("{tmp}/img.png"),
         absent=("{tmp}/p.json",), how=NO_CLIENT),
    Case("predict-url-grpc-without-tritonclient", (*PREDICT_URL, "--protocol", "grpc"), 1, "needs tritonclient[grpc]",
         image("{tmp}/img.png"), absent=("{tmp}/p.json",), how=NO_CLIENT),
    Case("loadtest-without-tritonclient", LOADTEST, 1, "needs tritonclient[http]", absent=("{tmp}/l.json",),
         how=NO_CLIENT),
    Case("predict-url-closed-port", PREDICT_URL, 1, "cannot reach Triton at 127.0.0.1:9", image("{tmp}/img.png"),
         absent=("{tmp}/p.json",)),
    Case("predict-url-grpc-closed-port", (*PREDICT_URL, "--protocol", "grpc"), 1, "127.0.0.1:9: Failed to connect",
         image("{tmp}/img.png"), absent=("{tmp}/p.json",)),
    Case("loadtest-closed-port", LOADTEST, 1, "cannot reach Triton at 127.0.0.1:9", absent=("{tmp}/l.json",)),
    Case("loadtest-grpc-closed-port", (*LOADTEST, "--protocol", "grpc"), 1, "127.0.0.1:9: Failed to connect",
         absent=("{tmp}/l.json",)),
    # --- 3. folders the user may not read (really unreadable: see How.NO_DAC)
    Case("data-class-folder-mode-000", DATA, 1, "cannot read class folder {data}/class_1: Permission denied",
         chmod_000("{data}/class_1"), absent=("{tmp}/new.pt",), how=NO_DAC),
    Case("data-directory-mode-000", DATA, 1, "cannot read data directory {data}: Permission denied",
         chmod_000("{data}"), absent=("{tmp}/new.pt",), how=NO_DAC),
    Case("data-image-mode-000", DATA, 1, "cannot read image {data}/class_0/img0.jpg: PermissionError",
         chmod_000("{data}/class_0/img0.jpg"), absent=("{tmp}/new.pt",), how=NO_DAC),
    Case("predict-folder-mode-000", ("predict", "{tmp}/imgs", "--onnx", "{onnx}"), 1,
         "cannot read folder {tmp}/imgs: Permission denied", all_of(image("{tmp}/imgs/a.png"), chmod_000("{tmp}/imgs")),
         how=NO_DAC),
    Case("calibration-subfolder-mode-000", CAL, 1, "cannot read calibration folder {tmp}/cal/b: Permission denied",
         all_of(CAL_IMAGES, chmod_000("{tmp}/cal/b")), protect=("{onnx}",), absent=("{tmp}/export/alexnet.int8.onnx",),
         how=NO_DAC),
    # --- 5. a named input that cannot be read is an error; a folder walk skips, naming what it skipped
    Case("predict-named-fifo", ("predict", "{tmp}/pipe.png", "--onnx", "{onnx}"), 1,
         "pipe.png: a FIFO, not an image file", fifo("{tmp}/pipe.png"), timeout_s=60),
    Case("predict-named-device", ("predict", "/dev/zero", "--onnx", "{onnx}"), 1, "/dev/zero: a device, not an image file"),
    Case("predict-named-dangling-link", ("predict", "{tmp}/gone.png", "--onnx", "{onnx}"), 1,
         "gone.png: a dangling symlink", symlink("{tmp}/gone.png", "{tmp}/nowhere.png")),
    Case("predict-glob-matching-only-a-fifo", ("predict", "{tmp}/p*.png", "--onnx", "{onnx}"), 1,
         "{tmp}/p*.png: matches no regular file", fifo("{tmp}/pipe.png"), timeout_s=60),
    Case("predict-folder-with-a-fifo", ("predict", "{tmp}/imgs", "--onnx", "{onnx}"), 0, "{tmp}/imgs/a.png:",
         all_of(image("{tmp}/imgs/a.png"), fifo("{tmp}/imgs/pipe.png")), warns="{tmp}/imgs/pipe.png (a FIFO)",
         timeout_s=60),
    Case("calibration-fifo-named", CAL, 0, "calibrated 2 images", all_of(CAL_IMAGES, fifo("{tmp}/cal/a/pipe.png")),
         warns="{tmp}/cal/a/pipe.png (a FIFO)", timeout_s=60),
    # --- 6. training folders: what was skipped is said, a class that vanished is refused
    Case("data-png-link-loop-beside-images", DATA, 0, "val top-1", symlink("{data}/class_0/loop.png", "{data}/class_0/loop.png"),
         warns="{data}/class_0/loop.png (a symlink loop)"),
    Case("data-dangling-png-beside-images", DATA, 0, "val top-1", symlink("{data}/class_0/gone.png", "{tmp}/nowhere.png"),
         warns="{data}/class_0/gone.png (a dangling symlink"),
    Case("data-fifo-beside-images-is-named", DATA, 0, "val top-1", fifo("{data}/class_1/pipe.png"),
         warns="{data}/class_1/pipe.png (a FIFO)", timeout_s=60),
    Case("data-file-beside-class-folders-is-named", DATA, 0, "val top-1",
         lambda place: Path(place.format("{data}/README.txt")).write_text("two classes"),
         warns="{data}/README.txt (a file, not a class folder)"),
    Case("data-dangling-class-folder-link", DATA, 1,
         "cannot tell whether {data}/class_2 is a class folder: it is a dangling symlink",
         symlink("{data}/class_2", "{tmp}/moved-away"), absent=("{tmp}/new.pt",)),
    Case("data-class-folder-link-loop", DATA, 1, "cannot tell whether {data}/class_2 is a class folder: it is a symlink loop",
         symlink("{data}/class_2", "{data}/class_2"), absent=("{tmp}/new.pt",)),
    Case("data-only-dangling-links-in-a-class", DATA, 1, "class_1 has no images (regular .jpg, .jpeg, .png files); "
         "skipped {data}/class_1/gone.png (a dangling symlink", all_of(
             lambda place: [p.unlink() for p in Path(place["data"], "class_1").iterdir()],
             symlink("{data}/class_1/gone.png", "{tmp}/nowhere.png")), absent=("{tmp}/new.pt",)),
    # --- 4. what loading a checkpoint may cost is bounded before it is paid
    Case("ckpt-2e8-class-names-deflated", ("info", "--checkpoint", "{ckpt}"), 1,
         "crafted.pt is not an alexnet-deploy checkpoint (archive/data.pkl is compressed",
         huge_class_list(200_000_000, compressed=True), protect=("{ckpt}",), timeout_s=20),
    Case("ckpt-3e7-class-names-stored", ("info", "--checkpoint", "{ckpt}"), 1,
         "its pickled metadata is 57 MiB, more than the 8 MiB 100,000 class names need",
         huge_class_list(30_000_000, compressed=False), protect=("{ckpt}",), timeout_s=10),
    Case("export-ckpt-2e8-class-names-deflated", ("export", "--checkpoint", "{ckpt}", "--output", "{tmp}/a.onnx"), 1,
         "is compressed", huge_class_list(200_000_000, compressed=True), absent=("{tmp}/a.onnx",), timeout_s=20),
    Case("resume-state-3e7-class-names-stored", ("train", "--resume", "--output", "{run}", "--epochs", "2"), 1,
         "run.state.pt is not an alexnet-deploy resume state: its pickled metadata is 143 MiB",
         huge_class_list(30_000_000, compressed=False, key="state", start="state"), protect=("{run}", "{state}"),
         timeout_s=10),
    # --- 7. a checkpoint and a resume state of two different runs
    Case("resume-checkpoint-of-another-run", RESUME, 1,
         "it and {state} come from different runs (checkpoint vs state: groups 1 vs 2)",
         all_of(lambda place: place["state"], replace_with("run", "run1")), protect=("{run}", "{state}")),
    Case("resume-state-of-another-run", RESUME, 1,
         "it and {state} come from different runs (checkpoint vs state: groups 2 vs 1)",
         all_of(lambda place: place["run"], replace_with("state", "state1")), protect=("{run}", "{state}")),
    Case("resume-checkpoint-of-another-run-same-options", RESUME, 1,
         "come from different runs (checkpoint vs state: weights of the same epoch)",
         all_of(lambda place: place["state"], retrained("run")), protect=("{run}", "{state}")),
    # --- 8. what is read back is type-checked, not coerced
    Case("ckpt-classes-a-string", INFO, 1, DAMAGED + "classes must be a list of class names, got '0123456789'",
         crafted(lambda c: c.update(classes="0123456789")), protect=("{ckpt}",)),
    Case("ckpt-classes-numbers", INFO, 1, DAMAGED + "classes must be a list of class names",
         crafted(lambda c: c.update(classes=list(range(10)))), protect=("{ckpt}",)),
    Case("ckpt-class-name-empty", INFO, 1, DAMAGED + "classes must be a list of class names",
         crafted(lambda c: c.update(classes=["", *c["classes"][1:]])), protect=("{ckpt}",)),
    Case("ckpt-data-source-a-list", INFO, 1, DAMAGED + "data_source is a list, expected a str",
         crafted(lambda c: c.update(data_source=["digits"])), protect=("{ckpt}",)),
    Case("ckpt-metrics-a-list", INFO, 1, DAMAGED + "metrics is a list, expected a dict",
         crafted(lambda c: c.update(metrics=[("epoch", 1)])), protect=("{ckpt}",)),
    Case("ckpt-resize-a-string", INFO, 1, DAMAGED + "preprocessing resize and crop must be integers",
         crafted(lambda c: c["preprocessing"].update(resize="256")), protect=("{ckpt}",)),
    Case("ckpt-crop-a-float", INFO, 1, DAMAGED + "preprocessing resize and crop must be integers",
         crafted(lambda c: c["preprocessing"].update(crop=227.9)), protect=("{ckpt}",)),
    Case("resume-state-classes-a-string", RESUME, 1, "run.state.pt is a damaged alexnet-deploy checkpoint: classes must",
         in_state(lambda s: s["checkpoint"].update(classes="0123456789")), protect=("{run}", "{state}")),
    Case("resume-state-epoch-a-string", RESUME, 1, "damaged resume state: mistyped values: epoch '1'",
         in_state(lambda s: s.update(epoch="1")), protect=("{run}", "{state}")),
    Case("resume-state-lr-a-string", RESUME, 1, "damaged resume state: mistyped values: lr '0.01'",
         in_state(lambda s: s["options"].update(lr="0.01")), protect=("{run}", "{state}")),
    Case("resume-state-warmup-a-string", RESUME, 1, "damaged resume state: mistyped values: warmup '0.1'",
         in_state(lambda s: s["options"].update(warmup="0.1")), protect=("{run}", "{state}")),
    Case("resume-state-nesterov-a-string", RESUME, 1, "damaged resume state: mistyped values: nesterov 'no'",
         in_state(lambda s: s["options"].update(nesterov="no")), protect=("{run}", "{state}")),
    Case("resume-state-history-metric-a-string", RESUME, 1, "damaged resume state: mistyped values: val_top1 'x'",
         in_state(lambda s: s["history"][0].update(val_top1="x")), protect=("{run}", "{state}")),
    # --- 9. the data a model is calibrated and scored on holds the model's classes
    Case("build-calib-from-data-other-classes", (*BUILD, "--int8", "--calib-from-data"), 1,
         "{data} holds 2 classes (class_0, class_1) but the model was trained on 10 (0, 1, 2, 3, ...)",
         all_of(lambda place: place["data"], OTHER_DATA), protect=("{onnx}",),
         absent=("{tmp}/export/alexnet.int8.onnx", "{tmp}/cal")),
    Case("build-fp16-other-classes", (*BUILD, "--fp16"), 1, "{data} holds 2 classes (class_0, class_1)",
         all_of(lambda place: place["data"], OTHER_DATA), protect=("{onnx}",), absent=("{tmp}/export/alexnet.fp16.onnx",)),
    Case("bench-other-classes", (*BENCH, "--json", "{tmp}/r.json"), 1, "{data} holds 2 classes",
         all_of(lambda place: place["data"], OTHER_DATA), protect=("{onnx}",), absent=("{tmp}/r.json",)),
    # --- 10. the metadata the tools trust is covered by a digest
    Case("predict-class-names-edited", PREDICT, 1, EDITED, all_of(image("{tmp}/img.png"),
         edit_metadata(classes=[f"edited-{d}" for d in DIGITS])), protect=("{onnx}",)),
    Case("predict-metadata-digest-removed", PREDICT, 1, "has no metadata digest", all_of(image("{tmp}/img.png"),
         edit_metadata(drop="metadata_sha256")), protect=("{onnx}",)),
    Case("predict-weights-tampered", PREDICT, 1, "its weights do not match the digest", all_of(image("{tmp}/img.png"),
         lambda place: place["onnx"], flip_conv1), protect=("{onnx}",)),
    Case("predict-weights-digest-edited-to-match", PREDICT, 1, EDITED, all_of(image("{tmp}/img.png"),
         lambda place: place["onnx"], flip_conv1, reweigh), protect=("{onnx}",)),
    Case("build-class-names-edited", (*BUILD, "--fp16"), 1, EDITED, edit_metadata(classes=DIGITS[::-1]),
         protect=("{onnx}",), absent=("{tmp}/export/alexnet.fp16.onnx",)),
    Case("build-data-source-edited", (*BUILD, "--fp16"), 1, EDITED,
         all_of(lambda place: place["data"], edit_metadata(data_source="{data}")), protect=("{onnx}",)),
    Case("bench-preprocessing-edited", BENCH, 1, EDITED, edit_metadata(
         preprocessing={"resize": 256, "crop": 227, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}),
         protect=("{onnx}",)),
    Case("repository-class-names-edited", (*REPOSITORY, "--output", "{tmp}/repo"), 1, EDITED,
         edit_metadata(classes=DIGITS[::-1]), protect=("{onnx}",), absent=("{tmp}/repo",)),
    # --- messages that were clean but wrong: a folder is a folder, a device a device
    Case("info-filters-a-directory", ("info", "--filters", "{tmp}"), 1, "output path {tmp} is a directory"),
    Case("bench-plot-a-directory", (*BENCH, "--plot", "{tmp}/figures"), 1, "output path {tmp}/figures is a directory",
         lambda place: Path(place.format("{tmp}/figures")).mkdir()),
    Case("bench-onnx-a-directory", (*BENCH, "--onnx", "{tmp}"), 1, "reference ONNX {tmp} is a directory, not a file"),
    Case("predict-onnx-a-directory", (*PREDICT, "--onnx", "{tmp}"), 1, "ONNX file {tmp} is a directory, not a file",
         image("{tmp}/img.png")),
    Case("repository-onnx-a-directory", (*REPOSITORY, "--onnx", "{tmp}", "--output", "{tmp}/repo"), 1,
         "ONNX file {tmp} is a directory, not a file"),
    Case("info-checkpoint-a-device", ("info", "--checkpoint", "/dev/zero"), 1,
         "checkpoint /dev/zero is not a regular file", timeout_s=30),
    Case("train-data-a-regular-file", (*DATA, "--data", "{tmp}/img.png"), 1,
         "data directory {tmp}/img.png is a file, not a folder of class sub-folders", image("{tmp}/img.png")),
]  # fmt: skip


# ------------------------------------------------------------------ running a row


def _digest(path: Path) -> str:
    if not path.exists() and not path.is_symlink():
        return "absent"
    if path.is_dir():
        return hashlib.sha256("".join(f"{p.name}:{_digest(p)}" for p in sorted(path.iterdir())).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mount_full_tmpfs(folder: Path, mib: int = 8) -> None:
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(folder)]
    done = subprocess.run(mount, capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"a real full disk needs mount(2) (root): {done.stderr.decode().strip()}")


def _fill(folder: Path) -> None:
    """Write zeros into ``folder`` until its filesystem has no block left."""
    with open(folder / ".filler", "wb", buffering=0) as filler:
        block = bytes(1 << 16)
        while True:
            try:
                filler.write(block)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
        # then ever smaller writes, until not even one byte fits
        for size in (4096, 512, 1):
            try:
                written = filler.write(bytes(size))
                while written:
                    written = filler.write(bytes(size))
            except OSError:
                continue


# Run in a child before the CLI: what the row's How takes away from the process.
_CAPABILITIES = """
import ctypes
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
libc = ctypes.CDLL(None, use_errno=True)
header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
assert libc.capget(ctypes.byref(header), data) == 0
keep = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
data[0].effective &= keep; data[0].permitted &= keep; data[0].inheritable &= keep
assert libc.capset(ctypes.byref(header), data) == 0
"""
_PRELUDES = {
    How.NO_DAC: _CAPABILITIES,
    How.FILE_SIZE_LIMIT: "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))\n",
    How.NO_TRITONCLIENT: "import sys; sys.modules.update(dict.fromkeys(['tritonclient', 'tritonclient.http', "
    "'tritonclient.grpc', 'tritonclient.utils'], None))\n",
}
_CHILD = """
import json, sys
from typer.testing import CliRunner
from alexnet_deploy.cli import app
{prelude}
result = CliRunner().invoke(app, sys.argv[1:])
crash = None if result.exception is None or isinstance(result.exception, SystemExit) else repr(result.exception)
json.dump({{"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr, "crash": crash}},
          sys.__stdout__)
"""


PROGRESS_BAR = "━"  # rich draws a finished epoch's bar on stderr


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    crash: str | None  # an exception that escaped the command (a traceback to a user)


class _Hung(Exception):
    """A row ran past its time limit."""


def _alarm(signum, frame):
    raise _Hung()


def _run(case: Case, argv: list[str], cwd: Path) -> Outcome:
    if case.how in _PRELUDES:
        try:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD.format(prelude=_PRELUDES[case.how]), *argv],
                capture_output=True,
                text=True,
                cwd=cwd,
                timeout=case.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"hung: still running after {case.timeout_s} s")
        assert done.returncode == 0, done.stderr[-3000:]
        return Outcome(**json.loads(done.stdout))
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(case.timeout_s)
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if isinstance(result.exception, _Hung):
        pytest.fail(f"hung: still running after {case.timeout_s} s")
    crash = None if result.exception is None or isinstance(result.exception, SystemExit) else repr(result.exception)
    return Outcome(result.exit_code, result.stdout, result.stderr, crash)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_adversarial_round3(case: Case, world, tmp_path):
    place = Place(world, tmp_path)
    full = tmp_path / "full"
    if case.how is How.FULL_DISK:
        _mount_full_tmpfs(full)
    try:
        if case.setup is not None:
            case.setup(place)
        if case.how is How.FULL_DISK:
            _fill(full)
        argv = [place.format(a) for a in case.argv]
        protected = {p: _digest(Path(place.format(p))) for p in case.protect}
        outcome = _run(case, argv, tmp_path)
        leftovers = [p for p in tmp_path.rglob("*") if ".adtmp-" in p.name]
        changed = [p for p, before in protected.items() if _digest(Path(place.format(p))) != before]
        present = [p for p in case.absent if Path(place.format(p)).exists()]
    finally:
        if case.how is How.FULL_DISK:
            subprocess.run(["umount", "-l", str(full)], check=False)

    assert outcome.crash is None, outcome.crash
    assert "Traceback" not in outcome.stdout + outcome.stderr, outcome.stderr
    assert outcome.exit_code == case.exit_code, outcome.stdout + outcome.stderr
    fragment = place.format(case.fragment)
    lines = outcome.stderr.strip().splitlines()
    if case.exit_code == 0:
        assert fragment in outcome.stdout, outcome.stdout
    else:  # one error line, last; before it only warnings (what was skipped) and finished progress bars
        assert lines and lines[-1].startswith("error: "), outcome.stderr
        assert all(line.startswith("warning: ") or PROGRESS_BAR in line for line in lines[:-1]), outcome.stderr
        assert fragment in lines[-1], lines[-1]
    if case.warns is not None:
        assert any(line.startswith("warning: ") and place.format(case.warns) in line for line in lines), outcome.stderr
    assert not changed, f"changed: {changed}"
    assert not present, f"written although the command failed: {present}"
    assert not leftovers, leftovers


def test_the_round3_catalogue_names_each_row_once():
    assert len({c.id for c in CASES}) == len(CASES)
