"""The adversarial catalogue for export, build, bench, info and doctor (issue 15): bad,
foreign and tampered ONNX files, damaged metadata, bad scale caches, bad option values,
output paths that collide with inputs or with each other, and special files.

Each case is one row: the command line, the exit code, a fragment of the message, and
the files that must come out of it byte for byte unchanged. Every case also asserts
that no traceback was printed, that an error is exactly one ``error:`` line on stderr,
and that no temporary file was left behind. The expensive artifacts (an export and its
FP16/INT8 builds from the tiny checkpoint) are made once per session; each case copies
only the files it names into its own folder, so no case can damage another's inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from alexnet_deploy.artifacts import ArtifactLayout
from alexnet_deploy.build.config import BuildConfig
from alexnet_deploy.build.run import build
from alexnet_deploy.checkpoint import load_checkpoint, save_checkpoint
from alexnet_deploy.cli import app
from alexnet_deploy.digests import read_metadata, set_metadata
from alexnet_deploy.export.run import export

cli = CliRunner()
FAST_BENCH = ["--iterations", "1", "--warmup", "0", "--max-images", "4"]


# --------------------------------------------------------------------- workspace


@pytest.fixture(scope="session")
def artifacts(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The pipeline's files once: checkpoint, FP32 export, FP16 + INT8 builds, the
    calibration folder and its entropy and percentile scale caches."""
    root = tmp_path_factory.mktemp("artifacts")
    checkpoint = root / "alexnet.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    onnx_path = root / "alexnet.onnx"
    export(checkpoint, onnx_path)
    calibration = root / "calibration"
    for method in ("entropy", "percentile"):
        build(BuildConfig(onnx=onnx_path, precisions=("fp16", "int8") if method == "entropy" else ("int8",),
                          calibration_dir=calibration, calib_from_data=method == "entropy", calib_method=method,
                          calib_images=16))  # fmt: skip
    build(BuildConfig(onnx=onnx_path, precisions=("int8",), calibration_dir=calibration, calib_images=16))
    return {
        "ckpt": checkpoint,
        "onnx": onnx_path,
        "fp16": root / "alexnet.fp16.onnx",
        "int8": root / "alexnet.int8.onnx",
        "int8-ort": root / "alexnet.int8-ort.onnx",
        "calibration": calibration,
    }


class CaseFiles(dict):
    """Placeholder -> path in the case's own folder, copied from the session's
    artifacts on first use. ``{export}`` is the folder holding the case's ONNX files."""

    def __init__(self, artifacts: dict[str, Path], root: Path) -> None:
        super().__init__()
        self.artifacts, self.root = artifacts, root
        (root / "export").mkdir()

    def __missing__(self, key: str) -> str:
        sources = {"onnx": "export/alexnet.onnx", "fp16": "export/alexnet.fp16.onnx", "int8": "export/alexnet.int8.onnx",
                   "int8-ort": "export/alexnet.int8-ort.onnx", "ckpt": "alexnet.pt", "calibration": "calibration"}  # fmt: skip
        if key == "dir":
            value = self.root
        elif key == "export":
            value = self.root / "export"
            self["onnx"]  # the folder always holds the FP32 reference
        elif key in sources:
            value = self.root / sources[key]
            source = self.artifacts[key]
            if source.is_dir():
                shutil.copytree(source, value)
            else:
                shutil.copy(source, value)
        else:
            raise KeyError(key)
        self[key] = str(value)
        return str(value)

    def path(self, key: str) -> Path:
        return Path(self[key])


# ---------------------------------------------------------------- how to damage


def edit_onnx(key: str, edit: Callable[[onnx.ModelProto], None]) -> Callable[[CaseFiles], None]:
    def setup(files: CaseFiles) -> None:
        path = files.path(key)
        model = onnx.load(str(path))
        edit(model)
        onnx.save(model, str(path))

    return setup


def set_meta(key: str, **values: object) -> Callable[[CaseFiles], None]:
    return edit_onnx(key, lambda model: set_metadata(model, values))


def drop_meta(key: str, name: str) -> Callable[[CaseFiles], None]:
    def edit(model: onnx.ModelProto) -> None:
        kept = [(p.key, p.value) for p in model.metadata_props if p.key != name]
        del model.metadata_props[:]
        for k, v in kept:
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v

    return edit_onnx(key, edit)


