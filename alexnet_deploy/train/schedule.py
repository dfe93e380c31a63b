"""The learning-rate schedule of a run and when it steps: ``cosine`` after every SGD
step, ``step`` and ``plateau`` after every epoch (``plateau`` on the val loss)."""

from __future__ import annotations

import math
from functools import partial

import torch

from ..choices import Schedule
from .recipe import warmup_cosine_factor


class LrSchedule:
    """One of torch's lr schedulers, with the cadence its schedule steps at.

    Its ``state_dict`` is the scheduler's, so a resume state restores the position
    (for ``cosine``, the number of SGD steps already taken)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule | str,
        *,
        epochs: int,
        steps_per_epoch: int,
        warmup: float,
        step_size: int,
        gamma: float,
    ) -> None:
        self.schedule = Schedule(schedule)
        # exactly one of the three, by the cadence it steps at
        self._per_step: torch.optim.lr_scheduler.LambdaLR | None = None
        self._per_epoch: torch.optim.lr_scheduler.StepLR | None = None
        self._on_plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        if self.schedule is Schedule.COSINE:
            total = epochs * steps_per_epoch
            warmup_steps = math.ceil(warmup * total)
            self._per_step = torch.optim.lr_scheduler.LambdaLR(
                optimizer, partial(warmup_cosine_factor, total_steps=total, warmup_steps=warmup_steps)
            )
        elif self.schedule is Schedule.STEP:
            self._per_epoch = torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma)
        else:
            self._on_plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=gamma, patience=2)

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
        scheduler = self._per_step or self._per_epoch or self._on_plateau
        assert scheduler is not None  # __init__ sets one
        return scheduler

    def after_step(self) -> None:
        """Called after every optimizer step."""
        if self._per_step is not None:
            self._per_step.step()

    def after_epoch(self, val_loss: float) -> None:
        """Called after every epoch's validation."""
        if self._per_epoch is not None:
            self._per_epoch.step()
        if self._on_plateau is not None:
            self._on_plateau.step(val_loss)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict, replanned: bool = False) -> None:
        """Restore the position, after the optimizer's state. When the run was
        ``replanned`` (``--epochs`` extends it), a per-step schedule then sets the lr of
        that position on the new plan: the optimizer holds the saved plan's last lr, which
        is 0 at the end of a finished run. A run resumed on its own plan keeps the saved
        lr as it is, so it stays bit-for-bit the run that was not interrupted."""
        self.scheduler.load_state_dict(state)
        if self._per_step is not None and replanned:
            scheduler = self._per_step
            lrs = [
                base * factor(scheduler.last_epoch)
                for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
            ]
            for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr
            scheduler._last_lr = lrs  # what get_last_lr() reports
