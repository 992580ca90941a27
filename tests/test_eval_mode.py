"""The one eval-mode helper (``nets.cifar.eval_mode``) and the callers that use it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet_viz.config import ModelConfig
from resnet_viz.experiments.common import accuracy
from resnet_viz.nets.cifar import build_model, eval_mode
from resnet_viz.nets.summary import summarize

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _state(m: nn.Module) -> tuple[list[bool], list[bool]]:
    return [x.training for x in m.modules()], [p.requires_grad for p in m.parameters()]


def _mixed() -> nn.Module:
    """Training, but one stage in eval mode and two parameters frozen (as a fine-tuning run has them)."""
    torch.manual_seed(0)
    m = build_model(ModelConfig(depth=8)).train()
    m.stage2.eval()
    m.conv1.weight.requires_grad_(False)
    m.fc.bias.requires_grad_(False)
    return m


@pytest.mark.parametrize("frozen", [False, True])
def test_eval_mode_restores_mixed_modes_and_flags(frozen: bool) -> None:
    m = _mixed()
    before = _state(m)
    with eval_mode(m, frozen=frozen) as inside:
        assert inside is m and not any(x.training for x in m.modules())
        assert all(p.requires_grad != frozen for p in m.parameters() if p is not m.conv1.weight and p is not m.fc.bias)
    assert _state(m) == before
    with pytest.raises(RuntimeError, match="boom"), eval_mode(m, frozen=True):
        raise RuntimeError("boom")
    assert _state(m) == before


def test_accuracy_and_summarize_leave_mixed_modes_as_found() -> None:
    # They used model.train(was): a model with one stage in eval mode came back all training.
    m = _mixed()
    before = _state(m)
    accuracy(m, torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    assert _state(m) == before
    summarize(m)
    assert _state(m) == before
