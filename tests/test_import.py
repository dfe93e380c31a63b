"""``alexnet-deploy import`` of the ONNX model zoo's BVLC AlexNet, proved on the zoo
graph the onnx package ships with seeded random weights (tests/zoo_alexnet.py says
what that stand-in is and is not). Every reference is onnxruntime running the zoo
graph itself, never our code.

What these prove: our layer mapping (weights, groups, LRN k=1, pool5's end pad,
Gemm transB, the dropped softmax) reproduces the zoo graph's logits at 227 px to
1e-5 relative, from the file and from opset conversions of it; our export of the
imported model (plugin LRN with bias 1, and its standard-op twin) does too; graphs
that are not AlexNet are refused with one line. They do not prove ImageNet accuracy
(docs/pretrained.md: that needs the real file and ILSVRC-2012 val)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import assert_one_line_error, invoke
from onnx import helper, numpy_helper, version_converter
from PIL import Image
from zoo_alexnet import LIGHT_MODELS, caffe_preprocess, seeded_zoo_alexnet, stripe_images, zoo_logits

from alexnet_deploy.checkpoint import load_checkpoint
from alexnet_deploy.errors import DeployError
from alexnet_deploy.export.run import export
from alexnet_deploy.graph import to_standard_lrn
from alexnet_deploy.metadata import export_metadata
from alexnet_deploy.plugin import PLUGIN_NAME
from alexnet_deploy.pretrained.imagenet import imagenet_classes
from alexnet_deploy.pretrained.onnx_import import CAFFE_PREPROCESSING, import_onnx

TOLERANCE = 1e-5  # the bound: max |Δ logits| / max |reference logits|


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> tuple[onnx.ModelProto, Path]:
    model = seeded_zoo_alexnet()
    path = tmp_path_factory.mktemp("zoo") / "bvlc_alexnet.onnx"
    onnx.save(model, str(path))
    return model, path


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    """Caffe-preprocessed 227-px inputs: stripes (spread over classes) and random pixels."""
    pixels = [*stripe_images(3, seed=1, size=(227, 227))]
    pixels += list(np.random.default_rng(2).integers(0, 256, (2, 227, 227, 3), dtype=np.uint8))
    return np.stack([CAFFE_PREPROCESSING.normalise(p) for p in pixels])


@pytest.fixture(scope="module")
def imported_by_cli(zoo, tmp_path_factory):
    """``alexnet-deploy import`` of the zoo file: (the checkpoint, the CLI result). Every
    test of the imported model reads what the command wrote."""
    _, path = zoo
    output = tmp_path_factory.mktemp("imported") / "alexnet.pt"
    return output, invoke("import", str(path), "--output", str(output))


@pytest.fixture(scope="module")
def imported(imported_by_cli) -> Path:
    output, result = imported_by_cli
    assert result.exit_code == 0, result.output
    return output


@pytest.fixture(scope="module")
def exported(imported) -> Path:
    output = imported.with_suffix(".onnx")
    export(imported, output)
    return output


def torch_logits(checkpoint: Path, images: np.ndarray) -> np.ndarray:
    model = load_checkpoint(checkpoint).build_model().eval()
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def test_imported_model_computes_the_zoo_graphs_logits(zoo, imported, inputs):
    model, _ = zoo
    reference = zoo_logits(model, inputs)
    ours = torch_logits(imported, inputs)
    assert relative_difference(ours, reference) <= TOLERANCE
    assert (ours.argmax(1) == reference.argmax(1)).all()
    assert len(set(reference.argmax(1))) >= 2  # the inputs tell classes apart, so a mix-up would show


def test_import_through_the_cli_says_what_it_wrote_validated_and_dropped(imported_by_cli):
    output, result = imported_by_cli
    assert result.exit_code == 0 and result.stderr == "", result.output
    text = " ".join(result.stdout.split())  # rich may wrap a long path
    assert f"wrote {output}: paper AlexNet, 1000 classes" in text and "validated on " in text, text
    assert "Softmax" in text.split("dropped: ", 1)[1], text
    assert [p.name for p in output.parent.iterdir()] == [output.name]  # the checkpoint alone, no temporaries


def test_the_checkpoint_records_what_it_is_and_where_it_came_from(zoo, imported):
    _, path = zoo
    checkpoint = load_checkpoint(imported)
    assert checkpoint.config.groups == 2 and checkpoint.config.num_classes == 1000
    assert checkpoint.config.lrn.bias == 1.0 and checkpoint.config.lrn.size == 5
    assert checkpoint.preprocessing.channel_order == "BGR" and checkpoint.preprocessing.pixel_scale == 255.0
    assert checkpoint.classes[0] == "tench" and checkpoint.class_ids[0] == "n01440764"
    assert checkpoint.origin["sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert checkpoint.origin["opset"] == 9 and checkpoint.origin["producer"].startswith("onnx-caffe2")
    assert any("Softmax" in d for d in checkpoint.origin["dropped"])
    assert len(checkpoint.origin["layers"]) == 21  # 5 conv, 7 ReLU, 2 LRN, 3 pool, flatten, 3 fc


def test_export_keeps_the_zoo_graphs_logits_and_the_plugin_carries_bias_1(zoo, exported, inputs):
    model, _ = zoo
    graph = onnx.load(str(exported))
    plugins = [n for n in graph.graph.node if n.op_type == PLUGIN_NAME]
    assert len(plugins) == 2
    for node in plugins:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["bias"] == pytest.approx(1.0) and attributes["size"] == 5
    import onnxruntime

    twin = to_standard_lrn(graph)
    session = onnxruntime.InferenceSession(twin.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    assert relative_difference(ours, zoo_logits(model, inputs)) <= TOLERANCE
    metadata = export_metadata(graph, str(exported))
    assert metadata.class_ids[:2] == ["n01440764", "n01443537"]
    assert metadata.preprocessing.channel_order == "BGR"


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_the_zoo_graph_at_other_opsets_imports_to_the_same_logits(zoo, inputs, tmp_path, opset):
    model, _ = zoo
    converted = version_converter.convert_version(model, opset)
    path = tmp_path / f"bvlc_alexnet-{opset}.onnx"
    onnx.save(converted, str(path))
    import_onnx(path, tmp_path / "alexnet.pt")
    reference = zoo_logits(converted, inputs)
    assert relative_difference(torch_logits(tmp_path / "alexnet.pt", inputs), reference) <= TOLERANCE
    assert load_checkpoint(tmp_path / "alexnet.pt").origin["opset"] == opset


# --- graphs that are not the AlexNet we deploy ---------------------------------------


def _node(model: onnx.ModelProto, op_type: str, index: int = 0) -> onnx.NodeProto:
    return [n for n in model.graph.node if n.op_type == op_type][index]


def _remove_conv3(model: onnx.ModelProto) -> None:
    """conv3 and its ReLU cut out: pool2's output feeds conv4 directly."""
    conv3 = _node(model, "Conv", 2)
    relu = next(n for n in model.graph.node if conv3.output[0] in n.input)
    for node in model.graph.node:
        node.input[:] = [conv3.input[0] if name == relu.output[0] else name for name in node.input]
    model.graph.node.remove(conv3)
    model.graph.node.remove(relu)


