"""A Triton Inference Server model repository for the exported AlexNet.

Layout (Triton's, see its model_repository docs)::

    alexnet/           ensemble: IMAGE (encoded bytes, UINT8 [-1]) -> preprocess -> model -> logits
                       with labels.txt, so the classification extension returns class names
    preprocess/        python backend: bytes -> normalised (1, 3, S, S), ``predict.decode``
    alexnet_onnx/      the standard-op twin (ONNX LRN, no plugin) as 1/model.onnx
    alexnet_openvino_<fp32|int8>/   for CPU deployments: the FP32 twin, and the
                       onnxruntime-layout INT8 twin once built, as 1/model.onnx (openvino)
    alexnet_tensorrt_<precision>/   1/model.plan per engine in engines/ (tensorrt_plan)

Two flavours of ``alexnet_onnx``:
* ``stock`` (``repository`` command): Triton's own ``onnxruntime`` backend, for any stock
  Triton server (the NGC container).
* ``local`` (``serve``): the Triton build in the nvidia-pytriton wheel ships only the
  python backend, so the same model.onnx is run by our onnxruntime runner inside the
  python backend (``triton_models.OnnxModel``), batching every request Triton's dynamic
  batcher hands it into one session run; each OpenVINO model likewise by our OpenVINO
  runner (``triton_models.OpenVinoModel``) and each engine by our TensorRT runner
  (``triton_models.TensorRTModel``, plan + sidecar), where TensorRT and a GPU exist.

Every config.pbtxt is built as Triton's ModelConfig protobuf (from tritonclient) and
printed in protobuf text format, so a field-name typo is a Python error here, not a
load failure on the server.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf import text_format

from ..artifacts import ENGINES_DIR, sidecar_of
from ..errors import DeployError
from ..graph import INPUT_NAME, OUTPUT_NAME, load_verified, to_standard_lrn
from ..runners.registry import BACKENDS, ArtifactMissing, ModelFiles, load_artifact
from ..tensorrt.sidecar import read_sidecar
from .config import (
    ENSEMBLE,
    IMAGE_INPUT,
    ONNX_MODEL,
    PREPROCESS,
    RepositoryConfig,
    openvino_model_name,
    served_model_name,
    tensorrt_model_name,
)
from .predict import ServingMetadata

LABELS_FILE = "labels.txt"


@dataclass
class Repository:
    path: Path
    models: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # engines that exist but were left out, with why


def _pb():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as error:
        raise DeployError(f"tritonclient is not installed ({error}); pip install -e '.[serve]'") from None
    return model_config_pb2


def _batched_model(name: str, max_batch: int, size: int, classes: int, config: RepositoryConfig, gpu: bool):
    pb = _pb()
    model = pb.ModelConfig(name=name, max_batch_size=max_batch)
    model.input.add(name=INPUT_NAME, data_type=pb.TYPE_FP32, dims=[3, size, size])
    model.output.add(name=OUTPUT_NAME, data_type=pb.TYPE_FP32, dims=[classes], label_filename=LABELS_FILE)
    model.dynamic_batching.preferred_batch_size.extend(b for b in config.preferred_batches if b <= max_batch)
    model.dynamic_batching.max_queue_delay_microseconds = config.queue_delay_us
    model.instance_group.add(
        count=config.instances, kind=pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
    )
    return model


def onnx_config(info: ServingMetadata, size: int, config: RepositoryConfig):
    model = _batched_model(ONNX_MODEL, config.max_batch, size, len(info.classes), config, gpu=False)
    if config.flavour == "stock":
        model.backend = "onnxruntime"
    else:
        model.backend = "python"
    return model


def openvino_config(precision: str, info: ServingMetadata, size: int, config: RepositoryConfig):
    """For CPU deployments: stock Triton's openvino backend loads the ONNX twin itself."""
    model = _batched_model(openvino_model_name(precision), config.max_batch, size, len(info.classes), config, gpu=False)
    if config.flavour == "stock":
        model.backend = "openvino"
        model.default_model_filename = "model.onnx"
    else:
        model.backend = "python"  # triton_models.OpenVinoModel: our OpenVINO runner on the twin
        model.parameters["precision"].string_value = precision
    return model


def tensorrt_config(precision: str, max_batch: int, info: ServingMetadata, size: int, config: RepositoryConfig):
    model = _batched_model(tensorrt_model_name(precision), max_batch, size, len(info.classes), config, gpu=True)
    if config.flavour == "stock":
        model.platform = "tensorrt_plan"
    else:
        model.backend = "python"  # triton_models.TensorRTModel: our TensorRT runner on the plan
    return model


