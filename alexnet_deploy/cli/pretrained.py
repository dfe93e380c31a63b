"""Models from elsewhere and how well they do on the user's data: ``import`` (an
AlexNet ONNX, e.g. the ONNX zoo's BVLC AlexNet, into our checkpoint) and ``eval``
(top-1/top-5 of every backend x precision on a labelled folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..artifacts import DEFAULT_LAYOUT, Precision
from ..choices import PredictBackend
from ..console import RichProgress, console, one_line_errors, table
from ..evaluate.config import EvalConfig
from .options import Checkpoint, Engines, JsonReport, Onnx, choice_list, parse_choices


@one_line_errors
def import_model(
    model: Annotated[Path, typer.Argument(help="An AlexNet ONNX file, e.g. the ONNX model zoo's bvlc_alexnet.")],
    output: Annotated[Path, typer.Option(help="Checkpoint to write (only after it validates).")] = (
        DEFAULT_LAYOUT.checkpoint
    ),
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Class names, one per line (plain, or Caffe's 'n01440764 tench, Tinca tinca'). "
            "Default for 1000 classes: the shipped ILSVRC-2012 list."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="A labelled folder (class sub-folders named by class name or synset id), split half val, half "
            "calibration, that export, build and bench judge and calibrate on; build and bench need it."
        ),
    ] = None,
) -> None:
    """Import a pretrained AlexNet ONNX (BVLC Caffe's, from the ONNX zoo) as our checkpoint, layer by layer."""
    from ..pretrained.onnx_import import import_onnx

    with console.status("matching the graph to AlexNet and validating against onnxruntime"):
        result = import_onnx(model, output, labels, data)
    console.print(f"wrote {result.checkpoint}: {result.classes} classes ({result.labels}), data {result.data}")
    console.print(f"validated on {result.validation}", soft_wrap=True)
    console.print(f"dropped: {'; '.join(result.dropped)}", soft_wrap=True)


@one_line_errors
def eval_model(
    data: Annotated[
        Path,
        typer.Option(help="Labelled folder: one sub-folder per class, named by class name or ImageNet synset id."),
    ],
    backends: Annotated[
        str, typer.Option(help=f"Comma list of {choice_list(PredictBackend.values())}; the first is the reference.")
    ] = ",".join(EvalConfig.backends),
    precisions: Annotated[
        str | None,
        typer.Option(
            help=f"Comma list of {choice_list(Precision.values())}. Default: all, those not built yet listed as "
            "skipped; a precision named here must run.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many images, taken evenly over the classes.")] = None,
    json_path: JsonReport = None,
    onnx: Onnx = DEFAULT_LAYOUT.export_onnx,
    engines: Engines = DEFAULT_LAYOUT.engines_dir,
    checkpoint: Checkpoint = DEFAULT_LAYOUT.checkpoint,
) -> None:
    """Top-1/top-5 of every backend x precision on a labelled folder, and agreement with the first row."""
    from ..evaluate.run import evaluate
    from ..files import check_writable_destination, write_text_atomic

    if json_path is not None:
        check_writable_destination(json_path)
    config = EvalConfig(
        data=data,
        onnx=onnx,
        engines=engines,
        checkpoint=checkpoint,
        backends=parse_choices(backends, PredictBackend.values(), "--backends"),
        precisions=None if precisions is None else parse_choices(precisions, Precision.values(), "--precisions"),
        limit=limit,
    )
    report = evaluate(config, RichProgress())
    rows = [(r.backend, r.precision, r.top1, r.top5, r.agreement, r.max_abs_diff, r.skipped or "") for r in report.rows]
    title = (
        f"{report.images} images of {report.classes_present} classes in {report.data}; "
        f"agreement and max |Δ logits| against {report.reference or 'no row'}"
    )
    console.print(table(title, ("backend", "precision", "top-1", "top-5", "agree", "max |Δ|", "skipped"), rows))
    for note in report.notes:
        console.print(note, soft_wrap=True)
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(report.to_dict(), indent=2))
        console.print(f"wrote {json_path}")
