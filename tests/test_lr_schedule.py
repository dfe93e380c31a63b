"""The three learning-rate schedules against values worked out by hand: warm-up then
half a cosine stepped per SGD step, step decay and plateau decay stepped per epoch; and
the training loop steps them at those cadences."""

from __future__ import annotations

import math

import pytest
import torch

from alexnet_deploy.data.augmentation import Augmentation
from alexnet_deploy.data.sources import load_digits
from alexnet_deploy.data.split import Split
from alexnet_deploy.train.config import TrainConfig
from alexnet_deploy.train.loop import train
from alexnet_deploy.train.schedule import LrSchedule

LR = 0.1


def schedule(name: str, **options) -> tuple[torch.optim.SGD, LrSchedule]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    defaults = {"epochs": 2, "steps_per_epoch": 5, "warmup": 0.2, "step_size": 2, "gamma": 0.1}
    return optimizer, LrSchedule(optimizer, name, **(defaults | options))


def sgd_step(optimizer: torch.optim.SGD, lrs: LrSchedule) -> None:
    optimizer.step()  # no gradient: nothing moves, but torch sees the order it expects
    lrs.after_step()


def lr(optimizer: torch.optim.SGD) -> float:
    return optimizer.param_groups[0]["lr"]


def test_cosine_warms_up_linearly_then_falls_as_half_a_cosine_to_zero_at_the_last_step():
    # 2 epochs x 5 steps, warm-up 20%: steps 0-1 ramp (1/2, 2/2), then steps 2..9 follow
    # 0.5 (1 + cos(pi k / 7)), k = 0..7, from 1 down to 0 at step 9
    cosines = [1.0, 0.9009688679, 0.6234898019, 0.2225209340, -0.2225209340, -0.6234898019, -0.9009688679, -1.0]
    expected = [LR * 0.5, LR * 1.0] + [LR * 0.5 * (1 + c) for c in cosines]
    optimizer, lrs = schedule("cosine")
    seen = []
    for _ in range(10):
        seen.append(lr(optimizer))  # the lr this SGD step runs at
        sgd_step(optimizer, lrs)
    assert seen == pytest.approx(expected, abs=1e-9)
    lrs.after_epoch(val_loss=1.0)  # the epoch boundary does not move a per-step schedule
    assert lr(optimizer) == pytest.approx(expected[-1], abs=1e-9)


def test_step_divides_by_ten_every_step_size_epochs_and_ignores_sgd_steps():
    optimizer, lrs = schedule("step", step_size=2, gamma=0.1)
    seen = []
    for _ in range(5):
        seen.append(lr(optimizer))
        for _ in range(5):
            sgd_step(optimizer, lrs)
        lrs.after_epoch(val_loss=1.0)
    assert seen == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001], rel=1e-12)


def test_plateau_divides_after_three_epochs_without_a_better_val_loss():
    """ReduceLROnPlateau with patience 2: the third epoch in a row that does not beat
    the best val loss (by torch's default relative 1e-4) divides the lr by 10."""
    optimizer, lrs = schedule("plateau", gamma=0.1)
    losses = [1.0, 0.9, 0.95, 0.9, 0.89995, 0.5, 0.6, 0.6, 0.6, 0.6]
    seen = []
    for loss in losses:
        seen.append(lr(optimizer))
        sgd_step(optimizer, lrs)  # no effect: plateau looks at epochs
        lrs.after_epoch(val_loss=loss)
    # best 0.9 at epoch 2; 0.95, 0.9 (equal) and 0.89995 (better by < 1e-4 relative) are
    # three bad epochs -> 0.01 from epoch 6; best 0.5 at epoch 6; epochs 7-9 bad -> 0.001 at 10
    assert seen == pytest.approx([0.1] * 5 + [0.01] * 4 + [0.001], rel=1e-12)


def test_the_training_loop_steps_cosine_per_batch_and_step_per_epoch(tmp_path):
    tiny = {"limit": 64, "width": 0.0625, "batch_size": 16, "lr": LR, "augment": Augmentation(False, False, 0)}
    stepped = train(TrainConfig(output=tmp_path / "s.pt", epochs=3, schedule="step", step_size=1, gamma=0.5, **tiny))
    assert [m.lr for m in stepped.history] == pytest.approx([0.1, 0.05, 0.025], rel=1e-12)
    cosine = train(TrainConfig(output=tmp_path / "c.pt", epochs=2, schedule="cosine", warmup=0.0, **tiny))
    per_epoch = len(Split(limit=64).indices(load_digits().labels)["train"]) // 16  # full batches only
    assert per_epoch >= 2
    # epoch 2 starts after per_epoch SGD steps of a cosine over 2 x per_epoch (0 at the last)
    expected = LR * 0.5 * (1 + math.cos(math.pi * per_epoch / (2 * per_epoch - 1)))
    assert [m.lr for m in cosine.history] == pytest.approx([LR, expected], rel=1e-9)
