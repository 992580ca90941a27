"""Loss landscapes: filter-normalized directions, slices, surfaces; never the caller's model."""

from __future__ import annotations

import copy
import json
import threading

import pytest
import torch
import torch.nn.functional as F
from conftest import CIFAR_JPEG

from resnet_viz.config import ModelConfig
from resnet_viz.experiments.common import Cancelled
from resnet_viz.experiments.landscape import (
    Slice1D,
    fixed_subset,
    interpolation_slice,
    preview_strides,
    random_direction,
    random_slice,
    surface_2d,
)
from resnet_viz.nets.cifar import build_model
from resnet_viz.store.models import ASSETS_DIR, load_model_file

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _tiny(seed: int, shortcut: str = "A"):
    """An untrained depth-8 net whose BN layers are not the identity, so folding BN matters."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(depth=8, shortcut=shortcut))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _data(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


@torch.no_grad()
def _own_loss(model, x, y) -> float:
    was = model.training
    model.eval()
    try:
        return F.cross_entropy(model(x), y).item()
    finally:
        model.train(was)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_direction_is_filter_normalized_and_ignores_bn_and_biases() -> None:
    model = _tiny(0)
    dirs = random_direction(model, seed=3)
    assert len(dirs) == len(list(model.parameters()))
    for (name, p), d in zip(model.named_parameters(), dirs, strict=True):
        assert d.shape == p.shape
        if p.dim() <= 1:  # BN weights/biases and the linear bias
            assert not d.any(), name
        else:
            dn = d.reshape(p.shape[0], -1).norm(dim=1)
            pn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(dn, pn, rtol=1e-5, atol=1e-6)


def test_same_seed_same_direction_different_seed_different() -> None:
    model = _tiny(0)
    a, b, c = random_direction(model, 5), random_direction(model, 5), random_direction(model, 6)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert any(not torch.equal(u, v) for u, v in zip(a, c, strict=True) if u.dim() > 1)
    # Another net of the same architecture gets the same raw direction, scaled to its own filters.
    other = random_direction(_tiny(1, shortcut="none"), 5)
    for u, v in zip(a, other, strict=True):
        if u.dim() > 1:
            ru, rv = u.reshape(u.shape[0], -1), v.reshape(v.shape[0], -1)
            torch.testing.assert_close(ru / ru.norm(dim=1, keepdim=True), rv / rv.norm(dim=1, keepdim=True))


def test_callers_model_unchanged_also_after_stop() -> None:
    model = _tiny(0).train()
    before = _state(model)
    x, y = _data()
    random_slice(model, x, y, steps=3, precision="fp32")
    surface_2d(model, x, y, steps=2, precision="fp32")
    interpolation_slice(_tiny(1).state_dict(), model, x, y, steps=3, precision="fp32")
    assert model.training and _same(before, _state(model))

    stop = threading.Event()
    seen: list[float] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        stop.set()  # stop after the first grid point

    with pytest.raises(Cancelled):
        surface_2d(model, x, y, steps=3, precision="fp32", progress=progress, stop=stop)
    assert seen == [pytest.approx(1 / 9)]
    assert model.training and _same(before, _state(model))


def test_interpolation_hits_both_models_at_zero_and_one() -> None:
    init, trained = _tiny(1), _tiny(2)
    for m in trained.modules():  # stats far from the initial ones: extrapolating must stay finite
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.mul_(20.0)
    x, y = _data()
    s = interpolation_slice(init.state_dict(), trained, x, y, steps=7, lo=-0.25, hi=1.25,
                            precision="fp32", label="tiny")
    assert s.kind == "interpolation" and s.alphas[1] == 0.0 and s.alphas[5] == 1.0
    assert s.loss[1] == pytest.approx(_own_loss(init, x, y), rel=1e-4)
    assert s.loss[5] == pytest.approx(_own_loss(trained, x, y), rel=1e-4)
    assert all(torch.isfinite(torch.tensor(s.loss)))
    json.dumps(s.to_dict(), allow_nan=False)


def test_interpolation_rejects_a_state_of_another_architecture() -> None:
    x, y = _data(4)
    with pytest.raises(ValueError, match="initial_state"):
        interpolation_slice(build_model(ModelConfig(depth=14)).state_dict(), _tiny(0), x, y, steps=2)


def test_surface_shape_and_centre_is_the_models_own_loss() -> None:
    model = _tiny(0)
    x, y = _data()
    surf = surface_2d(model, x, y, steps=3, span=0.5, batch_size=10, precision="fp32", label="t", seed=4)
    assert surf.alphas == surf.betas == [-0.5, 0.0, 0.5]
    assert len(surf.loss) == len(surf.acc) == 3 and all(len(r) == 3 for r in surf.loss + surf.acc)
    assert surf.loss[1][1] == pytest.approx(_own_loss(model, x, y), rel=1e-4)
    assert surf.loss[0][0] != surf.loss[1][1]
    d = surf.to_dict()
    assert d["seed"] == 4 and d["label"] == "t"
    json.dumps(d, allow_nan=False)
    # bf16 autocast (where this CPU has it) agrees to bf16 accuracy.
    bf = surface_2d(model, x, y, steps=3, span=0.5, precision="bf16", seed=4)
    assert bf.loss[1][1] == pytest.approx(surf.loss[1][1], rel=0.05)


def test_surface_fills_in_coarse_to_fine_with_previews_of_the_same_values() -> None:
    assert preview_strides(21) == [4, 2] and preview_strides(11) == [2] and preview_strides(7) == [2]
    assert preview_strides(3) == [] and preview_strides(2) == [] and preview_strides(6) == []
    model = _tiny(0)
    x, y = _data()
    reports: list[tuple[float, str, dict | None]] = []

    def progress(fraction: float, message: str, partial: dict | None = None) -> None:
        reports.append((fraction, message, partial))

    surf = surface_2d(model, x, y, steps=5, span=0.5, batch_size=10, precision="fp32", progress=progress)
    previews = [(f, p) for f, _, p in reports if p is not None]
    assert len(previews) == 1  # 5 points per axis: one 3x3 preview on every 2nd point
    fraction, preview = previews[0]
    assert fraction == pytest.approx(9 / 25)  # after the 3x3 grid's 9 points, of 25
    assert preview["alphas"] == preview["betas"] == [-0.5, 0.0, 0.5] == surf.alphas[::2]
    assert preview["loss"] == [row[::2] for row in surf.loss[::2]]  # the same numbers, seen early
    json.dumps(preview, allow_nan=False)
    fractions = [f for f, _, p in reports if p is None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == 25  # each point once
    # The order changes no value: the 3x3 surface on the same span is the coarse grid's.
    small = surface_2d(model, x, y, steps=3, span=0.5, batch_size=10, precision="fp32")
    assert small.loss == preview["loss"]


def test_random_slice_centre_is_the_model_and_nan_becomes_none() -> None:
    model = _tiny(0)
    x, y = _data()
    s = random_slice(model, x, y, steps=5, precision="fp32")
    assert s.alphas == [-1.0, -0.5, 0.0, 0.5, 1.0] and len(s.loss) == len(s.acc) == 5
    assert s.loss[2] == pytest.approx(_own_loss(model, x, y), rel=1e-4)
    bad = Slice1D(alphas=[0.0], loss=[float("nan")], acc=[0.0], kind="random", label="")
    assert json.loads(json.dumps(bad.to_dict(), allow_nan=False))["loss"] == [None]


def test_bad_arguments_say_what_to_do() -> None:
    model = _tiny(0)
    x, y = _data(4)
    with pytest.raises(ValueError, match="normalized float"):
        random_slice(model, (x * 50).to(torch.uint8), y, steps=3)
    with pytest.raises(ValueError, match="at least 2 steps"):
        random_slice(model, x, y, steps=1)
    with pytest.raises(ValueError, match="span"):
        surface_2d(model, x, y, span=0.0)


def test_fixed_subset_is_seeded_balanced_and_normalized() -> None:
    g = torch.Generator().manual_seed(0)
    xu = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=g)
    yu = torch.arange(300) % 10
    xs, ys = fixed_subset(xu, yu, n=45, seed=1)
    assert xs.shape == (45, 3, 32, 32) and xs.dtype == torch.float32 and ys.dtype == torch.int64
    assert torch.bincount(ys).tolist() == [5] * 5 + [4] * 5
    xs2, ys2 = fixed_subset(xu, yu, n=45, seed=1)
    assert torch.equal(xs, xs2) and torch.equal(ys, ys2)
    assert not torch.equal(fixed_subset(xu, yu, n=45, seed=2)[0], xs)
    with pytest.raises(ValueError, match="choose 1 <= n <= 300"):
        fixed_subset(xu, yu, n=301)
    lopsided = torch.tensor([0] * 2 + [1] * 28)
    with pytest.raises(ValueError, match="ask for at most 4"):  # class 0 has only 2 images
        fixed_subset(xu[:30], lopsided, n=10)


@pytest.mark.slow
def test_trained_models_sit_at_the_minimum_of_a_random_slice() -> None:
    """Real CIFAR-10 and the shipped models: the trained weights are the minimum of the slice."""
    files = {name: ASSETS_DIR / f"{name}.safetensors" for name in ("resnet20", "plain20")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        pytest.skip(f"shipped model files missing: {', '.join(missing)}")
    if not (CIFAR_JPEG / "train").is_dir():
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {CIFAR_JPEG}")
    from resnet_viz.config import DataConfig
    from resnet_viz.data.sources import load_data

    data = load_data(DataConfig(source="folder", path=str(CIFAR_JPEG)))
    x, y = fixed_subset(data.train_x, data.train_y, n=500, seed=0)
    for name, path in files.items():
        model, _, _ = load_model_file(path)
        s = random_slice(model, x, y, seed=0, steps=7, span=1.0, label=name)
        print(f"\n{name}: " + "  ".join(f"a={a:+.2f} loss={lv:.3f} acc={ac:.3f}"
                                        for a, lv, ac in zip(s.alphas, s.loss, s.acc, strict=True)))
        assert s.alphas[3] == 0.0
        assert s.loss[3] == min(s.loss), f"{name}: the trained weights are not the slice's minimum"


def test_two_experiments_on_one_model_at_once_match_one_at_a_time() -> None:
    """The app may run a slice and a lesion study of the same model object in two threads.

    Both work on private copies, and the slice's BN fold no longer traces with torch.fx,
    whose tracer patched nn.Module.__call__ for the whole process: the other thread's
    forward passes broke the trace ("module is not installed as a submodule", seen in the
    browser test when two tasks started in the same second)."""
    from resnet_viz.experiments.lesion import lesion_study

    model = _tiny(4)
    x, y = _data(16)
    before = _state(model)
    alone = (random_slice(model, x, y, seed=1, steps=3).loss, lesion_study(model, x, y, max_k=1, trials=1).single)
    errors: list[BaseException] = []
    out: dict[str, list] = {"slice": [], "lesion": []}

    def slices() -> None:
        try:
            for _ in range(8):  # a new Probe, a new fold, each time
                out["slice"].append(random_slice(model, x, y, seed=1, steps=3).loss)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    def lesions() -> None:
        try:
            for _ in range(3):
                out["lesion"].append(lesion_study(model, x, y, max_k=1, trials=1).single)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=slices), threading.Thread(target=lesions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert all(s == pytest.approx(alone[0], rel=1e-5) for s in out["slice"]) and len(out["slice"]) == 8
    assert all(s == alone[1] for s in out["lesion"]) and len(out["lesion"]) == 3
    assert _same(_state(model), before)


@pytest.mark.parametrize(("shortcut", "block"), [("A", "basic"), ("B", "basic"), ("C", "basic"), ("B", "bottleneck")])
def test_probe_folds_every_batch_norm_and_keeps_the_numbers(shortcut: str, block: str) -> None:
    from resnet_viz.experiments.folded import Probe

    torch.manual_seed(2)
    model = (_tiny(5, shortcut) if block == "basic"
             else build_model(ModelConfig(depth=11, shortcut=shortcut, block=block)))
    x, y = _data(12)
    probe = Probe(model, x, y, batch_size=5, precision="fp32")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in probe.net.modules())
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert len(probe._folds) == n_bn
    loss, _ = probe.evaluate(None)
    assert loss == pytest.approx(_own_loss(model, x, y), rel=1e-5)
    with torch.no_grad():
        probe.params[0].mul_(1.5)  # the caller moves the work copy; the fold follows
        moved = copy.deepcopy(probe.work)
    assert probe.evaluate(None)[0] == pytest.approx(_own_loss(moved, x, y), rel=1e-5)
