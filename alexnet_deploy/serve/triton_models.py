"""The python-backend models of the repository, run by Triton's python backend stub
(``triton_python_backend_utils`` exists only there, hence the import inside methods).

Tensors cross the stub boundary by DLPack, never by ``as_numpy()``/``Tensor(name,
ndarray)``: the stub in nvidia-pytriton 0.7.0 was compiled against the numpy 1 ABI and
its numpy conversions misread numpy 2 arrays (measured: ``as_numpy()`` of [1, 2, 3]
gave [1, 1, 1]). DLPack is a C struct with no numpy ABI in it, so the same code runs
under numpy 1 and 2. For the same reason the image input is UINT8 [-1], not BYTES
(a BYTES tensor can only be read through ``as_numpy``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..data.preprocessing import Preprocessing
from ..errors import DeployError
from ..graph import INPUT_NAME, OUTPUT_NAME
from ..runners.registry import open_model
from .config import IMAGE_INPUT
from .predict import decode


def _input(request, name: str) -> np.ndarray:
    import triton_python_backend_utils as pb_utils

    return np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name))


def _output(name: str, array: np.ndarray):
    import torch  # already loaded: alexnet_deploy.data imports it
    import triton_python_backend_utils as pb_utils

    # through torch, not numpy's own __dlpack__: the stub renames the capsule it
    # consumes, and numpy 2's capsule destructor then prints a spurious ValueError per
    # response (torch's destructor accepts the consumed capsule)
    return pb_utils.Tensor.from_dlpack(name, torch.from_numpy(np.ascontiguousarray(array)))


def _error(message: str):
    import triton_python_backend_utils as pb_utils

    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


def _respond(name: str, array: np.ndarray):
    import triton_python_backend_utils as pb_utils

    return pb_utils.InferenceResponse(output_tensors=[_output(name, array)])


class PreprocessModel:
    """Encoded image bytes -> (1, 3, S, S) float32 with the checkpoint's preprocessing."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.preprocessing = Preprocessing.from_dict(json.loads(config["parameters"]["preprocessing"]["string_value"]))

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                image = decode(_input(request, IMAGE_INPUT).tobytes(), self.preprocessing, "IMAGE")
            except DeployError as error:
                responses.append(_error(str(error)))
                continue
            responses.append(_respond(INPUT_NAME, image[None]))
        return responses


class _RunnerModel(ABC):
    """One of our runners inside Triton's python backend. Triton's dynamic batcher hands
    ``execute`` several requests at once; they run as one batch."""

    @abstractmethod
    def _open(self, folder: Path):
        """The loaded runner for the model version folder (each subclass names its file)."""

    def initialize(self, args: dict) -> None:
        self.config = json.loads(args["model_config"])
        self.runner = self._open(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests: list) -> list:
        batches = [_input(request, INPUT_NAME) for request in requests]
        logits = self.runner.infer(np.concatenate(batches))
        ends = np.cumsum([len(b) for b in batches])
        return [_respond(OUTPUT_NAME, part) for part in np.split(logits, ends[:-1])]

    def finalize(self) -> None:
        self.runner.close()


class OnnxModel(_RunnerModel):
    """The standard-op twin (1/model.onnx) in our onnxruntime runner."""

    def _open(self, folder: Path):
        return open_model("onnxruntime", folder / "model.onnx").load()


class OpenVinoModel(_RunnerModel):
    """A standard-op twin (1/model.onnx: FP32, or the onnxruntime-layout INT8) in our
    OpenVINO runner, for the local server, whose Triton build has no openvino backend."""

    def _open(self, folder: Path):
        precision = self.config["parameters"]["precision"]["string_value"]
        return open_model("openvino", folder / "model.onnx", precision).load()


class TensorRTModel(_RunnerModel):
    """An engine (1/model.plan with its sidecar 1/model.json) in our TensorRT runner,
    for the local server, whose Triton build has no tensorrt_plan backend."""

    def _open(self, folder: Path):
        return open_model("tensorrt", folder / "model.plan", device="cuda").load()  # its precision: the sidecar's
