"""Inference backends behind one small interface (see ``base.Runner``); the TensorRT
runner lives with the rest of its backend, in ``alexnet_deploy.tensorrt.runner``."""
