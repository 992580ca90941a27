"""Lesion study (Veit et al. 2016): block deletion on tiny untrained nets, then on the shipped models.

Run with ``-s`` to see the trained-model figures.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import torch
from conftest import CIFAR_JPEG
from torch import nn

from resnet_viz.config import DataConfig, ModelConfig
from resnet_viz.data.batches import normalize
from resnet_viz.data.sources import load_data
from resnet_viz.experiments import Cancelled, accuracy
from resnet_viz.experiments.lesion import MAX_K, deleted_blocks, lesion_study, max_k_for
from resnet_viz.nets.cifar import PadShortcut, block_names, build_model, iter_blocks
from resnet_viz.store.models import ASSETS_DIR, load_model_file

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny(shortcut: str = "A", depth: int = 8, block: str = "basic") -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(depth=depth, shortcut=shortcut, block=block))


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = normalize(torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g), channels_last=False)
    return x, torch.randint(0, 10, (24,), generator=g)


def snapshot(m: nn.Module) -> dict[str, Any]:
    return {
        "modules": [(n, id(mod)) for n, mod in m.named_modules()],
        "state": {k: v.clone() for k, v in m.state_dict().items()},
        "training": [mod.training for mod in m.modules()],
        "grad": [p.requires_grad for p in m.parameters()],
    }


def logits(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    modes = [(mod, mod.training) for mod in m.modules()]  # eval_mode would flatten mixed modes
    try:
        with torch.no_grad():
            return m.eval()(x)
    finally:
        for mod, training in modes:
            mod.training = training


def assert_unchanged(m: nn.Module, before: dict[str, Any], x: torch.Tensor, out: torch.Tensor) -> None:
    after = snapshot(m)
    assert after["modules"] == before["modules"]  # the same module objects at the same names
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())  # BN stats too
    assert after["training"] == before["training"] and after["grad"] == before["grad"]
    assert torch.equal(logits(m, x), out)


def manual_forward(m: nn.Module, x: torch.Tensor, deleted: set[str]) -> torch.Tensor:
    """The model's forward with the deleted blocks computing relu(shortcut(h)) (or the plain analogue)."""
    with torch.no_grad():
        h = m.relu(m.bn1(m.conv1(x)))
        for name, blk in iter_blocks(m):
            if name not in deleted:
                h = blk(h)
            elif blk.shortcut is not None:
                h = blk.relu_out(blk.shortcut(h))
            elif blk.stride != 1 or h.shape[1] != blk.last_bn.num_features:
                h = PadShortcut(h.shape[1], blk.last_bn.num_features, blk.stride)(h)
        return m.fc(m.flatten(m.pool(h)))


# ---------------------------------------------------------------------------- untrained


