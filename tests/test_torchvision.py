"""torchvision's AlexNet (``torchvision.models.alexnet``) through the whole toolchain,
checked against torchvision itself (the real package, ``torchvision_standin.py`` says
what stands in for its C++ operators).

The model is torchvision's with seeded random weights: right in architecture and
names, wrong in weights, so it has learned nothing and no accuracy here says anything
about ImageNet (docs/pretrained.md has the commands for the real weights). What these
prove: its state dict, and the ONNX that ``torch.onnx.export`` writes from it, import
and export to a graph that onnxruntime runs equal to torchvision's own forward pass;
the checkpoint carries torchvision's preprocessing (equal to ``torchvision.transforms``
on real photos), the ImageNet classes and its origin; ``info`` counts torchvision's
parameters; files that are not torchvision's AlexNet are refused in one line with
nothing written; build (INT8 calibrated on a user's folder), bench, eval, predict,
repository and serve run on it with figures taken from torchvision's own logits."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import assert_one_line_error, invoke
from PIL import Image
from torchvision_standin import torchvision
from zoo_alexnet import stripe_images

from alexnet_deploy.checkpoint import load_checkpoint
from alexnet_deploy.pretrained.imagenet import imagenet_classes
from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner

IMAGES = 8
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Same geometry, float32 arithmetic in another order: a pixel off would be >= 1/255/0.229
PREPROCESSING_BOUND = 1e-6
RELATIVE_TOLERANCE = 1e-5  # max |Δ logits| / max |torchvision's logits|


@pytest.fixture(scope="module")
def tv():
    return torchvision()


@pytest.fixture(scope="module")
def transform(tv):
    """torchvision's ImageNet evaluation transform, as its AlexNet weights document it."""
    t = tv.transforms
    return t.Compose([t.Resize(256), t.CenterCrop(224), t.ToTensor(), t.Normalize(MEAN, STD)])


@pytest.fixture(scope="module")
def seeded(tv):
    torch.manual_seed(0)
    return tv.models.alexnet().eval()


def torchvision_logits(model, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, seeded, transform):
    """Stripe images of odd sizes in folders named by synset id: two in three in the class
    torchvision's model predicts for them (through torchvision's transforms), the rest in
    the next class, so the expected top-1 is known and not trivial."""
    root = tmp_path_factory.mktemp("torchvision")
    paths = []
    for i, size in enumerate([(301, 257), (257, 333), (640, 427), (280, 281)] * (IMAGES // 4)):
        paths.append(root / f"{i:02d}.png")
        Image.fromarray(stripe_images(1, seed=10 + i, size=size)[0]).save(paths[-1])
    images = np.stack([transform(Image.open(p).convert("RGB")).numpy() for p in paths])
    logits = torchvision_logits(seeded, images)
    labels = np.where(np.arange(IMAGES) % 3 == 2, (logits.argmax(1) + 1) % 1000, logits.argmax(1))
    for path, label in zip(paths, labels, strict=True):
        folder = root / "synsets" / imagenet_classes()[int(label)].synset
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).write_bytes(path.read_bytes())
    state_dict = root / "alexnet-seeded.pth"
    torch.save(seeded.state_dict(), state_dict)
    return {"root": root, "paths": paths, "images": images, "logits": logits, "labels": labels, "pth": state_dict}


@pytest.fixture(scope="module")
def pipeline(labelled, tmp_path_factory):
    """import (the CLI) --data <synset folder> -> export -> build --fp16 --int8 --calib-from-data."""
    from alexnet_deploy.build.config import BuildConfig
    from alexnet_deploy.build.run import build

    folder = tmp_path_factory.mktemp("pipeline")
    checkpoint, fp32 = folder / "alexnet.pt", folder / "alexnet.onnx"
    imported = invoke(
        "import", str(labelled["pth"]), "--output", str(checkpoint), "--data", str(labelled["root"] / "synsets")
    )
    assert imported.exit_code == 0, imported.output
    exported = invoke("export", "--checkpoint", str(checkpoint), "--output", str(fp32))
    assert exported.exit_code == 0, exported.output
    report = build(
        BuildConfig(
            onnx=fp32,
            precisions=("fp16", "int8"),
            calibration_dir=folder / "calibration",
            calib_from_data=True,
            engines_dir=folder / "engines",
        )
    )
    return {
        "checkpoint": checkpoint,
        "onnx": fp32,
        "engines": folder / "engines",
        "build": report,
        "import": imported.stdout,
        "export": exported.stdout,
    }


# --- the import, against torchvision's own model ---------------------------------------


def test_the_imported_state_dict_exports_to_a_graph_equal_to_torchvisions_model(labelled, pipeline):
    with OnnxRuntimeRunner(pipeline["onnx"]) as runner:
        ours = runner.infer(labelled["images"])
    assert relative_difference(ours, labelled["logits"]) <= RELATIVE_TOLERANCE
    assert (ours.argmax(1) == labelled["logits"].argmax(1)).all()
    graph = onnx.load(str(pipeline["onnx"]), load_external_data=False)
    ops = [node.op_type for node in graph.graph.node]
    assert "LRN" not in ops and all(node.domain in ("", "ai.onnx") for node in graph.graph.node)
    pool = next(node for node in graph.graph.node if node.op_type == "AveragePool")  # the adaptive pool, 1x1/1
    assert {a.name: list(a.ints) for a in pool.attribute if a.ints}["kernel_shape"] == [1, 1]
    assert "no LRN, so no plugin node" in pipeline["export"]


def test_the_checkpoint_carries_torchvisions_preprocessing_classes_and_origin(labelled, pipeline):
    from alexnet_deploy.files import sha256_file

    checkpoint = load_checkpoint(pipeline["checkpoint"])
    p = checkpoint.preprocessing
    assert (p.resize, p.crop, p.mean, p.std, p.channel_order, p.pixel_scale) == (256, 224, MEAN, STD, "RGB", 1.0)
    assert (checkpoint.config.variant, checkpoint.config.input_size, checkpoint.config.groups) == (
        "torchvision",
        224,
        1,
    )
    assert checkpoint.classes[:2] == ["tench", "goldfish"] and len(checkpoint.classes) == 1000
    assert checkpoint.class_ids[0] == "n01440764" and len(checkpoint.class_ids) == 1000
    assert checkpoint.origin["format"] == "torchvision state_dict"
    assert checkpoint.origin["sha256"] == sha256_file(labelled["pth"])
    assert checkpoint.origin["layers"][0] == "conv1 <- features.0"


def test_info_counts_torchvisions_61100840_parameters(seeded, pipeline, tmp_path):
    result = invoke("info", "--checkpoint", str(pipeline["checkpoint"]), "--json", str(tmp_path / "info.json"))
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["totals"]["parameters"] == sum(p.numel() for p in seeded.parameters()) == 61_100_840
    layers = [row["name"] for row in info["layers"]]
    convs_and_pools = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "avgpool"]
    assert layers == [*convs_and_pools, "fc6", "fc7", "fc8"]
    assert "torchvision" in result.stdout and "torchvision state_dict" in result.stdout


