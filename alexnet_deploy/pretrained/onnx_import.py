"""Import an AlexNet ONNX graph into our checkpoint, validated first: the ONNX model
zoo's BVLC Caffe AlexNet (``bvlc_alexnet``, any of its opsets), or the graph
``torch.onnx.export`` writes from torchvision's ``alexnet`` (either exporter, opset 13
or later, with or without a dynamic batch axis).

``matching`` maps the graph's layers and weights onto ours and says which of the two
networks it is. The zoo graph ends in a ``Softmax``; we drop it (our models output
logits) and say so in the checkpoint's ``origin``. ``Dropout`` nodes are inference
no-ops; ours sit in the classifier already (at drop6/drop7, where they only matter
for training).

The imported model is then checked against the source graph run by onnxruntime, at
227 pixels (BVLC) or 224 (torchvision), before the checkpoint is written
(``importing.finish_import``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..errors import DeployError
from ..files import check_output_paths, require_file, sha256_file
from ..model import TORCHVISION_INPUT_SIZE, AlexNetConfig
from .importing import CAFFE_PREPROCESSING, IMPORT_SPLIT, ImportResult, finish_import
from .matching import IMPORT_INPUT_SIZE, match_alexnet

__all__ = ["CAFFE_PREPROCESSING", "IMPORT_SPLIT", "ImportResult", "import_onnx", "source_logits"]


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


def source_logits(source_model: onnx.ModelProto, logits: str, images: np.ndarray) -> np.ndarray:
    """onnxruntime running the source graph itself up to its fc8 output ``logits``, one
    image at a time (the zoo graph's Reshape fixes the batch at 1)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        _logits_graph(source_model, logits, images.shape[-1]).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: image[None]})[0] for image in images])


def import_onnx(path: Path, output: Path, labels_path: Path | None = None, data: Path | None = None) -> ImportResult:
    """The AlexNet ONNX at ``path`` as our checkpoint at ``output``, validated first."""
    path, output = Path(path), Path(output)
    check_output_paths({"MODEL": path, "--labels": labels_path}, {"--output": output}, {"--data": data})
    require_file(path, "ONNX model", "download the zoo's bvlc_alexnet or export torchvision's (docs/pretrained.md)")
    source = str(path)
    try:
        proto = onnx.load(source)
    except Exception as error:  # noqa: BLE001 -- protobuf raises DecodeError, onnx ValidationError, OSError...
        raise DeployError(f"{source} is not a readable ONNX model ({error.__class__.__name__}; truncated?)") from None
    if not proto.graph.node:
        raise DeployError(f"{source} is not a readable ONNX model (it holds no graph)")
    matched = match_alexnet(proto, source)
    if matched.lrn is None:  # torchvision's: no LRN, 224 px
        config = AlexNetConfig(
            num_classes=matched.num_classes, groups=1, input_size=TORCHVISION_INPUT_SIZE, variant=matched.variant
        )
    else:
        config = AlexNetConfig(
            num_classes=matched.num_classes, groups=matched.groups, input_size=IMPORT_INPUT_SIZE, lrn=matched.lrn
        )
    dropped = ["Dropout (inference no-ops; our classifier has its own)"]
    if matched.softmax:
        dropped.insert(0, "Softmax (the imported model outputs logits)")
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    origin = {
        "format": "onnx",
        "file": path.name,
        "sha256": sha256_file(path),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "opset": opsets.get("ai.onnx", 0),
        "input": matched.input_name,
        "dropped": dropped,
        "layers": matched.nodes,
    }
    return finish_import(
        config,
        matched.state_dict,
        output,
        labels_path,
        data,
        origin,
        lambda images: source_logits(proto, matched.logits_name, images),
        f"onnxruntime on {source}",
    )
