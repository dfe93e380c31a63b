"""``alexnet-deploy eval`` and the rest of the pipeline on an imported 1000-class model
(the zoo-graph stand-in of tests/zoo_alexnet.py: real BVLC topology, seeded random
weights, so it has learned nothing and no accuracy here means anything about
ImageNet).

What these prove: eval's top-1/top-5 are the ones computed by hand from onnxruntime
running the zoo graph itself on independently preprocessed images, for folders named
by synset id and by class name alike; the rows that cannot run here say why; the
imported model goes through export, build (FP16 and INT8, calibrated on a user
folder), predict (ImageNet names) and eval's INT8 row with figures that onnxruntime,
run here on the INT8 file directly, confirms. Agreement between precisions is not
asserted: on a model that has learned nothing it would mean nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error, invoke
from PIL import Image
from zoo_alexnet import caffe_preprocess, seeded_zoo_alexnet, stripe_images, zoo_logits

from alexnet_deploy.build.config import BuildConfig
from alexnet_deploy.build.run import build
from alexnet_deploy.evaluate.run import EvalConfig, evaluate, sample
from alexnet_deploy.export.run import export
from alexnet_deploy.graph import to_standard_lrn
from alexnet_deploy.pretrained.imagenet import imagenet_classes
from alexnet_deploy.pretrained.onnx_import import import_onnx

IMAGES = 12


def hand_topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    ranked = np.argsort(-logits, axis=1)[:, :k]
    return float(np.mean([label in row for row, label in zip(ranked, labels, strict=True)]))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Twelve stripe images in two labelled folders, one named by synset id and one by
    class name. Two in three sit in the folder of the class the zoo graph predicts for
    them, the rest in the next class, so the expected top-1 is known and not trivial."""
    root = tmp_path_factory.mktemp("labelled")
    zoo = seeded_zoo_alexnet()
    raw = root / "raw"
    raw.mkdir()
    paths = []
    for i, pixels in enumerate(stripe_images(IMAGES, seed=5)):
        paths.append(raw / f"{i:02d}.png")
        Image.fromarray(pixels).save(paths[-1])
    logits = zoo_logits(zoo, np.stack([caffe_preprocess(p) for p in paths]))
    predicted = logits.argmax(1)
    labels = np.where(np.arange(IMAGES) % 3 == 2, (predicted + 1) % 1000, predicted)
    classes = imagenet_classes()
    for layout, folder_name in (("synsets", lambda c: classes[c].synset), ("names", lambda c: classes[c].name)):
        for path, label in zip(paths, labels, strict=True):
            folder = root / layout / folder_name(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / path.name).write_bytes(path.read_bytes())
    zoo_path = root / "bvlc_alexnet.onnx"
    onnx.save(zoo, str(zoo_path))
    return {"root": root, "zoo": zoo_path, "logits": logits, "labels": labels, "paths": paths}


@pytest.fixture(scope="module")
def pipeline(labelled, tmp_path_factory):
    """import --data <synset folder> -> export -> build --fp16 --int8 --calib-from-data."""
    folder = tmp_path_factory.mktemp("pipeline")
    checkpoint, fp32 = folder / "alexnet.pt", folder / "alexnet.onnx"
    import_onnx(labelled["zoo"], checkpoint, data=labelled["root"] / "synsets")
    export(checkpoint, fp32)
    report = build(
        BuildConfig(
            onnx=fp32,
            precisions=("fp16", "int8"),
            calibration_dir=folder / "calibration",
            calib_from_data=True,
            engines_dir=folder / "engines",
        )
    )
    return {"checkpoint": checkpoint, "onnx": fp32, "engines": folder / "engines", "build": report}


def run_eval(pipeline, data: Path, **options):
    config = EvalConfig(
        data=data, onnx=pipeline["onnx"], engines=pipeline["engines"], checkpoint=pipeline["checkpoint"], **options
    )
    return evaluate(config)


@pytest.mark.parametrize("layout", ["synsets", "names"])
def test_eval_scores_are_the_hand_computed_ones(labelled, pipeline, layout):
    report = run_eval(
        pipeline,
        labelled["root"] / layout,
        backends=("onnxruntime", "torch", "tensorrt"),
        precisions=("fp32",),
    )
    expected_top1 = hand_topk(labelled["logits"], labelled["labels"], 1)
    expected_top5 = hand_topk(labelled["logits"], labelled["labels"], 5)
    assert 0.5 <= expected_top1 < 1  # by construction: 8 of 12 sit in their predicted class
    assert report.images == IMAGES and report.reference == "onnxruntime/fp32"
    rows = {row.backend: row for row in report.rows}
    for backend in ("onnxruntime", "torch"):
        assert rows[backend].top1 == pytest.approx(expected_top1), backend
        assert rows[backend].top5 == pytest.approx(expected_top5), backend
    assert rows["torch"].agreement == 1.0
    assert rows["tensorrt"].skipped and rows["tensorrt"].top1 is None


def test_eval_int8_row_is_what_onnxruntime_measures_on_the_int8_file(labelled, pipeline):
    import onnxruntime

    report = run_eval(pipeline, labelled["root"] / "names", backends=("onnxruntime",), precisions=("fp32", "int8"))
    int8_row = next(row for row in report.rows if row.precision == "int8")
    # onnxruntime's int8 row runs the integer-kernel layout (runners/registry.py: its artifact)
    twin = to_standard_lrn(onnx.load(str(pipeline["onnx"].with_name("alexnet.int8-ort.onnx"))))
    session = onnxruntime.InferenceSession(twin.SerializeToString(), providers=["CPUExecutionProvider"])
    images = np.stack([caffe_preprocess(p) for p in labelled["paths"]])
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert int8_row.top1 == pytest.approx(hand_topk(logits, labelled["labels"], 1))
    assert int8_row.top5 == pytest.approx(hand_topk(logits, labelled["labels"], 5))