def _export_torchvision(model, path: Path, dynamo: bool, opset: int, dynamic_batch: bool) -> None:
    example = torch.randn(1, 3, 224, 224)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset, dynamic_shapes=shapes)
        else:
            axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                output_names=["output"], dynamic_axes=axes,
            )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dynamo", "opset", "dynamic_batch"),
    [(False, 13, True), (True, 18, False)],
    ids=["torchscript-opset13-dynamic-batch", "dynamo-opset18-fixed-batch"],
)
def test_torchvisions_onnx_export_imports_and_exports_equal_to_its_model(
    seeded, labelled, tmp_path, dynamo, opset, dynamic_batch
):
    source = tmp_path / "alexnet_torchvision.onnx"
    _export_torchvision(seeded, source, dynamo, opset, dynamic_batch)
    checkpoint, exported = tmp_path / "alexnet.pt", tmp_path / "alexnet.onnx"
    result = invoke("import", str(source), "--output", str(checkpoint))
    assert result.exit_code == 0, result.output
    assert load_checkpoint(checkpoint).origin["opset"] == opset
    assert invoke("export", "--checkpoint", str(checkpoint), "--output", str(exported)).exit_code == 0
    with OnnxRuntimeRunner(exported) as runner:
        ours = runner.infer(labelled["images"][:4])
    assert relative_difference(ours, labelled["logits"][:4]) <= RELATIVE_TOLERANCE


# --- what is refused ------------------------------------------------------------------


