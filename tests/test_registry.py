"""The backend registry is the one place that knows backends: every command asks it,
no module outside ``runners/`` and ``tensorrt/`` imports a concrete runner, the CLI's
backend choices match its table, and its answers (which file serves a precision, what
is missing and how to build it, which backend is picked by default) are the ones the
commands act on."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from alexnet_deploy.choices import BenchBackend, PredictBackend, ServedBackend
from alexnet_deploy.errors import BackendUnavailable, DeployError
from alexnet_deploy.runners import registry
from alexnet_deploy.runners.registry import BACKENDS, ArtifactMissing, ModelFiles

PACKAGE = Path(__file__).resolve().parents[1] / "alexnet_deploy"
CONCRETE_RUNNERS = {f"alexnet_deploy.runners.{name}" for name in ("onnxruntime", "openvino", "torch")} | {
    "alexnet_deploy.tensorrt.runner"
}


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> set[str]:
    """Absolute names of the modules ``path`` (under ``root``) imports, relative imports resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PACKAGE.rglob("*.py")) if p.parent.name not in ("runners", "tensorrt")],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_runners_and_tensorrt_import_a_concrete_runner(path):
    assert imported_modules(path) & CONCRETE_RUNNERS == set()


def test_the_check_sees_a_concrete_runner_import(tmp_path):
    """The rule above can fail: a bench module importing the onnxruntime runner is caught."""
    offender = tmp_path / "alexnet_deploy" / "bench" / "x.py"
    offender.parent.mkdir(parents=True)
    offender.write_text("from ..runners.onnxruntime import OnnxRuntimeRunner\n")
    assert imported_modules(offender, tmp_path) & CONCRETE_RUNNERS == {"alexnet_deploy.runners.onnxruntime"}


def test_cli_backend_choices_match_the_table():
    assert BenchBackend.values() == tuple(BACKENDS)
    assert set(PredictBackend.values()) == {name for name in BACKENDS if name != "torch-compile"}
    assert set(ServedBackend.values()) == {name for name, entry in BACKENDS.items() if entry.served}


def test_each_precision_is_served_by_the_file_the_table_names(tmp_path):
    files = ModelFiles(tmp_path / "m.onnx", tmp_path / "engines", tmp_path / "m.pt")
    where = {
        (name, precision): BACKENDS[name].artifact(files, precision).path.name
        for name, entry in BACKENDS.items()
        for precision in entry.precisions
    }
    assert where[("onnxruntime", "fp32")] == where[("openvino", "bf16")] == "m.onnx"
    assert where[("onnxruntime", "int8")] == where[("openvino", "int8")] == "m.int8-ort.onnx"
    assert where[("onnxruntime", "int8-sim")] == where[("openvino", "int8-qdq")] == "m.int8.onnx"
    assert where[("openvino", "fp16")] == "m.fp16.onnx"
    assert where[("tensorrt", "int8")] == "m.int8.plan"
    assert where[("torch", "bf16")] == where[("torch-compile", "fp32")] == "m.pt"


def test_missing_files_name_the_command_that_writes_them(tmp_path):
    files = ModelFiles(tmp_path / "m.onnx", tmp_path)
    with pytest.raises(ArtifactMissing, match=r"m\.int8-ort\.onnx not found; run `alexnet-deploy build --int8`"):
        registry.open_runner("openvino", "int8", files)
    with pytest.raises(ArtifactMissing, match=r"m\.onnx not found; run `alexnet-deploy export`"):
        registry.open_runner("onnxruntime", "fp32", files)
    with pytest.raises(BackendUnavailable, match="runs fp32, fp16, bf16, not int8"):
        registry.open_runner("torch", "int8", files)
    with pytest.raises(DeployError, match="unknown backend 'tflite'; choose from tensorrt, onnxruntime"):
        registry.open_runner("tflite", "fp32", files)


def test_the_default_backend_is_the_fastest_that_has_the_file(tmp_path, monkeypatch):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    files = ModelFiles(onnx_file, tmp_path)
    assert registry.fastest_backend("fp32", files) == "openvino"
    assert registry.fastest_backend("int8", files) == "onnxruntime"  # no INT8 file: onnxruntime names it
    (tmp_path / "m.int8-ort.onnx").write_bytes(b"")
    assert registry.fastest_backend("int8", files) == "openvino"
    assert registry.fastest_backend("fp16", files, served=True) == "onnxruntime"  # OpenVINO serves fp32, int8
    (tmp_path / "m.fp32.plan").write_bytes(b"")
    monkeypatch.setitem(BACKENDS, "tensorrt", replace(BACKENDS["tensorrt"], unavailable_reason=lambda: None))
    assert registry.fastest_backend("fp32", files) == "tensorrt"


def test_onnxruntime_runs_the_window_sum_lrn_only_in_its_int8_speed_row(tiny_precisions):
    """The INT8 row runs its LRN as a banded MatMul (2.8x faster, docs/bench.md) and
    gives the kernel's answers, float rounding apart; the reference and the TensorRT
    graph's simulated parity row keep onnxruntime's LRN kernel, the independent
    implementation the plugin is judged against."""
    import numpy as np

    from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner

    fp32, _ = tiny_precisions
    files = ModelFiles(fp32, fp32.parent / "engines")
    images = np.random.default_rng(0).standard_normal((4, 3, 227, 227)).astype(np.float32)
    with registry.open_runner("onnxruntime", "int8", files) as fast:
        assert fast.lrn == "window-sum" and any("MatMul" in note for note in fast.notes)
        fast_logits = fast.infer(images)
    with OnnxRuntimeRunner(fast.model, "int8") as kernel:
        kernel_logits = kernel.infer(images)
    assert (fast_logits.argmax(1) == kernel_logits.argmax(1)).all()
    assert np.abs(fast_logits - kernel_logits).max() <= 0.05 * np.abs(kernel_logits).max()
    assert registry.open_runner("onnxruntime", "int8-sim", files).lrn == "kernel"
    assert registry.reference_runner(fp32).lrn == "kernel"
