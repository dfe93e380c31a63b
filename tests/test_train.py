"""The training module learns, and its checkpoint round-trips exactly."""

import json

import numpy as np
import pytest
import torch

from alexnet_deploy.checkpoint import load_checkpoint
from alexnet_deploy.data import Augmentation, EvalDataset, Preprocessing, batch_loader, load_digits
from alexnet_deploy.errors import DeployError
from alexnet_deploy.model import AlexNet, AlexNetConfig
from alexnet_deploy.precision import Precision
from alexnet_deploy.progress import SilentProgress
from alexnet_deploy.train import TrainConfig, evaluate, train, train_one_epoch


def test_a_short_training_run_lowers_the_loss():
    torch.manual_seed(0)
    model = AlexNet(AlexNetConfig(num_classes=10, width=0.125, dropout=0.0))
    dataset = EvalDataset(load_digits().subset(range(64)), Preprocessing())
    loader = batch_loader(dataset, 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    before = evaluate(model, loader, torch.device("cpu")).loss
    for _ in range(6):
        train_one_epoch(model, loader, optimizer, torch.device("cpu"), SilentProgress())
    after = evaluate(model, loader, torch.device("cpu")).loss
    assert after < 0.5 * before


def test_checkpoint_round_trip_gives_identical_logits(tiny_checkpoint):
    checkpoint = load_checkpoint(tiny_checkpoint)
    model = checkpoint.build_model()
    images = torch.randn(3, 3, 227, 227)
    reloaded = load_checkpoint(tiny_checkpoint).build_model()
    with torch.no_grad():
        assert torch.equal(model(images), reloaded(images))
    assert checkpoint.classes == [str(i) for i in range(10)]
    assert checkpoint.config.width == 0.125 and checkpoint.config.groups == 2
    assert 0 <= checkpoint.metrics["val_top1"] <= 1


def test_training_logs_metrics_per_epoch(tiny_checkpoint):
    lines = tiny_checkpoint.with_suffix(".metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["epoch"] == 1 and {"train_loss", "val_top1", "val_top5", "lr"} <= record.keys()


def test_resume_continues_to_the_requested_epoch(tmp_path):
    output = tmp_path / "run.pt"
    config = TrainConfig(output=output, epochs=1, limit=80, width=0.0625, batch_size=16, augment=Augmentation(False, False, 0))
    train(config)
    config.epochs, config.resume = 2, True
    result = train(config)
    assert [m.epoch for m in result.history] == [1, 2]
    assert len(output.with_suffix(".metrics.jsonl").read_text().splitlines()) == 2


def test_resume_rejects_checkpoint_of_another_architecture(tmp_path):
    output = tmp_path / "run.pt"
    train(TrainConfig(output=output, epochs=1, limit=80, width=0.0625, batch_size=16))
    checkpoint = load_checkpoint(output)
    checkpoint.state_dict["features.conv1.weight"] = torch.zeros(5, 3, 11, 11)
    with pytest.raises(DeployError, match="does not match the AlexNet architecture"):
        checkpoint.build_model()


def test_bf16_training_computes_in_bf16_and_keeps_an_fp32_checkpoint(tmp_path):
    output = tmp_path / "bf16.pt"
    result = train(TrainConfig(output=output, epochs=1, limit=80, width=0.0625, batch_size=16, precision="bf16"))
    assert np.isfinite(result.history[-1].train_loss)
    checkpoint = load_checkpoint(output)
    assert {v.dtype for v in checkpoint.state_dict.values()} == {torch.float32}
    model = checkpoint.build_model()
    with Precision("bf16", "cpu").autocast():
        assert model(torch.randn(1, 3, 227, 227)).dtype == torch.bfloat16


def test_fp16_is_refused_without_cuda(tmp_path):
    with pytest.raises(DeployError, match="^--precision fp16 needs a CUDA device"):
        train(TrainConfig(output=tmp_path / "x.pt", precision="fp16", device="cpu"))
    assert not (tmp_path / "x.pt").exists()
