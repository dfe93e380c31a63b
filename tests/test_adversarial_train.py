"""Adversarial catalogue for training, data folders, checkpoints and resume (issue 15).

Each row is one bad (or tricky) input an adversarial user tried: the command line,
the exit code it must give, a fragment of the one ``error:`` line it must print, and
the files that must come out byte-for-byte unchanged. Every row also asserts that no
traceback is printed. Placeholders in the command line:

* ``{run}``/``{state}``: a real, finished one-epoch run (checkpoint + resume state)
  on 64 embedded digits, copied fresh for each row;
* ``{frun}``: the same, trained on the image folder ``{data}``;
* ``{data}``: a copy of that small ImageFolder (2 classes), which ``setup`` may damage;
* ``{fdata}``: the folder ``{frun}`` was trained on;
* ``{ckpt}``: a crafted checkpoint that ``setup`` writes; ``{tmp}``: the row's folder.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import shutil
import signal
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image_folder
from PIL import Image
from typer.testing import CliRunner

from alexnet_deploy.cli import app
from alexnet_deploy.plots import curves_writer
from alexnet_deploy.train.config import TrainConfig
from alexnet_deploy.train.loop import train
from alexnet_deploy.train.recipe import recipe_defaults

FAST = recipe_defaults("fast")
TINY = ("--limit", "64", "--width", "0.0625", "--batch-size", "16", "--epochs", "1")
TRAIN = ("train", "--output", "{run}", *TINY)  # a bad option appended overrides
FRESH = ("train", "--output", "{tmp}/new.pt", *TINY)
DATA = (
    "train",
    "--data",
    "{data}",
    "--output",
    "{tmp}/new.pt",
    "--width",
    "0.0625",
    "--batch-size",
    "4",
    "--epochs",
    "1",
)
RESUME = ("train", "--resume", "--output", "{run}", "--epochs", "2", "--batch-size", "16")
RUN = ("run", "state")


@dataclass(frozen=True)
class Workspace:
    tmp: Path
    fdata: Path  # the folder {frun} was trained on (shared: a row adding to it must clean up)
    base_checkpoint: dict
    base_state: dict

    def path(self, name: str) -> Path:
        return {
            "run": self.tmp / "run.pt",
            "state": self.tmp / "run.state.pt",
            "frun": self.tmp / "frun.pt",
            "fstate": self.tmp / "frun.state.pt",
            "data": self.tmp / "data",
            "fdata": self.fdata,
            "ckpt": self.tmp / "crafted.pt",
            "tmp": self.tmp,
        }[name]


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    exit_code: int
    fragment: str  # in the one stderr line; for exit 0, in stdout
    setup: Callable[[Workspace], None] | None = None
    protect: tuple[str, ...] = RUN


# ------------------------------------------------------------------ setups


def _image(path: Path, size=(40, 47), fmt=None) -> None:
    pixels = np.random.default_rng(len(str(path))).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def in_class(name: str, write: Callable[[Path], None]) -> Callable[[Workspace], None]:
    """Add one file ``name`` to class_0 of the good folder."""
    return lambda ws: write(ws.path("data") / "class_0" / name)


def only_in_class(name: str, write: Callable[[Path], None]) -> Callable[[Workspace], None]:
    """Empty class_1 of its images, then put ``name`` there alone."""

    def setup(ws: Workspace) -> None:
        folder = ws.path("data") / "class_1"
        for file in folder.iterdir():
            file.unlink()
        write(folder / name)

    return setup


def truncated_jpeg(path: Path) -> None:
    _image(path, (64, 64), "JPEG")
    path.write_bytes(path.read_bytes()[:1000])  # header reads, decoding fails


def bomb_png(path: Path) -> None:
    """A valid tiny PNG whose header claims 100,000 x 100,000 pixels."""
    _image(path, (1, 1), "PNG")
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", 100_000, 100_000) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))


def unix_socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays


def crafted(mutate: Callable[[dict], None], start: str = "checkpoint") -> Callable[[Workspace], None]:
    """Write ``{ckpt}`` as the good run's checkpoint (or state) payload after ``mutate``."""

    def setup(ws: Workspace) -> None:
        payload = copy.deepcopy(ws.base_checkpoint if start == "checkpoint" else ws.base_state)
        mutate(payload)
        torch.save(payload, ws.path("ckpt"))

    return setup


