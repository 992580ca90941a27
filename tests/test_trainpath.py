"""The path training took (experiments.trainpath): the PCA against numpy on a trajectory with
known principal directions, the loss along given directions against a hand computation, and
the whole experiment on a tiny synthetic run's snapshots."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.experiments.common import Cancelled
from resnet_viz.experiments.landscape import fixed_subset, surface_along
from resnet_viz.experiments.trainpath import path_pca, training_path
from resnet_viz.nets.cifar import build_model
from resnet_viz.store.rundir import RunDir
from resnet_viz.training.loop import fit


def known_path(n: int = 12, p: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, p) weights theta_i = theta_n + c u3 + a_i u1 + b_i u2 for i < n, and (u1, u2, u3).

    The constant offset c u3 is the mean of the differences, not a direction of variation: a
    PCA without centring would take u3 first. theta_0 lies at a > 0 but b < 0, so each of the
    two signs is pinned by "the initialization has a coordinate >= 0"."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(p, 3, generator=gen, dtype=torch.float64))
    u1, u2, u3 = q.T
    t = torch.linspace(0, 1, n - 1, dtype=torch.float64)
    # Uncorrelated on the symmetric grid (a odd, b even about t = 1/2): u1 and u2 are the
    # principal directions themselves, not a rotation of them.
    a = 8.0 * (1 - t)  # large spread along u1; a_0 = 8
    b = -2.0 * torch.cos(2 * torch.pi * t)  # smaller, along u2; b_0 = -2
    final = torch.randn(p, generator=gen, dtype=torch.float64)
    rows = final + 10.0 * u3 + a[:, None] * u1 + b[:, None] * u2
    return torch.cat([rows, final[None]]).float(), q.T.float()


def test_pca_matches_numpy_and_finds_the_known_directions() -> None:
    w, (u1, u2, u3) = known_path()
    pca = path_pca(w)
    diffs = (w[:-1] - w[-1]).double().numpy()
    centred = diffs - diffs.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = s**2 / (s**2).sum()
    assert pca.explained == pytest.approx(share[:2].tolist(), abs=1e-5)
    assert sum(pca.explained) == pytest.approx(1.0, abs=1e-5)  # the path lies in the plane
    for k in range(2):  # numpy's sign is its own: compare up to sign here, the sign below
        assert abs(float(np.dot(pca.directions[k].double().numpy(), vt[k]))) == pytest.approx(1.0, abs=1e-5)
    # The centring: the constant offset u3 is no principal direction.
    assert abs(float(pca.directions[0] @ u3)) < 1e-4 and abs(float(pca.directions[1] @ u3)) < 1e-4
    # The sign: the initialization on the positive side, so d1 = u1 (a_0 = 8) and d2 = -u2 (b_0 = -2).
    assert float(pca.directions[0] @ u1) == pytest.approx(1.0, abs=1e-5)
    assert float(pca.directions[1] @ u2) == pytest.approx(-1.0, abs=1e-5)
    # Projections without centring: the final weights at the origin, theta_0 at (8, 2).
    assert pca.coords[-1].tolist() == pytest.approx([0.0, 0.0], abs=1e-5)
    assert pca.coords[0].tolist() == pytest.approx([8.0, 2.0], abs=1e-4)
    expected = (w - w[-1]) @ torch.stack([u1, -u2]).T
    assert torch.allclose(pca.coords, expected, atol=1e-4)


def test_pca_matches_torch_svd_on_a_random_path() -> None:
    w = torch.randn(9, 300, generator=torch.Generator().manual_seed(1)).cumsum(0)  # a random walk
    pca = path_pca(w)
    d = w[:-1] - w[-1]
    _, s, vh = torch.linalg.svd(d - d.mean(0), full_matrices=False)
    assert pca.explained == pytest.approx((s[:2] ** 2 / (s**2).sum()).tolist(), abs=1e-5)
    assert torch.allclose((pca.directions @ vh[:2].T).abs(), torch.eye(2), atol=1e-4)


def test_pca_refuses_too_few_snapshots_and_a_straight_line() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        path_pca(torch.randn(3, 10))
    line = torch.linspace(0, 1, 6)[:, None] * torch.ones(1, 10)
    with pytest.raises(ValueError, match="one line"):
        path_pca(line)


def test_the_loss_along_given_directions_is_the_hand_computed_one(one_thread) -> None:
    model = build_model(ModelConfig(depth=8), generator=torch.Generator().manual_seed(0)).eval()
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    # Only the classifier moves: the loss at (a, b) is a cross-entropy computed by hand.
    d1 = [torch.zeros_like(p) for p in model.parameters()]
    d2 = [torch.zeros_like(p) for p in model.parameters()]
    idx = [n for n, _ in model.named_parameters()].index("fc.weight")
    d1[idx] = torch.randn(model.fc.weight.shape, generator=gen)
    d2[idx] = torch.randn(model.fc.weight.shape, generator=gen)
    body = copy.deepcopy(model)
    body.fc = torch.nn.Identity()  # the features the classifier sees
    with torch.no_grad():
        feats = body(x)
    alphas, betas = [-1.0, 0.5], [0.0, 2.0]
    surf = surface_along(model, x, y, (d1, d2), alphas, betas, precision="fp32")
    for j, b in enumerate(betas):
        for i, a in enumerate(alphas):
            w = model.fc.weight + a * d1[idx] + b * d2[idx]
            want = F.cross_entropy(feats @ w.T + model.fc.bias, y).item()
            assert surf.loss[j][i] == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="shaped like each parameter"):
        surface_along(model, x, y, (d1[:-1], d2), alphas, betas)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = make_synthetic(320, 40, seed=0)
    cfg = RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic"),
                    train=TrainConfig(steps=20, epochs=None, batch_size=32, lr=0.05, probe_every=0, log_every=5,
                                      eval_every=1000, threads=1, snapshot_every=4))
    run = RunDir.create(tmp_path_factory.mktemp("runs"), cfg, "path")
    fit(cfg, data=data, run=run)
    x, y = fixed_subset(data.train_x, data.train_y, n=40)
    torch.save((x, y), run.path / "subset.pt")
    return run.path


def test_a_tiny_runs_path_lies_on_its_plane_and_ends_at_the_origin(tiny_run: Path, one_thread) -> None:
    x, y = torch.load(tiny_run / "subset.pt")
    partials: list[dict] = []

    def progress(fraction: float, message: str, partial: dict | None = None) -> None:
        if partial is not None:
            partials.append(partial)

    res = training_path(tiny_run, x, y, steps=5, progress=progress)
    assert res.steps == [0, 4, 8, 12, 16, 20] and res.epochs[-1] == pytest.approx(2.0)
    assert (res.x[-1], res.y[-1]) == pytest.approx((0.0, 0.0), abs=1e-5)
    assert res.x[0] >= 0 and res.y[0] >= 0  # the initialization on the positive side
    assert 0 < res.explained[1] <= res.explained[0] and sum(res.explained) <= 1 + 1e-6
    s = res.surface
    assert len(s.alphas) == len(s.betas) == 5 and min(s.alphas) < min(res.x) and max(s.alphas) > max(res.x)
    assert min(s.betas) < min(res.y) and max(s.betas) > max(res.y)
    assert all(np.isfinite(v) for row in s.loss for v in row)
    assert partials and partials[0]["path"]["x"] == res.x  # a preview can draw the path
    d = res.to_dict()
    assert d["kind"] == "trainpath" and len(d["surface"]["loss"]) == 5
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        training_path(tiny_run, x, y, steps=3, stop=stop)
    with pytest.raises(ValueError, match="grid points"):
        training_path(tiny_run, x, y, steps=99)


@pytest.mark.slow  # four subprocesses: over a minute on 2 busy cores
def test_the_cli_prints_one_json_object_and_refuses_a_run_without_snapshots(tmp_path: Path) -> None:
    from test_cli import cli

    out = cli("train", "--depth", "8", "--data", "synthetic", "--steps", "12", "--batch-size", "32",
              "--snapshot-every", "3", "--probe-every", "0", "--out", str(tmp_path), "--name", "path")
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout.strip().splitlines()[-1])["run_id"]
    res = cli("trainpath", run_id, "--out", str(tmp_path), "--images", "40", "--steps", "3")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["experiment"] == "trainpath" and r["steps"] == [0, 3, 6, 9, 12] and len(r["surface"]["loss"]) == 3
    assert r["x"][-1] == pytest.approx(0.0, abs=1e-5) and r["data"].startswith("Synthetic")
    bare = cli("train", "--depth", "8", "--data", "synthetic", "--steps", "4", "--batch-size", "32",
               "--snapshot-every", "0", "--probe-every", "0", "--out", str(tmp_path), "--name", "bare")
    bare_id = json.loads(bare.stdout.strip().splitlines()[-1])["run_id"]
    err = cli("trainpath", bare_id, "--out", str(tmp_path))
    assert err.returncode == 2 and "0 weight snapshots" in err.stderr and "Traceback" not in err.stderr
