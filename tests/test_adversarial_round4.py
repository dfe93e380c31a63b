"""Adversarial catalogue, round 4 (issue 31): outputs written over inputs, image bombs,
checkpoint fields of the wrong type, unchecked ports and durations, and messages that
were clean but wrong.

Each row is one bad input, run as the round-3 catalogue runs its rows (in process,
under a time limit, no traceback, no temporary left behind): the command line, the exit
code, a fragment of the one ``error:`` line (or, for exit 0, of stdout), what must come
out byte for byte unchanged and what must not exist afterwards. Two fields of this
round: ``stdout`` (also on stdout, e.g. the good image predicted beside a bomb) and
``check`` (a look at what the command wrote, e.g. the lr of a resumed epoch). Every row
runs in its own folder as the working directory, so an output named ``-`` cannot land
in the repository.

Placeholders: ``{tmp}`` the row's folder; ``{onnx}`` the shared test model's FP32 export
(tests/conftest.py) with its FP16 and INT8 twins beside it in ``{tmp}/export``;
``{bare}`` the same export alone (no twin built); ``{tiny}`` its checkpoint; ``{run}``
/ ``{state}`` a finished one-epoch run on 64 digits; ``{digits}`` a folder of two of
the model's classes; ``{data}`` a 2-class image folder to train on; ``{ckpt}`` a
checkpoint ``setup`` crafts; ``{zoo}`` the ONNX zoo's BVLC AlexNet graph with seeded
weights (tests/zoo_alexnet.py), 1000 classes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest
import torch
from conftest import bomb_png_bytes, write_image_folder
from onnx import numpy_helper
from PIL import Image
from test_adversarial_round3 import PROGRESS_BAR, Case, Outcome, _digest, _run, _train, all_of, image
from zoo_alexnet import seeded_zoo_alexnet

from alexnet_deploy.digests import seal, set_metadata
from alexnet_deploy.export.run import export

TWINS = ("alexnet.onnx", "alexnet.fp16.onnx", "alexnet.int8.onnx", "alexnet.int8-ort.onnx")


@dataclass(frozen=True)
class Row(Case):
    stdout: str | None = None  # must also be on stdout (placeholders allowed)
    check: Callable[[Place, Outcome], None] | None = None  # a look at what the command wrote


# ------------------------------------------------------------------ the world


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoint, tiny_precisions) -> Path:
    """Made once: a one-epoch run to resume, the shared model's export with its twins,
    the same export alone, two image folders."""
    root = tmp_path_factory.mktemp("round4")
    _train(root, "run")
    fp32, _ = tiny_precisions
    (root / "export").mkdir()
    for name in TWINS:
        shutil.copy(fp32.with_name(name), root / "export" / name)
    (root / "bare").mkdir()
    shutil.copy(fp32, root / "bare" / "alexnet.onnx")
    shutil.copy(tiny_checkpoint, root / "tiny.pt")
    write_image_folder(root / "data", classes=2, per_class=6)
    for name in ("0", "1"):
        for index in range(2):
            (root / "digits" / name).mkdir(parents=True, exist_ok=True)
            pixels = np.random.default_rng(index).integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "digits" / name / f"{index}.png")
    return root


class Place(dict):
    """Placeholder -> path in the row's folder, copied from the world on first use."""

    COPIES: ClassVar[dict[str, tuple[str, ...]]] = {
        "run": ("run.pt", "run.metrics.jsonl", "run.curves.png"),
        "state": ("run.state.pt",),
        "tiny": ("tiny.pt",),
    }

    def __init__(self, world: Path, root: Path) -> None:
        super().__init__()
        self.world, self.root = world, root
        self.keep: list[socket.socket] = []  # open for the row's life, closed after it

    def __missing__(self, key: str) -> str:
        if key in self.COPIES:
            for name in self.COPIES[key]:
                shutil.copy(self.world / name, self.root / name)
            value = self.root / self.COPIES[key][0]
        elif key in ("data", "digits"):
            value = self.root / key
            shutil.copytree(self.world / key, value)
        elif key == "onnx":
            shutil.copytree(self.world / "export", self.root / "export")
            value = self.root / "export" / "alexnet.onnx"
        elif key == "bare":
            shutil.copytree(self.world / "bare", self.root / "bare")
            value = self.root / "bare" / "alexnet.onnx"
        elif key == "zoo":
            made = self.world / "zoo.onnx"
            if not made.exists():  # once per module, and only if a row asks
                onnx.save(seeded_zoo_alexnet(), str(made))
            value = self.root / "zoo.onnx"
            os.link(made, value)
        elif key in ("tmp", "ckpt"):
            value = self.root / {"tmp": "", "ckpt": "crafted.pt"}[key]
        else:
            raise KeyError(key)
        self[key] = str(value)
        return str(value)

    def path(self, key: str) -> Path:
        return Path(self[key])

    def format(self, text: str) -> str:
        return text.format_map(self)