def state(mutate: Callable[[dict], None]) -> Callable[[Workspace], None]:
    """Replace the run's resume state by a mutated copy."""

    def setup(ws: Workspace) -> None:
        payload = copy.deepcopy(ws.base_state)
        mutate(payload)
        torch.save(payload, ws.path("state"))

    return setup


def write(name: str, content: bytes) -> Callable[[Workspace], None]:
    return lambda ws: ws.path(name).write_bytes(content)


def sets(*keys: str, value) -> Callable[[dict], None]:
    """Set payload[k1][k2]... = value."""

    def mutate(payload: dict) -> None:
        target = payload
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def deletes(*keys: str) -> Callable[[dict], None]:
    def mutate(payload: dict) -> None:
        target = payload
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return mutate


def weight(name: str, make: Callable[[torch.Tensor], torch.Tensor], start: str = "checkpoint"):
    def mutate(payload: dict) -> None:
        weights = payload["state_dict"] if start == "checkpoint" else payload["checkpoint"]["state_dict"]
        weights[name] = make(weights[name])

    return mutate


class Evil:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/alexnet-deploy-pwned",))


def evil_pickle(name: str) -> Callable[[Workspace], None]:
    return lambda ws: torch.save({"format": "x", "payload": Evil()}, ws.path(name))


def copy_run_as(name: str, mutate: Callable[[dict], None]) -> Callable[[Workspace], None]:
    """Rewrite the run's checkpoint file with a mutated copy of its payload."""

    def setup(ws: Workspace) -> None:
        payload = copy.deepcopy(ws.base_checkpoint)
        mutate(payload)
        torch.save(payload, ws.path(name))

    return setup


def same_classes_elsewhere(ws: Workspace) -> None:
    for digit in range(10):
        folder = ws.path("tmp") / "digits-copy" / str(digit)
        folder.mkdir(parents=True)
        _image(folder / "a.png", fmt="PNG")


# ------------------------------------------------------------------ the catalogue

INFO = ("info", "--checkpoint", "{ckpt}")
GROWN = "grown.png"
CKPT = ("ckpt",)
NaN = float("nan")

