"""Talking to a running Triton server (ours or any other serving this repository):
one encoded image in, logits out, over HTTP or gRPC with tritonclient. The class
names come from the ensemble's config, so a client needs no local files."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..choices import Protocol
from ..errors import DeployError
from ..graph import OUTPUT_NAME
from .config import ENSEMBLE, IMAGE_INPUT, check_url


def _client_module(protocol: str):
    """tritonclient's module for ``protocol``. It is the ``serve`` extra, not a
    default dependency, and each protocol needs its own extra packages (geventhttpclient,
    grpcio): a missing one is the install hint, not an ImportError traceback."""
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        import tritonclient.utils  # noqa: F401 -- _call and infer_raw import from it later
    except ImportError as error:
        raise DeployError(
            f"talking to a Triton server needs tritonclient[{protocol}] ({error}); pip install -e '.[serve]'"
        ) from None
    return module


@dataclass
class TritonClassifier:
    url: str
    protocol: str = "http"
    model: str = ENSEMBLE
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.protocol not in Protocol.values():
            raise DeployError(f"unknown protocol {str(self.protocol)!r}; choose from {', '.join(Protocol.values())}")
        url = check_url(self.url)
        module = _client_module(self.protocol)
        if self.protocol == "http":
            self._client = module.InferenceServerClient(
                url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )
        else:
            self._client = module.InferenceServerClient(url)
        self._module = module

    def _call(self, what: str, function, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return function(*args, **kwargs)
        except InferenceServerException as error:
            raise DeployError(f"{what}: {error.message()}") from None
        except Exception as error:  # noqa: BLE001 -- connection refused, DNS, timeouts: many types
            raise DeployError(
                f"{what}: cannot reach Triton at {self.url} ({error.__class__.__name__}: {error})"
            ) from None

    def model_config(self, model: str) -> dict:
        """The model's config.pbtxt as the server holds it, as a dict (either protocol)."""
        if self.protocol == "grpc":
            return self._call(f"model {model}", self._client.get_model_config, model, as_json=True)["config"]
        return self._call(f"model {model}", self._client.get_model_config, model)

    def model_input_dims(self, model: str, name: str) -> list[int]:
        inputs = {i["name"]: i for i in self.model_config(model).get("input", [])}
        if name not in inputs:
            raise DeployError(f"model {model} has no input {name!r} (inputs: {', '.join(inputs) or 'none'})")
        return [int(d) for d in inputs[name]["dims"]]

    def batched_model(self, model: str) -> str:
        """The model whose executions show the batching: an ensemble's target, else ``model``."""
        parameters = self.model_config(model).get("parameters", {})
        return parameters.get("target", {}).get("string_value") or model

    def classes(self) -> list[str]:
        value = self.model_config(self.model).get("parameters", {}).get("classes", {}).get("string_value")
        if not value:
            raise DeployError(
                f"model {self.model} at {self.url} carries no class names (not written by `alexnet-deploy repository`)"
            )
        return json.loads(value)

    def infer_raw(
        self, inputs: dict[str, np.ndarray], model: str | None = None, output: str = OUTPUT_NAME
    ) -> np.ndarray:
        """One request with the given named arrays; the named output back."""
        from tritonclient.utils import np_to_triton_dtype

        model = model or self.model
        tensors = []
        for name, array in inputs.items():
            tensor = self._module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        outputs = [self._module.InferRequestedOutput(output)]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        result = self._call(f"model {model}", self._client.infer, model, tensors, outputs=outputs, **kwargs)
        return result.as_numpy(output)

    def logits(self, source: str, data: bytes) -> np.ndarray:
        """Encoded image bytes -> (classes,) logits; a rejected image is a DeployError naming ``source``."""
        try:
            logits = self.infer_raw({IMAGE_INPUT: np.frombuffer(data, np.uint8)})
        except DeployError as error:
            raise DeployError(f"{source}: {error}") from None
        return logits.reshape(-1)

    def statistics(self, model: str) -> dict:
        """Triton's statistics for ``model`` as a dict (either protocol; gRPC's JSON
        writes 64-bit counters as strings, so read them with ``int()``)."""
        if self.protocol == "grpc":
            stats = self._call(f"model {model}", self._client.get_inference_statistics, model, as_json=True)
        else:
            stats = self._call(f"model {model}", self._client.get_inference_statistics, model)
        return stats["model_stats"][0]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonClassifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
