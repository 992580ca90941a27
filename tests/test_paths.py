"""Effective paths (Veit et al. 2016, sec. 4.2): per-path input gradients, checked by hand."""

from __future__ import annotations

import itertools
import json
import math
import threading

import pytest
import torch
from torch import nn

from resnet_viz.config import ModelConfig
from resnet_viz.experiments.common import Cancelled
from resnet_viz.experiments.paths import effective_range, path_gradients, paths_study
from resnet_viz.experiments.routing import routed
from resnet_viz.nets.cifar import BasicBlock, Projection, build_model, iter_blocks

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------- a linear net, by hand

BRANCH = (0.5, -2.0, 0.25)  # F_i(x) = c_i x
SKIP = (1.0, 1.0, -0.75)  # s_i(x) = x, x, and a 1x1 projection p*q x (a block with a B/C shortcut)
HEAD_W, HEAD_B = (1.5, -0.5), (0.1, 0.0)


def _scalar_block(c: float, skip: float | None) -> BasicBlock:
    """A BasicBlock on one channel of 1x1 images whose branch is the linear map x -> c x:
    identity ReLUs, 3x3 convs of which only the centre tap sees a 1x1 image, BN without eps."""
    shortcut: nn.Module = nn.Identity()
    if skip is not None:
        shortcut = Projection(1, 1, 1)
        _set_conv(shortcut.conv, 1.0, centre=(0, 0))
        _set_bn(shortcut.bn, skip)
    b = BasicBlock(1, 1, 1, shortcut)
    b.relu1, b.relu_out = nn.Identity(), nn.Identity()
    _set_conv(b.conv1, 2.0)
    _set_bn(b.bn1, 1.0)
    _set_conv(b.conv2, 1.0)
    _set_bn(b.bn2, c / 2.0)
    return b


def _set_conv(conv: nn.Conv2d, w: float, centre: tuple[int, int] = (1, 1)) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, centre[0], centre[1]] = w


def _set_bn(bn: nn.BatchNorm2d, scale: float) -> None:
    bn.eps = 0.0
    with torch.no_grad():
        bn.weight.fill_(scale)
        bn.bias.zero_()


class LinearNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(*[_scalar_block(c, None if s == 1.0 else s) for c, s in zip(BRANCH, SKIP,
                                                                                                    strict=True)])
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(HEAD_W)[:, None])
            self.fc.bias.copy_(torch.tensor(HEAD_B))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.stage1(x)))


def _hand_path_gradient(x: float, label: int, subset: tuple[int, ...]) -> float:
    """d CE / d x through the path taking the branches in ``subset`` and the skips elsewhere:
    (softmax(z) - onehot) . w, times the product of the path's factors."""
    h = x * math.prod(c + s for c, s in zip(BRANCH, SKIP, strict=True))
    z = [w * h + b for w, b in zip(HEAD_W, HEAD_B, strict=True)]
    p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
    g = sum((p[j] - (j == label)) * HEAD_W[j] for j in range(2))
    return g * math.prod(BRANCH[i] if i in subset else SKIP[i] for i in range(3))


XS, YS = (0.8, -1.3, 2.0), (0, 1, 1)


def _linear_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(XS).reshape(3, 1, 1, 1), torch.tensor(YS)


def test_linear_net_path_gradients_match_a_hand_computation() -> None:
    net = LinearNet()
    x, y = _linear_batch()
    subsets = [s for k in range(4) for s in itertools.combinations(range(3), k)]
    grads = path_gradients(net, x, y, subsets)
    for subset, g in zip(subsets, grads, strict=True):
        want = [_hand_path_gradient(xi, yi, subset) for xi, yi in zip(XS, YS, strict=True)]
        assert g.flatten().tolist() == pytest.approx(want, rel=1e-5, abs=1e-7), subset


def test_linear_net_study_matches_a_hand_computation() -> None:
    x, y = _linear_batch()
    r = paths_study(LinearNet(), x, y, images=3, samples=3)  # 3 >= C(3, k): every path is measured
    assert not r.plain and r.blocks == 3
    totals = []
    for k, row in enumerate(r.per_length):
        subsets = list(itertools.combinations(range(3), k))
        mags = [sum(abs(_hand_path_gradient(xi, yi, s)) for xi, yi in zip(XS, YS, strict=True)) / 3 for s in subsets]
        assert row["k"] == k and row["paths"] == math.comb(3, k) and row["samples"] == len(subsets)
        assert row["binomial"] == pytest.approx(math.comb(3, k) / 8)
        assert row["magnitude"] == pytest.approx(sum(mags) / len(mags), rel=1e-5)
        assert row["total"] == pytest.approx(sum(mags), rel=1e-5)  # mean times C(3, k): the sum over all paths
        totals.append(sum(mags))
    for row, t in zip(r.per_length, totals, strict=True):
        assert row["share"] == pytest.approx(t / sum(totals), rel=1e-5)
    ordinary = [abs(_hand_path_gradient(xi, yi, ()) / math.prod(SKIP) * math.prod(c + s for c, s in
                zip(BRANCH, SKIP, strict=True))) for xi, yi in zip(XS, YS, strict=True)]
    assert r.ordinary_norm == pytest.approx(sum(ordinary) / 3, rel=1e-5)


