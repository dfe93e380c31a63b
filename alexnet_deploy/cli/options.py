"""The options several commands share, each with its help written once (as Polygraphy's
argument groups do), and the parsing of comma-list options.

Defaults are not written here: a command takes them from its stage's config dataclass
(``TrainConfig``, ``BuildConfig``, ``BenchConfig``, ``serve.config``) or from
:class:`~alexnet_deploy.artifacts.ArtifactLayout`, so each is stated once. Choices
are ``str`` Enums, so Typer rejects a bad value and ``--help`` lists the choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from ..artifacts import Precision
from ..choices import DeviceChoice, Protocol
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
