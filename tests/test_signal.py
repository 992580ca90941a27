"""Signal propagation and shattered gradients at initialization."""

from __future__ import annotations

import json
import math
import threading

import pytest
import torch

from resnet_viz.config import ModelConfig
from resnet_viz.experiments.common import Cancelled
from resnet_viz.experiments.signal import (
    shattered_gradients,
    signal_propagation,
    signal_sweep,
)
from resnet_viz.nets.cifar import block_names, build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_profile_shapes_json_and_determinism() -> None:
    rng = torch.get_rng_state()
    a = signal_propagation(20, "A", batch=16, seed=3)
    b = signal_propagation(20, "A", batch=16, seed=3)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's RNG is not consumed
    assert a == b
    assert a.blocks == block_names(ModelConfig(depth=20))
    assert len(a.forward_var) == len(a.grad_norm) == 9
    assert all(v > 0 and math.isfinite(v) for v in a.forward_var + a.grad_norm)
    d = json.loads(json.dumps(a.to_dict()))
    assert d["label"] == "ResNet(A)-20" and d["grad_ratio"] == pytest.approx(a.grad_ratio)
    assert signal_propagation(20, "A", batch=16, seed=4) != a
    assert signal_propagation(20, "none", batch=16, mode="eval").label == "plain-20 (BN eval)"


def test_plain_gradients_explode_toward_the_input_with_depth() -> None:
    # With train-mode BN at init the plain net's gradient does not vanish: it *grows*
    # exponentially from the last block back to the first (~17x at 20 layers, ~9e3 at 56).
    # The residual net's grows too, but only ~5x -> ~18x. Assert the robust direction.
    ratios = {}
    for depth in (20, 56):
        for shortcut in ("none", "A"):
            p = signal_propagation(depth, shortcut, batch=16)
            ratios[depth, shortcut] = p.grad_ratio
            print(f"{p.label}: grad first/last = {p.grad_ratio:.3g}")
    assert ratios[56, "none"] > 10 * ratios[20, "none"]
    for depth in (20, 56):
        assert abs(math.log(ratios[depth, "A"])) < abs(math.log(ratios[depth, "none"]))


def test_sweep_reports_progress_and_stops() -> None:
    seen: list[float] = []
    profiles = signal_sweep((8, 14), ("none", "A"), batch=8, progress=lambda f, m: seen.append(f))
    assert [(p.depth, p.shortcut) for p in profiles] == [(8, "none"), (8, "A"), (14, "none"), (14, "A")]
    assert seen == sorted(seen) and seen[-1] == 1.0
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        signal_sweep((8,), ("A",), batch=8, stop=stop)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"depth": 21, "shortcut": "A"}, "nearest valid"),
        ({"depth": 20, "shortcut": "Z"}, "unknown shortcut"),
        ({"depth": 20, "shortcut": "A", "mode": "test"}, "BN mode"),
        ({"depth": 20, "shortcut": "A", "batch": 1}, "batch"),
    ],
)
def test_signal_rejects_bad_arguments(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        signal_propagation(**kw)
    with pytest.raises(ValueError, match="nearest valid"):
        signal_sweep((20, 21))


def test_shattered_gradients_plain_is_white_noise_resnet_is_not() -> None:
    # Balduzzi et al. 2017: at depth 56 the plain net's gradient along a line decorrelates
    # at lag 1 (white noise); the ResNet's stays correlated over many points (5-16 of 64
    # for seeds 0-4; 23-61 of the default 256 for seeds 0-2). 64 points keep it quick.
    for seed in range(3):
        plain = shattered_gradients(ModelConfig(depth=56, shortcut="none"), points=64, seed=seed)
        res = shattered_gradients(ModelConfig(depth=56, shortcut="A"), points=64, seed=seed)
        print(f"seed {seed}: corr_length plain {plain.corr_length} resnet {res.corr_length}")
        assert plain.corr_length <= res.corr_length
        assert plain.corr_length <= 2 and res.corr_length >= 4


def test_shattered_result_shapes_json_and_determinism() -> None:
    cfg = ModelConfig(depth=8, shortcut="A")
    a = shattered_gradients(cfg, points=64, seed=1, target=3)
    assert a == shattered_gradients(cfg, points=64, seed=1, target=3)
    assert len(a.t) == len(a.gradient) == 64 and a.t[0] == -1.0 and a.t[-1] == 1.0
    assert a.lags == list(range(33)) and len(a.autocorrelation) == 33
    assert a.autocorrelation[0] == pytest.approx(1.0)
    assert 1 <= a.corr_length <= 33
    assert json.loads(json.dumps(a.to_dict()))["label"] == "ResNet(A)-8 (untrained)"


@pytest.mark.parametrize("calibrate", [None, True])
def test_shattered_gradients_leave_a_model_untouched(calibrate: bool | None) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=8, shortcut="B"))
    model.train()
    model.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # the experiment needs gradients even inside a caller's no_grad
        r = shattered_gradients(model, points=16, calibrate_bn=calibrate)
    assert r.label == "ResNet(B)-8" and len(r.gradient) == 16
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()].count(False) == 1
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_shattered_gradients_reject_bad_arguments() -> None:
    cfg = ModelConfig(depth=8, shortcut="A")
    with pytest.raises(ValueError, match=r"0\.\.9"):
        shattered_gradients(cfg, points=16, target=10)
    with pytest.raises(ValueError, match="points"):
        shattered_gradients(cfg, points=2)
    with pytest.raises(ValueError, match="ModelConfig"):
        shattered_gradients("resnet20")  # type: ignore[arg-type]
