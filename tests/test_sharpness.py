"""Sharpness: power iteration and Hutchinson against known and exact Hessians."""

from __future__ import annotations

import json
import math
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from resnet_viz.config import ModelConfig
from resnet_viz.experiments import Cancelled
from resnet_viz.experiments.sharpness import (
    MAX_IMAGES,
    hutchinson_trace,
    loss_hvp,
    sharpness,
    top_eigenvalues,
)
from resnet_viz.nets.cifar import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def quadratic(eigs: list[float], seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A symmetric matrix with the given eigenvalues in a random basis, split over two 'parameters'."""
    n = len(eigs)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ q.T, [torch.zeros(3, dtype=torch.float64),
                                                                             torch.zeros(n - 3, dtype=torch.float64)]


def matrix_hvp(a: torch.Tensor):
    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        out = a @ torch.cat(v)
        return [out[:3], out[3:]]
    return hvp


def test_power_iteration_finds_a_quadratics_eigenvalues() -> None:
    # loss(w) = w^T A w / 2 has Hessian A: the top three by magnitude are 10, -7 and 5, in that order.
    eigs = [10.0, -7.0, 5.0, 1.0, 0.5, 0.1, 0.0, -0.2]
    a, like = quadratic(eigs)
    values, its, conv = top_eigenvalues(matrix_hvp(a), like, 3, max_iter=200, tol=1e-10)
    assert values == pytest.approx([10.0, -7.0, 5.0], rel=1e-6)
    assert all(conv) and all(1 < i <= 200 for i in its)


def test_power_iteration_stops_at_max_iter_unconverged() -> None:
    a, like = quadratic([1.0, 0.999, 0.5, 0.1])  # a tiny gap: slow convergence
    values, its, conv = top_eigenvalues(matrix_hvp(a), like, 1, max_iter=3, tol=1e-12)
    assert its == [3] and conv == [False]
    assert 0.5 < values[0] <= 1.0 + 1e-9


def test_hutchinson_is_unbiased_with_a_standard_error() -> None:
    a, like = quadratic([4.0, 3.0, 2.0, 1.0, -1.0, 0.5])
    exact = float(torch.trace(a))
    trace, se = hutchinson_trace(matrix_hvp(a), like, 400, generator=torch.Generator().manual_seed(3))
    assert se > 0
    assert abs(trace - exact) < 4 * se
    # a diagonal matrix: every Rademacher sample gives the trace exactly
    d = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0, -1.0, 0.5], dtype=torch.float64))
    trace, se = hutchinson_trace(matrix_hvp(d), like, 5)
    assert trace == pytest.approx(9.5) and se == pytest.approx(0.0)


class TinyNet(nn.Module):
    """A conv + BN + MLP small enough for an exact Hessian (a few hundred parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(torch.tanh(self.bn(self.conv(x))), 2)
        return self.fc2(torch.tanh(self.fc1(h.flatten(1))))


def exact_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(w: torch.Tensor) -> torch.Tensor:
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            parts[n] = w[i:i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(functional_call(model, parts, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    # Seed 4: the top magnitudes 3.42, 2.52, -2.05, 1.63 are apart (ratios 0.74, 0.81, 0.79); power
    # iteration's error shrinks by that ratio per product, and under ~0.95 (seed 0 has 0.97, 0.99)
    # 200 products are not enough for 3 digits.
    torch.manual_seed(4)
    m = TinyNet().double()
    with torch.no_grad():  # running statistics away from (0, 1), so eval-mode BN matters
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 3, 8, 8, generator=g, dtype=torch.float64)
    return m, x, torch.randint(0, 10, (20,), generator=g)


def test_matches_an_exact_hessian_on_a_tiny_net(tiny) -> None:
    m, x, y = tiny
    m.train()  # sharpness puts a copy in eval mode: the exact Hessian is taken in eval mode too
    h = exact_hessian(m.eval(), x, y)
    m.train()
    eig = torch.linalg.eigvalsh(h)
    by_magnitude = eig[eig.abs().argsort(descending=True)][:3].tolist()
    res = sharpness(m, x, y, top=3, max_iter=200, tol=1e-9, trace_samples=500, seed=0)
    assert res.params == h.shape[0]
    assert res.eigenvalues == pytest.approx(by_magnitude, rel=1e-3)
    assert abs(res.trace - float(torch.trace(h))) < 4 * res.trace_se
    assert res.trace_se < 0.2 * abs(float(torch.trace(h)))
    assert m.training  # left in train mode as found


def test_chunks_give_the_same_hessian_as_one_batch(tiny) -> None:
    m, x, y = tiny
    m.eval()
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(5), dtype=p.dtype) for p in m.parameters()]
    whole, loss = loss_hvp(m, x, y, chunk=len(y))
    chunked, loss7 = loss_hvp(m, x, y, chunk=7)  # chunks of 7, 7 and 6 images, weighted by their size
    assert loss7 == pytest.approx(loss, rel=1e-12)
    for a, b in zip(whole(v), chunked(v), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    m.train()


def test_leaves_the_model_and_global_rng_as_found() -> None:
    m = build_model(ModelConfig(depth=8, shortcut="A"), generator=torch.Generator().manual_seed(0))
    m.train()
    m.fc.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    rng = torch.get_rng_state()
    calls: list[float] = []
    res = sharpness(m, x, y, top=2, max_iter=4, trace_samples=3, progress=lambda f, msg: calls.append(f))
    assert torch.equal(rng, torch.get_rng_state())
    assert all(mod.training for mod in m.modules())
    assert not m.fc.weight.requires_grad and m.conv1.weight.requires_grad
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())
    assert res.params == sum(p.numel() for p in m.parameters())  # fc.weight included all the same
    assert calls and calls == sorted(calls) and calls[-1] == pytest.approx(1.0)
    d = res.to_dict()
    json.dumps(d)
    assert d["hvps"] == sum(d["iterations"]) + 3 and len(d["eigenvalues"]) == 2
    # the same seed gives the same numbers
    again = sharpness(m, x, y, top=2, max_iter=4, trace_samples=3)
    assert again.eigenvalues == res.eigenvalues and again.trace == res.trace


def test_no_trace_is_null_in_json() -> None:
    m = build_model(ModelConfig(depth=8, shortcut="none"), generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.int64)
    d = sharpness(m, x, y, top=1, max_iter=2, trace_samples=0).to_dict()
    assert d["trace"] is None and d["trace_se"] is None and d["trace_samples"] == 0
    assert math.isfinite(d["eigenvalues"][0])


def test_stop_cancels() -> None:
    m = build_model(ModelConfig(depth=8, shortcut="A"), generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.int64)
    stop = threading.Event()

    def progress(f: float, msg: str) -> None:
        if "product 2" in msg:
            stop.set()

    with pytest.raises(Cancelled):
        sharpness(m, x, y, top=1, max_iter=50, tol=1e-12, progress=progress, stop=stop)


@pytest.mark.parametrize("kw, match", [
    ({"top": 0}, "top"), ({"top": 11}, "top"), ({"max_iter": 0}, "max_iter"), ({"max_iter": 10_000}, "max_iter"),
    ({"trace_samples": -1}, "trace_samples"), ({"trace_samples": 10**6}, "trace_samples"),
    ({"tol": 0.0}, "tol"),
])
def test_bounds_are_refused_with_a_message(kw, match) -> None:
    m = build_model(ModelConfig(depth=8, shortcut="A"), generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match=match):
        sharpness(m, x, y, **kw)


def test_too_many_images_or_bad_labels_are_refused() -> None:
    m = build_model(ModelConfig(depth=8, shortcut="A"), generator=torch.Generator().manual_seed(0))
    x = torch.zeros(MAX_IMAGES + 1, 3, 8, 8)
    with pytest.raises(ValueError, match="images"):
        sharpness(m, x, torch.zeros(len(x), dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        sharpness(m, torch.zeros(2, 3, 8, 8), torch.zeros(2))


def test_cli_prints_one_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_cli import cli

    monkeypatch.setenv("RESNET_VIZ_DEFAULT_DATA", "synthetic")  # no CIFAR-10 load in a unit test
    out = cli("sharpness", "--untrained", "--depth", "8", "--shortcut", "none", "--images", "16", "--top", "2",
              "--max-iter", "3", "--trace-samples", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["experiment"] == "sharpness" and r["model"] == "plain-8 (untrained, seed 0)"
    assert r["images"] == 16 and len(r["eigenvalues"]) == 2 and r["trace_samples"] == 2
    assert r["data"].startswith("Synthetic") and r["seconds"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["assets/resnet20.safetensors", "--untrained"],  # both
    [],  # neither
    ["--untrained", "--images", str(MAX_IMAGES + 1)],
    ["--untrained", "--top", "0"],
])
def test_cli_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    from test_cli import cli

    monkeypatch.setenv("RESNET_VIZ_DEFAULT_DATA", "synthetic")
    out = cli("sharpness", "--depth", "8", *args)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_estimate_counts_every_product() -> None:
    from conftest import fake_speed

    from resnet_viz.experiments.estimates import sharpness_seconds

    speed = fake_speed(threads=2)
    cfg = ModelConfig(depth=20)
    one = sharpness_seconds(cfg, 128, speed, top=1, max_iter=10, trace_samples=0)
    assert sharpness_seconds(cfg, 128, speed, top=2, max_iter=10, trace_samples=10) == pytest.approx(
        one + 2 * (one - sharpness_seconds(cfg, 128, speed, top=0, max_iter=10, trace_samples=0)))
    assert sharpness_seconds(cfg, 256, speed) == pytest.approx(2 * sharpness_seconds(cfg, 128, speed))
    assert sharpness_seconds(ModelConfig(depth=56), 128, speed) > 2 * sharpness_seconds(cfg, 128, speed)
    assert sharpness_seconds(cfg, 128, speed, threads=1) == pytest.approx(2 * sharpness_seconds(cfg, 128, speed))


def test_recalibrated_bn_holds_the_images_statistics() -> None:
    from resnet_viz.experiments.sharpness import recalibrate_bn

    m = build_model(ModelConfig(depth=8, shortcut="A"), generator=torch.Generator().manual_seed(0))
    x = 3.0 + 2.0 * torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    recalibrate_bn(m, x)
    assert not m.training and m.bn1.momentum == 0.1
    stem = m.conv1(x).transpose(0, 1).flatten(1)  # the first BN's input, per channel
    torch.testing.assert_close(m.bn1.running_mean, stem.mean(1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m.bn1.running_var, stem.var(1), rtol=1e-3, atol=1e-4)  # unbiased, as BN keeps it
    # sharpness(recalibrate=True) does it on its copy: the caller's statistics stay
    fresh = build_model(ModelConfig(depth=8, shortcut="A"), generator=torch.Generator().manual_seed(0))
    res = sharpness(fresh, x, torch.zeros(10, dtype=torch.int64), top=1, max_iter=2, trace_samples=0,
                    recalibrate=True)
    assert res.recalibrated and torch.equal(fresh.bn1.running_mean, torch.zeros(16))