def test_effective_range_is_the_shortest_run_holding_the_mass() -> None:
    assert effective_range([0.0, 0.05, 0.4, 0.5, 0.05], 0.9) == (2, 3)
    assert effective_range([0.3, 0.1, 0.1, 0.5], 0.9) == (0, 3)
    assert effective_range([1.0, 3.0], 0.5) == (1, 1)
    with pytest.raises(ValueError, match="mass"):
        effective_range([1.0], 0.0)
    with pytest.raises(ValueError, match="no gradient"):
        effective_range([0.0, 0.0])


# ------------------------------------------------------------- real CIFAR blocks


def _net(depth: int, shortcut: str) -> nn.Module:
    return build_model(ModelConfig(depth=depth, shortcut=shortcut), generator=torch.Generator().manual_seed(0))


def _batch(n: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def _ordinary(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.eval()
    x = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    assert x.grad is not None
    return x.grad


def _one_sided(model: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: str) -> torch.Tensor:
    """The input gradient with every block's other side detached in an independent forward:
    ``keep="skip"`` is the k = 0 path, ``keep="branch"`` the k = n path."""
    model.eval()
    xg = x.clone().requires_grad_(True)
    h = model.relu(model.bn1(model.conv1(xg)))
    for _, b in iter_blocks(model):
        f, s = b.branch(h), (b.shortcut(h) if b.shortcut is not None else torch.zeros(()))
        h = b.relu_out(f.detach() + s if keep == "skip" else f + s.detach())
    nn.functional.cross_entropy(model.fc(model.flatten(model.pool(h))), y, reduction="sum").backward()
    assert xg.grad is not None
    return xg.grad


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_all_paths_add_up_to_the_ordinary_gradient(shortcut: str) -> None:
    model = _net(14, shortcut)  # 6 blocks, two of them downsampling: 64 paths
    x, y = _batch()
    subsets = [s for k in range(7) for s in itertools.combinations(range(6), k)]
    total = torch.stack(path_gradients(model, x, y, subsets)).sum(0)
    want = _ordinary(model, x, y)
    assert torch.allclose(total, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
    # every gate open: the ordinary gradient itself
    (everything,) = path_gradients(model, x, y, [range(6)], skip_too=True)
    assert torch.allclose(everything, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shortcut", ["A", "C"])
def test_shortest_and_longest_paths_are_skips_only_and_branches_only(shortcut: str) -> None:
    model = _net(14, shortcut)
    x, y = _batch()
    k0, kn = path_gradients(model, x, y, [(), range(6)])
    assert torch.allclose(k0, _one_sided(model, x, y, "skip"), rtol=1e-5, atol=1e-8)
    assert torch.allclose(kn, _one_sided(model, x, y, "branch"), rtol=1e-5, atol=1e-8)
    assert not torch.allclose(k0, kn)


def test_plain_net_is_one_path() -> None:
    model = _net(14, "none")
    x, y = _batch()
    r = paths_study(model, x, y, images=3, samples=4)
    assert r.plain and [row["k"] for row in r.per_length] == [6] and r.effective == [6, 6]
    assert r.per_length[0]["share"] == 1.0 and r.per_length[0]["paths"] == 1
    assert r.per_length[0]["magnitude"] == pytest.approx(r.ordinary_norm, rel=1e-6)
    assert "single path" in r.reading


def test_magnitude_falls_with_length_in_a_deep_resnet_at_init() -> None:
    # Random weights with BN statistics measured on the inputs (as any evaluation of an
    # initialised net ought to have): each branch sees the growing sum of the earlier ones
    # and its BN divides by that sum's spread, so every branch a path takes scales its
    # gradient down.
    model = _net(56, "A")
    x, y = _batch(8, 16)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: one batch sets the statistics
            m.reset_running_stats()
    with torch.no_grad():
        model.train()(x)
    r = paths_study(model, x, y, images=8, samples=2)
    mags = [row["magnitude"] for row in r.per_length]
    assert len(mags) == 28
    assert sum(mags[:9]) > 100 * sum(mags[-9:])
    assert r.effective[0] > 0 and r.effective[1] < 27
    assert r.effective[0] <= r.peak <= r.effective[1] and r.peak < 27 / 2 and r.mean_length < 27 / 2
    assert "(it shrinks with length)" in r.reading and "shorter than the typical one" in r.reading
    json.dumps(r.to_dict())


def test_model_left_as_found_and_seeded() -> None:
    model = _net(14, "B")
    model.train()
    model.stage2.eval()
    model.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch()
    a = paths_study(model, x, y, images=3, samples=3, seed=5).to_dict()
    assert a == paths_study(model, x, y, images=3, samples=3, seed=5).to_dict()
    assert model.training and not model.stage2.training and model.stage1.training
    assert not model.fc.weight.requires_grad and model.conv1.weight.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="boom"), routed(model):
        assert any(m._forward_hooks for m in model.modules())
        raise RuntimeError("boom")
    assert not any(m._forward_hooks for m in model.modules())


def test_progress_and_stop() -> None:
    model = _net(8, "A")
    x, y = _batch()
    seen: list[float] = []
    paths_study(model, x, y, images=3, samples=2, progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 1 + 1 + 2 + 2 + 1  # ordinary + k = 0..3
    stop = threading.Event()

    def progress(fraction: float, message: str) -> None:
        stop.set()

    with pytest.raises(Cancelled):
        paths_study(model, x, y, images=3, samples=2, progress=progress, stop=stop)


def test_bad_arguments() -> None:
    model = _net(8, "A")
    x, y = _batch()
    for kwargs, match in (({"images": 0}, "images"), ({"samples": 10_000}, "samples"), ({"mass": 1.5}, "mass"),
                          ({"batch_size": True}, "batch_size")):
        with pytest.raises(ValueError, match=match):
            paths_study(model, x, y, **kwargs)
    with pytest.raises(ValueError, match="labels"):
        paths_study(model, x, y[:2])
    with pytest.raises(ValueError, match="images"):
        paths_study(model, x[0], y)
    with pytest.raises(ValueError, match="no residual or plain blocks"):
        paths_study(nn.Sequential(nn.Flatten(), nn.LazyLinear(10)), x, y)


# ------------------------------------------------------------- the CLI


def test_cli_prints_one_json_object(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import argparse

    from resnet_viz.cli import experiments as cli_experiments
    from resnet_viz.config import DataConfig, RunConfig
    from resnet_viz.data.sources import load_data

    data = load_data(DataConfig(source="synthetic", synthetic_train=100, synthetic_test=20))
    monkeypatch.setattr(cli_experiments, "load_model_ref", lambda ref, out: (_net(8, "A"), RunConfig(), "tiny"))
    monkeypatch.setattr(cli_experiments, "data_for", lambda cfg: data)
    args = argparse.Namespace(command="paths", run="r", out=None, images=6, samples=2, seed=0)
    assert cli_experiments.run(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["experiment"] == "paths" and r["blocks"] == 3 and r["images"] == 6
    assert [row["k"] for row in r["per_length"]] == [0, 1, 2, 3] and r["seconds"] >= 0
    with pytest.raises(ValueError, match="--images"):
        cli_experiments.run(argparse.Namespace(**{**vars(args), "images": 5000}))


@pytest.mark.slow
def test_cli_bad_arguments_are_one_line() -> None:
    from test_cli import cli

    out = cli("paths", "assets/resnet20.safetensors", "--samples", "0")
    assert out.returncode == 2 and "samples" in out.stderr and "Traceback" not in out.stderr


def test_estimate_counts_the_passes() -> None:
    from conftest import fake_speed

    from resnet_viz.experiments.estimates import paths_seconds

    s = fake_speed()
    r8, per = ModelConfig(depth=8), s.fp32_seconds_per_image(ModelConfig(depth=8))
    # 3 blocks, 2 samples: lengths 0..3 measure 1, 2, 2, 1 paths at 0.1 + 0.7 k/3 forwards each
    paths = 0.1 + 2 * (0.1 + 0.7 / 3) + 2 * (0.1 + 1.4 / 3) + 0.8
    assert paths_seconds(r8, 10, 2, s) == pytest.approx((2.2 + paths) * 10 * per)
    assert paths_seconds(ModelConfig(depth=8, shortcut="none"), 10, 2, s) == pytest.approx(3.0 * 10 * per)
    assert paths_seconds(ModelConfig(depth=56), 64, 8, s) > paths_seconds(ModelConfig(depth=20), 64, 8, s)
    assert paths_seconds(r8, 10, 2, s, threads=1) == pytest.approx(paths_seconds(r8, 10, 2, s) * s.threads)


# ------------------------------------------------------------- the figure


def test_figure_has_the_three_panels_and_leaves_plain_nets_out() -> None:
    from resnet_viz.plots.paths import paths_figure

    x, y = _linear_batch()
    res = paths_study(LinearNet(), x, y, images=3, samples=3, label="linear").to_dict()
    plain = paths_study(_net(8, "none"), *_batch(), images=3, samples=1).to_dict()
    fig = paths_figure([res, plain])
    assert len(fig.data) == 4  # binomial, magnitude, share and the binomial beside it: the residual net only
    assert fig.data[0].name.startswith("linear: 90% in") and list(fig.data[0].x) == [0, 1, 2, 3]
    assert fig.layout.yaxis2.type == "log"
    assert list(fig.data[2].y) == [row["share"] for row in res["per_length"]]
    empty = paths_figure([plain])
    assert not empty.data and "single path" in empty.layout.annotations[-1].text