# ------------------------------------------------------------------ what a row sets up


def bomb(name: str) -> Callable[[Place], None]:
    """A 20000 x 20000 PNG of a few dozen bytes at ``name`` (conftest.bomb_png_bytes)."""

    def setup(place: Place) -> None:
        path = Path(place.format(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bomb_png_bytes())

    return setup


def port_in_use(place: Place) -> None:
    """``{port}``: a port something listens on for the rest of the row."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    place.keep.append(listener)
    place["port"] = str(listener.getsockname()[1])


def crafted(mutate: Callable[[dict], None], start: str = "run") -> Callable[[Place], None]:
    """Write ``{ckpt}`` as ``{start}``'s payload after ``mutate``."""

    def setup(place: Place) -> None:
        payload = torch.load(place[start], weights_only=True)
        mutate(payload)
        torch.save(payload, place["ckpt"])

    return setup


def text(name: str, content: Callable[[], str]) -> Callable[[Place], None]:
    return lambda place: Path(place.format(name)).write_text(content(), encoding="utf-8")


def many_entries(count: int) -> Callable[[Place], None]:
    """``{ckpt}`` as a zip listing ``count`` empty stored entries, written directly (local
    headers, central directory, end record), as a crafted file would be."""

    def setup(place: Place) -> None:
        local, central = [], []
        offset = 0
        for index in range(count):
            name = f"e/{index}".encode()
            # local header: signature, version, flags, method, time, date, crc, sizes, name and extra lengths
            header = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0)
            # central entry: the same, plus made-by, comment, disk, attributes and the local header's offset
            entry = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, *[0] * 7, len(name), *[0] * 5, offset)
            local.append(header + name)
            central.append(entry + name)
            offset += len(header) + len(name)
        directory = b"".join(central)
        end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(directory), offset, 0)
        Path(place["ckpt"]).write_bytes(b"".join(local) + directory + end)

    return setup


def flip_weights(key: str, name: str) -> Callable[[Place], None]:
    """4 KiB of the first 4-D weight tensor of ``{key}``'s folder's ``name`` bit-flipped."""

    def setup(place: Place) -> None:
        path = place.path(key).with_name(name)
        model = onnx.load(str(path))
        tensor = next(t for t in model.graph.initializer if len(t.dims) == 4)
        array = numpy_helper.to_array(tensor).copy()
        array.view(np.uint8).reshape(-1)[:4096] ^= 0x55
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
        onnx.save(model, str(path))

    return setup


def resealed(**values: object) -> Callable[[Place], None]:
    """``{bare}``'s metadata entries set to ``values`` and sealed again, as if our tools
    had written them so (the weights untouched)."""

    def setup(place: Place) -> None:
        path = place.path("bare")
        model = onnx.load(str(path))
        set_metadata(model, values)
        seal(model)
        onnx.save(model, str(path))

    return setup


def skip_reason(backend: str, precision: str, fragment: str) -> Callable[[Place, Outcome], None]:
    """The eval report at ``{tmp}/e.json`` skips backend/precision saying ``fragment``."""

    def check(place: Place, outcome: Outcome) -> None:
        rows = json.loads(Path(place.format("{tmp}/e.json")).read_text())["rows"]
        row = next(r for r in rows if (r["backend"], r["precision"]) == (backend, precision))
        assert row["skipped"] is not None and place.format(fragment) in row["skipped"], row

    return check


