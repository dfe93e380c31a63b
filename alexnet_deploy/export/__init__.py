"""The export step: the trained checkpoint as FP32 ONNX (dynamic batch, LRN as our
plugin's custom op or ONNX's own), validated against the torch model before it is
written (``run``); the supported opsets are in ``config``."""
