"""Where every artifact lives, stated once: the precisions the pipeline writes, the
repository's default folders, and :class:`ArtifactLayout`, the one object that names
the checkpoint, each ONNX, each TensorRT plan with its sidecar and build log, and each
calibration scale cache.

Commands take folders or files on the command line (``--output``, ``--onnx``,
``--engines``, ``--calibration``); they build a layout from them and ask it for names,
so a file name is spelled here and nowhere else::

    export/alexnet.pt                     checkpoint (train)
    export/alexnet.state.pt               resume state (train --resume)
    export/alexnet.metrics.jsonl          per-epoch metrics (train)
    export/alexnet.curves.png             training curves (train)
    export/alexnet.onnx                   FP32 export, LRN as the plugin op (export)
    export/alexnet.fp16.onnx              FP16 twin (build --fp16)
    export/alexnet.int8.onnx              INT8 Q/DQ twin, TensorRT layout (build --int8)
    export/alexnet.int8-ort.onnx          INT8 twin, onnxruntime layout (build --int8)
    engines/alexnet.<precision>.plan      TensorRT engine (build, with TensorRT)
    engines/alexnet.<precision>.json      its sidecar (what built it, for what GPU)
    engines/alexnet.<precision>.log       TensorRT's build log
    calibration/scales.<method>.json      activation ranges per calibration method
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .choices import Choice


class Precision(Choice):
    """The precisions the pipeline writes as ONNX files and TensorRT engines."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


PRECISIONS: tuple[str, ...] = Precision.values()

# The file tag of the INT8 graph laid out for onnxruntime's integer kernels (Q/DQ around
# every Conv/Gemm output too); `Precision.INT8` names the TensorRT-layout graph.
ORT_INT8 = "int8-ort"

EXPORT_DIR = Path("export")
ENGINES_DIR = Path("engines")
CALIBRATION_DIR = Path("calibration")
MODEL_REPOSITORY_DIR = Path("model_repository")
STEM = "alexnet"


@dataclass(frozen=True)
class ArtifactLayout:
    """Names for one model's artifacts. Nothing here touches the disk."""

    export_dir: Path = EXPORT_DIR
    engines_dir: Path = ENGINES_DIR
    calibration_dir: Path = CALIBRATION_DIR
    stem: str = STEM
    # The suffixes of a checkpoint or export named on the command line (`--output
    # run.ckpt`): the file itself keeps its name, its companions get ours.
    checkpoint_suffix: str = ".pt"
    onnx_suffix: str = ".onnx"

    @classmethod
    def from_onnx(
        cls, fp32_onnx: Path, engines_dir: Path = ENGINES_DIR, calibration_dir: Path = CALIBRATION_DIR
    ) -> ArtifactLayout:
        """The layout whose FP32 export is ``fp32_onnx`` (``build --onnx FILE``): its
        twins sit beside it and share its stem."""
        fp32_onnx = Path(fp32_onnx)
        return cls(fp32_onnx.parent, engines_dir, calibration_dir, stem=fp32_onnx.stem, onnx_suffix=fp32_onnx.suffix)

    @classmethod
    def from_checkpoint(cls, checkpoint: Path) -> ArtifactLayout:
        """The layout whose checkpoint is ``checkpoint`` (``train --output FILE``): the
        resume state, metrics and curves sit beside it and share its stem."""
        checkpoint = Path(checkpoint)
        return cls(export_dir=checkpoint.parent, stem=checkpoint.stem, checkpoint_suffix=checkpoint.suffix)

    # ------------------------------------------------------------------ train
    @property
    def checkpoint(self) -> Path:
        return self.export_dir / f"{self.stem}{self.checkpoint_suffix}"

    @property
    def resume_state(self) -> Path:
        return self.export_dir / f"{self.stem}.state.pt"

    @property
    def metrics_log(self) -> Path:
        return self.export_dir / f"{self.stem}.metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.export_dir / f"{self.stem}.curves.png"

    # ------------------------------------------------------------------ export / quantize
    def onnx(self, precision: Precision | str = Precision.FP32) -> Path:
        """``alexnet.onnx`` for FP32 (the export itself), ``alexnet.<tag>.onnx`` for the
        twins ``build`` derives from it (fp16, int8, and ``ORT_INT8``)."""
        tag = str(precision)
        if tag == Precision.FP32.value:
            return self.export_dir / f"{self.stem}{self.onnx_suffix}"
        return self.export_dir / f"{self.stem}.{tag}.onnx"

    def scales(self, method: str) -> Path:
        """The activation-range cache of one calibration method."""
        return self.calibration_dir / f"scales.{method}.json"

    # ------------------------------------------------------------------ build
    def plan(self, precision: Precision | str) -> Path:
        return self.engines_dir / f"{self.stem}.{precision}.plan"

    def sidecar(self, precision: Precision | str) -> Path:
        return sidecar_of(self.plan(precision))

    def build_log(self, precision: Precision | str) -> Path:
        return build_log_of(self.plan(precision))

    @property
    def export_onnx(self) -> Path:
        """The FP32 export itself: ``onnx(Precision.FP32)``."""
        return self.onnx(Precision.FP32)


def sidecar_of(plan: Path) -> Path:
    """``engines/alexnet.fp16.plan`` -> ``engines/alexnet.fp16.json``: a plan given by
    path (``bench``, ``serve``) carries its sidecar beside it."""
    return Path(plan).with_suffix(".json")


def build_log_of(plan: Path) -> Path:
    """``engines/alexnet.fp16.plan`` -> ``engines/alexnet.fp16.log``: TensorRT's build
    log beside the plan it built."""
    return Path(plan).with_suffix(".log")


# The repository's own folders: the layout every command uses unless told otherwise.
DEFAULT_LAYOUT = ArtifactLayout()
