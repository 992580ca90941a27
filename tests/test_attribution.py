"""Attribution maps, feature maps and block norms on a small untrained ResNet-8."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from resnet_viz.config import ModelConfig
from resnet_viz.data.sources import CIFAR10_CLASSES
from resnet_viz.experiments.attribution import (
    METHODS,
    STEM,
    AttributionMethod,
    attribute,
    block_norms,
    feature_maps,
    normalize_map,
    predict,
    top_k,
)
from resnet_viz.nets.cifar import block_names, build_model

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def state(m: nn.Module) -> tuple[list[bool], list[bool]]:
    return [x.training for x in m.modules()], [p.requires_grad for p in m.parameters()]


def assert_no_hooks(m: nn.Module) -> None:
    for name, mod in m.named_modules():
        for d in HOOK_DICTS:
            assert not getattr(mod, d), f"{name or 'model'}.{d} still holds hooks"


def run_everything(m: nn.Module, x: torch.Tensor) -> None:
    predict(m, x)
    feature_maps(m, x, "stem")
    block_norms(m, x)
    for method in METHODS:
        attribute(m, x, method, steps=4, samples=3)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_a_finite_map(model: nn.Module, image: torch.Tensor, method: str) -> None:
    a = attribute(model, image, method, target=3, steps=8, samples=4)
    assert a.shape == (32, 32) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.abs().sum() > 0
    assert not a.requires_grad


def test_uint8_and_unbatched_inputs_are_accepted(model: nn.Module, image: torch.Tensor) -> None:
    u8 = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert attribute(model, u8, "saliency").shape == (32, 32)
    assert torch.equal(attribute(model, image[0], "saliency", 2), attribute(model, image, "saliency", 2))


@pytest.mark.parametrize("training", [True, False])
def test_model_state_is_restored_and_no_hooks_remain(image: torch.Tensor, training: bool) -> None:
    torch.manual_seed(0)
    m = build_model(ModelConfig(depth=8)).train(training)
    m.stage2.eval() if training else m.stage2.train()  # a mixed state must come back as it was
    m.conv1.weight.requires_grad_(False)
    m.fc.bias.requires_grad_(False)
    before = state(m)
    bn_mean = m.bn1.running_mean.clone()
    run_everything(m, image)
    assert state(m) == before
    assert torch.equal(m.bn1.running_mean, bn_mean)  # eval mode inside: BN statistics untouched
    assert all(p.grad is None for p in m.parameters())
    assert_no_hooks(m)


def test_state_is_restored_after_an_error(model: nn.Module, image: torch.Tensor) -> None:
    model.train()
    before = state(model)
    with pytest.raises(ValueError):
        attribute(model, image, "gradcam", block="stage9.block0")
    assert state(model) == before
    assert_no_hooks(model)
    model.eval()


def test_input_is_not_modified(model: nn.Module, image: torch.Tensor) -> None:
    x = image.clone()
    attribute(model, x, "guided_backprop")
    block_norms(model, x)
    assert torch.equal(x, image) and not x.requires_grad and x.grad is None


def test_feature_map_shapes(model: nn.Module, image: torch.Tensor) -> None:
    assert feature_maps(model, image, "stem").shape == (16, 32, 32)
    assert feature_maps(model, image, "stage1.block0").shape == (16, 32, 32)
    assert feature_maps(model, image, "stage3.block0").shape == (64, 8, 8)


def test_feature_maps_match_a_manual_forward(model: nn.Module, image: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        stem = model.relu(model.bn1(model.conv1(image)))
        s2 = model.stage2(model.stage1(stem))
    assert torch.allclose(feature_maps(model, image, "stem"), stem[0], atol=1e-5)
    assert torch.allclose(feature_maps(model, image, "stage2.block0"), s2[0], atol=1e-5)


def test_block_norms(model: nn.Module, image: torch.Tensor) -> None:
    norms = block_norms(model, image)
    assert list(norms) == block_names(model)
    for stats in norms.values():
        assert set(stats) == {"act_norm", "grad_norm"}
        assert all(math.isfinite(v) and v > 0 for v in stats.values())
    act = feature_maps(model, image, "stage3.block0")
    assert norms["stage3.block0"]["act_norm"] == pytest.approx(float(act.norm()), rel=1e-5)


def test_block_norms_grad_matches_autograd(model: nn.Module, image: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        s1 = model.stage1(model.relu(model.bn1(model.conv1(image))))
    s1.requires_grad_(True)
    logit = model.fc(model.flatten(model.pool(model.stage3(model.stage2(s1)))))[0, 7]
    (g,) = torch.autograd.grad(logit, s1)
    got = block_norms(model, image, target=7)["stage1.block0"]["grad_norm"]
    assert got == pytest.approx(float(g.norm()), rel=1e-4)


def test_block_norms_average_over_a_batch(model: nn.Module, image: torch.Tensor) -> None:
    other = torch.flip(image, dims=[3])
    both = block_norms(model, torch.cat([image, other]), target=1)
    a, b = block_norms(model, image, target=1), block_norms(model, other, target=1)
    for n in both:
        for k in ("act_norm", "grad_norm"):
            assert both[n][k] == pytest.approx((a[n][k] + b[n][k]) / 2, rel=1e-4)


def test_predict_and_top_k(model: nn.Module, image: torch.Tensor) -> None:
    probs = predict(model, torch.cat([image, -image]))
    assert probs.shape == (2, 10) and not probs.requires_grad
    assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)
    top = top_k(probs[0], CIFAR10_CLASSES, k=5)
    assert len(top) == 5
    values = [p for _, p in top]
    assert values == sorted(values, reverse=True)
    assert top[0] == (CIFAR10_CLASSES[int(probs[0].argmax())], pytest.approx(float(probs[0].max())))
    assert len(top_k(probs[:1], CIFAR10_CLASSES, k=50)) == 10  # k is capped at the class count


def test_top_k_rejects_mismatches() -> None:
    with pytest.raises(ValueError, match="class names"):
        top_k(torch.full((10,), 0.1), ["a", "b"])
    with pytest.raises(ValueError, match="one image"):
        top_k(torch.full((2, 10), 0.1), CIFAR10_CLASSES)


def test_unknown_method_and_block(model: nn.Module, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="integrated_gradients") as info:
        attribute(model, image, "lime")
    assert all(k in str(info.value) for k in METHODS)
    with pytest.raises(ValueError, match="stage3.block5"):
        feature_maps(model, image, "stage3.block5")
    with pytest.raises(ValueError, match="target"):
        attribute(model, image, "saliency", target=10)
    with pytest.raises(ValueError, match="one image"):
        attribute(model, torch.cat([image, image]), "saliency")


def test_every_method_is_one_registry_entry_with_its_own_text() -> None:
    assert list(METHODS) == ["saliency", "integrated_gradients", "smoothgrad", "guided_backprop", "gradcam",
                             "occlusion", "gradcam_plusplus", "scorecam", "layercam", "eigencam", "hirescam"]
    for name, m in METHODS.items():
        assert isinstance(m, AttributionMethod) and m.label and m.help, name
        assert str(m) == m.help  # what the Explain page shows as the method's caption
    assert len({m.label for m in METHODS.values()}) == len({m.help for m in METHODS.values()}) == len(METHODS)
    assert STEM == "stem"


@pytest.mark.parametrize("method", ["saliency", "occlusion", "gradcam"])
def test_a_wrong_block_fails_for_every_method(model: nn.Module, image: torch.Tensor, method: str) -> None:
    # It was ignored by every method but gradcam: a typo gave a map of something else.
    before = state(model)
    with pytest.raises(ValueError, match="no block named 'stage3.block9'"):
        attribute(model, image, method, block="stage3.block9")
    assert state(model) == before
    assert attribute(model, image, "saliency", 1, block=STEM).shape == (32, 32)  # the stem is a valid place


def test_saliency_is_abs_gradient_summed_over_channels(model: nn.Module, image: torch.Tensor) -> None:
    model.eval()
    x = image.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[0, 4], x)
    want = g.abs().sum(1)[0]  # (32, 32)
    assert torch.allclose(attribute(model, image, "saliency", target=4), want, rtol=1e-5, atol=1e-7)


def test_guided_backprop_hooks_take_effect(model: nn.Module, image: torch.Tensor) -> None:
    gb = attribute(model, image, "guided_backprop", target=4)
    sal = attribute(model, image, "saliency", target=4)
    assert not torch.allclose(gb, sal, rtol=1e-3)
    assert_no_hooks(model)


def test_integrated_gradients_keeps_its_sign_and_completeness(model: nn.Module, image: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        delta = float(model(image)[0, 5] - model(torch.zeros_like(image))[0, 5])
    a = attribute(model, image, "integrated_gradients", target=5, steps=50)
    assert float(a.sum()) == pytest.approx(delta, rel=0.05, abs=0.05)


def test_gradcam_is_non_negative_and_takes_a_block(model: nn.Module, image: torch.Tensor) -> None:
    last = attribute(model, image, "gradcam", target=2)
    early = attribute(model, image, "gradcam", target=2, block="stage1.block0")
    assert (last >= 0).all() and (early >= 0).all()
    assert torch.equal(last, attribute(model, image, "gradcam", target=2, block="stage3.block0"))


def test_normalize_map() -> None:
    a = torch.arange(100.0).reshape(10, 10) - 50  # signed
    a[0, 0] = 1e6  # one outlier must not flatten the rest
    n = normalize_map(a)
    assert n.min() >= 0 and n.max() <= 1 and n[0, 0] == 1
    assert n[9, 9] > 0.5
    assert torch.equal(normalize_map(torch.zeros(4, 4)), torch.zeros(4, 4))
    nan = normalize_map(torch.tensor([[float("nan"), 1.0], [0.0, 2.0]]))
    assert torch.isfinite(nan).all() and nan[0, 0] == 0
    sparse = torch.zeros(32, 32)
    sparse[3, 3] = 5.0  # under 1% non-zero: the 99th percentile is 0, scale by the max
    assert normalize_map(sparse)[3, 3] == 1


def test_smoothgrad_draws_its_noise_from_its_own_generator(model, image) -> None:
    """A page's SmoothGrad must not touch the server's torch RNG, and the same seed gives the same map."""
    import torch

    from resnet_viz.experiments.attribution import attribute

    x = image
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = attribute(model, x, "smoothgrad", samples=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(attribute(model, x, "smoothgrad", samples=8), a)
    assert not torch.equal(attribute(model, x, "smoothgrad", samples=8, seed=1), a)
