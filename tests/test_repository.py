"""`repository`: a Triton model repository whose every config parses with Triton's own
ModelConfig protobuf, whose ensemble is wired consistently, whose labels are the
checkpoint's classes and whose ONNX twin runs in onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb
from typer.testing import CliRunner

from alexnet_deploy.artifacts import ArtifactLayout, sidecar_of
from alexnet_deploy.checkpoint import load_checkpoint
from alexnet_deploy.cli import app
from alexnet_deploy.serve.config import RepositoryConfig
from alexnet_deploy.serve.repository import write_repository
from alexnet_deploy.tensorrt.sidecar import BatchProfile, EngineSidecar


def fake_engine(engines: Path, precision: str, max_batch: int) -> None:
    """A plan file and the sidecar `build` writes beside it (the repository only copies
    the plan and reads the profile; no TensorRT needed)."""
    engines.mkdir(exist_ok=True)
    plan = ArtifactLayout(engines_dir=engines).plan(precision)
    plan.write_bytes(b"plan bytes")
    profile = BatchProfile("images", [1, 3, 227, 227], [8, 3, 227, 227], [max_batch, 3, 227, 227])
    sidecar = EngineSidecar(
        str(plan), precision, "10.16", "GPU", "8.9", profile, "x.onnx", "0", 1.0, 4.0, False, "p", "now", []
    )
    sidecar_of(plan).write_text(sidecar.to_json())


def configs(root: Path) -> dict[str, pb.ModelConfig]:
    return {
        p.parent.name: text_format.Parse(p.read_text(), pb.ModelConfig()) for p in sorted(root.glob("*/config.pbtxt"))
    }


@pytest.fixture(scope="module")
def stock(served_onnx, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    fake_engine(root / "engines", "fp16", 32)
    result = write_repository(served_onnx, root / "model_repository", root / "engines")
    return result, configs(result.path)


def test_every_config_parses_with_tritons_protobuf(stock):
    result, parsed = stock
    assert set(parsed) == set(result.models)
    assert set(parsed) == {"alexnet", "preprocess", "alexnet_onnx", "alexnet_openvino_fp32", "alexnet_tensorrt_fp16"}
    assert result.skipped and "alexnet_openvino_int8" in result.skipped[0]  # the served export has no INT8 twin
    assert all(name == config.name for name, config in parsed.items())
    assert parsed["alexnet_onnx"].backend == "onnxruntime"
    assert parsed["alexnet_tensorrt_fp16"].platform == "tensorrt_plan"
    assert parsed["alexnet_tensorrt_fp16"].max_batch_size == 32  # the engine profile's max
    assert (result.path / "alexnet_tensorrt_fp16" / "1" / "model.plan").read_bytes() == b"plan bytes"
    for name in ("alexnet_onnx", "alexnet_tensorrt_fp16"):
        batching = parsed[name].dynamic_batching
        assert list(batching.preferred_batch_size) == [4, 8, 16] and batching.max_queue_delay_microseconds == 2000
        assert parsed[name].instance_group[0].count == 1
    assert parsed["alexnet_tensorrt_fp16"].instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert parsed["alexnet_onnx"].instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU


def full_shape(config: pb.ModelConfig, tensor) -> list[int]:
    return ([-1] if config.max_batch_size > 0 else []) + list(tensor.dims)


def test_ensemble_wiring_names_dims_and_dtypes_agree(stock, tiny_checkpoint):
    _, parsed = stock
    ensemble = parsed["alexnet"]
    assert ensemble.platform == "ensemble"
    produced = {i.name: (i.data_type, full_shape(ensemble, i)) for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = parsed[step.model_name]
        inputs = {i.name: i for i in model.input}
        assert set(step.input_map) == set(inputs)
        for own, wire in step.input_map.items():
            data_type, shape = produced[wire]
            assert data_type == inputs[own].data_type
            expected = full_shape(model, inputs[own])
            assert len(shape) == len(expected) and all(
                a == b or -1 in (a, b) for a, b in zip(shape, expected, strict=True)
            ), (
                own,
                shape,
                expected,
            )
        outputs = {o.name: o for o in model.output}
        for own, wire in step.output_map.items():
            produced[wire] = (outputs[own].data_type, full_shape(model, outputs[own]))
    classes = len(load_checkpoint(tiny_checkpoint).classes)
    for output in ensemble.output:
        assert produced[output.name][0] == output.data_type
        assert output.name == "logits" and list(output.dims) == [1, classes]
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["preprocess", "alexnet_onnx"]


def test_labels_are_the_checkpoints_classes(stock, tiny_checkpoint):
    result, parsed = stock
    classes = load_checkpoint(tiny_checkpoint).classes
    for model in ("alexnet", "alexnet_onnx", "alexnet_tensorrt_fp16"):
        assert (result.path / model / "labels.txt").read_text().splitlines() == classes
    assert json.loads(parsed["alexnet"].parameters["classes"].string_value) == classes


def test_onnx_twin_in_the_repository_runs_in_onnxruntime(stock, held_out_pngs, reference_logits, tiny_checkpoint):
    import io

    from PIL import Image

    result, _ = stock
    session = ort.InferenceSession(
        str(result.path / "alexnet_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    preprocessing = load_checkpoint(tiny_checkpoint).preprocessing
    batch = np.stack([preprocessing(Image.open(io.BytesIO(d))) for d in held_out_pngs])
    (logits,) = session.run(["logits"], {"images": batch})
    np.testing.assert_array_equal(logits, reference_logits)


def test_openvino_model_is_for_tritons_openvino_backend_and_openvino_runs_it(
    stock, held_out_pngs, reference_logits, tiny_checkpoint
):
    """Stock Triton's openvino backend is not in this environment; what it would do with
    the file, OpenVINO loading model.onnx and computing, is run here instead."""
    import io

    from PIL import Image

    from alexnet_deploy.runners.openvino import OpenVinoRunner

    result, parsed = stock
    config = parsed["alexnet_openvino_fp32"]
    assert config.backend == "openvino" and config.default_model_filename == "model.onnx"
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    preprocessing = load_checkpoint(tiny_checkpoint).preprocessing
    batch = np.stack([preprocessing(Image.open(io.BytesIO(d))) for d in held_out_pngs])
    with OpenVinoRunner(result.path / "alexnet_openvino_fp32" / "1" / "model.onnx") as runner:
        logits = runner.infer(batch)
    assert np.abs(logits - reference_logits).max() <= 1e-4


def test_local_flavour_wires_our_runners_into_the_python_backend(served_onnx, tmp_path):
    """The wheel's Triton has only the python backend: the local repository hands the ONNX
    twin to our onnxruntime and OpenVINO runners and each engine (plan + sidecar) to our TensorRT runner.
    What this proves is the wiring (configs, model.py, copied plan and sidecar); the
    onnxruntime model runs in a real Triton server in test_serve.py, the TensorRT one
    needs TensorRT and a GPU."""
    fake_engine(tmp_path / "engines", "int8", 16)
    result = write_repository(
        served_onnx,
        tmp_path / "local",
        tmp_path / "engines",
        RepositoryConfig(flavour="local"),
        target="alexnet_tensorrt_int8",
    )
    parsed = configs(result.path)
    assert parsed["alexnet_onnx"].backend == "python"
    assert "OnnxModel as TritonPythonModel" in (result.path / "alexnet_onnx" / "1" / "model.py").read_text()
    engine = parsed["alexnet_tensorrt_int8"]
    assert (engine.backend, engine.platform, engine.max_batch_size) == ("python", "", 16)
    version = result.path / "alexnet_tensorrt_int8" / "1"
    assert "TensorRTModel as TritonPythonModel" in (version / "model.py").read_text()
    assert (version / "model.plan").read_bytes() == (tmp_path / "engines" / "alexnet.int8.plan").read_bytes()
    assert json.loads((version / "model.json").read_text())["profile"]["max"][0] == 16  # the runner's sidecar
    assert parsed["alexnet"].ensemble_scheduling.step[1].model_name == "alexnet_tensorrt_int8"
    openvino = parsed["alexnet_openvino_fp32"]
    assert (openvino.backend, openvino.parameters["precision"].string_value) == ("python", "fp32")
    assert "OpenVinoModel as TritonPythonModel" in (result.path / openvino.name / "1" / "model.py").read_text()
    assert [s.split(":")[0] for s in result.skipped] == ["alexnet_openvino_int8"]  # no INT8 twin in this export


def test_cli_refuses_to_replace_a_folder_that_is_not_a_repository(served_onnx, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "keep.txt").write_text("data")
    result = CliRunner().invoke(app, ["repository", "--onnx", str(served_onnx), "--output", str(tmp_path / "precious")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "not a model repository" in result.stderr
    assert (tmp_path / "precious" / "keep.txt").read_text() == "data"
    result = CliRunner().invoke(
        app, ["repository", "--onnx", str(served_onnx), "--output", str(tmp_path / "repo"), "--target", "nope"]
    )
    assert result.exit_code == 1 and "--target nope: no such model" in result.stderr
    assert not (tmp_path / "repo").exists() and [p.name for p in tmp_path.iterdir()] == ["precious"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            ["--backend", "torch"],
            "Invalid value for '--backend': Value error, 'torch' is not one of 'onnxruntime', 'openvino', 'tensorrt'",
        ),
        (["--backend", "tensorrt"], "--backend tensorrt: TensorRT is not installed"),
    ],
)
def test_serve_refuses_a_backend_it_cannot_run_before_starting(served_onnx, args, fragment):
    from alexnet_deploy.tensorrt.availability import runner_unavailable_reason

    if "tensorrt" in args and runner_unavailable_reason() is None:
        pytest.skip("TensorRT can run here")
    result = CliRunner().invoke(app, ["serve", "--onnx", str(served_onnx), "--http-port", "0", *args])
    assert result.exit_code == (2 if "torch" in args else 1)  # an Enum choice Typer refuses is a usage error
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {fragment}")
