"""ONNX export: plugin nodes as TensorRT's parser expects them, the standard-op twin,
torch-vs-onnxruntime parity, and the export's own validation and error paths."""

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from alexnet_deploy.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from alexnet_deploy.data.preprocessing import Preprocessing, preprocess_all
from alexnet_deploy.data.sources import load_digits
from alexnet_deploy.digests import read_metadata
from alexnet_deploy.errors import DeployError
from alexnet_deploy.export.run import export, export_model, validate
from alexnet_deploy.graph import load_model, lrn_attributes, to_plugin_lrn, to_standard_lrn
from alexnet_deploy.lrn import LRNParams
from alexnet_deploy.metrics import FP32_TOLERANCE, compare_logits
from alexnet_deploy.model import AlexNet, AlexNetConfig
from alexnet_deploy.plugin.registration import lrn_params_from_fields
from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "alexnet.onnx"
    export(tiny_checkpoint, path)
    return path


@pytest.fixture(scope="module")
def real_images(tiny_checkpoint) -> np.ndarray:
    checkpoint = load_checkpoint(tiny_checkpoint)
    # parity needs 128 real images, more than the tiny run's limited split holds
    val = dataclasses.replace(checkpoint.split, limit=None).apply(load_digits())["val"]
    batch, _ = preprocess_all(val.subset(range(128)), checkpoint.preprocessing)
    return batch