def _ungroup_conv2(model: onnx.ModelProto) -> None:
    """conv2 dense (group 1, weights of all 96 input channels) while conv4/5 stay grouped."""
    conv2 = _node(model, "Conv", 1)
    next(a for a in conv2.attribute if a.name == "group").i = 1
    weight = next(t for t in model.graph.initializer if t.name == conv2.input[1])
    dense = np.concatenate([numpy_helper.to_array(weight)] * 2, axis=1)
    weight.CopyFrom(numpy_helper.from_array(dense, weight.name))


def _lrn_to_maxpool(model: onnx.ModelProto) -> None:
    """What torchvision's LRN-free AlexNet has where BVLC's has norm1."""
    lrn = _node(model, "LRN")
    pool = helper.make_node("MaxPool", list(lrn.input), list(lrn.output), kernel_shape=[1, 1], name="no_lrn")
    index = list(model.graph.node).index(lrn)
    model.graph.node.remove(lrn)
    model.graph.node.insert(index, pool)


def _stride_conv1(model: onnx.ModelProto) -> None:
    next(a for a in _node(model, "Conv").attribute if a.name == "strides").ints[:] = [2, 2]


def _lrn_k2(model: onnx.ModelProto) -> None:
    """norm2 with another k than norm1: one LRN convention cannot hold both."""
    next(a for a in _node(model, "LRN", 1).attribute if a.name == "bias").f = 2.0


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_remove_conv3, "where AlexNet has conv3"),
        (_ungroup_conv2, "conv2, conv4 and conv5 must all have group 1 or all 2"),
        (_lrn_to_maxpool, "torchvision's AlexNet has no LRN"),
        (_stride_conv1, "where AlexNet has conv1"),
        (_lrn_k2, "unlike norm1's"),
    ],
    ids=["layer-removed", "group-changed", "lrn-replaced", "stride-changed", "lrn-mismatch"],
)
def test_an_edited_graph_is_refused_in_one_line_naming_the_layer(zoo, tmp_path, edit, fragment):
    model, _ = zoo
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    edit(edited)
    path = tmp_path / "edited.onnx"
    onnx.save(edited, str(path))
    result = invoke("import", str(path), "--output", str(tmp_path / "alexnet.pt"))
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "alexnet.pt").exists()


@pytest.mark.parametrize("network", ["light_zfnet512", "light_resnet50", "light_vgg19"])
def test_other_networks_of_the_zoo_are_refused(tmp_path, network):
    result = invoke("import", str(LIGHT_MODELS / f"{network}.onnx"), "--output", str(tmp_path / "a.pt"))
    assert_one_line_error(result, "is not")
    assert not (tmp_path / "a.pt").exists()


def test_a_truncated_file_is_refused(zoo, tmp_path):
    _, path = zoo
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[:10_000_000])
    assert_one_line_error(invoke("import", str(truncated), "--output", str(tmp_path / "a.pt")), "truncated?")


