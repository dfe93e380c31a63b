"""Import an AlexNet ONNX graph — the ONNX model zoo's BVLC Caffe AlexNet
(``bvlc_alexnet``, any of its opsets) — into our checkpoint, validated first.

``matching`` maps the graph's layers and weights onto ours. The zoo graph ends in a
``Softmax``; we drop it (our models output logits) and say so in the checkpoint's
``origin``. Its ``Dropout`` nodes are inference no-ops; ours sit in the classifier
already (at drop6/drop7, where they only matter for training).

The imported model is then checked against the source graph run by onnxruntime, at
227 pixels, before the checkpoint is written (``validate_import``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper

from ..checkpoint import Checkpoint, check_names_fit, save_checkpoint
from ..data.preprocessing import Preprocessing
from ..data.sources import NO_DATA, load_labelled_folder
from ..data.split import Split
from ..errors import DeployError
from ..files import check_output_paths, require_file, sha256_file
from ..model import AlexNet, AlexNetConfig
from .imagenet import read_labels
from .matching import IMPORT_INPUT_SIZE, match_alexnet

# The BVLC model's input: 227 x 227 crops of 256-pixel images, BGR, in 0-255, less
# the per-channel mean of Caffe's ILSVRC-2012 mean image (ilsvrc_2012_mean.npy
# averaged over its pixels), no division. We resize the shorter side to 256 and crop
# the centre, as for every model here; Caffe itself warped images to 256 x 256
# (docs/pretrained.md weighs the difference).
CAFFE_PREPROCESSING = Preprocessing(
    resize=256,
    crop=227,
    mean=(104.00698793, 116.66876762, 122.67891434),
    std=(1.0, 1.0, 1.0),
    channel_order="BGR",
    pixel_scale=255.0,
)
# An imported model is never trained: its --data folder is only judged and
# calibrated on, so it is split half and half (Split wants the two to sum below 1;
# the 5% left over is unused).
IMPORT_SPLIT = Split(val_fraction=0.5, calibration_fraction=0.45)
# The torch model must reproduce the source graph to this relative difference
# (max |Δ| / max |reference|) on the validation inputs, float32 both sides.
IMPORT_TOLERANCE = 1e-5
VALIDATION_IMAGES = 4


@dataclass
class ImportResult:
    checkpoint: Path
    source_sha256: str
    classes: int
    labels: str  # where the class names came from
    data: str  # the --data folder, or "none"
    validation: str
    dropped: list[str]


def _logits_graph(model: onnx.ModelProto, logits: str, size: int) -> onnx.ModelProto:
    """The source graph ending at fc8 (``logits``; a softmax after it saturates to
    one-hot on random inputs, which would hide any difference), with its image input
    declared at ``size`` pixels and one image."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if all(o.name != logits for o in result.graph.output):
        del result.graph.output[:]
        result.graph.output.append(helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None))
    image = next(i for i in result.graph.input if i.name not in {t.name for t in result.graph.initializer})
    dims = image.type.tensor_type.shape.dim
    if len(dims) == 4:
        dims[0].dim_value, dims[2].dim_value, dims[3].dim_value = 1, size, size
    return result


def validate_import(
    model: AlexNet, source_model: onnx.ModelProto, logits: str, images: np.ndarray
) -> tuple[float, float]:
    """Relative max difference (max |Δ| / max |reference|) of logits and top-1
    agreement of our torch model against onnxruntime running the source graph itself,
    up to its fc8 output ``logits`` (one image at a time: the zoo graph's Reshape fixes
    the batch at 1)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        _logits_graph(source_model, logits, IMPORT_INPUT_SIZE).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    name = session.get_inputs()[0].name
    reference = np.concatenate([session.run(None, {name: image[None]})[0] for image in images])
    with torch.no_grad():
        ours = model(torch.from_numpy(images)).numpy()
    scale = float(np.abs(reference).max()) or 1.0
    relative = float(np.abs(ours - reference).max()) / scale
    agreement = float(np.mean(ours.argmax(1) == reference.argmax(1)))
    return relative, agreement


def import_onnx(path: Path, output: Path, labels_path: Path | None = None, data: Path | None = None) -> ImportResult:
    """The AlexNet ONNX at ``path`` as our checkpoint at ``output``, validated first."""
    path, output = Path(path), Path(output)
    check_output_paths({"MODEL": path, "--labels": labels_path}, {"--output": output}, {"--data": data})
    require_file(path, "ONNX model", "download the zoo's bvlc_alexnet (docs/pretrained.md)")
    source = str(path)
    try:
        proto = onnx.load(source)
    except Exception as error:  # noqa: BLE001 -- protobuf raises DecodeError, onnx ValidationError, OSError...
        raise DeployError(f"{source} is not a readable ONNX model ({error.__class__.__name__}; truncated?)") from None
    if not proto.graph.node:
        raise DeployError(f"{source} is not a readable ONNX model (it holds no graph)")
    matched = match_alexnet(proto, source)
    labels = read_labels(labels_path, matched.num_classes)
    check_names_fit([*labels.names, *labels.ids], f"--labels {labels.source}")
    assert matched.lrn is not None  # the walk matched norm1
    config = AlexNetConfig(
        num_classes=matched.num_classes, groups=matched.groups, input_size=IMPORT_INPUT_SIZE, lrn=matched.lrn
    )
    data_source = NO_DATA
    if data is not None:
        data_source = load_labelled_folder(Path(data), labels.names, labels.ids).source
    dropped = ["Dropout (inference no-ops; our classifier has its own)"]
    if matched.softmax:
        dropped.insert(0, "Softmax (the imported model outputs logits)")
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    checkpoint = Checkpoint(
        config=config,
        state_dict=matched.state_dict,
        classes=labels.names,
        preprocessing=CAFFE_PREPROCESSING,
        data_source=data_source,
        split=IMPORT_SPLIT,
        class_ids=labels.ids,
        origin={
            "format": "onnx",
            "file": path.name,
            "sha256": sha256_file(path),
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "opset": opsets.get("ai.onnx", 0),
            "input": matched.input_name,
            "labels": labels.source,
            "dropped": dropped,
            "layers": matched.nodes,
        },
    )
    model = checkpoint.build_model()
    pixels = np.random.default_rng(0).integers(0, 256, (VALIDATION_IMAGES, 227, 227, 3), dtype=np.uint8)
    images = np.stack([CAFFE_PREPROCESSING.normalise(image) for image in pixels])
    relative, agreement = validate_import(model, proto, matched.logits_name, images)
    summary = (
        f"{len(images)} random-pixel images: max relative |Δ logits| {relative:.1e} "
        f"(tolerance {IMPORT_TOLERANCE:.0e}), top-1 agreement {agreement:.0%}"
    )
    if not relative <= IMPORT_TOLERANCE or agreement < 1.0:
        raise DeployError(f"import validation failed against onnxruntime on {source}: {summary}; nothing written")
    checkpoint.metrics = {"import_validation": summary}
    save_checkpoint(checkpoint, output)
    return ImportResult(
        output, checkpoint.origin["sha256"], len(labels.names), labels.source, data_source, summary, dropped
    )