def meta_with(key: str, name: str, **changes: object) -> Callable[[CaseFiles], None]:
    """Change fields inside one JSON metadata entry (preprocessing, split)."""

    def edit(model: onnx.ModelProto) -> None:
        set_metadata(model, {name: json.loads(read_metadata(model)[name]) | changes})

    return edit_onnx(key, edit)


def flip_conv1(key: str) -> Callable[[CaseFiles], None]:
    """4 KiB of conv1's weights bit-flipped, metadata (and its digest) untouched."""

    def edit(model: onnx.ModelProto) -> None:
        tensor = next(t for t in model.graph.initializer if t.dims and len(t.dims) == 4)
        array = numpy_helper.to_array(tensor).copy()
        raw = array.view(np.uint8).reshape(-1)
        raw[:4096] ^= 0x55
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))

    return edit_onnx(key, edit)


def write(name: str, content: bytes) -> Callable[[CaseFiles], None]:
    def setup(files: CaseFiles) -> None:
        path = files.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    return setup


def symlink(name: str, target_key: str) -> Callable[[CaseFiles], None]:
    return lambda files: (files.root / name).symlink_to(files.path(target_key))


def hardlink(name: str, target_key: str) -> Callable[[CaseFiles], None]:
    return lambda files: os.link(files.path(target_key), files.root / name)


def foreign_onnx(name: str) -> Callable[[CaseFiles], None]:
    def setup(files: CaseFiles) -> None:
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        )  # fmt: skip
        onnx.save(helper.make_model(graph), str(files.root / name))

    return setup


def edit_checkpoint(change: Callable) -> Callable[[CaseFiles], None]:
    def setup(files: CaseFiles) -> None:
        path = files.path("ckpt")
        checkpoint = load_checkpoint(path)
        change(checkpoint)
        save_checkpoint(checkpoint, path)

    return setup


def nan_weights(checkpoint) -> None:
    checkpoint.state_dict = {k: torch.full_like(v, float("nan")) for k, v in checkpoint.state_dict.items()}


def ansi_classes(checkpoint) -> None:
    checkpoint.classes = ["\x1b[31mred\x1b[0m", *checkpoint.classes[1:]]


def edit_cache(method: str, change: Callable[[dict], None]) -> Callable[[CaseFiles], None]:
    def setup(files: CaseFiles) -> None:
        path = ArtifactLayout(calibration_dir=files.path("calibration")).scales(method)
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return setup


