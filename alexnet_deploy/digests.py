"""The metadata of our ONNX files as a dict, and the two digests written into it that
make a file modified since it was written detectable: one over the weights, one over
the metadata (the class names, preprocessing and data source every later step trusts).

Both digests catch accidents and careless edits, not an attacker, who can recompute
them. Both are recorded by :func:`seal` as the last step before ``export`` or ``build``
writes a file; ``graph`` verifies them where a file is loaded and where its metadata is read.
"""

from __future__ import annotations

import hashlib
import json

import onnx
from onnx import numpy_helper

from .errors import DeployError


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model: onnx.ModelProto, values: dict[str, object]) -> None:
    existing = read_metadata(model) | {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    del model.metadata_props[:]
    for key, value in existing.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


WEIGHTS_DIGEST_KEY = "weights_sha256"


def weights_digest(model: onnx.ModelProto) -> str:
    """sha256 over every initializer and Constant tensor (name, type, shape, values),
    in name order: what the model computes with, independent of metadata and of how
    protobuf happens to lay the bytes out."""
    tensors = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR:
                    tensors[f"{node.output[0]}/{attribute.name}"] = attribute.t
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = numpy_helper.to_array(tensors[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _verify_digest(model: onnx.ModelProto, source: str, key: str, actual: str, what: str) -> None:
    """The digest recorded under ``key`` must exist and equal ``actual`` (``what`` names
    what it covers in the message)."""
    recorded = read_metadata(model).get(key)
    if recorded is None:
        raise DeployError(
            f"{source} has no {key.split('_')[0]} digest (written by an older alexnet-deploy, or not by us); "
            "re-run `alexnet-deploy export` (and `build`)"
        )
    if actual != recorded:
        raise DeployError(
            f"{source}: its {what} not match the digest recorded when it was written (the file was modified); "
            "re-run `alexnet-deploy export` (and `build`)"
        )


def verify_weights(model: onnx.ModelProto, source: str) -> None:
    """The weights must be the ones the export (or build) recorded; a file changed
    since would otherwise become its own reference and pass every parity check."""
    _verify_digest(model, source, WEIGHTS_DIGEST_KEY, weights_digest(model), "weights do")


METADATA_DIGEST_KEY = "metadata_sha256"


def metadata_digest(model: onnx.ModelProto) -> str:
    """sha256 over every metadata entry but this digest (the weights digest included,
    which ties the metadata to the weights), as sorted (key, value) pairs."""
    entries = sorted((key, value) for key, value in read_metadata(model).items() if key != METADATA_DIGEST_KEY)
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def verify_metadata(model: onnx.ModelProto, source: str) -> None:
    """The metadata must be what the export (or build) recorded. A file older than this
    digest is refused like one without a weights digest: re-exporting is cheap."""
    what = "metadata (class names, preprocessing, data source...) does"
    _verify_digest(model, source, METADATA_DIGEST_KEY, metadata_digest(model), what)


def seal(model: onnx.ModelProto) -> None:
    """Record the weights' digest, then the metadata's: the last step before one of
    our ONNX files is written (``export``, ``build``)."""
    set_metadata(model, {WEIGHTS_DIGEST_KEY: weights_digest(model)})
    set_metadata(model, {METADATA_DIGEST_KEY: metadata_digest(model)})
