"""Export a checkpoint to FP32 ONNX with a dynamic batch axis, LRN as our plugin's
custom op (``--lrn plugin``) or standard ONNX ``LRN`` (``--lrn native``), and
validate the written file against the torch model before calling it done.

Route: torch's ``torch.export``-based exporter, with LRN held as one opaque
``torch.library`` custom op and translated to ONNX ``LRN``; the plugin variant then
swaps those nodes for the custom op (``graph.to_plugin_lrn``). We translate to the
standard op first because onnxscript will only emit ops whose schema it knows.

torchvision's variant (``model.py``) has no LRN, so its graph has no plugin node and
``--lrn`` changes nothing (the result says so; metadata ``lrn_mode`` "none"). Its
adaptive average pool is the identity at the input sizes the variant allows (pool5 is
already 6 x 6) and the exporter writes it as ``AveragePool`` 1x1/1: a 2D pooling that
onnxruntime and OpenVINO run (tested) and TensorRT's ONNX parser imports as a pooling
layer (its operator table: AveragePool, 2D/3D pooling).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .. import __version__
from ..artifacts import Precision
from ..checkpoint import Checkpoint, checkpoint_hash, load_checkpoint
from ..choices import LrnExport
from ..data.preprocessing import held_out_images
from ..digests import seal, set_metadata
from ..errors import DeployError
from ..files import atomic_output, check_output_paths
from ..graph import INPUT_NAME, OUTPUT_NAME, check_alexnet_graph, to_plugin_lrn
from ..lrn import CONVENTION, LRNParams, local_response_norm, replace_lrn
from ..metrics import compare_logits, fp32_tolerance
from ..model import AlexNet
from ..runners.registry import reference_runner
from .config import MAX_OPSET, MIN_OPSET


@torch.library.custom_op("alexnet_deploy::lrn", mutates_args=())
def _lrn_op(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    return local_response_norm(x, LRNParams(size, alpha, beta, bias))


@_lrn_op.register_fake
def _lrn_shape(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    return torch.empty_like(x)


def _lrn_to_onnx(x, size: int, alpha: float, beta: float, bias: float):
    from onnxscript import opset18 as op

    return op.LRN(x, size=size, alpha=alpha, beta=beta, bias=bias)


# The ``lrn_mode`` of a network without LRN (torchvision's variant): ``--lrn`` has nothing to export
NO_LRN = "none"


@dataclass
class Validation:
    images: int
    source: str  # "val split of digits" or "random inputs (...)"
    max_abs_diff: float
    top1_agreement: float
    tolerance: float

    def summary(self) -> str:
        return (
            f"validated on {self.images} {self.source}: max |Δ logits| {self.max_abs_diff:.2e} "
            f"(tolerance {self.tolerance:.1e}), top-1 agreement {self.top1_agreement:.2%}"
        )


@dataclass
class ExportResult:
    path: Path
    lrn: str  # how LRN was exported, or why there is none
    opset: int
    validation: Validation


def export_model(model: AlexNet, opset: int = MIN_OPSET, lrn: LrnExport | str = LrnExport.PLUGIN) -> onnx.ModelProto:
    """Trace ``model`` (eval mode) into ONNX with a dynamic batch axis."""
    if lrn not in LrnExport.values():
        raise DeployError(f"unknown --lrn {lrn!r}; choose one of {', '.join(LrnExport.values())}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise DeployError(f"--opset {opset} is not supported: the export needs opset {MIN_OPSET} to {MAX_OPSET}")
    size = model.config.input_size
    example = torch.randn(2, 3, size, size)
    registry_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    previous_level = registry_logger.level
    registry_logger.setLevel(logging.ERROR)  # "torchvision is not installed" notes are noise here
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter is chatty about its own internals
        program = torch.onnx.export(
            replace_lrn(copy.deepcopy(model), _lrn_op).eval(),
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=65536)}},
            opset_version=opset,
            custom_translation_table={torch.ops.alexnet_deploy.lrn.default: _lrn_to_onnx},
            verbose=False,
        )
    registry_logger.setLevel(previous_level)
    if program is None:  # torch.onnx.export returns None only for its legacy exporter
        raise DeployError("the ONNX exporter returned no program")
    proto = program.model_proto
    # the exporter names the dynamic axis after its symbol; give it a readable name
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    for node in proto.graph.node:  # exporter debug info: stack traces with local paths
        del node.metadata_props[:]
    return to_plugin_lrn(proto) if lrn == LrnExport.PLUGIN else proto


def validation_images(checkpoint: Checkpoint, count: int = 64) -> tuple[np.ndarray, str]:
    """Held-out val images of the checkpoint's own data, or random ones if it is gone
    (or, for a model imported without --data, never was)."""
    try:
        images, _ = held_out_images(
            checkpoint.data_source,
            checkpoint.split,
            checkpoint.preprocessing,
            "val",
            count,
            checkpoint.classes,
            checkpoint.class_ids,
        )
    except DeployError as error:
        # random pixels through the model's own preprocessing, so the inputs have the
        # scale its weights expect (0-255 less the mean for a Caffe model, ~N(0, 1) for ours)
        size = checkpoint.config.input_size
        pixels = np.random.default_rng(0).integers(0, 256, (min(count, 16), size, size, 3), dtype=np.uint8)
        images = np.stack([checkpoint.preprocessing.normalise(image) for image in pixels])
        return images, f"random inputs ({error})"
    return images, f"held-out val images of {Path(checkpoint.data_source).name}"


def validate(model: nn.Module, onnx_model: onnx.ModelProto, images: np.ndarray, source: str) -> Validation:
    """Torch model vs the onnxruntime reference on ``images``; raise if they disagree."""
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    with reference_runner(onnx_model) as runner:
        actual = runner.infer(images)
    if not np.isfinite(expected).all():
        raise DeployError(
            "export validation failed: the checkpoint's model outputs non-finite logits (NaN/inf weights: "
            "did training diverge?); nothing written"
        )
    max_abs_diff, agreement = compare_logits(expected, actual)
    result = Validation(len(images), source, max_abs_diff, agreement, fp32_tolerance(expected))
    # `not <=` so that a NaN difference fails too
    if not max_abs_diff <= result.tolerance or not agreement >= 1.0:
        raise DeployError(f"export validation failed: output '{OUTPUT_NAME}' {result.summary()}")
    return result


def export(
    checkpoint_path: Path, output: Path, opset: int = MIN_OPSET, lrn: LrnExport | str = LrnExport.PLUGIN
) -> ExportResult:
    """Checkpoint -> validated ONNX at ``output`` (written only if validation passes)."""
    output = Path(output)
    check_output_paths({"--checkpoint": Path(checkpoint_path)}, {"--output": output})
    checkpoint = load_checkpoint(checkpoint_path)
    model = checkpoint.build_model()
    proto = export_model(model, opset, lrn)
    set_metadata(
        proto,
        {
            "classes": checkpoint.classes,
            "class_ids": checkpoint.class_ids,
            "origin": checkpoint.origin,
            "preprocessing": checkpoint.preprocessing.to_dict(),
            "input_size": checkpoint.config.input_size,
            "architecture": checkpoint.config.to_dict(),
            "lrn_convention": CONVENTION,
            "lrn_mode": str(lrn) if model.config.has_lrn else NO_LRN,
            "precision": Precision.FP32.value,
            "source_checkpoint": Path(checkpoint_path).name,
            "checkpoint_sha256": checkpoint_hash(checkpoint_path),
            "data_source": checkpoint.data_source,
            "split": checkpoint.split.to_dict(),
            "alexnet_deploy_version": __version__,
        },
    )
    seal(proto)
    onnx.checker.check_model(proto, full_check=True)
    check_alexnet_graph(proto, str(output), require_plugin=lrn == LrnExport.PLUGIN)
    images, source = validation_images(checkpoint)
    validation = validate(model, proto, images, source)
    with atomic_output(output) as tmp:
        onnx.save(proto, str(tmp))
    described = (
        str(lrn)
        if model.config.has_lrn
        else f"{NO_LRN}: {model.config.variant}'s AlexNet has no LRN, so no plugin node"
    )
    return ExportResult(output, described, opset, validation)
