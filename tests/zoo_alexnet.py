"""The ONNX model zoo's BVLC AlexNet as far as it can exist without internet, and
independent references to judge our import of it by.

The onnx package ships the zoo graph as ``light_bvlc_alexnet.onnx``: the real
topology and attributes (producer onnx-caffe2, opset 9, input ``data_0`` 1x3x224x224,
two-group conv2/4/5, LRN k=1, pool5 padded at its end, Gemm transB, Dropout,
Softmax) with every weight a ``ConstantOfShape`` fill. :func:`seeded_zoo_alexnet`
replaces the fills with seeded He-scaled random weights, so the graph computes
something that differences can show in. It is a STAND-IN for the real zoo file
(bvlc_alexnet-12.onnx, 233 MB), which needs internet: the layer structure is the
zoo's, the weights are not, so nothing here measures ImageNet accuracy.

The references never use our code: onnxruntime runs the zoo graph itself, and the
Caffe preprocessing is recomputed here from its definition with PIL and numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from PIL import Image

LIGHT_MODELS = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO_ALEXNET = LIGHT_MODELS / "light_bvlc_alexnet.onnx"
# Caffe's ILSVRC-2012 mean image, averaged per channel, in B, G, R order
CAFFE_MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434], np.float32)


def seeded_zoo_alexnet(seed: int = 0) -> onnx.ModelProto:
    """The light zoo graph with seeded random weights as initializers in place of its
    ConstantOfShape fills (still listed as graph inputs, as IR 3 files list them)."""
    model = onnx.load(str(ZOO_ALEXNET))
    graph = model.graph
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    rng = np.random.default_rng(seed)
    kept, weights = [], []
    for node in graph.node:
        if node.op_type != "ConstantOfShape":
            kept.append(node)
            continue
        shape = tuple(int(v) for v in shapes[node.input[0]])
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 0
        values = rng.normal(0, np.sqrt(2 / fan_in), shape) if fan_in else rng.normal(0, 0.1, shape)
        weights.append(numpy_helper.from_array(values.astype(np.float32), node.output[0]))
    used = {name for node in kept for name in node.input}
    initializers = [t for t in graph.initializer if t.name in used] + weights
    inputs = [i for i in graph.input if i.name in used]
    inputs += [helper.make_tensor_value_info(t.name, onnx.TensorProto.FLOAT, list(t.dims)) for t in weights]
    del graph.node[:], graph.initializer[:], graph.input[:]
    graph.node.extend(kept)
    graph.initializer.extend(initializers)
    graph.input.extend(inputs)
    onnx.checker.check_model(model)
    return model


def zoo_logits(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """onnxruntime running ``model`` itself up to the input of its Softmax (the
    logits; probabilities of random weights saturate to one-hot), with its image
    input declared at the images' size, one image at a time (its Reshape fixes the
    batch at 1)."""
    import onnxruntime

    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    softmax = next(n for n in cut.graph.node if n.op_type == "Softmax")
    del cut.graph.output[:]
    cut.graph.output.append(helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, None))
    cut.graph.node.remove(softmax)
    image_input = cut.graph.input[0]
    dims = image_input.type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = images.shape[2], images.shape[3]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(cut.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {image_input.name: image[None]})[0] for image in images])


def caffe_preprocess(path: Path) -> np.ndarray:
    """One image file as the BVLC model takes it, written from the definition: shorter
    side to 256 (bilinear), centre 227 x 227, channels B, G, R, values 0-255 less
    the channel mean, no division. float32 CHW."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    longer = int(256 * max(width, height) / min(width, height))  # torchvision's Resize(256) truncates
    image = image.resize((256, longer) if width <= height else (longer, 256), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, np.float32)
    top, left = round((pixels.shape[0] - 227) / 2), round((pixels.shape[1] - 227) / 2)  # as CenterCrop rounds
    crop = pixels[top : top + 227, left : left + 227, ::-1]  # RGB -> BGR
    return np.ascontiguousarray((crop - CAFFE_MEAN_BGR).transpose(2, 0, 1))


def stripe_images(count: int, seed: int, size: tuple[int, int] = (300, 260)) -> list[np.ndarray]:
    """uint8 HWC images of two-colour stripes at random frequency and angle: unlike
    random pixels (which a random-weight AlexNet sends nearly all to one class) these
    spread its top-1 over several classes, so a label mix-up shows."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    images = []
    for _ in range(count):
        colour = rng.integers(0, 256, 3)
        frequency, angle = rng.uniform(0.02, 0.5), rng.uniform(0, np.pi)
        stripe = (np.sin(frequency * (xs * np.cos(angle) + ys * np.sin(angle))) > 0)[..., None]
        images.append(np.where(stripe, colour, 255 - colour).astype(np.uint8))
    return images