CASES = [
    # --- option ranges: refused before any data is read, the run left alone
    Case("epochs-0", (*TRAIN, "--epochs", "0"), 1, "--epochs must be at least 1"),
    Case("epochs-negative", (*TRAIN, "--epochs", "-3"), 1, "--epochs must be at least 1"),
    Case("batch-size-0", (*TRAIN, "--batch-size", "0"), 1, "--batch-size must be at least 1"),
    Case("batch-size-negative", (*TRAIN, "--batch-size", "-1"), 1, "--batch-size must be at least 1"),
    Case("lr-0", (*TRAIN, "--lr", "0"), 1, "--lr must be a finite positive number"),
    Case("lr-negative", (*TRAIN, "--lr", "-0.1"), 1, "--lr must be a finite positive number"),
    Case("lr-nan", (*TRAIN, "--lr", "nan"), 1, "--lr must be a finite positive number, got nan"),
    Case("lr-inf", (*TRAIN, "--lr", "inf"), 1, "--lr must be a finite positive number, got inf"),
    Case("lr-minus-inf", (*TRAIN, "--lr", "-inf"), 1, "--lr must be a finite positive number"),
    Case("weight-decay-negative", (*TRAIN, "--weight-decay", "-5"), 1, "--weight-decay must be a finite number >= 0"),
    Case("weight-decay-nan", (*TRAIN, "--weight-decay", "nan"), 1, "--weight-decay must be a finite number >= 0"),
    Case("weight-decay-inf", (*TRAIN, "--weight-decay", "inf"), 1, "--weight-decay must be a finite number >= 0"),
    Case("workers-negative", (*TRAIN, "--workers", "-1"), 1, "--workers must be 0 or more"),
    Case("step-size-0", (*TRAIN, "--schedule", "step", "--step-size", "0"), 1, "--step-size must be at least 1"),
    Case("step-size-negative", (*TRAIN, "--step-size", "-2"), 1, "--step-size must be at least 1"),
    Case("schedule-unknown", (*TRAIN, "--schedule", "linear"), 2, "'linear' is not one of 'cosine', 'plateau', 'step'"),
    Case("recipe-unknown", (*TRAIN, "--recipe", "sgd"), 2, "'sgd' is not one of 'fast', 'paper'"),
    Case("warmup-1", (*TRAIN, "--warmup", "1"), 1, "--warmup must be a fraction of the steps in [0, 1), got 1"),
    Case("warmup-negative", (*TRAIN, "--warmup", "-0.1"), 1, "--warmup must be a fraction of the steps in [0, 1)"),
    Case("warmup-nan", (*TRAIN, "--warmup", "nan"), 1, "--warmup must be a fraction of the steps in [0, 1), got nan"),
    Case("label-smoothing-1", (*TRAIN, "--label-smoothing", "1"), 1, "--label-smoothing must be in [0, 1), got 1"),
    Case("label-smoothing-nan", (*TRAIN, "--label-smoothing", "nan"), 1, "--label-smoothing must be in [0, 1)"),
    Case("flip-without-augment", (*TRAIN, "--flip", "--no-augment"), 1, "--flip contradicts --no-augment"),
    Case("seed-negative", (*TRAIN, "--seed", "-1"), 1, "--seed must be in [0, 2**32)"),
    Case("seed-too-large", (*TRAIN, "--seed", str(2**32)), 1, "--seed must be in [0, 2**32)"),
    Case("limit-0", (*TRAIN, "--limit", "0"), 1, "--limit must be at least 1"),
    Case("limit-negative", (*TRAIN, "--limit", "-5"), 1, "--limit must be at least 1"),
    Case("limit-too-small-to-split", (*FRESH, "--limit", "2"), 1, "too few images (2)"),
    Case("groups-0", (*TRAIN, "--groups", "0"), 1, "--groups must be 1 or 2"),
    Case("groups-3", (*TRAIN, "--groups", "3"), 1, "--groups must be 1 or 2"),
    Case("width-0", (*TRAIN, "--width", "0"), 1, "--width must be in (0, 1]"),
    Case("width-above-1", (*TRAIN, "--width", "1.5"), 1, "--width must be in (0, 1]"),
    Case("width-negative", (*TRAIN, "--width", "-0.5"), 1, "--width must be in (0, 1]"),
    Case("width-nan", (*TRAIN, "--width", "nan"), 1, "--width must be in (0, 1]"),
    Case("device-unknown", (*TRAIN, "--device", "tpu"), 2, "'tpu' is not one of 'auto', 'cpu', 'cuda'"),
    # --- usage errors: one line too (exit 2, Click's convention)
    Case("usage-epochs-not-a-number", (*TRAIN, "--epochs", "x"), 2, "Invalid value for '--epochs'"),
    Case("usage-lr-not-a-number", (*TRAIN, "--lr", "abc"), 2, "Invalid value for '--lr'"),
    Case("usage-groups-not-an-integer", (*TRAIN, "--groups", "1.5"), 2, "Invalid value for '--groups'"),
    Case("usage-unknown-option", (*TRAIN, "--bogus"), 2, "No such option: --bogus"),
    Case("usage-missing-value", (*TRAIN, "--lr"), 2, "'--lr' requires an argument"),
    Case("usage-unknown-command", ("trian",), 2, "No such command 'trian'"),
    # --- output paths: refused before any long work
    Case("output-in-proc", (*FRESH, "--output", "/proc/x.pt"), 1, "/proc/x.pt"),
    Case("output-missing-folder", (*FRESH, "--output", "{tmp}/no/such/x.pt"), 1, "does not exist"),
    Case("output-is-a-folder", (*FRESH, "--output", "{tmp}"), 1, "is a directory"),
    Case("output-under-a-file", (*FRESH, "--output", "{run}/x.pt"), 1, "does not exist"),
    Case("output-under-dev-null", (*FRESH, "--output", "/dev/null/x.pt"), 1, "does not exist"),
    Case("output-is-dev-null", (*FRESH, "--output", "/dev/null"), 1, "/dev/null exists and is not a regular file"),
    Case(
        "output-is-a-fifo",
        (*FRESH, "--output", "{tmp}/fifo.pt"),
        1,
        "fifo.pt exists and is not a regular file",
        lambda ws: os.mkfifo(ws.path("tmp") / "fifo.pt"),
    ),
    # --- data folders
    Case("data-missing", (*DATA, "--data", "{tmp}/missing"), 1, "does not exist"),
    Case("data-is-a-file", (*DATA, "--data", "{run}"), 1, "is a file, not a folder of class sub-folders"),
    Case(
        "data-empty",
        DATA,
        1,
        "no class sub-folders",
        lambda ws: shutil.rmtree(ws.path("data") / "class_0") or shutil.rmtree(ws.path("data") / "class_1"),
    ),
    Case("data-one-class", DATA, 1, "one class folder", lambda ws: shutil.rmtree(ws.path("data") / "class_1")),
    Case(
        "data-only-hidden-second-class",
        DATA,
        1,
        "one class folder",
        lambda ws: os.rename(ws.path("data") / "class_1", ws.path("data") / ".class_1"),
    ),
    Case(
        "data-class-without-images", DATA, 1, "class_7 has no images", lambda ws: (ws.path("data") / "class_7").mkdir()
    ),
    Case(
        "data-class-with-only-text",
        DATA,
        1,
        "class_1 has no images",
        only_in_class("notes.txt", lambda p: p.write_text("hi")),
    ),
    Case("data-class-with-only-a-fifo", DATA, 1, "class_1 has no images", only_in_class("x.png", os.mkfifo)),
    Case("data-class-with-only-a-socket", DATA, 1, "class_1 has no images", only_in_class("x.png", unix_socket)),
    Case("data-class-with-only-a-folder", DATA, 1, "class_1 has no images", only_in_class("x.png", Path.mkdir)),
    Case(
        "data-class-with-a-dangling-link",
        DATA,
        1,
        "class_1 has no images",
        only_in_class("x.png", lambda p: p.symlink_to(p.parent / "gone.png")),
    ),
    Case(
        "data-class-with-a-link-loop",
        DATA,
        1,
        "class_1 has no images",
        only_in_class("x.png", lambda p: p.symlink_to(p)),
    ),
    Case(
        "data-class-with-a-device",
        DATA,
        1,
        "class_1 has no images",
        only_in_class("x.png", lambda p: p.symlink_to("/dev/zero")),
    ),
    Case(
        "data-corrupt-png",
        DATA,
        1,
        "cannot read image",
        in_class("bad.png", lambda p: p.write_bytes(b"\x89PNG garbage")),
    ),
    Case(
        "data-random-bytes-jpg",
        DATA,
        1,
        "cannot read image",
        in_class("bad.jpg", lambda p: p.write_bytes(os.urandom(2000))),
    ),
    Case("data-empty-file", DATA, 1, "cannot read image", in_class("empty.png", lambda p: p.write_bytes(b""))),
    Case(
        "data-text-named-png",
        DATA,
        1,
        "cannot read image",
        in_class("text.png", lambda p: p.write_text("not an image")),
    ),
    Case("data-truncated-jpeg", DATA, 1, "cannot read image", in_class("cut.jpg", truncated_jpeg)),
    Case(
        "data-truncated-jpeg-workers",
        (*DATA, "--workers", "2"),
        1,
        "cannot read image",
        in_class("cut.jpg", truncated_jpeg),
    ),
    Case("data-decompression-bomb", DATA, 1, "DecompressionBombError", in_class("bomb.png", bomb_png)),
    Case("data-fifo-beside-images-is-skipped", DATA, 0, "val top-1", in_class("pipe.png", os.mkfifo), ()),
    Case(
        "data-mixed-sizes-and-a-sliver",
        DATA,
        0,
        "val top-1",
        lambda ws: (
            _image(ws.path("data") / "class_0" / "wide.jpg", (640, 480), "JPEG"),
            _image(ws.path("data") / "class_1" / "sliver.png", (1, 4000), "PNG"),
        ),
        (),
    ),
    # --- resume: missing, damaged or foreign state files
    Case(
        "resume-state-missing",
        RESUME,
        1,
        "run.state.pt from an earlier run",
        lambda ws: ws.path("state").unlink(),
        ("run",),
    ),
    Case(
        "resume-state-text",
        RESUME,
        1,
        "run.state.pt is not an alexnet-deploy resume state",
        write("state", b"epoch=1\n"),
    ),
    Case("resume-state-empty", RESUME, 1, "is not an alexnet-deploy resume state", write("state", b"")),
    Case(
        "resume-state-truncated",
        RESUME,
        1,
        "is not an alexnet-deploy resume state",
        lambda ws: ws.path("state").write_bytes(ws.path("state").read_bytes()[:5000]),
    ),
    Case(
        "resume-state-foreign-torch-file",
        RESUME,
        1,
        "expected format",
        lambda ws: torch.save({"a": torch.ones(2)}, ws.path("state")),
    ),
    Case(
        "resume-state-is-a-checkpoint",
        RESUME,
        1,
        "expected format",
        lambda ws: shutil.copy(ws.path("run"), ws.path("state")),
    ),
    Case("resume-state-a-plain-list", RESUME, 1, "expected format", lambda ws: torch.save([1, 2, 3], ws.path("state"))),
    Case("resume-state-malicious-pickle", RESUME, 1, "is not an alexnet-deploy resume state", evil_pickle("state")),
    Case("resume-state-without-history", RESUME, 1, "damaged resume state", state(deletes("history"))),
    Case("resume-state-history-gap", RESUME, 1, "damaged resume state", state(sets("epoch", value=3))),
    Case("resume-state-options-garbage", RESUME, 1, "damaged resume state", state(sets("options", value="fast"))),
    Case("resume-state-options-missing", RESUME, 1, "damaged resume state", state(deletes("options"))),
    Case("resume-another-lr", (*RESUME, "--lr", "0.5"), 1, f"the run has --lr {FAST.lr:g}, not 0.5"),
    Case("resume-another-batch-size", (*RESUME, "--batch-size", "8"), 1, "the run has --batch-size 16, not 8"),
    Case("resume-another-recipe", (*RESUME, "--recipe", "paper"), 1, "the run has --recipe fast, not paper"),
    Case("resume-another-schedule", (*RESUME, "--schedule", "step"), 1, "the run has --schedule cosine, not step"),
    Case(
        "resume-state-without-checkpoint",
        RESUME,
        1,
        "is not an alexnet-deploy checkpoint",
        state(deletes("checkpoint")),
    ),
    Case(
        "resume-state-weights-wrong-shape",
        RESUME,
        1,
        "does not match the AlexNet architecture",
        state(weight("features.conv1.weight", lambda t: torch.zeros(5, 3, 11, 11), "state")),
    ),
    Case(
        "resume-state-weights-nan",
        RESUME,
        1,
        "NaN or infinite",
        state(weight("classifier.fc8.bias", lambda t: torch.full_like(t, NaN), "state")),
    ),
    Case(
        "resume-state-optimizer-garbage",
        RESUME,
        1,
        "damaged resume state",
        state(sets("optimizer", value={"state": {}, "param_groups": "x"})),
    ),
    Case(
        "resume-state-rng-garbage", RESUME, 1, "damaged resume state", state(sets("rng", "torch", value=torch.zeros(3)))
    ),
    Case(
        "resume-state-momentum-wrong-shape",
        RESUME,
        1,
        "damaged resume state",
        state(lambda s: s["optimizer"]["state"][0].update(momentum_buffer=torch.zeros(2))),
    ),
    Case(
        "resume-checkpoint-garbage",
        RESUME,
        1,
        "run.pt is not an alexnet-deploy checkpoint",
        write("run", b"junk"),
        ("run", "state"),
    ),
    Case(
        "resume-checkpoint-ahead-of-state",
        RESUME,
        1,
        "it is at epoch 5",
        copy_run_as("run", sets("metrics", "epoch", value=5)),
    ),
    # --- resume: contradictions with the run being continued
    Case("resume-other-groups", (*RESUME, "--groups", "1"), 1, "the run has --groups 2, not 1"),
    Case("resume-other-width", (*RESUME, "--width", "0.5"), 1, "the run has --width 0.0625, not 0.5"),
    Case("resume-other-limit", (*RESUME, "--limit", "50"), 1, "the run has --limit 64, not 50"),
    Case("resume-other-classes", (*RESUME, "--data", "{data}"), 1, "the run was trained on classes"),
    Case(
        "resume-same-classes-other-folder",
        (*RESUME, "--data", "{tmp}/digits-copy"),
        1,
        "the run was trained on --data digits",
        same_classes_elsewhere,
    ),
    Case(
        "resume-folder-grew",
        ("train", "--resume", "--data", "{fdata}", "--output", "{frun}", "--epochs", "2"),
        1,
        "changed since the run began",
        lambda ws: _image(ws.path("fdata") / "class_0" / GROWN, fmt="PNG"),
        ("frun", "fstate"),
    ),
    Case(
        "resume-folder-copied-elsewhere",
        ("train", "--resume", "--data", "{data}", "--output", "{frun}", "--epochs", "2"),
        1,
        "the run was trained on --data",
        None,
        ("frun", "fstate"),
    ),
    Case("resume-nothing-left-to-do", (*RESUME, "--epochs", "1"), 0, "val top-1"),
    Case(
        "resume-restating-the-same-options",
        (*RESUME, "--epochs", "1", "--groups", "2", "--width", "0.0625", "--limit", "64"),
        0,
        "val top-1",
    ),
    # --- crafted checkpoints: refused before a model is built
    Case(
        "ckpt-input-size-huge",
        INFO,
        1,
        "input_size must be an integer from 67 to 1024",
        crafted(sets("config", "input_size", value=100_000)),
        CKPT,
    ),
    Case("ckpt-input-size-tiny", INFO, 1, "input_size must be", crafted(sets("config", "input_size", value=10)), CKPT),
    Case(
        "ckpt-input-size-float", INFO, 1, "input_size must be", crafted(sets("config", "input_size", value=227.5)), CKPT
    ),
    Case("ckpt-dropout-5", INFO, 1, "dropout must be in [0, 1)", crafted(sets("config", "dropout", value=5.0)), CKPT),
    Case(
        "ckpt-dropout-negative",
        INFO,
        1,
        "dropout must be in [0, 1)",
        crafted(sets("config", "dropout", value=-1.0)),
        CKPT,
    ),
    Case("ckpt-lrn-size-0", INFO, 1, "LRN size must be", crafted(sets("config", "lrn", "size", value=0)), CKPT),
    Case("ckpt-lrn-size-huge", INFO, 1, "LRN size must be", crafted(sets("config", "lrn", "size", value=10**6)), CKPT),
    Case(
        "ckpt-lrn-alpha-nan",
        INFO,
        1,
        "LRN needs finite alpha",
        crafted(sets("config", "lrn", "alpha", value=NaN)),
        CKPT,
    ),
    Case("ckpt-lrn-bias-0", INFO, 1, "LRN needs finite alpha", crafted(sets("config", "lrn", "bias", value=0.0)), CKPT),
    Case(
        "ckpt-num-classes-2e8",
        INFO,
        1,
        "num_classes must be an integer of at most",
        crafted(sets("config", "num_classes", value=200_000_000)),
        CKPT,
    ),
    Case(
        "ckpt-num-classes-1",
        INFO,
        1,
        "num_classes must be at least 2",
        crafted(sets("config", "num_classes", value=1)),
        CKPT,
    ),
    Case("ckpt-groups-3", INFO, 1, "groups must be 1 or 2", crafted(sets("config", "groups", value=3)), CKPT),
    Case("ckpt-width-0", INFO, 1, "width must be in (0, 1]", crafted(sets("config", "width", value=0.0)), CKPT),
    Case(
        "ckpt-config-unknown-key",
        INFO,
        1,
        "damaged alexnet-deploy checkpoint",
        crafted(sets("config", "depth", value=7)),
        CKPT,
    ),
    Case("ckpt-config-missing", INFO, 1, "damaged alexnet-deploy checkpoint", crafted(deletes("config")), CKPT),
    Case(
        "ckpt-config-a-string",
        INFO,
        1,
        "damaged alexnet-deploy checkpoint",
        crafted(sets("config", value="alexnet")),
        CKPT,
    ),
    Case(
        "ckpt-classes-count-mismatch",
        INFO,
        1,
        "lists 3 classes but its model has 10",
        crafted(sets("classes", value=["a", "b", "c"])),
        CKPT,
    ),
    Case(
        "ckpt-weights-missing-key",
        INFO,
        1,
        "missing ['classifier.fc8.bias']",
        crafted(deletes("state_dict", "classifier.fc8.bias")),
        CKPT,
    ),
    Case(
        "ckpt-weights-extra-key",
        INFO,
        1,
        "unexpected ['extra']",
        crafted(sets("state_dict", "extra", value=torch.zeros(1))),
        CKPT,
    ),
    Case(
        "ckpt-weights-wrong-shape",
        INFO,
        1,
        "features.conv1.weight has shape (5, 3, 11, 11)",
        crafted(weight("features.conv1.weight", lambda t: torch.zeros(5, 3, 11, 11))),
        CKPT,
    ),
    Case(
        "ckpt-weights-not-a-dict",
        INFO,
        1,
        "not a dictionary of tensors",
        crafted(sets("state_dict", value=[1, 2])),
        CKPT,
    ),
    Case(
        "ckpt-weights-nan",
        INFO,
        1,
        "NaN or infinite",
        crafted(weight("classifier.fc8.bias", lambda t: torch.full_like(t, NaN))),
        CKPT,
    ),
    Case(
        "ckpt-weights-inf",
        INFO,
        1,
        "NaN or infinite",
        crafted(weight("features.conv1.bias", lambda t: torch.full_like(t, math.inf))),
        CKPT,
    ),
    Case("ckpt-crop-above-resize", INFO, 1, "crop <= resize", crafted(sets("preprocessing", "crop", value=1000)), CKPT),
    Case("ckpt-resize-0", INFO, 1, "crop <= resize", crafted(sets("preprocessing", "resize", value=0)), CKPT),
    Case(
        "ckpt-std-0",
        INFO,
        1,
        "std must be positive",
        crafted(sets("preprocessing", "std", value=[0.2, 0.0, 0.2])),
        CKPT,
    ),
    Case(
        "ckpt-mean-nan",
        INFO,
        1,
        "mean must be 3 finite numbers",
        crafted(sets("preprocessing", "mean", value=[NaN, 0.5, 0.5])),
        CKPT,
    ),
    Case(
        "ckpt-crop-not-input-size",
        INFO,
        1,
        "crops images to 200 but its model takes 227",
        crafted(sets("preprocessing", "crop", value=200)),
        CKPT,
    ),
    Case(
        "ckpt-split-fraction-2",
        INFO,
        1,
        "split fractions must be in [0, 1)",
        crafted(sets("split", "val_fraction", value=2.0)),
        CKPT,
    ),
    Case("ckpt-split-seed-negative", INFO, 1, "split seed must be", crafted(sets("split", "seed", value=-1)), CKPT),
    Case(
        "ckpt-split-limit-0",
        INFO,
        1,
        "--limit must be a positive integer",
        crafted(sets("split", "limit", value=0)),
        CKPT,
    ),
    Case("ckpt-wrong-format", INFO, 1, "expected format", crafted(sets("format", value="other/1")), CKPT),
    Case(
        "ckpt-other-lrn-convention",
        INFO,
        1,
        "uses LRN convention 'caffe'",
        crafted(sets("lrn_convention", value="caffe")),
        CKPT,
    ),
    Case("ckpt-text", INFO, 1, "is not an alexnet-deploy checkpoint", write("ckpt", b"hello"), CKPT),
    Case("ckpt-empty", INFO, 1, "is not an alexnet-deploy checkpoint", write("ckpt", b""), CKPT),
    Case(
        "ckpt-truncated",
        INFO,
        1,
        "is not an alexnet-deploy checkpoint",
        lambda ws: ws.path("ckpt").write_bytes(ws.path("run").read_bytes()[:4096]),
        CKPT,
    ),
    Case("ckpt-malicious-pickle", INFO, 1, "is not an alexnet-deploy checkpoint", evil_pickle("ckpt"), CKPT),
    Case(
        "ckpt-resume-state-given-as-checkpoint",
        INFO,
        1,
        "expected format",
        lambda ws: shutil.copy(ws.path("state"), ws.path("ckpt")),
        CKPT,
    ),
    Case("ckpt-a-folder", ("info", "--checkpoint", "{tmp}"), 1, "is a directory, not a file"),
    Case(
        "export-ckpt-num-classes-2e8",
        ("export", "--checkpoint", "{ckpt}", "--output", "{tmp}/a.onnx"),
        1,
        "num_classes must be",
        crafted(sets("config", "num_classes", value=200_000_000)),
        CKPT,
    ),
    Case(
        "export-ckpt-nan-weights",
        ("export", "--checkpoint", "{ckpt}", "--output", "{tmp}/a.onnx"),
        1,
        "NaN or infinite",
        crafted(weight("classifier.fc8.weight", lambda t: torch.full_like(t, NaN))),
        CKPT,
    ),
]


