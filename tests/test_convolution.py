"""A conv output value recomputed by hand from its patch and kernel."""

from __future__ import annotations

import json

import pytest
import torch

from resnet_viz.config import ModelConfig
from resnet_viz.experiments.convolution import (
    conv_layers,
    convolution_by_hand,
    output_size,
)
from resnet_viz.nets.cifar import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def model_a():
    torch.manual_seed(0)
    return build_model(ModelConfig(depth=8, shortcut="A"))


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _untouched(model) -> None:
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_conv_layers_names_every_conv() -> None:
    names = conv_layers(build_model(ModelConfig(depth=20, shortcut="A")))
    assert names[0] == "conv1" and "stage1.block0.conv1" in names and len(names) == 19
    names_b = conv_layers(build_model(ModelConfig(depth=8, shortcut="B")))
    assert "stage2.block0.shortcut.conv" in names_b and "stage1.block0.shortcut.conv" not in names_b


def test_3x3_stride1_interior_matches(model_a, image) -> None:
    r = convolution_by_hand(model_a, image, "stage1.block0.conv1", 3, 5, 7)
    assert r.matches and r.stride == 1 and r.padding == 1
    assert torch.tensor(r.patch).shape == torch.tensor(r.kernel).shape == torch.tensor(r.product).shape == (16, 3, 3)
    assert r.total == pytest.approx(r.layer_output, rel=1e-5, abs=1e-6) and r.layer_output != 0.0
    assert r.bias == 0.0
    d = json.loads(json.dumps(r.to_dict()))
    assert d["layer"] == "stage1.block0.conv1" and d["matches"] is True
    _untouched(model_a)


def test_stem_on_the_image_itself(model_a, image) -> None:
    r = convolution_by_hand(model_a, image, "conv1", 0, 10, 20)
    assert r.matches
    assert torch.allclose(torch.tensor(r.patch, dtype=torch.float64), image[0, :, 9:12, 19:22].double())


def test_stride2_border_uses_zero_padding(model_a, image) -> None:
    r = convolution_by_hand(model_a, image, "stage2.block0.conv1", 5, 0, 0)
    assert r.matches and r.stride == 2 and r.padding == 1
    patch = torch.tensor(r.patch)  # (16, 3, 3): its top row and left column are padding
    assert (patch[:, 0, :] == 0).all() and (patch[:, :, 0] == 0).all()
    assert convolution_by_hand(model_a, image, "stage2.block0.conv1", 5, 15, 15).matches
    _untouched(model_a)


def test_1x1_projection_shortcut(image) -> None:
    torch.manual_seed(1)
    model = build_model(ModelConfig(depth=8, shortcut="B"))
    r = convolution_by_hand(model, image, "stage2.block0.shortcut.conv", 7, 3, 4)
    assert r.matches and r.stride == 2 and r.padding == 0
    assert torch.tensor(r.patch).shape == (16, 1, 1)
    _untouched(model)


@pytest.mark.parametrize(
    "layer, ch, row, col, match",
    [
        ("stage9.conv", 0, 0, 0, "valid layers: conv1"),
        ("stage1.block0", 0, 0, 0, "not a conv layer"),
        ("conv1", 16, 0, 0, r"0\.\.15"),
        ("conv1", -1, 0, 0, r"0\.\.15"),
        ("stage3.block0.conv2", 0, 8, 0, r"row must be in 0\.\.7"),
        ("stage3.block0.conv2", 0, 0, -1, r"col in 0\.\.7"),
    ],
)
def test_bad_indices_raise(model_a, image, layer, ch, row, col, match) -> None:
    with pytest.raises(ValueError, match=match):
        convolution_by_hand(model_a, image, layer, ch, row, col)
    _untouched(model_a)


def test_bad_image_shape_raises(model_a, image) -> None:
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        convolution_by_hand(model_a, image[0], "conv1", 0, 0, 0)
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        convolution_by_hand(model_a, image.repeat(2, 1, 1, 1), "conv1", 0, 0, 0)


def test_output_size_follows_where_the_block_strides() -> None:
    # A bottleneck strides its middle 3x3 (conv2), so its first 1x1 still sees 32x32 in
    # stage 2; a basic block strides its first conv. Counting stages in the name gave 16
    # for both, leaving half of the bottleneck's conv1 output unreachable.
    torch.manual_seed(0)
    bottleneck = build_model(ModelConfig(depth=11, block="bottleneck", shortcut="B"))
    assert output_size(bottleneck, "stage2.block0.conv1") == (32, 32)
    assert output_size(bottleneck, "stage2.block0.conv2") == (16, 16)
    assert output_size(bottleneck, "stage3.block0.conv1") == (16, 16)
    assert output_size(bottleneck, "stage3.block0.conv3") == (8, 8)
    basic = build_model(ModelConfig(depth=8, shortcut="B"))
    assert output_size(basic, "conv1") == (32, 32)  # the stem
    assert output_size(basic, "stage2.block0.conv1") == (16, 16)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rows, cols = output_size(bottleneck, "stage2.block0.conv1")
    r = convolution_by_hand(bottleneck, x, "stage2.block0.conv1", 0, rows - 1, cols - 1)  # the far corner
    assert r.matches
    with pytest.raises(ValueError, match="not a conv layer"):
        output_size(basic, "stage2.block0")