def preprocess_config(info: ServingMetadata, size: int, config: RepositoryConfig):
    pb = _pb()
    # max_batch_size 0: each request is one image of its own length, so nothing to batch
    model = pb.ModelConfig(name=PREPROCESS, backend="python", max_batch_size=0)
    model.input.add(name=IMAGE_INPUT, data_type=pb.TYPE_UINT8, dims=[-1])
    model.output.add(name=INPUT_NAME, data_type=pb.TYPE_FP32, dims=[1, 3, size, size])
    model.instance_group.add(count=config.preprocess_instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    model.parameters["preprocessing"].string_value = json.dumps(info.preprocessing.to_dict())
    return model


def ensemble_config(target: str, info: ServingMetadata, size: int):
    """bytes -> ``preprocess`` -> ``target`` -> logits (1, classes), labelled."""
    pb = _pb()
    model = pb.ModelConfig(name=ENSEMBLE, platform="ensemble", max_batch_size=0)
    model.input.add(name=IMAGE_INPUT, data_type=pb.TYPE_UINT8, dims=[-1])
    model.output.add(name=OUTPUT_NAME, data_type=pb.TYPE_FP32, dims=[1, len(info.classes)], label_filename=LABELS_FILE)
    steps = model.ensemble_scheduling.step
    steps.add(
        model_name=PREPROCESS,
        model_version=-1,
        input_map={IMAGE_INPUT: IMAGE_INPUT},
        output_map={INPUT_NAME: "preprocessed"},
    )
    steps.add(
        model_name=target,
        model_version=-1,
        input_map={INPUT_NAME: "preprocessed"},
        output_map={OUTPUT_NAME: OUTPUT_NAME},
    )
    # clients (predict --url, loadtest) read the class names from here
    model.parameters["classes"].string_value = json.dumps(list(info.classes))
    model.parameters["target"].string_value = target
    return model


_MODEL_PY = '''"""Written by `alexnet-deploy repository`: Triton's python backend loads this file;
the model itself lives in the alexnet_deploy package ({cls})."""

import os
import sys

# `alexnet-deploy serve` names the alexnet_deploy it runs from, so the server runs the
# same code as the CLI even from a source checkout; elsewhere the installed one is used
if os.environ.get("ALEXNET_DEPLOY_SOURCE"):
    sys.path.insert(0, os.environ["ALEXNET_DEPLOY_SOURCE"])

from alexnet_deploy.serve.triton_models import {cls} as TritonPythonModel  # noqa: E402, F401
'''


def _write_model(
    root: Path, config, files: dict[str, bytes | Path] | None = None, labels: list[str] | None = None
) -> None:
    folder = root / config.name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    if labels is not None:
        (folder / LABELS_FILE).write_text("".join(f"{c}\n" for c in labels))
    for name, content in (files or {}).items():
        target = folder / "1" / name
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_bytes(content)


def _served_source(backend: str, precision: str, files: ModelFiles, fp32: onnx.ModelProto, result: Repository):
    """The file the registry says ``backend`` serves ``precision`` from, verified (an
    ONNX) or as a path (a plan), or None (noted in ``result.skipped``) while it is not built."""
    try:
        return load_artifact(BACKENDS[backend].artifact(files, precision), fp32)
    except ArtifactMissing as missing:
        result.skipped.append(f"{served_model_name(backend, precision)}: {missing}")
        return None


def write_repository(
    onnx_path: Path,
    output: Path,
    engines_dir: Path = ENGINES_DIR,
    config: RepositoryConfig = RepositoryConfig(),
    target: str = ONNX_MODEL,
) -> Repository:
    """Write the repository into ``output`` (replaced as a whole, atomically: built in a
    temporary sibling and renamed into place)."""
    config.check()
    output = Path(output)
    if output.exists() and not (output / ENSEMBLE / "config.pbtxt").is_file():
        raise DeployError(
            f"{output} exists and is not a model repository written by this command; choose another --output"
        )
    if not output.parent.is_dir():
        raise DeployError(f"output directory {output.parent} does not exist (for {output})")
    model = load_verified(onnx_path)  # the served weights are the exported ones, as their metadata says
    info = ServingMetadata.of(model, str(onnx_path))
    size = info.preprocessing.crop
    classes = list(info.classes)
    twin: onnx.ModelProto = to_standard_lrn(model)
    result = Repository(output)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    except OSError as error:
        raise DeployError(f"cannot write {output}: {error.strerror or error}") from None
    try:
        local = {"model.py": _MODEL_PY.format(cls="OnnxModel").encode()} if config.flavour == "local" else {}
        _write_model(
            staging, onnx_config(info, size, config), {"model.onnx": twin.SerializeToString(), **local}, classes
        )
        result.models.append(ONNX_MODEL)
        model_files = ModelFiles(Path(onnx_path), Path(engines_dir))
        for precision in BACKENDS["openvino"].served:
            source = _served_source("openvino", precision, model_files, model, result)
            if source is None:
                continue
            openvino_files = {"model.onnx": to_standard_lrn(source).SerializeToString()}
            if config.flavour == "local":
                openvino_files["model.py"] = _MODEL_PY.format(cls="OpenVinoModel").encode()
            _write_model(staging, openvino_config(precision, info, size, config), openvino_files, classes)
            result.models.append(openvino_model_name(precision))
        for precision in BACKENDS["tensorrt"].served:
            plan = BACKENDS["tensorrt"].artifact(model_files, precision).path
            if not plan.is_file():
                continue
            max_batch = read_sidecar(plan).profile.max[0]
            files: dict[str, bytes | Path] = {"model.plan": plan}
            if config.flavour == "local":  # the runner checks the engine against its sidecar
                files |= {"model.json": sidecar_of(plan), "model.py": _MODEL_PY.format(cls="TensorRTModel").encode()}
            _write_model(staging, tensorrt_config(precision, max_batch, info, size, config), files, classes)
            result.models.append(tensorrt_model_name(precision))
        if target not in result.models:
            raise DeployError(f"--target {target}: no such model in the repository ({', '.join(result.models)})")
        _write_model(
            staging,
            preprocess_config(info, size, config),
            {"model.py": _MODEL_PY.format(cls="PreprocessModel").encode()},
        )
        _write_model(staging, ensemble_config(target, info, size), labels=classes)
        result.models += [PREPROCESS, ENSEMBLE]
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except OSError as error:  # a full disk, a quota: one line; the staging folder is removed below
        raise DeployError(f"cannot write {output}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
