"""alexnet-deploy: AlexNet from training to verified FP16/INT8 TensorRT inference.

The pipeline is visible in the package layout:
train (``train``) -> export (``export``) -> quantize (``quantize``) -> build (``build``)
-> bench (``bench``), with every inference backend a runner in ``runners``.
"""

__version__ = "0.1.0"
