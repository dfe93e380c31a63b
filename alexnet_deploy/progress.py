"""How library code reports progress without printing: the CLI passes a reporter
(a rich progress bar); library callers and tests pass nothing."""

from __future__ import annotations

from typing import Protocol


class ProgressReporter(Protocol):
    def begin(self, description: str, total: int) -> None: ...

    def advance(self, steps: int = 1, **status: object) -> None: ...

    def finish(self) -> None: ...


class SilentProgress:
    def begin(self, description: str, total: int) -> None:
        pass

    def advance(self, steps: int = 1, **status: object) -> None:
        pass

    def finish(self) -> None:
        pass