def test_labels_must_match_the_class_count(zoo, tmp_path):
    _, path = zoo
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(999)))
    result = invoke("import", str(path), "--output", str(tmp_path / "a.pt"), "--labels", str(labels))
    assert_one_line_error(result, "names 999 classes but the model outputs 1000")


def test_a_graph_that_does_not_validate_is_not_written(zoo, tmp_path, monkeypatch):
    """The validation step is live: a mapping bug (here: fc8's bias zeroed after the
    walk) is caught against onnxruntime and nothing is written."""
    from alexnet_deploy.pretrained import onnx_import

    original = onnx_import.match_alexnet

    def broken(model, source):
        matched = original(model, source)
        matched.state_dict["classifier.fc8.bias"] = torch.zeros(1000) + 5.0
        return matched

    monkeypatch.setattr(onnx_import, "match_alexnet", broken)
    _, path = zoo
    with pytest.raises(DeployError, match="import validation failed"):
        import_onnx(path, tmp_path / "a.pt")
    assert not (tmp_path / "a.pt").exists()


# --- preprocessing and labels --------------------------------------------------------


def test_caffe_preprocessing_matches_its_definition(tmp_path):
    image = stripe_images(1, seed=4, size=(320, 240))[0]
    image[10:40, 20:90] = [250, 10, 30]  # an asymmetric red patch: a channel swap or flip would show
    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    ours = CAFFE_PREPROCESSING(Image.open(path))
    np.testing.assert_allclose(ours, caffe_preprocess(path), atol=1e-4)


def test_the_shipped_imagenet_list_is_the_ilsvrc_one():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert (classes[0].synset, classes[0].name) == ("n01440764", "tench")
    assert (classes[999].synset, classes[999].name) == ("n15075141", "toilet tissue")
    assert [c.synset for c in classes] == sorted(c.synset for c in classes)
    assert {c.name for c in classes} >= {"crane (n02012849)", "crane (n03126707)"}


def test_info_shows_where_an_imported_model_came_from(imported):
    result = invoke("info", "--checkpoint", str(imported))
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "imported from: bvlc_alexnet.onnx" in text and "opset 9" in text
    assert "BGR in [0, 255]" in text


def test_a_synset_words_labels_file_names_the_classes(zoo, tmp_path):
    _, path = zoo
    labels = tmp_path / "synset_words.txt"
    rows = [f"n{10_000_000 + i:08d} thing {i}, other words" for i in range(1000)]
    labels.write_text("\n".join(rows))
    import_onnx(path, tmp_path / "a.pt", labels)
    checkpoint = load_checkpoint(tmp_path / "a.pt")
    assert checkpoint.classes[3] == "thing 3" and checkpoint.class_ids[3] == "n10000003"


def test_weights_are_taken_not_refitted(zoo, imported):
    """conv2's two groups and fc6's (out, in) layout land where torch expects them."""
    model, _ = zoo
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    state = load_checkpoint(imported).state_dict
    np.testing.assert_array_equal(state["features.conv2.weight"].numpy(), weights["conv2_w_0"])
    np.testing.assert_array_equal(state["classifier.fc6.weight"].numpy(), weights["fc6_w_0"])


# --- files written before channel order, pixel scale, class ids and origin existed --


def test_a_checkpoint_from_before_the_import_fields_still_loads_as_what_it_was(tiny_checkpoint, tmp_path):
    from alexnet_deploy.checkpoint import load_payload, save_payload

    payload = load_payload(tiny_checkpoint, "checkpoint")
    for key in ("class_ids", "origin"):
        del payload[key]
    for key in ("channel_order", "pixel_scale"):
        del payload["preprocessing"][key]
    old = tmp_path / "old.pt"
    save_payload(payload, old)
    checkpoint = load_checkpoint(old)
    assert (checkpoint.preprocessing.channel_order, checkpoint.preprocessing.pixel_scale) == ("RGB", 1.0)
    assert checkpoint.class_ids == [] and checkpoint.origin == {}
    assert checkpoint.preprocessing.mean == load_checkpoint(tiny_checkpoint).preprocessing.mean


def test_an_onnx_from_before_the_import_fields_still_reads_as_what_it_was(tiny_checkpoint, tmp_path):
    import json

    from alexnet_deploy.digests import read_metadata, seal

    path = tmp_path / "alexnet.onnx"
    export(tiny_checkpoint, path)
    model = onnx.load(str(path))
    values = read_metadata(model)
    preprocessing = json.loads(values["preprocessing"])
    for key in ("channel_order", "pixel_scale"):
        del preprocessing[key]
    values["preprocessing"] = json.dumps(preprocessing)
    values.pop("class_ids", None)
    del model.metadata_props[:]
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
    seal(model)  # as the older export sealed it
    metadata = export_metadata(model, "old.onnx")
    assert (metadata.preprocessing.channel_order, metadata.preprocessing.pixel_scale) == ("RGB", 1.0)
    assert metadata.class_ids == []