def resumed_lr(place: Place, outcome: Outcome) -> None:
    """The first epoch a finished run was extended by trained at a real lr."""
    history = [json.loads(line) for line in Path(place.format("{tmp}/run.metrics.jsonl")).read_text().splitlines()]
    assert [m["epoch"] for m in history] == [1, 2]
    assert history[1]["lr"] > 1e-5, history[1]


# ------------------------------------------------------------------ the catalogue

SAME = "is the same file as"
EVAL = ("eval", "--data", "{digits}", "--onnx", "{onnx}", "--checkpoint", "{tiny}", "--backends", "onnxruntime")
PREDICT = ("predict", "{tmp}/img.png", "--onnx", "{onnx}")
CAL = ("build", "--onnx", "{bare}", "--int8", "--calibration", "{tmp}/cal", "--calib-images", "2", "--engines",
       "{tmp}/engines")  # fmt: skip
CAL_IMAGES = all_of(*(image(f"{{tmp}}/cal/{c}/{i}.png") for c in "ab" for i in range(2)))
EXPORT = ("export", "--checkpoint", "{ckpt}", "--output", "{tmp}/a.onnx")
DAMAGED = "crafted.pt is a damaged alexnet-deploy checkpoint: "
IMPORT = ("import", "{zoo}", "--output", "{tmp}/imported.pt")
IMAGENET_LINES = [f"class number {i}" for i in range(1000)]
RESUME = ("train", "--resume", "--output", "{run}", "--epochs", "2", "--batch-size", "16")
BUILD_INT8 = "run `alexnet-deploy build --int8`"