def _zero_filled(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same names and shapes, each tensor one stored zero expanded (a tiny file)."""
    return {name: torch.zeros(1).expand(tensor.shape) for name, tensor in state_dict.items()}


def _vgg_names_and_shapes(tv) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return _zero_filled(tv.models.vgg11().state_dict())


def _reordered(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = list(state_dict)
    names[6:8], names[8:10] = names[8:10], names[6:8]  # conv5's weight and bias before conv4's
    return {name: state_dict[name] for name in names}


def _conv3_narrowed(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    edited = dict(state_dict)
    edited["features.6.weight"] = state_dict["features.6.weight"][:383]
    edited["features.6.bias"] = state_dict["features.6.bias"][:383]
    return edited


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda tv, model: model, "whole pickled model"),
        (lambda tv, model: tv.models.resnet18().state_dict(), "unexpected ['conv1.weight', 'bn1.weight'"),
        (lambda tv, model: _vgg_names_and_shapes(tv), "22 entries where it has 16"),
        (lambda tv, model: _reordered(model.state_dict()), "in another order"),
        (lambda tv, model: _conv3_narrowed(model.state_dict()), "features.6.weight (conv3) has shape (383, 192, 3, 3)"),
        (lambda tv, model: {"model": model.state_dict()}, "not a state dict"),
    ],
    ids=["whole-model", "resnet18", "vgg11", "layers-reordered", "conv3-narrower", "wrapped"],
)
def test_what_is_not_torchvisions_alexnet_state_dict_is_refused_in_one_line(tv, seeded, tmp_path, make, fragment):
    source, output = tmp_path / "model.pth", tmp_path / "alexnet.pt"
    torch.save(make(tv, seeded), source)
    assert_one_line_error(invoke("import", str(source), "--output", str(output)), fragment)
    assert not output.exists() and list(tmp_path.iterdir()) == [source]


def test_a_truncated_state_dict_is_refused(labelled, tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(labelled["pth"].read_bytes()[:20_000_000])
    assert_one_line_error(invoke("import", str(truncated), "--output", str(tmp_path / "a.pt")), "truncated?")
    assert not (tmp_path / "a.pt").exists()


def test_a_torchvision_graph_with_a_layer_changed_is_refused(seeded, tmp_path):
    source = tmp_path / "edited.onnx"
    _export_torchvision(seeded, source, dynamo=False, opset=13, dynamic_batch=False)
    model = onnx.load(str(source))
    conv2 = [node for node in model.graph.node if node.op_type == "Conv"][1]
    next(a for a in conv2.attribute if a.name == "strides").ints[:] = [2, 2]
    onnx.save(model, str(source))
    result = invoke("import", str(source), "--output", str(tmp_path / "a.pt"))
    assert_one_line_error(result, "where AlexNet has conv2")
    assert not (tmp_path / "a.pt").exists()


# --- preprocessing ---------------------------------------------------------------------


@pytest.mark.parametrize("photo", ["china.jpg", "flower.jpg"])
def test_preprocessing_equals_torchvision_transforms_on_real_photos_of_odd_sizes(transform, photo):
    """scikit-learn's two sample photographs (640x427), cut to odd sizes and aspects:
    resize, crop, channel order and normalisation all equal to float32 rounding."""
    from sklearn.datasets import load_sample_image

    from alexnet_deploy.pretrained.importing import TORCHVISION_PREPROCESSING

    image = Image.fromarray(load_sample_image(photo))
    for box in [(0, 0, 640, 427), (13, 7, 346, 417), (0, 0, 257, 299), (101, 50, 640, 315), (5, 5, 402, 230)]:
        cut = image.crop(box)
        ours, theirs = TORCHVISION_PREPROCESSING(cut), transform(cut).numpy()
        assert ours.shape == theirs.shape == (3, 224, 224)
        assert np.abs(ours - theirs).max() <= PREPROCESSING_BOUND, cut.size


# --- downstream: build, eval, predict, bench, repository, serve --------------------------


def hand_topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    ranked = np.argsort(-logits, axis=1)[:, :k]
    return float(np.mean([label in row for row, label in zip(ranked, labels, strict=True)]))


def test_build_calibrates_int8_on_the_users_folder_in_integer_kernels(pipeline, tmp_path):
    from onnxruntime_ops import optimized_op_types

    from alexnet_deploy.quantize.onnxruntime import output_activations

    report = pipeline["build"]
    # conv5's output reaches fc6 through pool5, the identity avgpool and the flatten, all
    # taken as commuting: no Conv/Gemm output needs a range of its own
    assert output_activations(onnx.load(str(pipeline["onnx"]))) == []
    assert any("held-out calibration images" in line for line in report.calibration)
    assert {"fp16", "int8"} <= set(report.onnx)
    ort_int8 = onnx.load(str(pipeline["onnx"].with_name("alexnet.int8-ort.onnx")))
    ops = optimized_op_types(ort_int8, tmp_path)
    # every Conv/Gemm an integer kernel; the adaptive pool between pool5 and fc6 pools uint8
    assert ops.count("QLinearConv") == 5 and ops.count("QGemm") == 3 and "QLinearAveragePool" in ops
    qdq = onnx.load(str(pipeline["onnx"].with_name("alexnet.int8.onnx")))
    layer_inputs = [n for n in qdq.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(layer_inputs) == 8 and all(n.input[0].endswith("_dq") for n in layer_inputs)


def test_eval_scores_are_the_ones_torchvisions_logits_give(labelled, pipeline):
    from alexnet_deploy.evaluate.run import EvalConfig, evaluate

    config = EvalConfig(
        data=labelled["root"] / "synsets",
        onnx=pipeline["onnx"],
        engines=pipeline["engines"],
        checkpoint=pipeline["checkpoint"],
        backends=("onnxruntime", "openvino", "tensorrt"),
        precisions=("fp32", "int8"),
    )
    report = evaluate(config)
    rows = {(row.backend, row.precision): row for row in report.rows}
    assert report.images == IMAGES
    for backend in ("onnxruntime", "openvino"):
        assert rows[(backend, "fp32")].top1 == pytest.approx(hand_topk(labelled["logits"], labelled["labels"], 1))
        assert rows[(backend, "fp32")].top5 == pytest.approx(hand_topk(labelled["logits"], labelled["labels"], 5))
    assert rows[("tensorrt", "fp32")].skipped


def test_predict_names_the_imagenet_class_torchvision_predicts(labelled, pipeline, tmp_path):
    report = tmp_path / "predictions.json"
    paths = labelled["paths"][:3]
    result = invoke("predict", *map(str, paths), "--onnx", str(pipeline["onnx"]), "--top", "1", "--json", str(report))
    assert result.exit_code == 0, result.output
    predicted = {Path(p["image"]).name: p["top"][0]["class"] for p in json.loads(report.read_text())["predictions"]}
    classes = imagenet_classes()
    assert predicted == {
        p.name: classes[int(row.argmax())].name for p, row in zip(paths, labelled["logits"], strict=False)
    }


@pytest.mark.slow
def test_bench_runs_it_against_its_reference(pipeline):
    from alexnet_deploy.bench.config import BenchConfig
    from alexnet_deploy.bench.run import run_bench

    config = BenchConfig(
        batches=(2,),
        backends=("onnxruntime", "openvino", "torch"),
        precisions=("fp32", "int8"),
        iterations=1,
        warmup=0,
        onnx=pipeline["onnx"],
        engines_dir=pipeline["engines"],
        checkpoint=pipeline["checkpoint"],
    )
    rows = {(r.backend, r.precision): r for r in run_bench(config).rows}
    assert rows[("onnxruntime", "fp32")].max_abs_diff == 0
    for backend in ("openvino", "torch"):
        row = rows[(backend, "fp32")]
        assert row.top1_agreement == 1.0 and not any("PARITY FAILED" in n for n in row.notes), row
    assert rows[("onnxruntime", "int8")].throughput_ips > 0 and rows[("onnxruntime", "int8")].top1_agreement is not None


@pytest.mark.slow
def test_the_repository_serves_it_with_torchvisions_preprocessing(labelled, pipeline, transform, tmp_path):
    """A real Triton server (nvidia-pytriton's binary) serving the import: its
    preprocess model decodes a PNG as torchvision's transforms do, and the served logits
    are torchvision's."""
    from alexnet_deploy.serve.client import TritonClassifier
    from alexnet_deploy.serve.config import RepositoryConfig, ServerConfig
    from alexnet_deploy.serve.repository import write_repository
    from alexnet_deploy.serve.server import TritonServer

    repository = write_repository(
        pipeline["onnx"], tmp_path / "repo", config=RepositoryConfig(flavour="local", preprocess_instances=1)
    ).path
    assert (repository / "alexnet_onnx" / "labels.txt").read_text().splitlines()[0] == "tench"
    server = TritonServer(ServerConfig(repository, startup_timeout_s=300, log=tmp_path / "server.log")).start()
    try:
        with TritonClassifier(server.http_url, "http") as client:
            served = np.stack([client.logits(p.name, p.read_bytes()) for p in labelled["paths"][:2]])
    finally:
        server.stop()
    assert relative_difference(served, labelled["logits"][:2]) <= RELATIVE_TOLERANCE


# --- training ---------------------------------------------------------------------------


def test_train_variant_torchvision_trains_and_exports_without_lrn(tmp_path):
    output = tmp_path / "alexnet.pt"
    args = ["--variant", "torchvision", "--width", "0.125", "--limit", "120", "--epochs", "1", "--output", str(output)]
    assert invoke("train", *args).exit_code == 0
    checkpoint = load_checkpoint(output)
    assert (checkpoint.config.variant, checkpoint.config.groups, checkpoint.preprocessing.crop) == (
        "torchvision",
        1,
        224,
    )
    assert not any("norm" in name for name in checkpoint.state_dict)
    exported = invoke("export", "--checkpoint", str(output), "--output", str(tmp_path / "alexnet.onnx"))
    assert exported.exit_code == 0, exported.output
    graph = onnx.load(str(tmp_path / "alexnet.onnx"))
    assert [n.op_type for n in graph.graph.node].count("Conv") == 5
    assert not [n for n in graph.graph.node if "LRN" in n.op_type]
    assert_one_line_error(invoke("train", "--variant", "torchvision", "--groups", "2"), "contradicts --variant")
