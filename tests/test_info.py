"""`alexnet-deploy info`: the layer table agrees with the paper's counts and with two
independent counts, its JSON and pictures are written and open, training draws its
curves, and bad checkpoints give one clear line."""

import json

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from conftest import invoke as run
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from alexnet_deploy.checkpoint import load_checkpoint
from alexnet_deploy.info import inspect_model, layer_table
from alexnet_deploy.model import AlexNet, AlexNetConfig, count_parameters
from alexnet_deploy.plots import filter_grid

PAPER_COUNTS = [(2, 60_965_224), (1, 62_378_344)]


@pytest.fixture(scope="module", params=PAPER_COUNTS, ids=["groups2", "groups1"])
def full_size(request):
    groups, parameters = request.param
    return inspect_model(groups=groups, classes=1000), parameters


def test_totals_match_the_papers_parameter_counts(full_size):
    info, parameters = full_size
    assert info.table.parameters == parameters == count_parameters(info.model)


def test_conv1_macs_are_55x55x96_times_11x11x3(full_size):
    conv1 = full_size[0].table.row("conv1")
    assert conv1.output == (96, 55, 55)
    assert conv1.macs == 55 * 55 * 96 * (11 * 11 * 3) == 105_415_200


def test_macs_agree_with_torch_flop_counter(full_size):
    """torch counts the FLOPs of the aten convolution / addmm calls it dispatches:
    a code path that shares nothing with the hooks in info.py."""
    info = full_size[0]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        info.model(torch.zeros(1, 3, 227, 227))
    per_module = {name.rsplit(".", 1)[-1]: sum(counts.values()) for name, counts in counter.get_flop_counts().items()}
    for row in info.table.rows:
        assert row.macs == per_module.get(row.name, 0) // 2, row.name  # one multiply-accumulate = 2 FLOPs
    assert info.table.macs == counter.get_total_flops() // 2