def torch_logits(checkpoint_path: Path, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return load_checkpoint(checkpoint_path).build_model()(torch.from_numpy(images)).numpy()


def test_lrn_nodes_are_plugin_custom_ops_with_the_papers_attributes(exported):
    model = onnx.load(str(exported))
    lrn = [n for n in model.graph.node if n.domain == "alexnet_deploy"]
    assert [n.op_type for n in lrn] == ["AlexNetLRN", "AlexNetLRN"]
    assert not [n for n in model.graph.node if n.op_type == "LRN"]
    for node in lrn:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["size"] == 5 and attributes["beta"] == pytest.approx(0.75)
        assert attributes["alpha"] == pytest.approx(5e-4) and attributes["bias"] == pytest.approx(2.0)
        assert attributes["plugin_namespace"] == b"alexnet_deploy" and attributes["plugin_version"] == b"1"
    assert {(o.domain, o.version) for o in model.opset_import} >= {("alexnet_deploy", 1)}


def test_export_passes_full_check_and_shape_inference_with_dynamic_batch(exported):
    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(to_standard_lrn(model), strict_mode=True)
    dims = [d.dim_param or d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 10]


def test_metadata_carries_what_later_steps_need(exported, tiny_checkpoint):
    meta = read_metadata(onnx.load(str(exported)))
    assert meta["classes"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    assert (
        Preprocessing.from_dict(__import__("json").loads(meta["preprocessing"]))
        == load_checkpoint(tiny_checkpoint).preprocessing
    )
    assert meta["input_size"] == "227" and meta["lrn_convention"].startswith("onnx-lrn")
    assert len(meta["checkpoint_sha256"]) == 64 and meta["alexnet_deploy_version"]


@pytest.mark.parametrize("batch", [1, 7, 128])
def test_torch_and_onnxruntime_agree_on_real_images(exported, tiny_checkpoint, real_images, batch):
    images = real_images[:batch]
    with OnnxRuntimeRunner(exported) as runner:
        actual = runner.infer(images)
    expected = torch_logits(tiny_checkpoint, images)
    assert actual.shape == (batch, 10)
    max_abs_diff, agreement = compare_logits(expected, actual)
    assert max_abs_diff <= FP32_TOLERANCE and agreement == 1.0


@pytest.mark.parametrize("batch", [1, 7, 128])
def test_torch_and_onnxruntime_agree_on_random_images(exported, tiny_checkpoint, batch):
    images = np.random.default_rng(batch).standard_normal((batch, 3, 227, 227), dtype=np.float32)
    with OnnxRuntimeRunner(exported) as runner:
        actual = runner.infer(images)
    max_abs_diff, agreement = compare_logits(torch_logits(tiny_checkpoint, images), actual)
    assert actual.shape == (batch, 10) and max_abs_diff <= FP32_TOLERANCE and agreement == 1.0


def test_twin_of_plugin_export_equals_native_export_up_to_node_names(tiny_checkpoint):
    model = load_checkpoint(tiny_checkpoint).build_model()
    twin = to_standard_lrn(export_model(model, lrn="plugin"))
    native = export_model(model, lrn="native")

    def canonical(m: onnx.ModelProto):
        """The graph's meaning: nodes (type, domain, wiring, attributes), weights, I/O."""
        nodes = [
            (
                n.op_type,
                n.domain,
                list(n.input),
                list(n.output),
                {a.name: helper.get_attribute_value(a) for a in n.attribute},
            )
            for n in m.graph.node
        ]
        weights = {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in m.graph.initializer}
        io = [v.SerializeToString() for v in (*m.graph.input, *m.graph.output)]
        return nodes, weights, io, sorted((o.domain, o.version) for o in m.opset_import)

    assert canonical(twin) == canonical(native)
    assert canonical(to_standard_lrn(to_plugin_lrn(native))) == canonical(native)


def test_twin_keeps_lrn_semantics_of_the_plugin_node(exported):
    twin = to_standard_lrn(onnx.load(str(exported)))
    lrn = [n for n in twin.graph.node if n.op_type == "LRN"]
    assert len(lrn) == 2 and lrn_attributes(lrn[0]) == pytest.approx(
        {"size": 5, "alpha": 5e-4, "beta": 0.75, "bias": 2.0}
    )


def conv1_output_max(model: AlexNet, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model.features.relu1(model.features.conv1(images)).abs().max())


@pytest.mark.parametrize("lrn", [LRNParams(bias=1.0, beta=0.5), LRNParams()], ids=["k1-beta0.5", "paper"])
def test_plugin_node_carries_the_models_lrn_and_its_twin_matches_torch_at_large_activations(lrn):
    torch.manual_seed(0)
    model = AlexNet(AlexNetConfig(num_classes=5, width=0.0625, lrn=lrn)).eval()
    with torch.no_grad():
        model.features.conv1.weight.mul_(150)  # conv1 outputs of |x| ~ 1e3: the LRN term dominates k
    images = np.random.default_rng(0).standard_normal((4, 3, 227, 227), dtype=np.float32)
    assert 5e2 < conv1_output_max(model, torch.from_numpy(images)) < 5e3
    proto = export_model(model, lrn="plugin")
    nodes = [n for n in proto.graph.node if n.domain == "alexnet_deploy"]
    assert [lrn_attributes(n) for n in nodes] == [pytest.approx(lrn.to_dict())] * 2
    # as TensorRT's parser hands them to the plugin: one-element int32/float32 arrays
    fields = {k: np.asarray([v], np.int32 if k == "size" else np.float32) for k, v in lrn_attributes(nodes[0]).items()}
    assert lrn_params_from_fields(**fields).to_dict() == pytest.approx(lrn.to_dict())
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(to_standard_lrn(proto).SerializeToString(), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"images": images})[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_an_old_checkpoint_keeps_the_lrn_it_was_trained_with(tiny_checkpoint, tmp_path):
    """Checkpoints written before the paper's alpha became the default (alpha 1e-4, k 2)."""
    old_lrn = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 2.0}
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["config"]["lrn"] = old_lrn
    torch.save(payload, tmp_path / "old.pt")
    model = load_checkpoint(tmp_path / "old.pt").build_model()
    assert model.features.norm1.params == model.features.norm2.params == LRNParams(**old_lrn)
    export(tmp_path / "old.pt", tmp_path / "old.onnx")  # validates against that torch model
    nodes = [n for n in onnx.load(str(tmp_path / "old.onnx")).graph.node if n.domain == "alexnet_deploy"]
    assert [lrn_attributes(n) for n in nodes] == [pytest.approx(old_lrn)] * 2


@pytest.mark.parametrize("groups, classes", [(1, 3), (2, 17)])
def test_export_works_for_any_class_count_and_groups(tmp_path, groups, classes):
    config = AlexNetConfig(num_classes=classes, groups=groups, width=0.0625)
    checkpoint = Checkpoint(
        config, AlexNet(config).state_dict(), [f"c{i}" for i in range(classes)], Preprocessing(), str(tmp_path / "gone")
    )
    save_checkpoint(checkpoint, tmp_path / "m.pt")
    result = export(tmp_path / "m.pt", tmp_path / "m.onnx")
    assert "random inputs" in result.validation.source  # the data folder no longer exists
    with OnnxRuntimeRunner(tmp_path / "m.onnx") as runner:
        assert runner.infer(np.zeros((2, 3, 227, 227), np.float32)).shape == (2, classes)


@pytest.mark.slow
def test_full_size_alexnet_exports_within_tolerance(tmp_path):
    torch.manual_seed(0)
    config = AlexNetConfig(num_classes=1000)
    checkpoint = Checkpoint(
        config, AlexNet(config).state_dict(), [str(i) for i in range(1000)], Preprocessing(), "digits"
    )
    save_checkpoint(checkpoint, tmp_path / "full.pt")
    result = export(tmp_path / "full.pt", tmp_path / "full.onnx")
    assert result.validation.max_abs_diff <= FP32_TOLERANCE and result.validation.top1_agreement == 1.0


def test_validation_rejects_an_onnx_that_disagrees_with_torch(tiny_checkpoint, real_images):
    model = load_checkpoint(tiny_checkpoint).build_model()
    torch.manual_seed(1)
    other = export_model(AlexNet(model.config).eval())
    with pytest.raises(DeployError, match=r"export validation failed: output 'logits' .* max"):
        validate(model, other, real_images[:8], "test images")


def test_later_steps_reject_onnx_without_plugin_lrn(tiny_checkpoint, tmp_path):
    path = tmp_path / "native.onnx"
    export(tiny_checkpoint, path, lrn="native")
    with pytest.raises(DeployError, match="expected 2 LRN plugin nodes"):
        load_model(path)
    load_model(path, require_plugin=False)


def test_later_steps_reject_onnx_with_unexpected_io(exported, tmp_path):
    model = onnx.load(str(exported))
    model.graph.output[0].name = "probabilities"
    model.graph.node[-1].output[0] = "probabilities"
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    with pytest.raises(DeployError, match="expected one output 'logits'"):
        load_model(tmp_path / "renamed.onnx")
