"""AlexNet matches the 2012 paper's layer table and parameter counts."""

import pytest
import torch

from alexnet_deploy.model import AlexNet, AlexNetConfig, count_parameters


@pytest.mark.parametrize("groups, expected", [(2, 60_965_224), (1, 62_378_344)])
def test_parameter_count_at_1000_classes_matches_paper(groups, expected):
    assert count_parameters(AlexNet(AlexNetConfig(num_classes=1000, groups=groups))) == expected


def test_feature_map_sizes_follow_the_paper_at_227_input():
    model = AlexNet(AlexNetConfig(num_classes=10, width=0.125)).eval()
    sizes = {}
    for name, module in model.features.named_children():
        if name.startswith(("conv", "pool")):
            module.register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, tuple(o.shape[-2:])))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 227, 227))
    assert [sizes[k][0] for k in ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]] == [
        55,
        27,
        27,
        13,
        13,
        13,
        13,
        6,
    ]
    assert logits.shape == (2, 10)


def test_layer_hyperparameters_are_the_papers():
    model = AlexNet(AlexNetConfig(groups=2))
    f = model.features
    assert (f.conv1.out_channels, f.conv1.kernel_size, f.conv1.stride) == (96, (11, 11), (4, 4))
    assert (f.conv2.out_channels, f.conv2.kernel_size, f.conv2.padding, f.conv2.groups) == (256, (5, 5), (2, 2), 2)
    assert [f.conv3.groups, f.conv4.groups, f.conv5.groups] == [1, 2, 2]
    assert (f.pool1.kernel_size, f.pool1.stride) == (3, 2)  # overlapping pooling
    assert [f.norm1.params.size, f.norm1.params.alpha, f.norm1.params.beta, f.norm1.params.bias] == [
        5,
        5e-4,
        0.75,
        2.0,
    ]  # paper, alpha x n (lrn.py)
    drops = [m.p for m in model.classifier if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5, 0.5]
    assert isinstance(list(model.classifier)[-1], torch.nn.Linear)  # logits: no ReLU after fc8


def test_width_multiplier_keeps_channels_divisible_by_groups():
    model = AlexNet(AlexNetConfig(num_classes=3, width=0.1, groups=2))
    for conv in (model.features.conv2, model.features.conv4, model.features.conv5):
        assert conv.in_channels % 2 == 0 and conv.out_channels % 2 == 0


def test_config_round_trips_through_dict():
    config = AlexNetConfig(num_classes=7, groups=1, width=0.5)
    assert AlexNetConfig.from_dict(config.to_dict()) == config


def test_the_torchvision_variant_is_torchvisions_layer_table():
    """torchvision's alexnet (tests/test_torchvision.py holds it against torchvision's own
    model): 64-192-384-256-256, conv1 padded by 2, no LRN, no groups, 61,100,840 parameters."""
    model = AlexNet(AlexNetConfig(groups=1, input_size=224, variant="torchvision"))
    f = model.features
    assert [getattr(f, f"conv{i}").out_channels for i in range(1, 6)] == [64, 192, 384, 256, 256]
    assert f.conv1.padding == (2, 2) and all(getattr(f, f"conv{i}").groups == 1 for i in range(1, 6))
    assert not any(name.startswith("norm") for name, _ in f.named_children())
    assert count_parameters(model) == 61_100_840


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"groups": 2, "input_size": 224}, "no grouped convolutions"),
        ({"groups": 1, "input_size": 256}, "223 to 250 px"),
        ({"groups": 1, "input_size": 222}, "223 to 250 px"),
    ],
)
def test_the_torchvision_variant_refuses_what_it_is_not(options, fragment):
    with pytest.raises(ValueError, match=fragment):
        AlexNetConfig(variant="torchvision", **options)
    with pytest.raises(ValueError, match="variant must be one of paper, torchvision"):
        AlexNetConfig(variant="resnet")
