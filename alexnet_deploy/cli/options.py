"""The options several commands share, each with its help written once (as Polygraphy's
argument groups do), and the parsing of comma-list options.

Defaults are not written here: a command takes them from its stage's config dataclass
(``TrainConfig``, ``BuildConfig``, ``BenchConfig``, ``serve.config``) or from
:class:`~alexnet_deploy.artifacts.ArtifactLayout`, so each is stated once. Choices
are ``str`` Enums, so Typer rejects a bad value and ``--help`` lists the choices.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from ..artifacts import Precision
from ..choices import CalibrationMethod, DeviceChoice, Protocol
from ..errors import DeployError

Onnx = Annotated[
    Path, typer.Option("--onnx", help="The FP32 export written by `export`; its fp16/int8 twins sit beside it.")
]
Engines = Annotated[
    Path, typer.Option("--engines", help="Folder of TensorRT plans alexnet.<precision>.plan and sidecars.")
]
Checkpoint = Annotated[Path, typer.Option("--checkpoint", help="Checkpoint written by `train`.")]
Device = Annotated[DeviceChoice, typer.Option("--device", help="auto: CUDA when torch sees a GPU, else CPU.")]
EnginePrecision = Annotated[Precision, typer.Option("--precision", help="Which ONNX twin or engine to run.")]
# The calibration options build and sensitivity share: where the images are, how many,
# and how activation ranges are read from them.
CalibrationDir = Annotated[
    Path, typer.Option("--calibration", help="Calibration images (flat or one folder per class) and scale cache.")
]
CalibFromData = Annotated[
    bool, typer.Option(help="Fill --calibration from the training data's held-out calibration split.")
]
CalibImages = Annotated[int | None, typer.Option(help="Calibration images to use (default: up to 500).")]
CalibMethodOption = Annotated[
    CalibrationMethod,
    typer.Option(
        "--calib-method",
        help="Activation ranges: entropy (KL, as TensorRT's legacy calibrator), max or percentile.",
    ),
]
Percentile = Annotated[float, typer.Option(help="Percentile of |x| for --calib-method percentile.")]
JsonReport = Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON.")]
ServerProtocol = Annotated[Protocol, typer.Option("--protocol", help="How to talk to the Triton server.")]


def choice_list(values: Sequence[str]) -> str:
    """``tensorrt, onnxruntime, torch`` for a help text, from an Enum's values."""
    return ", ".join(values)


def parse_batches(text: str) -> tuple[int, ...]:
    """``"128"`` or ``"1,8,32,128"`` -> positive batch sizes, in the given order."""
    batches = []
    for raw in text.split(","):
        part = raw.strip()
        if not part.isdigit() or int(part) <= 0:
            raise DeployError(f"--batch takes positive integers such as 128 or 1,8,32,128; got {part or text!r}")
        batches.append(int(part))
    if len(set(batches)) != len(batches):
        raise DeployError(f"--batch lists a size twice: {text!r}")
    return tuple(batches)


def parse_choices(text: str, allowed: Sequence[str], option: str) -> tuple[str, ...]:
    """A comma-separated subset of ``allowed``, order kept (checked by the config)."""
    from ..bench.config import check_choices

    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    check_choices(chosen, allowed, option)
    return chosen


PlotReport = Annotated[Path | None, typer.Option("--plot", help="Also draw the report as a PNG.")]


@dataclass
class ReportFiles:
    """A command's ``--json`` and ``--plot`` (the option group every reporting command
    shares): checked before any work by the one output rule (no output over an input,
    inside an input folder, or over another output; a PNG name for the plot), written
    after it, each with one ``wrote PATH`` line."""

    json: Path | None
    plot: Path | None = None
    extra: dict[str, Path | None] = field(default_factory=dict)  # other outputs of the command ("--filters")

    def check(
        self, inputs: Mapping[str, Path | None] | None = None, folders: Mapping[str, Path | None] | None = None
    ) -> None:
        from ..files import check_output_paths, check_png_path

        check_output_paths(inputs or {}, {"--json": self.json, "--plot": self.plot, **self.extra}, folders)
        for option, path in {"--plot": self.plot, **self.extra}.items():
            if path is not None and option in ("--plot", "--filters"):
                check_png_path(path, option)

    def write(self, report: object, draw: Callable[[Path], None] | None = None) -> None:
        """``report`` (a dict, or anything with ``to_dict``) as JSON, and the figure
        ``draw`` makes, to the paths given."""
        from ..files import write_text_atomic
        from .console import console

        if self.json is not None:
            data = report.to_dict() if hasattr(report, "to_dict") else report
            write_text_atomic(self.json, json.dumps(data, indent=2, default=str) + "\n")
            console.print(f"wrote {self.json}")
        if self.plot is not None and draw is not None:
            draw(self.plot)
            console.print(f"wrote {self.plot}")