# ------------------------------------------------------------------ running a row


def _run_files(root: Path, data: str, name: str) -> None:
    config = TrainConfig(data=data, output=root / f"{name}.pt", epochs=1, limit=64, width=0.0625, batch_size=16)
    train(config, on_epoch=curves_writer(root / f"{name}.curves.png"))  # as the CLI wires it


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """One finished run on the digits and one on a small image folder, made once."""
    root = tmp_path_factory.mktemp("runs")
    data = write_image_folder(root / "data", classes=2, per_class=6)
    _run_files(root, "digits", "run")
    _run_files(root, str(data), "frun")
    return root


def _digest(path: Path) -> str:
    if not path.exists() and not path.is_symlink():
        return "absent"
    if path.is_dir():
        return hashlib.sha256(
            "".join(f"{p.relative_to(path)}:{_digest(p)}" for p in sorted(path.rglob("*")) if p.is_file()).encode()
        ).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Hung(Exception):
    """A catalogue case ran past its time limit (a hang fails that case, not the suite)."""


def _alarm(signum, frame):
    raise _Hung()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_adversarial_train_input(case: Case, tmp_path, finished_runs):
    runs = finished_runs
    work = tmp_path / "work"
    work.mkdir()
    for name in ("run", "frun"):
        for suffix in (".pt", ".state.pt", ".metrics.jsonl", ".curves.png"):
            shutil.copy(runs / f"{name}{suffix}", work / f"{name}{suffix}")
    shutil.copytree(runs / "data", work / "data")
    ws = Workspace(
        work,
        runs / "data",
        torch.load(work / "run.pt", weights_only=True),
        torch.load(work / "run.state.pt", weights_only=True),
    )
    try:
        if case.setup is not None:
            case.setup(ws)
        before = {name: _digest(ws.path(name)) for name in case.protect}
        argv = [
            arg.format(**{name: ws.path(name) for name in ("run", "state", "frun", "data", "fdata", "ckpt", "tmp")})
            for arg in case.argv
        ]
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(120)  # a hang (the FIFO of issue 15) fails the row instead of the suite
        try:
            result = CliRunner().invoke(app, argv)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    finally:
        (runs / "data" / "class_0" / GROWN).unlink(missing_ok=True)

    assert not isinstance(result.exception, _Hung), "hung"
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == case.exit_code, result.output
    if case.exit_code == 0:
        assert case.fragment in result.stdout
    else:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert case.fragment in lines[0], lines[0]
    assert {name: _digest(ws.path(name)) for name in case.protect} == before
    assert not list(work.rglob("*.tmp")), "temporary files left behind"
    assert not Path("/tmp/alexnet-deploy-pwned").exists()


def test_the_catalogue_is_large_and_every_row_named_once():
    assert len(CASES) >= 75
    assert len({c.id for c in CASES}) == len(CASES)
