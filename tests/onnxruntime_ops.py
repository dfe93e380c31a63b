"""What onnxruntime's graph optimiser makes of a graph: the op types it runs, for the
tests that assert an INT8 layout becomes integer kernels (a test helper, not the package's)."""

from __future__ import annotations

from pathlib import Path

import onnx

from alexnet_deploy.graph import to_standard_lrn

FLOAT_OPS = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul")


def optimized_op_types(model: onnx.ModelProto, workdir: Path) -> list[str]:
    """The op types of ``model``'s standard-op twin after onnxruntime's graph optimiser
    (``ORT_ENABLE_EXTENDED``: every QDQ fusion, none of the hardware-specific layout
    rewrites that cannot be saved portably), read back from the saved optimised model."""
    import onnxruntime

    target = Path(workdir) / "optimized.onnx"
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    onnxruntime.InferenceSession(
        to_standard_lrn(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return [node.op_type for node in onnx.load(str(target)).graph.node]
