"""Pretrained AlexNets from elsewhere, imported into our checkpoint format: the BVLC
Caffe AlexNet as the ONNX model zoo distributes it (``onnx_import``) and the ImageNet
classes it is labelled with (``imagenet``)."""
