"""The LRN plugin: one Triton kernel (``kernel``) and its TensorRT registration
(``registration``). The identifiers below are shared by the ONNX export (custom-op
node) and the TensorRT plugin, so the parser maps one onto the other."""

PLUGIN_NAMESPACE = "alexnet_deploy"  # ONNX node domain == TensorRT plugin namespace
PLUGIN_NAME = "AlexNetLRN"  # ONNX op_type == TensorRT plugin name; not "LRN" (built-in importer)
PLUGIN_VERSION = "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"  # tensorrt.plugin's "namespace::name"