CASES = [
    # --- 1. no output over an input: a file it reads, a file inside a folder it reads, '-'
    Row("eval-json-onto-its-onnx", (*EVAL, "--precisions", "fp32", "--json", "{onnx}"), 1,
        f"--json {{onnx}} {SAME} --onnx {{onnx}}", protect=("{onnx}",)),
    Row("eval-json-onto-its-checkpoint", (*EVAL, "--precisions", "fp32", "--json", "{tiny}"), 1,
        f"--json {{tiny}} {SAME} --checkpoint {{tiny}}", protect=("{tiny}",)),
    Row("eval-json-onto-an-image-in-data", (*EVAL, "--precisions", "fp32", "--json", "{digits}/0/0.png"), 1,
        "--json {digits}/0/0.png is inside --data {digits}", protect=("{digits}",)),
    Row("eval-json-onto-the-int8-file-it-evaluates", (*EVAL, "--precisions", "int8", "--json",
        "{tmp}/export/alexnet.int8-ort.onnx"), 1, f"{SAME} the int8-ort ONNX",
        protect=("{tmp}/export",)),
    Row("predict-json-onto-its-image", (*PREDICT, "--json", "{tmp}/img.png"), 1,
        f"--json {{tmp}}/img.png {SAME} the image {{tmp}}/img.png", image("{tmp}/img.png"), protect=("{tmp}/img.png",)),
    Row("predict-json-onto-its-onnx", (*PREDICT, "--json", "{onnx}"), 1, f"--json {{onnx}} {SAME} --onnx",
        image("{tmp}/img.png"), protect=("{onnx}",)),
    Row("predict-json-into-the-folder-it-reads", ("predict", "{tmp}/imgs", "--onnx", "{onnx}", "--json",
        "{tmp}/imgs/b.png"), 1, "is inside the image folder {tmp}/imgs", image("{tmp}/imgs/a.png"),
        protect=("{tmp}/imgs",)),
    Row("predict-json-dash", (*PREDICT, "--json", "-"), 1, "--json -: give a file path", image("{tmp}/img.png"),
        absent=("{tmp}/-",)),
    Row("info-json-dash", ("info", "--json", "-"), 1, "--json -: give a file path", absent=("{tmp}/-",)),
    Row("export-output-dash", ("export", "--checkpoint", "{run}", "--output", "-"), 1, "--output -: give a file path",
        absent=("{tmp}/-",)),
    Row("import-output-onto-its-labels", (*IMPORT, "--labels", "{tmp}/labels.txt", "--output", "{tmp}/labels.txt"),
        1, f"--output {{tmp}}/labels.txt {SAME} --labels", text("{tmp}/labels.txt", lambda: "\n".join(IMAGENET_LINES)),
        protect=("{tmp}/labels.txt",), timeout_s=300),
    Row("build-json-onto-a-calibration-image", (*CAL, "--json", "{tmp}/cal/a/0.png"), 1,
        "--json {tmp}/cal/a/0.png is inside --calibration {tmp}/cal", CAL_IMAGES, protect=("{tmp}/cal", "{bare}"),
        absent=("{tmp}/bare/alexnet.int8.onnx",)),
    # --- 2. an image bomb is one error line naming the file; the good images are still predicted
    Row("predict-decompression-bomb-beside-a-good-image", ("predict", "{tmp}/bomb.png", "{tmp}/img.png", "--onnx",
        "{onnx}"), 1, "{tmp}/bomb.png: not a readable image: its header claims 400,000,000 pixels",
        all_of(bomb("{tmp}/bomb.png"), image("{tmp}/img.png")), stdout="{tmp}/img.png: "),
    Row("predict-folder-holding-a-bomb", ("predict", "{tmp}/imgs", "--onnx", "{onnx}"), 1,
        "{tmp}/imgs/bomb.png: not a readable image: its header claims 400,000,000 pixels, more than the 178,956,970",
        all_of(bomb("{tmp}/imgs/bomb.png"), image("{tmp}/imgs/a.png")), stdout="{tmp}/imgs/a.png: "),
    Row("calibration-decompression-bomb", (*CAL, "--calib-images", "4"), 1,
        "cannot read calibration image {tmp}/cal/b/1.png: its header claims 400,000,000 pixels",
        all_of(CAL_IMAGES, bomb("{tmp}/cal/b/1.png")), protect=("{bare}",), absent=("{tmp}/bare/alexnet.int8.onnx",)),
    Row("train-decompression-bomb", ("train", "--data", "{data}", "--output", "{tmp}/new.pt", "--epochs", "1"), 1,
        "cannot read image {data}/class_0/bomb.png: its header claims 400,000,000 pixels",
        bomb("{data}/class_0/bomb.png"), absent=("{tmp}/new.pt",)),
    # --- 3. checkpoint fields: a bool is no int, a string no number, a class name once
    Row("export-ckpt-split-limit-true", EXPORT, 1, DAMAGED + "--limit must be a positive integer (the split's limit), "
        "got True", crafted(lambda c: c["split"].update(limit=True)), absent=("{tmp}/a.onnx",)),
    Row("export-ckpt-groups-true", EXPORT, 1, DAMAGED + "groups must be an integer, got True",
        crafted(lambda c: c["config"].update(groups=True)), absent=("{tmp}/a.onnx",)),
    Row("export-ckpt-width-true", EXPORT, 1, DAMAGED + "width must be a number, got True",
        crafted(lambda c: c["config"].update(width=True)), absent=("{tmp}/a.onnx",)),
    Row("export-ckpt-width-a-string", EXPORT, 1, DAMAGED + "width must be a number, got '0.0625'",
        crafted(lambda c: c["config"].update(width="0.0625")), absent=("{tmp}/a.onnx",)),
    Row("export-ckpt-class-names-all-0", EXPORT, 1, DAMAGED + "classes lists '0' more than once",
        crafted(lambda c: c.update(classes=["0"] * len(c["classes"]))), absent=("{tmp}/a.onnx",)),
    Row("predict-onnx-class-names-all-0", ("predict", "{tmp}/img.png", "--onnx", "{bare}"), 1,
        "metadata 'classes' lists '0' more than once", all_of(image("{tmp}/img.png"), resealed(classes=["0"] * 10)),
        protect=("{bare}",)),
    Row("info-ckpt-zip-of-60000-entries", ("info", "--checkpoint", "{ckpt}"), 1,
        "crafted.pt is not an alexnet-deploy checkpoint: its zip lists 60,000 entries, more than the 4,096",
        many_entries(60_000), protect=("{ckpt}",), timeout_s=20),
    # --- 4. ports and durations checked before tritonclient sees them
    Row("serve-http-port-70000", ("serve", "--onnx", "{onnx}", "--http-port", "70000"), 1,
        "--http-port must be from 0 (any free port) to 65535, got 70000"),
    Row("serve-http-port-minus-1", ("serve", "--onnx", "{onnx}", "--http-port", "-1"), 1,
        "--http-port must be from 0 (any free port) to 65535, got -1"),
    Row("loadtest-url-port-70000", ("loadtest", "--url", "127.0.0.1:70000", "--requests", "1"), 1,
        "--url 127.0.0.1:70000: the port must be a number from 1 to 65535"),
    Row("predict-url-port-70000", ("predict", "{tmp}/img.png", "--url", "127.0.0.1:70000"), 1,
        "--url 127.0.0.1:70000: the port must be a number from 1 to 65535", image("{tmp}/img.png")),
    Row("predict-url-grpc-port-70000", ("predict", "{tmp}/img.png", "--url", "127.0.0.1:70000", "--protocol", "grpc"),
        1, "--url 127.0.0.1:70000: the port must be a number from 1 to 65535", image("{tmp}/img.png")),
    Row("loadtest-duration-inf", ("loadtest", "--url", "127.0.0.1:9", "--duration", "inf", "--json", "{tmp}/l.json"),
        1, "--duration must be positive seconds, at most 3600, got inf", absent=("{tmp}/l.json",), timeout_s=30),
    Row("loadtest-duration-nan", ("loadtest", "--url", "127.0.0.1:9", "--duration", "nan", "--json", "{tmp}/l.json"),
        1, "--duration must be positive seconds, at most 3600, got nan", absent=("{tmp}/l.json",), timeout_s=30),
    # --- 5. import refuses what its own loaders refuse, and counts lines as the file has them
    Row("import-labels-too-large-for-a-checkpoint", (*IMPORT, "--labels", "{tmp}/labels.txt"), 1,
        "--labels {tmp}/labels.txt: its class names come to 9 MiB, more than the 8 MiB a checkpoint may hold",
        text("{tmp}/labels.txt", lambda: "\n".join(f"{i:04d}" + "x" * 9_000 for i in range(1000))),
        absent=("{tmp}/imported.pt",), timeout_s=300),
    Row("import-labels-cr-inside-a-name", (*IMPORT, "--labels", "{tmp}/labels.txt"), 1,
        "labels file {tmp}/labels.txt line 7: a class name may not hold control characters",
        text("{tmp}/labels.txt", lambda: "\n".join(n.replace("6", "6\r6") for n in IMAGENET_LINES)),
        absent=("{tmp}/imported.pt",), timeout_s=300),
    # --- 6. eval: a named precision must run; a skipped one names its file and the command that writes it
    Row("eval-named-int8-modified", (*EVAL, "--precisions", "int8"), 1,
        "alexnet.int8-ort.onnx: its weights do not match the digest", flip_weights("onnx", "alexnet.int8-ort.onnx")),
    Row("eval-named-int8-never-built", (*EVAL, "--onnx", "{bare}", "--precisions", "int8"), 1,
        f"{{tmp}}/bare/alexnet.int8-ort.onnx not found; {BUILD_INT8}"),
    Row("eval-unnamed-int8-skipped-naming-its-file", (*EVAL, "--onnx", "{bare}", "--json", "{tmp}/e.json"), 0,
        "wrote {tmp}/e.json", check=skip_reason("onnxruntime", "int8", f"alexnet.int8-ort.onnx not found; {BUILD_INT8}")),
    # --- 7. messages that were clean but wrong
    Row("predict-int8-never-built", ("predict", "{tmp}/img.png", "--onnx", "{bare}", "--precision", "int8"), 1,
        f"{{tmp}}/bare/alexnet.int8-ort.onnx not found; {BUILD_INT8}", image("{tmp}/img.png")),
    Row("serve-int8-no-backend-named", ("serve", "--onnx", "{bare}", "--precision", "int8"), 1,
        "--precision int8: no backend here serves int8 ("),
    Row("serve-openvino-int8-never-built", ("serve", "--onnx", "{bare}", "--backend", "openvino", "--precision", "int8"),
        1, f"--backend openvino --precision int8: {{tmp}}/bare/alexnet.int8-ort.onnx not found; {BUILD_INT8}"),
    Row("repository-target-never-built", ("repository", "--onnx", "{bare}", "--output", "{tmp}/repo", "--target",
        "alexnet_openvino_int8"), 1, f"--target alexnet_openvino_int8: {{tmp}}/bare/alexnet.int8-ort.onnx not found; "
        f"{BUILD_INT8}", absent=("{tmp}/repo",)),
    Row("build-data-source-root", ("build", "--onnx", "{bare}", "--fp16", "--engines", "{tmp}/engines"), 1,
        "/ holds", resealed(data_source="/"), protect=("{bare}",), absent=("{tmp}/bare/alexnet.fp16.onnx",)),
    Row("serve-on-a-port-in-use", ("serve", "--onnx", "{onnx}", "--http-port", "{port}", "--grpc-port", "0",
        "--metrics-port", "0"), 1, "--http-port {port}: 127.0.0.1:{port} is taken", port_in_use, timeout_s=200),
    Row("resume-extending-a-finished-run-keeps-a-real-lr", RESUME, 0, "val top-1", lambda place: place["state"],
        check=resumed_lr),
    Row("resume-with-another-seed", (*RESUME, "--seed", "5"), 1, "cannot --resume {run}: the run has --seed 0, not 5",
        lambda place: place["state"], protect=("{run}", "{state}")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_adversarial_round4(case: Row, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an output named "-" would land here, never in the repository
    place = Place(world, tmp_path)
    if case.setup is not None:
        case.setup(place)
    argv = [place.format(a) for a in case.argv]
    protected = {p: _digest(Path(place.format(p))) for p in case.protect}
    try:
        outcome = _run(case, argv, tmp_path)
    finally:
        for listener in place.keep:
            listener.close()
    leftovers = [p for p in tmp_path.rglob("*") if ".adtmp-" in p.name]
    changed = [p for p, before in protected.items() if _digest(Path(place.format(p))) != before]
    present = [p for p in case.absent if Path(place.format(p)).exists()]

    assert outcome.crash is None, outcome.crash
    assert "Traceback" not in outcome.stdout + outcome.stderr, outcome.stderr
    assert outcome.exit_code == case.exit_code, outcome.stdout + outcome.stderr
    fragment = place.format(case.fragment)
    lines = outcome.stderr.strip().splitlines()
    if case.exit_code == 0:
        assert fragment in outcome.stdout, outcome.stdout
    else:  # the error line last; before it only warnings, finished progress bars, other images' errors
        assert lines and lines[-1].startswith("error: "), outcome.stderr
        assert all(line.startswith(("warning: ", "error: ")) or PROGRESS_BAR in line for line in lines[:-1]), lines
        assert any(fragment in line for line in lines if line.startswith("error: ")), outcome.stderr
    if case.stdout is not None:
        assert place.format(case.stdout) in outcome.stdout, outcome.stdout
    if case.check is not None:
        case.check(place, outcome)
    assert not changed, f"changed: {changed}"
    assert not present, f"written although the command failed: {present}"
    assert not leftovers, leftovers


def test_the_round4_catalogue_names_each_row_once():
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_bomb_is_a_bomb_to_pil():
    """The crafted PNG is what the rows say it is: a header PIL refuses as a bomb."""
    with pytest.raises(Image.DecompressionBombError), Image.open(io.BytesIO(bomb_png_bytes())):
        pass


def test_export_of_a_good_run_still_works(world, tmp_path):
    """The type checks refuse only what is wrong: the world's run exports as before."""
    export(world / "run.pt", tmp_path / "a.onnx")
    assert (tmp_path / "a.onnx").is_file()