def test_result_shapes_and_json(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    m = tiny()
    r = lesion_study(m, x, y, trials=2, label="tiny")
    names = block_names(m)
    assert r.label == "tiny" and not r.plain and "skip" in r.note
    assert r.baseline_acc == accuracy(m, x, y)
    assert [s["block"] for s in r.single] == names
    assert [s["downsampling"] for s in r.single] == [False, True, True]
    assert all(s["drop"] == pytest.approx(r.baseline_acc - s["acc"]) for s in r.single)
    # k = 0 and k = 3 of 3 blocks have one subset each; k = 1, 2 have three, of which 2 are drawn
    assert [(e["k"], e["trials"]) for e in r.random_k] == [(0, 1), (1, 2), (2, 2), (3, 1)]
    assert r.random_k[0]["mean_acc"] == r.baseline_acc and r.random_k[0]["std_acc"] == 0.0
    d = json.loads(json.dumps(r.to_dict()))
    assert d["single"] == r.single and set(d) == {"label", "baseline_acc", "single", "random_k", "plain", "note"}
    assert lesion_study(m, x, y, trials=2).random_k == r.random_k  # seeded
    assert len(lesion_study(m, x, y, max_k=1).random_k) == 2
    p = lesion_study(tiny("none"), x, y, max_k=0)
    assert p.plain and p.label == "plain-8" and "option-A" in p.note and len(p.random_k) == 1


def test_model_left_as_found(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    m = tiny()
    m.train()
    m.stage2.eval()  # mixed modes must come back as they were, not all-eval or all-train
    m.fc.weight.requires_grad_(False)
    before, out = snapshot(m), logits(m, x)
    lesion_study(m, x, y, trials=2)
    assert_unchanged(m, before, x, out)


def test_stop_between_configurations_and_mid_evaluation(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    m = tiny("B", depth=11, block="bottleneck")  # projections: the stand-ins share modules with the blocks
    before, out = snapshot(m), logits(m, x)
    stop = threading.Event()
    calls: list[str] = []

    def progress(fraction: float, message: str) -> None:
        calls.append(message)
        if len(calls) == 2:
            stop.set()

    with pytest.raises(Cancelled):
        lesion_study(m, x, y, progress=progress, stop=stop)
    assert calls == ["intact model", "without stage1.block0"]
    assert_unchanged(m, before, x, out)

    # Set from inside a forward pass: the next batch check raises while blocks are swapped out.
    stop.clear()
    before_block = m.stage1.block0
    seen: list[int] = []
    swapped: list[str] = []

    def count(*_: object) -> None:
        seen.append(1)
        if len(seen) == 8:  # the 2nd batch of the 2nd configuration (stage1.block0 deleted)
            stop.set()
            swapped.append(type(m.stage1.block0).__name__)

    hook = m.fc.register_forward_hook(count)
    try:
        with pytest.raises(Cancelled):
            lesion_study(m, x, y, batch_size=4, stop=stop)  # 6 batches per configuration
    finally:
        hook.remove()
    # It fired while the block was swapped out of the study's private copy (the hook came with
    # the copy): the caller's model kept its block all along, so another thread may use it.
    assert swapped == [type(before_block).__name__] and len(seen) == 8
    assert_unchanged(m, before, x, out)


@pytest.mark.parametrize("cfg", [("A", 8, "basic"), ("B", 11, "bottleneck"), ("C", 8, "basic")])
def test_deleted_residual_block_is_relu_of_its_shortcut(cfg: tuple[str, int, str], batch: tuple) -> None:
    x = batch[0][:4]
    m = tiny(*cfg).eval()
    names = block_names(m)
    for deleted in ([names[0]], [names[1]], names[1:], names):
        blocks = [m.get_submodule(n) for n in deleted]
        with deleted_blocks(m, deleted), torch.no_grad():
            assert all(m.get_submodule(n) is not b for n, b in zip(deleted, blocks, strict=True))
            got = m(x)
        assert torch.equal(got, manual_forward(m, x, set(deleted)))
        assert all(m.get_submodule(n) is b for n, b in zip(deleted, blocks, strict=True))


def test_deleted_identity_block_passes_its_input_through(batch: tuple) -> None:
    m = tiny().eval()
    with torch.no_grad():
        h = m.relu(m.bn1(m.conv1(batch[0][:4])))
        with deleted_blocks(m, ["stage1.block0"]):
            assert torch.equal(m.stage1.block0(h), h)  # relu(x) = x: the input is a ReLU's output


def test_plain_deletion_keeps_shapes(batch: tuple) -> None:
    x = batch[0][:4]
    m = tiny("none").eval()
    names = block_names(m)
    with torch.no_grad():
        h = m.relu(m.bn1(m.conv1(x)))
        with deleted_blocks(m, names):
            assert torch.equal(m.stage1.block0(h), h)  # identity where the shape stays
            h2 = m.stage2.block0(h)  # option A where it changes: (4, 16, 32, 32) -> (4, 32, 16, 16)
            assert h2.shape == (4, 32, 16, 16) and torch.equal(h2[:, :16], h[:, :, ::2, ::2])
            assert not h2[:, 16:].any()
            assert m.stage3.block0(h2).shape == (4, 64, 8, 8)
            got = m(x)
    assert got.shape == (4, 10) and torch.equal(got, manual_forward(m, x, set(names)))
    assert torch.equal(logits(m, x), logits(tiny("none"), x))  # the weights as built


def test_bad_arguments(batch: tuple) -> None:
    x, y = batch
    m = tiny()
    with pytest.raises(ValueError, match="no block named"), deleted_blocks(m, ["stage4.block0"]):
        pass
    with pytest.raises(ValueError, match="twice"), deleted_blocks(m, ["stage1.block0", "stage1.block0"]):
        pass
    with pytest.raises(ValueError, match="not one string"), deleted_blocks(m, "stage1.block0"):
        pass
    with pytest.raises(ValueError, match="max_k must be an integer from 0 to 3"):
        lesion_study(m, x, y, max_k=4)
    with pytest.raises(ValueError, match="trials"):
        lesion_study(m, x, y, trials=0)
    with pytest.raises(ValueError, match="normalize"):
        lesion_study(m, (x * 0).to(torch.uint8), y)
    with pytest.raises(ValueError, match="to match x"):
        lesion_study(m, x, y[:3])


# ---------------------------------------------------------------------------- trained models


@pytest.fixture(scope="module")
def cifar_1000() -> tuple[torch.Tensor, torch.Tensor]:
    if not CIFAR_JPEG.is_dir():
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {CIFAR_JPEG}")
    d = load_data(DataConfig(source="folder", path=str(CIFAR_JPEG)))  # cached: about a second
    idx = torch.arange(0, len(d.test_y), len(d.test_y) // 1000)  # the test set is sorted by class
    return normalize(d.test_x[idx], channels_last=False), d.test_y[idx]


def shipped(name: str) -> nn.Module:
    path = ASSETS_DIR / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"the shipped model {path} is missing (see assets/README.md)")
    return load_model_file(path)[0]


def test_trained_resnet_survives_deletions_plain_collapses(cifar_1000: tuple) -> None:
    x, y = cifar_1000
    res = {name: lesion_study(shipped(name), x, y, max_k=0) for name in ("resnet20", "plain20")}
    stats = {}
    for name, r in res.items():
        down = [s["drop"] for s in r.single if s["downsampling"]]
        rest = [s["drop"] for s in r.single if not s["downsampling"]]
        stats[name] = (sum(down) / len(down), sum(rest) / len(rest), sum(s["drop"] for s in r.single) / len(r.single))
        print(f"\n{r.label}: baseline {r.baseline_acc:.3f} on {len(y)} test images; mean drop {stats[name][2]:.3f}, "
              f"at downsampling blocks {stats[name][0]:.3f}, elsewhere {stats[name][1]:.3f}")
        print("  " + ", ".join(f"{s['block']} {s['acc']:.3f}" for s in r.single))
    rn, pl = res["resnet20"], res["plain20"]
    assert rn.baseline_acc > 0.8 and pl.baseline_acc > 0.75
    # The plain net has one path: any deleted block leaves it near chance (10%). The ResNet
    # keeps other paths and stays far above chance whichever block goes.
    assert max(s["acc"] for s in pl.single) < 0.3 < 0.35 < min(s["acc"] for s in rn.single)
    assert stats["plain20"][2] > stats["resnet20"][2] + 0.2
    # Veit et al.: the blocks that change the shape cost the ResNet most. (In this short
    # ResNet-20 the others are not free either: each branch is 0.5-2x its skip's norm.)
    assert stats["resnet20"][0] > stats["resnet20"][1]


def test_max_k_is_at_most_the_number_of_blocks() -> None:
    # ResNet-8 has 3 blocks and ResNet-14 has 6: asking them for k up to 9 was a ValueError
    # from the app's lesion button.
    for depth, blocks in ((8, 3), (14, 6), (20, 9), (56, 27)):
        model = build_model(ModelConfig(depth=depth, shortcut="A"))
        assert max_k_for(model) == min(9, blocks) == min(MAX_K, len(block_names(model)))
        assert max_k_for(model, limit=2) == 2
    small = build_model(ModelConfig(depth=8, shortcut="A"))
    x = normalize(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), channels_last=False)
    res = lesion_study(small, x, torch.arange(8) % 10, max_k=max_k_for(small), trials=1)
    assert [r["k"] for r in res.random_k] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="limit"):
        max_k_for(small, limit=-1)