def test_build_calibrated_int8_on_the_users_folder(labelled, pipeline):
    from alexnet_deploy.data.sources import load_labelled_folder
    from alexnet_deploy.pretrained.onnx_import import IMPORT_SPLIT

    report = pipeline["build"]
    classes = imagenet_classes()
    folder = load_labelled_folder(labelled["root"] / "synsets", [c.name for c in classes], [c.synset for c in classes])
    parts = IMPORT_SPLIT.apply(folder)
    assert report.val_images == len(parts["val"]) > 0  # judged on the import's split of the user's folder
    assert len(parts["calibration"]) > 0
    assert any("held-out calibration images" in line for line in report.calibration)
    assert {"fp16", "int8"} <= set(report.onnx)


def test_predict_names_the_imagenet_class_the_zoo_graph_predicts(labelled, pipeline, tmp_path):
    path = labelled["paths"][0]
    expected = imagenet_classes()[int(labelled["logits"][0].argmax())].name
    report = tmp_path / "predict.json"
    result = invoke("predict", str(path), "--onnx", str(pipeline["onnx"]), "--top", "1", "--json", str(report))
    assert result.exit_code == 0, result.output
    assert expected in result.stdout
    assert json.loads(report.read_text())["predictions"][0]["top"][0]["class"] == expected


def test_eval_cli_writes_the_table_and_json(labelled, pipeline, tmp_path):
    report_path = tmp_path / "eval.json"
    result = invoke(
        "eval",
        "--data",
        str(labelled["root"] / "synsets"),
        "--onnx",
        str(pipeline["onnx"]),
        "--engines",
        str(pipeline["engines"]),
        "--checkpoint",
        str(pipeline["checkpoint"]),
        "--precisions",
        "fp32",
        "--json",
        str(report_path),
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["images"] == IMAGES
    first = report["rows"][0]
    assert first["top1"] == pytest.approx(hand_topk(labelled["logits"], labelled["labels"], 1))
    assert "top-1" in result.stdout and "skipped" in result.stdout


def test_eval_refuses_a_folder_of_unknown_classes(pipeline, tmp_path):
    (tmp_path / "data" / "not_a_class").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "data" / "not_a_class" / "a.png")
    result = invoke("eval", "--data", str(tmp_path / "data"), "--onnx", str(pipeline["onnx"]))
    assert_one_line_error(result, "none of the model's 1000 classes")


def test_limit_keeps_every_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    assert sample(labels, 3).tolist() == [0, 4, 6]
    assert sample(labels, None).tolist() == list(range(7))


def test_eval_takes_a_folder_of_one_class(labelled, pipeline, tmp_path):
    """A user may score the model on images of a single class it knows."""
    label = int(labelled["labels"][0])
    source = labelled["root"] / "synsets" / imagenet_classes()[label].synset
    target = tmp_path / "one" / source.name
    target.mkdir(parents=True)
    for image in source.iterdir():
        (target / image.name).write_bytes(image.read_bytes())
    members = np.flatnonzero(labelled["labels"] == label)
    report = run_eval(pipeline, tmp_path / "one", backends=("onnxruntime",), precisions=("fp32",))
    expected = hand_topk(labelled["logits"][members], labelled["labels"][members], 1)
    assert report.images == len(members) and report.rows[0].top1 == pytest.approx(expected)


def test_the_served_preprocess_model_takes_caffes_preprocessing(labelled, pipeline, tmp_path):
    """The Triton repository's preprocess model is configured with the imported
    model's BGR / 0-255 preprocessing, and decoding with it gives the definition's
    tensor; the labels file holds the ImageNet names."""
    from alexnet_deploy.data.preprocessing import Preprocessing
    from alexnet_deploy.serve.predict import decode
    from alexnet_deploy.serve.repository import write_repository

    result = write_repository(pipeline["onnx"], tmp_path / "model_repository", pipeline["engines"])
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(
        (result.path / "preprocess" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    preprocessing = Preprocessing.from_dict(json.loads(config.parameters["preprocessing"].string_value))
    assert (preprocessing.channel_order, preprocessing.pixel_scale) == ("BGR", 255.0)
    path = labelled["paths"][1]
    np.testing.assert_allclose(decode(path.read_bytes(), preprocessing), caffe_preprocess(path), atol=1e-4)
    labels = (result.path / "alexnet_onnx" / "labels.txt").read_text().splitlines()
    assert len(labels) == 1000 and labels[0] == "tench"


def test_bench_runs_the_imported_model_against_its_reference(pipeline):
    """bench on the 1000-class import: rows judged against onnxruntime FP32 on the
    held-out half of the user's folder, the OpenVINO INT8 row in integer kernels."""
    from alexnet_deploy.bench.config import BenchConfig
    from alexnet_deploy.bench.run import run_bench

    config = BenchConfig(
        batches=(2,),
        backends=("onnxruntime", "openvino"),
        precisions=("fp32", "int8"),
        iterations=1,
        warmup=0,
        onnx=pipeline["onnx"],
        engines_dir=pipeline["engines"],
        checkpoint=pipeline["checkpoint"],
    )
    rows = {(r.backend, r.precision): r for r in run_bench(config).rows}
    assert rows[("onnxruntime", "fp32")].max_abs_diff == 0
    openvino = rows[("openvino", "fp32")]
    assert openvino.top1_agreement == 1.0 and not any("PARITY FAILED" in n for n in openvino.notes), openvino
    assert any("Convolution u8 x5" in note for note in rows[("openvino", "int8")].notes)
