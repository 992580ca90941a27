"""Per-block probes and the LR schedules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnet_viz.config import ModelConfig, TrainConfig
from resnet_viz.nets.cifar import block_names, build_model, get_block
from resnet_viz.plots import PROBE_STATS
from resnet_viz.training.probes import probe_blocks
from resnet_viz.training.schedule import lr_at


def _step(model, x, y):
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss


def test_probe_records_every_block_and_removes_hooks() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=14, shortcut="A"))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with probe_blocks(model) as probe:
        _step(model, x, y)
    res = probe.results()
    assert list(res) == block_names(model)
    for stats in res.values():
        assert set(stats) == {"act_norm", "grad_norm", "ratio", "cos"} == set(PROBE_STATS)  # each has a label
        assert stats["act_norm"] > 0 and stats["grad_norm"] > 0 and stats["ratio"] > 0
        assert -1 <= stats["cos"] <= 1
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks


def test_probe_values_match_a_hand_computation() -> None:
    torch.manual_seed(1)
    model = build_model(ModelConfig(depth=8, shortcut="A"))
    x, y = torch.randn(3, 3, 32, 32), torch.randint(0, 10, (3,))
    blk = get_block(model, "stage2.block0")
    seen = {}
    h = blk.register_forward_hook(lambda m, i, o: seen.update(x=i[0].detach(), y=o))
    with probe_blocks(model, names=["stage2.block0"]) as probe:
        loss = F.cross_entropy(model(x), y)
        seen["y"].retain_grad()
        loss.backward()
    h.remove()
    stats = probe.results()["stage2.block0"]
    f = blk.branch(seen["x"]).flatten(1)
    s = blk.shortcut(seen["x"]).flatten(1)
    assert stats["ratio"] == pytest.approx((f.norm(dim=1) / s.norm(dim=1)).mean().item(), rel=1e-4)
    assert stats["cos"] == pytest.approx(F.cosine_similarity(f, s, dim=1).mean().item(), abs=1e-5)
    assert stats["act_norm"] == pytest.approx(seen["y"].flatten(1).norm(dim=1).mean().item(), rel=1e-5)
    g = seen["y"].grad.flatten(1).norm(dim=1).mean().item() * 3
    assert stats["grad_norm"] == pytest.approx(g, rel=1e-5)


def test_plain_net_has_no_skip_statistics() -> None:
    model = build_model(ModelConfig(depth=8, shortcut="none"))
    with probe_blocks(model) as probe:
        _step(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert all(set(s) == {"act_norm", "grad_norm"} for s in probe.results().values())


def test_hooks_are_removed_when_the_step_fails() -> None:
    model = build_model(ModelConfig(depth=8))
    with pytest.raises(RuntimeError), probe_blocks(model):
        model(torch.randn(2, 5, 32, 32))  # wrong channel count
    assert not any(m._forward_hooks for m in model.modules())


def test_schedules() -> None:
    one = TrainConfig(lr=0.2, schedule="onecycle", warmup_fraction=0.25)
    assert lr_at(0, 100, one) == pytest.approx(0.02)
    assert lr_at(25, 100, one) == pytest.approx(0.2)
    assert lr_at(100, 100, one) == pytest.approx(0.0)
    cos = TrainConfig(schedule="cosine", lr=0.1)
    assert lr_at(0, 10, cos) == pytest.approx(0.1) and lr_at(5, 10, cos) == pytest.approx(0.05)
    paper = TrainConfig(schedule="paper", lr=0.1, steps=64_000, epochs=None)
    assert [lr_at(s, 64_000, paper, 20) for s in (0, 31_999, 32_000, 48_000)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert lr_at(100, 64_000, paper, 110) == pytest.approx(0.01)  # warm-up for 110 layers
    assert lr_at(400, 64_000, paper, 110) == pytest.approx(0.1)
