"""Models from elsewhere and how well they do on the user's data: ``import`` (an
AlexNet ONNX, e.g. the ONNX zoo's BVLC AlexNet, into our checkpoint) and ``eval``
(top-1/top-5 of every backend x precision on a labelled folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..artifacts import DEFAULT_LAYOUT, Precision
from ..choices import PredictBackend
from ..evaluate.config import EvalConfig
from .console import RichProgress, console, one_line_errors, table
from .options import Checkpoint, Engines, JsonReport, Onnx, ReportFiles, choice_list, parse_choices


@one_line_errors
def import_model(
    model: Annotated[
        Path,
        typer.Argument(
            help="An AlexNet ONNX file (the ONNX model zoo's bvlc_alexnet, or torchvision's alexnet exported), "
            "or torchvision's alexnet state dict (.pth/.pt, e.g. alexnet-owt-7be5be79.pth)."
        ),
    ],
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
    """Import a pretrained AlexNet (BVLC Caffe's from the ONNX zoo, or torchvision's) as our checkpoint, layer by layer."""
    from ..pretrained.onnx_import import import_onnx
    from ..pretrained.torchvision_import import STATE_DICT_SUFFIXES, import_state_dict

    if model.suffix.lower() in STATE_DICT_SUFFIXES:
        with console.status("matching the state dict to torchvision's AlexNet and validating against its forward pass"):
            result = import_state_dict(model, output, labels, data)
    else:
        with console.status("matching the graph to AlexNet and validating against onnxruntime"):
            result = import_onnx(model, output, labels, data)
    console.print(
        f"wrote {result.checkpoint}: {result.variant} AlexNet, {result.classes} classes ({result.labels}), "
        f"data {result.data}",
        soft_wrap=True,
    )
    console.print(f"validated on {result.validation}", soft_wrap=True)
    if result.dropped:
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
    from ..runners.registry import ModelFiles, read_files

    outputs = ReportFiles(json_path)
    outputs.check(read_files(ModelFiles(onnx, engines, checkpoint)), {"--data": data})
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
    outputs.write(report)