def test_table_matches_a_hand_count_from_module_attributes(full_size):
    """Shapes by the (n - k + 2p) / s + 1 rule and MACs by the issue's formulas,
    from the modules' attributes alone, without running the model."""
    info = full_size[0]
    expected = {}
    channels, size = 3, 227
    for name, module in info.model.features.named_children():
        if isinstance(module, torch.nn.Conv2d):
            k, s, p = module.kernel_size[0], module.stride[0], module.padding[0]
            size = (size - k + 2 * p) // s + 1
            channels_in, channels = channels, module.out_channels
            macs = channels * size * size * (channels_in // module.groups) * k * k
            expected[name] = ((channels, size, size), macs)
        elif isinstance(module, torch.nn.MaxPool2d):
            size = (size - module.kernel_size) // module.stride + 1
            expected[name] = ((channels, size, size), 0)
        elif not isinstance(module, torch.nn.ReLU):
            expected[name] = ((channels, size, size), 0)
    for name, module in info.model.classifier.named_children():
        if isinstance(module, torch.nn.Linear):
            expected[name] = ((module.out_features,), module.in_features * module.out_features)
    measured = {row.name: (row.output, row.macs) for row in info.table.rows}
    assert measured == expected
    for row in info.table.rows:
        assert row.activation_bytes == 4 * torch.Size(row.output).numel()  # float32 at batch 1


def test_pool_and_lrn_rows_carry_their_hyperparameters():
    table = layer_table(AlexNet(AlexNetConfig(num_classes=10, width=0.125)))
    assert [r.name for r in table.rows] == [
        "conv1",
        "norm1",
        "pool1",
        "conv2",
        "norm2",
        "pool2",
        "conv3",
        "conv4",
        "conv5",
        "pool5",
        "fc6",
        "fc7",
        "fc8",
    ]
    pool1, norm1, conv2 = table.row("pool1"), table.row("norm1"), table.row("conv2")
    assert (pool1.type, pool1.kernel, pool1.stride, pool1.parameters) == ("maxpool", (3, 3), (2, 2), 0)
    assert (norm1.type, norm1.kernel) == ("lrn", (5,))
    assert (conv2.kernel, conv2.padding, conv2.groups) == ((5, 5), (2, 2), 2)


def test_info_json_holds_table_totals_and_no_checkpoint(tmp_path):
    path = tmp_path / "info.json"
    result = run("info", "--groups", "1", "--classes", "1000", "--json", str(path))
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    assert data["totals"]["parameters"] == 62_378_344
    assert data["totals"]["macs"] == sum(layer["macs"] for layer in data["layers"])
    assert data["layers"][0] == {
        "name": "conv1",
        "type": "conv",
        "kernel": [11, 11],
        "stride": [4, 4],
        "padding": [0, 0],
        "groups": 1,
        "output": [96, 55, 55],
        "parameters": 34_944,
        "macs": 105_415_200,
        "activation_bytes": 96 * 55 * 55 * 4,
    }
    assert data["config"]["groups"] == 1 and data["checkpoint"] is None
    assert "62,378,344" in result.stdout


def test_info_with_checkpoint_shows_its_metadata_and_architecture(tiny_checkpoint, tmp_path):
    path = tmp_path / "info.json"
    result = run("info", "--checkpoint", str(tiny_checkpoint), "--json", str(path))
    assert result.exit_code == 0, result.output
    for label in ("classes:", "preprocessing:", "val metrics:", "LRN convention:", "data source:"):
        assert label in result.stdout
    assert "window [c-floor" in result.stdout  # the convention's brackets survive rendering
    data = json.loads(path.read_text())
    meta = data["checkpoint"]
    assert meta["classes"] == [str(i) for i in range(10)] and meta["data_source"] == "digits"
    assert {"val_top1", "val_top5"} <= meta["metrics"].keys() and meta["lrn_convention"].startswith("onnx-lrn")
    assert data["config"]["width"] == 0.125
    assert data["totals"]["parameters"] == count_parameters(AlexNet(AlexNetConfig(num_classes=10, width=0.125)))


def test_filters_png_is_the_8x12_grid_of_conv1_kernels(tmp_path):
    path = tmp_path / "conv1.png"
    result = run("info", "--filters", str(path))
    assert result.exit_code == 0, result.output
    image = Image.open(path)
    # 12 x 8 kernels of 11 px scaled 5x, 2 px gaps around each
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.size == (12 * 55 + 13 * 2, 8 * 55 + 9 * 2)
    assert "freshly initialised" in result.stdout


def test_filters_from_a_checkpoint_use_its_trained_weights(tiny_checkpoint, tmp_path):
    path = tmp_path / "conv1.png"
    result = run("info", "--checkpoint", str(tiny_checkpoint), "--filters", str(path))
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert image.shape == (1 * 55 + 2 * 2, 12 * 55 + 13 * 2, 3)  # width 1/8: 12 kernels, one row
    assert "trained weights" in result.stdout and "freshly" not in result.stdout
    # every 5x5 block is one pixel of the checkpoint's own conv1 kernel, min-max stretched per kernel
    weight = load_checkpoint(tiny_checkpoint).state_dict["features.conv1.weight"].double().numpy()
    low, high = weight.min(axis=(1, 2, 3), keepdims=True), weight.max(axis=(1, 2, 3), keepdims=True)
    expected = np.round((weight - low) / (high - low) * 255).transpose(0, 2, 3, 1)  # kernel, y, x, RGB
    for index, kernel in enumerate(expected):
        tile = image[2 : 2 + 55, 2 + index * 57 : 2 + index * 57 + 55]
        blocks = tile.reshape(11, 5, 11, 5, 3)
        assert (blocks == blocks[:, :1, :, :1]).all(), f"kernel {index}: a block is not one colour"
        assert np.abs(blocks[:, 0, :, 0] - kernel).max() <= 1, f"kernel {index} is not conv1's trained kernel"


def test_each_kernel_is_min_max_normalised_on_its_own():
    weight = torch.randn(3, 3, 11, 11) * torch.tensor([0.01, 1.0, 100.0])[:, None, None, None]
    weight[2] = 7.0  # constant: no contrast to stretch
    pixels = np.asarray(filter_grid(weight, scale=1, gap=0))  # 11 x (3 * 11) x RGB
    tiles = pixels.reshape(11, 3, 11, 3).transpose(1, 0, 2, 3)
    assert [tiles[i].min() for i in range(3)] == [0, 0, 128]
    assert [tiles[i].max() for i in range(3)] == [255, 255, 128]


def test_training_draws_its_curves_beside_the_checkpoint(tiny_checkpoint):
    image = Image.open(tiny_checkpoint.with_suffix(".curves.png"))
    assert image.format == "PNG" and image.size == (1100, 400)


def test_info_rejects_a_missing_checkpoint(tmp_path):
    assert_one_line_error(run("info", "--checkpoint", str(tmp_path / "absent.pt")), "not found")


def test_info_rejects_a_foreign_checkpoint(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert_one_line_error(run("info", "--checkpoint", str(foreign)), "is not an alexnet-deploy checkpoint")


def test_info_rejects_options_contradicting_the_checkpoint(tiny_checkpoint):
    result = run("info", "--checkpoint", str(tiny_checkpoint), "--classes", "1000")
    assert_one_line_error(result, "contradicts checkpoint")


def test_info_rejects_an_unknown_groups_value():
    assert_one_line_error(run("info", "--groups", "3"), "--groups must be 1 or 2")
