"""The LRN plugin's contract: the identifiers shared by the ONNX export (custom-op node)
and the TensorRT plugin, so the parser maps one onto the other, and the oldest TensorRT
that can load it. The kernel is in ``kernel`` (Triton), its registration in ``registration``."""

PLUGIN_NAMESPACE = "alexnet_deploy"  # ONNX node domain == TensorRT plugin namespace
PLUGIN_NAME = "AlexNetLRN"  # ONNX op_type == TensorRT plugin name; not "LRN" (built-in importer)
PLUGIN_VERSION = "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"  # tensorrt.plugin's "namespace::name"

# tensorrt.plugin.aot_impl appeared in 10.9, but the 10.9 ONNX parser looks a Python
# plugin up by the *node name* (onnx-tensorrt passed the name to createPlugin until
# 10.10; NVIDIA's own sample named its node after the op until then), and our nodes are
# named node_lrn, node_lrn_1: only parsers >= 10.10 pass op_type, which
# tensorrt.plugin's create_plugin needs ("namespace::op_type" in its registry).
MIN_TENSORRT = (10, 10)


def parse_version(version: str) -> tuple[int, ...]:
    """'10.13.0.35' -> (10, 13, 0, 35); stops at the first non-numeric part."""
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)