def first_amax(value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        next(iter(data["tensors"].values()))["amax"] = value

    return change


def fifo(name: str) -> Callable[[CaseFiles], None]:
    def setup(files: CaseFiles) -> None:
        files.path("calibration")
        os.mkfifo(files.root / name)

    return setup


def all_of(*setups: Callable[[CaseFiles], None]) -> Callable[[CaseFiles], None]:
    def setup(files: CaseFiles) -> None:
        for step in setups:
            step(files)

    return setup


# ------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    argv: list[str]
    exit_code: int
    fragment: str  # in the error line (exit != 0) or in stdout (exit 0)
    unchanged: list[str] = field(default_factory=list)  # placeholders whose files must not change
    setup: Callable[[CaseFiles], None] | None = None
    check: Callable[[CaseFiles], None] | None = None  # extra assertions after a run


def build_args(*extra: str) -> list[str]:
    return ["build", "--onnx", "{onnx}", "--calibration", "{dir}/calibration", "--engines", "{dir}/engines", *extra]


def bench_args(*extra: str) -> list[str]:
    return ["bench", "--onnx", "{export}/alexnet.onnx", "--checkpoint", "{ckpt}", "--engines", "{dir}/engines",
            "--backends", "onnxruntime", *FAST_BENCH, *extra]  # fmt: skip


def export_args(*extra: str) -> list[str]:
    return ["export", "--checkpoint", "{ckpt}", *extra]


def still_char_device(path: str) -> Callable[[CaseFiles], None]:
    def check(files: CaseFiles) -> None:
        assert stat.S_ISCHR(os.stat(path).st_mode)

    return check


def link_kept(name: str, target: str) -> Callable[[CaseFiles], None]:
    """The symlink is still a link to the same target, which now holds the JSON."""

    def check(files: CaseFiles) -> None:
        link = files.root / name
        assert link.is_symlink() and Path(os.readlink(link)) == files.root / target
        assert json.loads((files.root / target).read_text()) != {}

    return check


def recalibrated_int8_is_finite(files: CaseFiles) -> None:
    from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner

    rng = np.random.default_rng(0)
    with OnnxRuntimeRunner(onnx.load(str(files.path("onnx").with_suffix(".int8.onnx"))), "int8") as runner:
        assert np.isfinite(runner.infer(rng.standard_normal((2, 3, 227, 227), dtype=np.float32))).all()


def int8_from_cache(files: CaseFiles) -> None:
    """Setup for cases that reuse a cache: the calibration folder and its caches."""
    files.path("calibration")


CASES = [
    # ---- export: outputs that are inputs, special and unwritable paths
    Case("export-output-is-checkpoint", export_args("--output", "{ckpt}"), 1, "is the same file as --checkpoint", ["ckpt"]),
    Case("export-output-symlink-to-checkpoint", export_args("--output", "{dir}/link.onnx"), 1,
         "is the same file as --checkpoint", ["ckpt"], symlink("link.onnx", "ckpt")),
    Case("export-output-hardlink-to-checkpoint", export_args("--output", "{dir}/hard.onnx"), 1,
         "is the same file as --checkpoint", ["ckpt"], hardlink("hard.onnx", "ckpt")),
    Case("export-nan-checkpoint", export_args("--output", "{onnx}"), 1, "NaN",
         ["onnx", "ckpt"], edit_checkpoint(nan_weights)),
    Case("export-output-in-proc", export_args("--output", "/proc/x.onnx"), 1, "/proc/x.onnx", ["ckpt"]),
    Case("export-output-is-directory", export_args("--output", "{dir}"), 1, "is a directory", ["ckpt"]),
    Case("export-output-missing-dir", export_args("--output", "{dir}/no/a.onnx"), 1, "does not exist", ["ckpt"]),
    Case("export-checkpoint-missing", ["export", "--checkpoint", "{dir}/none.pt", "--output", "{dir}/a.onnx"], 1, "not found"),
    Case("export-checkpoint-is-directory", ["export", "--checkpoint", "{dir}", "--output", "{dir}/a.onnx"], 1, "is a directory, not a file"),
    Case("export-checkpoint-is-onnx", ["export", "--checkpoint", "{onnx}", "--output", "{dir}/a.onnx"], 1,
         "is not an alexnet-deploy checkpoint", ["onnx"]),
    Case("export-checkpoint-empty", ["export", "--checkpoint", "{dir}/e.pt", "--output", "{dir}/a.onnx"], 1,
         "is not an alexnet-deploy checkpoint", [], write("e.pt", b"")),
    Case("export-checkpoint-dev-null", ["export", "--checkpoint", "/dev/null", "--output", "{dir}/a.onnx"], 1, "is not a regular file"),
    Case("export-opset-99", export_args("--output", "{dir}/a.onnx", "--opset", "99"), 1, "needs opset 18 to 23", ["ckpt"]),
    Case("export-lrn-bogus", export_args("--output", "{dir}/a.onnx", "--lrn", "bogus"), 2, "'bogus' is not one of 'plugin', 'native'", ["ckpt"]),
    Case("export-output-dev-full", export_args("--output", "/dev/full"), 1, "cannot write /dev/full: No space left on device",
         ["ckpt"], None, still_char_device("/dev/full")),
    # ---- build: inputs that are not our FP32 export
    Case("build-onnx-is-int8", build_args("--onnx", "{int8}"), 1, "is a int8 (Q/DQ) model", ["int8"]),
    Case("build-onnx-is-fp16", build_args("--onnx", "{fp16}"), 1, "is a fp16 model", ["fp16"]),
    Case("build-conv1-tampered", build_args("--fp16"), 1, "do not match the digest", ["onnx"], flip_conv1("onnx")),
    Case("build-digest-removed", build_args("--fp16"), 1, "has no weights digest", ["onnx"], drop_meta("onnx", "weights_sha256")),
    Case("build-digest-wrong", build_args("--fp16"), 1, "do not match the digest", ["onnx"],
         set_meta("onnx", weights_sha256="0" * 64)),
    Case("build-preprocessing-not-json", build_args("--fp16"), 1, "metadata 'preprocessing' is not a JSON object",
         ["onnx"], set_meta("onnx", preprocessing="resize=256;crop=227")),
    Case("build-preprocessing-resize-0", build_args("--fp16"), 1, "metadata 'preprocessing' is invalid", ["onnx"],
         meta_with("onnx", "preprocessing", resize=0)),
    Case("build-preprocessing-crop-1000", build_args("--fp16"), 1, "metadata 'preprocessing' is invalid", ["onnx"],
         meta_with("onnx", "preprocessing", crop=1000)),
    Case("build-preprocessing-crop-not-input", build_args("--fp16"), 1, "crops 200 px but the model takes 227", ["onnx"],
         meta_with("onnx", "preprocessing", crop=200)),
    Case("build-preprocessing-std-0", build_args("--fp16"), 1, "metadata 'preprocessing' is invalid", ["onnx"],
         meta_with("onnx", "preprocessing", std=[0, 1, 1])),
    Case("build-preprocessing-mean-text", build_args("--fp16"), 1, "metadata 'preprocessing' is invalid",
         ["onnx"], meta_with("onnx", "preprocessing", mean=["a", "b", "c"])),
    Case("build-preprocessing-missing-key", build_args("--fp16"), 1, "metadata 'preprocessing' is invalid", ["onnx"],
         set_meta("onnx", preprocessing={"resize": 256})),
    Case("build-split-fraction-2", build_args("--fp16"), 1, "metadata 'split' is invalid", ["onnx"],
         meta_with("onnx", "split", val_fraction=2)),
    Case("build-split-fractions-sum-1", build_args("--fp16"), 1, "metadata 'split' is invalid", ["onnx"],
         meta_with("onnx", "split", val_fraction=0.5, calibration_fraction=0.5)),
    Case("build-split-unknown-field", build_args("--fp16"), 1, "metadata 'split' is invalid", ["onnx"],
         meta_with("onnx", "split", shards=3)),
    Case("build-split-seed-negative", build_args("--fp16"), 1, "metadata 'split' is invalid", ["onnx"],
         meta_with("onnx", "split", seed=-1)),
    Case("build-split-not-json", build_args("--fp16"), 1, "metadata 'split' is not a JSON object", ["onnx"],
         set_meta("onnx", split="[0.15")),
    Case("build-classes-not-list", build_args("--fp16"), 1, "'classes' is not a list", ["onnx"],
         set_meta("onnx", classes="digits")),
    Case("build-classes-count-mismatch", build_args("--fp16"), 1, "names 3 classes but the model outputs 10", ["onnx"],
         set_meta("onnx", classes=["a", "b", "c"])),
    Case("build-data-source-missing", build_args("--fp16"), 1, "has no 'data_source' metadata", ["onnx"],
         drop_meta("onnx", "data_source")),
    Case("build-precision-fp64", build_args("--fp16"), 1, "is a fp64 model", ["onnx"], set_meta("onnx", precision="fp64")),
    Case("build-foreign-onnx", build_args("--onnx", "{dir}/relu.onnx"), 1, "expected one input 'images'", [],
         foreign_onnx("relu.onnx")),
    Case("build-random-bytes", build_args("--onnx", "{dir}/r.onnx"), 1, "is not an ONNX model", [],
         write("r.onnx", bytes(range(256)) * 64)),
    Case("build-empty-onnx", build_args("--onnx", "{dir}/e.onnx"), 1, "expected one input 'images'", [], write("e.onnx", b"")),
    Case("build-onnx-missing", build_args("--onnx", "{dir}/none.onnx"), 1, "not found"),
    Case("build-onnx-is-directory", build_args("--onnx", "{dir}"), 1, "is a directory, not a file"),
    # ---- build: outputs
    Case("build-json-is-onnx", build_args("--fp16", "--json", "{onnx}"), 1, "is the same file as --onnx", ["onnx"]),
    Case("build-json-is-int8-output", build_args("--int8", "--json", "{dir}/export/alexnet.int8.onnx"), 1,
         "are the same file", ["onnx"]),
    Case("build-json-is-scale-cache", build_args("--int8", "--json", "{dir}/calibration/scales.entropy.json"), 1,
         "are the same file", ["onnx"]),
    Case("build-fp16-output-is-directory", build_args("--fp16"), 1, "is a directory", ["onnx"],
         lambda files: files.path("export").joinpath("alexnet.fp16.onnx").mkdir()),
    Case("build-json-missing-dir", build_args("--fp16", "--json", "{dir}/no/r.json"), 1, "does not exist", ["onnx"]),
    Case("build-json-dev-null", build_args("--fp32", "--json", "/dev/null"), 0, "accuracy on", ["onnx"], None,
         still_char_device("/dev/null")),
    Case("build-json-symlink", build_args("--fp32", "--json", "{dir}/link.json"), 0, "accuracy on", ["onnx"],
         all_of(write("real.json", b"{}"), lambda files: (files.root / "link.json").symlink_to(files.root / "real.json")),
         link_kept("link.json", "real.json")),
    Case("build-json-in-proc", build_args("--fp32", "--json", "/proc/r.json"), 1, "/proc/r.json", ["onnx"]),
    # ---- build: option values
    Case("build-workspace-negative", build_args("--workspace-gib", "-1"), 1, "--workspace-gib must be a positive", ["onnx"]),
    Case("build-workspace-nan", build_args("--workspace-gib", "nan"), 1, "--workspace-gib must be a positive", ["onnx"]),
    Case("build-workspace-inf", build_args("--workspace-gib", "inf"), 1, "--workspace-gib must be a positive", ["onnx"]),
    Case("build-percentile-0", build_args("--percentile", "0"), 1, "--percentile must be in (0, 100]", ["onnx"]),
    Case("build-percentile-nan", build_args("--percentile", "nan"), 1, "--percentile must be in (0, 100]", ["onnx"]),
    Case("build-percentile-101", build_args("--percentile", "101"), 1, "--percentile must be in (0, 100]", ["onnx"]),
    Case("build-calib-method-bogus", build_args("--calib-method", "median"), 2, "'median' is not one of 'max', 'percentile', 'entropy'", ["onnx"]),
    Case("build-opt-batch-0", build_args("--opt-batch", "0"), 1, "need 1 <= --opt-batch", ["onnx"]),
    Case("build-opt-above-max", build_args("--opt-batch", "300"), 1, "need 1 <= --opt-batch (300) <= --max-batch", ["onnx"]),
    Case("build-precision-flag-bogus", build_args("--fp8"), 2, "--fp8", ["onnx"]),
    # ---- build: calibration folders
    Case("build-calibration-is-file", [*build_args("--int8"), "--calibration", "{dir}/c.txt"], 1, "is a file, not a folder",
         ["onnx"], write("c.txt", b"x")),
    Case("build-calib-from-data-into-file", [*build_args("--int8", "--calib-from-data"), "--calibration", "{dir}/c.txt"], 1,
         "is a file, not a folder", ["onnx"], write("c.txt", b"x")),
    Case("build-calib-from-data-into-other-images", build_args("--int8", "--calib-from-data"), 1,
         "already holds 1 other images", ["onnx"], write("calibration/mine.png", b"not even an image")),
    Case("build-calibration-missing", build_args("--int8"), 1, "does not exist", ["onnx"]),
    Case("build-calibration-empty", build_args("--int8"), 1, "has no images", ["onnx"],
         lambda files: (files.root / "calibration").mkdir()),
    Case("build-calib-images-0", [*build_args("--int8", "--calib-images", "0")], 1, "--calib-images must be positive",
         ["onnx"], int8_from_cache),
    Case("build-calib-images-too-many", [*build_args("--int8", "--calib-images", "100000")], 1,
         "fewer than the 100000 asked for", ["onnx"], int8_from_cache),
    Case("build-calibration-corrupt-image", build_args("--int8"), 1, "cannot read calibration image", ["onnx"],
         write("calibration/broken.png", b"\x89PNG\r\n\x1a\n truncated")),
    Case("build-calibration-fifo-skipped", [*build_args("--int8", "--calib-images", "16")], 0,
         "reused calibration cache", ["onnx"], fifo("calibration/x.png")),
    # ---- build: scale caches (invalid = stale: recalibrate, never crash or trust)
    Case("build-cache-amax-text", [*build_args("--int8", "--calib-images", "16")], 0, "recalibrating", ["onnx"],
         all_of(int8_from_cache, edit_cache("entropy", first_amax("abc"))), recalibrated_int8_is_finite),
    Case("build-cache-amax-nan", [*build_args("--int8", "--calib-images", "16")], 0, "recalibrating", ["onnx"],
         all_of(int8_from_cache, edit_cache("entropy", first_amax(float("nan")))), recalibrated_int8_is_finite),
    Case("build-cache-amax-negative", [*build_args("--int8", "--calib-images", "16")], 0, "recalibrating", ["onnx"],
         all_of(int8_from_cache, edit_cache("entropy", first_amax(-1.0)))),
    Case("build-cache-tensor-missing", [*build_args("--int8", "--calib-images", "16")], 0, "recalibrating", ["onnx"],
         all_of(int8_from_cache, edit_cache("entropy", lambda d: d["tensors"].popitem()))),
    Case("build-cache-not-json", [*build_args("--int8", "--calib-images", "16")], 0, "recalibrating", ["onnx"],
         all_of(int8_from_cache, lambda files: ArtifactLayout(calibration_dir=files.path("calibration")).scales("entropy").write_text("{not json"))),
    Case("build-cache-other-percentile", [*build_args("--int8", "--calib-images", "16", "--calib-method", "percentile",
                                                       "--percentile", "10")], 0,
         "from another model, image set, percentile or calibration rule: recalibrating", ["onnx"], int8_from_cache),
    # ---- bench: option values that would hang or exhaust memory
    Case("bench-duration-inf", [*bench_args(), "--iterations", "1", "--duration", "inf"], 1, "give --iterations or --duration"),
    Case("bench-duration-only-inf", ["bench", "--onnx", "{export}/alexnet.onnx", "--duration", "inf"], 1,
         "--duration must be positive seconds, at most 3600"),
    Case("bench-duration-nan", ["bench", "--onnx", "{export}/alexnet.onnx", "--duration", "nan"], 1, "--duration must be positive"),
    Case("bench-duration-huge", ["bench", "--onnx", "{export}/alexnet.onnx", "--duration", "1e9"], 1, "at most 3600"),
    Case("bench-duration-negative", ["bench", "--onnx", "{export}/alexnet.onnx", "--duration", "-1"], 1, "--duration must be positive"),
    Case("bench-iterations-huge", ["bench", "--onnx", "{export}/alexnet.onnx", "--iterations", "10000000000"], 1,
         "--iterations must be at least 1 and at most"),
    Case("bench-batch-100000", bench_args("--batch", "100000"), 1, "--batch 100000 needs about", ["onnx"]),
    Case("bench-max-images-0", bench_args("--max-images", "0"), 1, "--max-images must be at least 1"),
    Case("bench-backends-empty", [*bench_args(), "--backends", ","], 1, "--backends is empty"),
    Case("bench-precisions-twice", bench_args("--precisions", "fp32,fp32"), 1, "lists a value twice"),
    # ---- bench: outputs that collide or name the wrong format
    Case("bench-json-equals-plot", bench_args("--json", "{dir}/r.png", "--plot", "{dir}/r.png"), 1,
         "--json and --plot are the same file"),
    Case("bench-json-is-checkpoint", bench_args("--json", "{ckpt}"), 1, "is the same file as --checkpoint", ["ckpt"]),
    Case("bench-json-is-reference", bench_args("--json", "{onnx}"), 1, "is the same file as --onnx", ["onnx"]),
    Case("bench-plot-is-int8-symlink", bench_args("--plot", "{dir}/p.png"), 1, "is the same file as the int8 ONNX",
         ["int8"], symlink("p.png", "int8")),
    Case("bench-plot-txt", bench_args("--plot", "{dir}/p.txt"), 1, "give a path ending in .png"),
    Case("bench-json-beside-plot-jpg", bench_args("--json", "{dir}/r.json", "--plot", "{dir}/r.jpg"), 1, ".png"),
    Case("bench-json-dev-null", bench_args("--precisions", "fp32", "--json", "/dev/null", "--plot", "{dir}/p.png"), 0,
         "wrote /dev/null", ["onnx", "ckpt"], None, still_char_device("/dev/null")),
    Case("bench-json-symlink", bench_args("--precisions", "fp32", "--json", "{dir}/link.json", "--plot", "{dir}/p.png"), 0,
         "wrote", ["onnx", "ckpt"], all_of(write("real.json", b"{}"), lambda f: (f.root / "link.json").symlink_to(f.root / "real.json")),
         link_kept("link.json", "real.json")),
    Case("bench-json-in-proc", bench_args("--precisions", "fp32", "--json", "/proc/r.json", "--plot", "{dir}/p.png"), 1,
         "/proc/r.json", ["onnx"]),
    # ---- bench: tampered and mislabelled ONNX
    Case("bench-reference-conv1-tampered", bench_args(), 1, "do not match the digest", ["onnx"], flip_conv1("onnx")),
    Case("bench-int8-conv1-tampered", bench_args("--precisions", "fp32,int8"), 1, "do not match the digest", ["int8-ort", "int8"],
         flip_conv1("int8")),  # the int8-sim row runs the TensorRT graph
    Case("bench-int8-ort-conv1-tampered", bench_args("--precisions", "fp32,int8"), 1, "do not match the digest",
         ["int8", "int8-ort"], flip_conv1("int8-ort")),
    Case("bench-fp16-conv1-tampered", bench_args("--precisions", "fp16"), 1, "do not match the digest", ["fp16"],
         flip_conv1("fp16")),
    Case("bench-fp16-slot-holds-int8", bench_args("--precisions", "fp16"), 1, "holds a int8 model, expected fp16", [],
         lambda files: shutil.copy(files.path("int8"), files.path("export") / "alexnet.fp16.onnx")),
    Case("bench-reference-is-fp16", bench_args(), 1, "is not the FP32 export", [],
         lambda files: shutil.copy(files.path("fp16"), files.path("export") / "alexnet.onnx")),
    Case("bench-reference-no-digest", bench_args(), 1, "has no weights digest", ["onnx"], drop_meta("onnx", "weights_sha256")),
    Case("bench-reference-split-text", bench_args(), 1, "metadata 'split' is not a JSON object", ["onnx"],
         set_meta("onnx", split="val 0.15")),
    Case("bench-reference-resize-0", bench_args(), 1, "metadata 'preprocessing' is invalid", ["onnx"], meta_with("onnx", "preprocessing", resize=0)),
    Case("bench-reference-foreign", bench_args(), 1, "expected one input 'images'", [],
         all_of(lambda files: files.path("export"), foreign_onnx("export/alexnet.onnx"))),
    Case("bench-other-checkpoint", [*bench_args(), "--backends", "torch"], 1, "is not the checkpoint", ["onnx", "ckpt"],
         all_of(lambda files: files.path("onnx"), edit_checkpoint(lambda c: c.metrics.update(edited=1)))),
    # ---- info
    Case("info-classes-1e9", ["info", "--classes", "1000000000"], 1, "--classes must be in [2, 100,000]"),
    Case("info-classes-1", ["info", "--classes", "1"], 1, "--classes must be in [2,"),
    Case("info-groups-3", ["info", "--groups", "3"], 1, "--groups must be 1 or 2"),
    Case("info-filters-jpg", ["info", "--filters", "{dir}/f.jpg"], 1, "--filters {dir}/f.jpg: pictures are written as PNG"),
    Case("info-filters-directory", ["info", "--filters", "{dir}/d.png"], 1, "is a directory", [],
         lambda files: (files.root / "d.png").mkdir()),
    Case("info-json-is-checkpoint", ["info", "--checkpoint", "{ckpt}", "--json", "{ckpt}"], 1,
         "is the same file as --checkpoint", ["ckpt"]),
    Case("info-json-equals-filters", ["info", "--json", "{dir}/x.png", "--filters", "{dir}/x.png"], 1,
         "--json and --filters are the same file"),
    Case("info-json-in-proc", ["info", "--json", "/proc/info.json"], 1, "/proc/info.json"),
    Case("info-ansi-class-names", ["info", "--checkpoint", "{ckpt}"], 0, "\\x1b[31mred\\x1b[0m", ["ckpt"],
         edit_checkpoint(ansi_classes)),
    Case("info-checkpoint-is-onnx", ["info", "--checkpoint", "{onnx}"], 1, "is not an alexnet-deploy checkpoint", ["onnx"]),
    # ---- doctor
    Case("doctor-json", ["doctor", "--json"], 0, '"versions"'),
    Case("doctor-unknown-option", ["doctor", "--bogus"], 2, "--bogus"),
]  # fmt: skip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_adversarial_case(case: Case, artifacts, tmp_path):
    files = CaseFiles(artifacts, tmp_path)
    if case.setup is not None:
        case.setup(files)
    argv = [a.format_map(files) for a in case.argv]
    protected = {key: digest(files.path(key)) for key in case.unchanged}

    result = cli.invoke(app, argv)

    assert "Traceback" not in result.output, result.output
    assert "\x1b" not in result.output, "a control character reached the terminal"
    assert result.exit_code == case.exit_code, result.output
    fragment = case.fragment.format_map(files)
    if case.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert fragment in lines[0], lines[0]
    else:
        assert fragment in result.output, result.output
    for key, before in protected.items():
        assert digest(files.path(key)) == before, f"{key} was changed"
    leftovers = [p for p in tmp_path.rglob("*") if ".adtmp-" in p.name]
    assert not leftovers, leftovers
    if case.check is not None:
        case.check(files)


def test_the_catalogue_is_large_and_names_each_case_once():
    assert len(CASES) >= 75
    assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------- faults the table cannot stage


def test_a_quantized_model_that_fails_evaluation_never_replaces_the_good_one(artifacts, tmp_path, monkeypatch):
    """NaN scales (a bug, or a cache that slipped through) give NaN logits: the build
    refuses before saving, and the INT8 ONNX already there is untouched."""
    from alexnet_deploy.build import run as build_module

    files = CaseFiles(artifacts, tmp_path)
    files.path("calibration")
    good = files.path("export") / "alexnet.int8.onnx"
    shutil.copy(artifacts["int8"], good)
    before = digest(good)
    real_mixed_int8 = build_module.mixed_int8
    monkeypatch.setattr(
        build_module,
        "mixed_int8",
        lambda model, amax, *args: real_mixed_int8(model, dict.fromkeys(amax, float("nan")), *args),
    )
    result = cli.invoke(app, [a.format_map(files) for a in build_args("--int8", "--calib-images", "16")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "int8 (entropy) model outputs non-finite logits" in result.stderr and "not written" in result.stderr
    assert digest(good) == before


def test_calib_from_data_may_refill_the_folder_it_filled(artifacts, tmp_path):
    from alexnet_deploy.metadata import export_metadata
    from alexnet_deploy.quantize.images import fill_calibration_dir

    metadata = export_metadata(onnx.load(str(artifacts["onnx"])), "export")
    first = fill_calibration_dir(tmp_path / "cal", metadata.data_source, metadata.split)
    assert fill_calibration_dir(tmp_path / "cal", metadata.data_source, metadata.split) == first


def test_export_validation_fails_on_non_finite_torch_logits(artifacts):
    """Whatever lets a NaN model through to validation (the checkpoint checks are
    one guard, this is the next): NaN logits never count as a match."""
    from alexnet_deploy.errors import DeployError
    from alexnet_deploy.export.run import validate

    model = load_checkpoint(artifacts["ckpt"]).build_model()
    with torch.no_grad():
        model.classifier[-1].bias.fill_(float("nan"))
    images = np.random.default_rng(0).standard_normal((2, 3, 227, 227), dtype=np.float32)
    with pytest.raises(DeployError, match="non-finite logits"):
        validate(model, onnx.load(str(artifacts["onnx"])), images, "random inputs")


def test_metric_comparisons_treat_nan_as_failure():
    from alexnet_deploy.bench.run import parity_warnings
    from alexnet_deploy.metrics import FP32_TOLERANCE

    finite = np.zeros((2, 10), np.float32)
    assert parity_warnings("fp32", "cpu", 0.0, finite) == []
    assert "exceeds" in parity_warnings("fp32", "cpu", float("nan"), finite)[0]
    assert "exceeds" in parity_warnings("fp32", "cpu", FP32_TOLERANCE * 10, finite)[0]
    assert parity_warnings("int8", "cpu", 0.5, finite) == []
    assert "non-finite" in parity_warnings("int8", "cpu", 0.0, np.full((2, 10), np.nan, np.float32))[0]


def test_a_batch_larger_than_memory_is_refused_with_the_size_that_fits():
    from alexnet_deploy.bench.inputs import MEMORY_PER_INPUT_BYTES, check_memory
    from alexnet_deploy.errors import DeployError

    per_image = MEMORY_PER_INPUT_BYTES * 3 * 227 * 227 * 4
    check_memory((256,), 227, 256 * per_image)
    check_memory((100_000,), 227, None)  # unknown memory: no bound
    with pytest.raises(DeployError, match=r"--batch 257 needs about .* use --batch 256 or less"):
        check_memory((8, 257), 227, 256 * per_image)
