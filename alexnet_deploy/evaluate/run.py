"""Accuracy of every backend x precision that can run here, on a labelled image folder
of the user's (class sub-folders named by class name, or by ImageNet synset id for an
imported ImageNet model): how a user checks an INT8 build against FP32 on their own
data. Every row is scored against the folder's labels and against the first row that
ran (onnxruntime FP32 by default, the project's reference), like bench's parity.

The images go through the export's own preprocessing (``Preprocessing``, read from the
ONNX metadata), the same definition predict, bench and serving use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..artifacts import ORT_INT8, Precision
from ..data.preprocessing import preprocess_all
from ..data.sources import load_labelled_folder
from ..errors import BackendUnavailable, DeployError
from ..graph import load_verified
from ..metadata import export_metadata
from ..metrics import parity
from ..progress import ProgressReporter, SilentProgress
from .config import EvalConfig

__all__ = ["EvalConfig", "EvalReport", "EvalRow", "evaluate", "sample"]

EVAL_BATCH = 32  # images per infer call: enough to amortise a call, small enough for any runner's profile


@dataclass
class EvalRow:
    backend: str
    precision: str
    top1: float | None = None
    top5: float | None = None
    agreement: float | None = None  # top-1 agreement with the reference row
    max_abs_diff: float | None = None  # max |Δ logits| against it
    skipped: str | None = None  # why this row did not run


@dataclass
class EvalReport:
    data: str
    images: int
    classes_present: int
    reference: str | None  # "backend/precision" of the row the others are compared with
    rows: list[EvalRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # INT8 files built under a budget: the layers out of INT8

    def to_dict(self) -> dict:
        return asdict(self)


def sample(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` images, round-robin over the classes (so a limit
    keeps every class rather than the first few folders), in folder order."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    by_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    order = [members[i] for i in range(max(map(len, by_class))) for members in by_class if i < len(members)]
    return np.sort(np.asarray(order[:limit], np.int64))


def evaluate(config: EvalConfig, progress: ProgressReporter | None = None) -> EvalReport:
    """Every backend x precision of ``config`` on its folder; rows that cannot run
    here (no TensorRT, no INT8 file yet) are kept with the reason."""
    from ..devices import resolve_device
    from ..runners.registry import ModelFiles, open_runner

    config.check()
    progress = progress or SilentProgress()
    metadata = export_metadata(load_verified(config.onnx), str(config.onnx))
    folder = load_labelled_folder(config.data, metadata.classes, metadata.class_ids)
    folder = folder.subset(sample(folder.labels, config.limit))
    images, labels = preprocess_all(folder, metadata.preprocessing)
    report = EvalReport(str(config.data), len(images), len(np.unique(labels)), None)
    reference: np.ndarray | None = None
    pairs = [(b, p) for b in config.backends for p in config.chosen_precisions]
    files = ModelFiles(config.onnx, config.engines, config.checkpoint)
    torch_device = resolve_device("auto").type
    begun = False  # the bar starts with the first row that opens or is skipped, so a named
    try:  # precision that cannot run before any row did is the error line alone
        for backend, precision in pairs:
            try:
                runner = open_runner(backend, precision, files, torch_device).load()
            except (DeployError, BackendUnavailable) as error:
                if config.precisions is not None and not isinstance(error, BackendUnavailable):
                    raise  # a precision the user named must run: its file missing or modified is an error
                begun = begun or _begin(progress, len(pairs) * len(images))
                report.rows.append(EvalRow(backend, precision, skipped=str(error)))
                progress.advance(len(images), row=f"{backend}/{precision} skipped")
                continue
            begun = begun or _begin(progress, len(pairs) * len(images))
            try:
                name = runner.name
                logits = runner.infer_all(images, EVAL_BATCH, lambda n: progress.advance(n, row=name))  # noqa: B023 -- called before the loop moves on
            finally:
                runner.close()
            if reference is None:
                reference, report.reference = logits, f"{backend}/{precision}"
            match = parity(reference, logits, labels)
            report.rows.append(
                EvalRow(backend, precision, match.top1, match.top5, match.top1_agreement, match.max_abs_diff)
            )
    finally:
        if begun:
            progress.finish()
    int8_ran = any(row.precision == Precision.INT8 and row.skipped is None for row in report.rows)
    for path in [files.layout.onnx(name) for name in (Precision.INT8, ORT_INT8)] if int8_ran else []:
        calibration = export_metadata(load_verified(path), str(path)).calibration if path.is_file() else None
        note = None if calibration is None else calibration.mixed_precision()
        if note is not None:
            report.notes.append(f"{path.name}: {note}")
    return report


def _begin(progress: ProgressReporter, total: int) -> bool:
    progress.begin("eval", total)
    return True
