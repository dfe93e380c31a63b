"""FP16 and INT8 ONNX from the FP32 export: calibration, the scale cache, and the Q/DQ
graphs for TensorRT (``qdq``) and for onnxruntime (``onnxruntime``)."""
