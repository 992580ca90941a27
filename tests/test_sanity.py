"""Attribution sanity check (Adebayo et al. 2018) on a tiny untrained net, then on the shipped ResNet-20.

Run with ``-s`` to see the trained-model similarities.
"""

from __future__ import annotations

import json
import threading

import pytest
import torch
from conftest import CIFAR_JPEG
from torch import nn

from resnet_viz.config import DataConfig
from resnet_viz.data.batches import normalize
from resnet_viz.data.sources import load_data
from resnet_viz.experiments import Cancelled
from resnet_viz.experiments.sanity import reading, sanity_check, spearman, ssim
from resnet_viz.store.models import ASSETS_DIR, load_model_file

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_result_shapes(model: nn.Module, image: torch.Tensor) -> None:
    r = sanity_check(model, image)
    assert r.method == "saliency" and 0 <= r.target < 10
    assert r.layers == ["fc", "stage3.block0", "stage2.block0", "stage1.block0", "stem"]
    assert len(r.maps) == len(r.similarity) == len(r.ssim) == 6
    assert all(len(m) == 32 and all(len(row) == 32 for row in m) for m in r.maps)
    assert all(0.0 <= v <= 1.0 for m in r.maps for row in m for v in row)
    assert r.similarity[0] == 1.0 and r.ssim[0] == 1.0
    assert all(-1.0 <= s <= 1.0 for s in r.similarity + r.ssim)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["maps"] == r.maps and d["similarity"] == r.similarity
    again = sanity_check(model, image)
    assert again.maps == r.maps  # seeded
    assert sanity_check(model, image, seed=1).maps[1:] != r.maps[1:]
    assert sanity_check(model, image, "gradcam", target=3, with_ssim=False).ssim is None


def test_callers_model_and_random_state_untouched(model: nn.Module, image: torch.Tensor) -> None:
    model.train()
    model.fc.weight.requires_grad_(False)
    modules = [(n, id(m)) for n, m in model.named_modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    sanity_check(model, image, "smoothgrad")  # draws noise: from a forked generator
    assert torch.equal(torch.get_rng_state(), rng)
    assert [(n, id(m)) for n, m in model.named_modules()] == modules
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]) == flags
    for name, mod in model.named_modules():
        assert not any(getattr(mod, d) for d in HOOK_DICTS), f"{name} holds hooks"


def test_progress_and_stop(model: nn.Module, image: torch.Tensor) -> None:
    seen: list[float] = []
    sanity_check(model, image, progress=lambda f, _: seen.append(f))
    assert len(seen) == 6 and seen[-1] == 1.0 and seen == sorted(seen)
    stop = threading.Event()
    with pytest.raises(Cancelled):
        sanity_check(model, image, progress=lambda f, _: stop.set(), stop=stop)


def test_spearman_and_ssim() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.tensor([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    # Ties share their average rank: [1.5, 1.5, 3] against [1, 2, 3]
    assert spearman(torch.tensor([5.0, 5.0, 7.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(0.75**0.5)
    assert spearman(torch.zeros(9), torch.arange(9.0)) == 0.0  # constant: no ordering to compare
    with pytest.raises(ValueError, match="same number of pixels"):
        spearman(a, torch.zeros(3))
    m = torch.rand(32, 32, generator=torch.Generator().manual_seed(0))
    assert ssim(m, m) == pytest.approx(1.0) and ssim(m, m.flip(0)) < 0.5


def test_bad_arguments(model: nn.Module, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="unknown attribution method"):
        sanity_check(model, image, "lime")
    with pytest.raises(ValueError, match=r"x\[i:i\+1\]"):
        sanity_check(model, image.repeat(2, 1, 1, 1))
    with pytest.raises(ValueError, match="CifarResNet"):
        sanity_check(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)), image)


def test_reading_says_pass_fail_or_in_part() -> None:
    layers = ["fc", "stage3.block0", "stage2.block0", "stage1.block0", "stem"]  # top half: fc, stage3.block0
    passed = reading([1.0, 0.4, 0.3, 0.2, 0.1, 0.1], layers)
    assert passed.startswith("saliency: ρ = 0.40 once fc is random, 0.30 with fc to stage3.block0 random, 0.10")
    assert "it passes the check" in passed
    assert "it fails the check" in reading([1.0, 0.95, 0.9, 0.8, 0.6, 0.5], layers, "guided_backprop")
    assert "only in part" in reading([1.0, 0.6, 0.6, 0.4, 0.3, 0.2], layers)
    assert "only in part" in reading([1.0, 0.86, 0.45, 0.3, 0.2, 0.1], layers)  # a random head hardly mattered
    assert "fc random" in reading([1.0, 0.2], ["fc"]) and reading([1.0], []) == ""
    assert reading([1.0, 0.5], layers) == ""  # mismatched lengths: nothing to say


def test_trained_saliency_fails_to_survive_randomization() -> None:
    path = ASSETS_DIR / "resnet20.safetensors"
    if not path.is_file():
        pytest.skip(f"the shipped model {path} is missing (see assets/README.md)")
    if not CIFAR_JPEG.is_dir():
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {CIFAR_JPEG}: the check needs real images")
    model = load_model_file(path)[0]
    d = load_data(DataConfig(source="folder", path=str(CIFAR_JPEG)))
    x = normalize(d.test_x[[0, 3000, 6000, 9000]], channels_last=False)  # one each of 4 classes
    top: dict[str, list[float]] = {"saliency": [], "guided_backprop": []}
    for i in range(len(x)):
        for method in top:
            r = sanity_check(model, x[i:i + 1], method)
            steps = zip(["trained"] + r.layers, r.similarity, strict=True)
            print(f"\n{method} image {i}: " + ", ".join(f"{n} {s:.2f}" for n, s in steps))
            top[method].append(r.similarity[1])
            print(r.to_dict()["reading"])
            if method == "saliency":
                assert "it passes the check" in r.to_dict()["reading"]
                # A map of the model, not the image: once the head and the last blocks are
                # random it no longer ranks pixels like the trained one.
                assert max(r.similarity[2:]) < 0.5
    assert sum(top["saliency"]) / len(x) < 0.6
    # Adebayo et al.'s warning reproduced: Guided Backprop hardly notices a random head.
    assert min(top["guided_backprop"]) > 0.8
