"""How library code reports progress without printing: the CLI passes a reporter
(a rich progress bar); library callers and tests pass nothing."""

from __future__ import annotations

from typing import Protocol


class ProgressReporter(Protocol):
    def begin(self, description: str, total: int) -> None: ...

    def advance(self, steps: int = 1, **status: object) -> None: ...

    def finish(self) -> None: ...


class SilentProgress:
    """The reporter for callers that want no output: every method does nothing."""

    def begin(self, description: str, total: int) -> None:
        return None

    def advance(self, steps: int = 1, **status: object) -> None:
        return None

    def finish(self) -> None:
        return None
