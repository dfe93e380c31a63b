"""The ONNX opsets the export supports, stated once (light: the CLI reads them at import)."""

MIN_OPSET = 18  # the torch.export-based exporter emits opset 18 and newer
MAX_OPSET = 23
