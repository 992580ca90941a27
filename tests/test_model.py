"""The CIFAR ResNets against the paper: parameter counts, shortcuts, shapes, pickling."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from torch import nn

from resnet_viz.config import ModelConfig, blocks_for_depth, valid_depths
from resnet_viz.nets.cifar import (
    MODELS,
    BasicBlock,
    PadShortcut,
    Projection,
    block_names,
    build_model,
    get_block,
    iter_blocks,
)
from resnet_viz.nets.cost import count_params
from resnet_viz.nets.summary import summarize

# He et al. 2015, Table 6 (and akamaster's docstring): option A, 10 classes.
PAPER_PARAMS = {20: (269_722, 0.27), 32: (None, 0.46), 44: (None, 0.66), 56: (None, 0.85), 110: (None, 1.7)}


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_paper(depth: int) -> None:
    exact, millions = PAPER_PARAMS[depth]
    n = count_params(build_model(ModelConfig(depth=depth, shortcut="A")))
    if exact is not None:
        assert n == exact
    assert round(n / 1e6, 2 if millions < 1 else 1) == millions


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_plain_matches_A_and_projections_add_parameters(depth: int) -> None:
    counts = {s: count_params(build_model(ModelConfig(depth=depth, shortcut=s))) for s in ("none", "A", "B", "C")}
    assert counts["none"] == counts["A"]
    assert counts["A"] < counts["B"] < counts["C"]
    # B adds exactly two 1x1 conv+BN projections (16->32 and 32->64).
    assert counts["B"] - counts["A"] == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_option_A_equals_hand_computed_subsample_and_pad() -> None:
    x = torch.randn(2, 16, 8, 8)
    sc = PadShortcut(16, 32, stride=2)
    y = sc(x)
    expected = torch.zeros(2, 32, 4, 4)
    for i in range(4):
        for j in range(4):
            expected[:, :16, i, j] = x[:, :, 2 * i, 2 * j]
    assert torch.equal(y, expected)
    assert sum(p.numel() for p in sc.parameters()) == 0


def test_shortcut_option_reaches_every_block() -> None:
    for kind, changed, same in (
        ("none", type(None), type(None)),
        ("A", PadShortcut, nn.Identity),
        ("B", Projection, nn.Identity),
        ("C", Projection, Projection),
    ):
        model = build_model(ModelConfig(depth=20, shortcut=kind))
        for name, blk in iter_blocks(model):
            first_of_later_stage = name in ("stage2.block0", "stage3.block0")
            assert isinstance(blk.shortcut, changed if first_of_later_stage else same), (kind, name)


@pytest.mark.parametrize("depth", [8, 14, 20, 32, 44, 56, 110])
@pytest.mark.parametrize("shortcut", ["none", "A", "B", "C"])
def test_forward_every_depth_and_shortcut(depth: int, shortcut: str) -> None:
    model = build_model(ModelConfig(depth=depth, shortcut=shortcut))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("depth", [11, 20, 29, 56, 110])
@pytest.mark.parametrize("shortcut", ["none", "A", "B", "C"])
def test_forward_bottleneck(depth: int, shortcut: str) -> None:
    model = build_model(ModelConfig(depth=depth, shortcut=shortcut, block="bottleneck", num_classes=7))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", list(MODELS))
def test_registry_builds_and_names_blocks(name: str) -> None:
    cfg = MODELS[name]
    model = build_model(name)
    names = block_names(model)
    assert names == block_names(cfg)
    assert len(names) == 3 * cfg.blocks_per_stage
    assert names[0] == "stage1.block0" and names[-1] == f"stage3.block{cfg.blocks_per_stage - 1}"
    for n in names[:2]:
        assert get_block(model, n) is dict(iter_blocks(model))[n]


def test_depth_validation_names_nearest_depths() -> None:
    with pytest.raises(ValueError, match="nearest valid: 20 or 26"):
        ModelConfig(depth=21)
    with pytest.raises(ValueError, match="unknown shortcut"):
        ModelConfig(shortcut="D")
    assert valid_depths()[:7] == [8, 14, 20, 26, 32, 38, 44]
    assert valid_depths()[-1] == 1202
    assert blocks_for_depth(164, "bottleneck") == 18
    with pytest.raises(ValueError):
        build_model("resnet21")


def test_model_pickles_and_state_dict_round_trips() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=20, shortcut="B"))
    clone = pickle.loads(pickle.dumps(model))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = build_model(ModelConfig(depth=20, shortcut="B"))
    fresh.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    x = torch.randn(3, 3, 32, 32)
    model.eval(), clone.eval(), fresh.eval()
    assert torch.equal(model(x), clone(x)) and torch.equal(model(x), fresh(x))


def test_one_relu_module_per_use() -> None:
    model = build_model(ModelConfig(depth=20))
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len({id(m) for m in relus}) == len(relus) == 1 + 2 * 9
    assert not any(m.inplace for m in relus)


def test_zero_init_residual_makes_blocks_start_as_shortcuts() -> None:
    model = build_model(ModelConfig(depth=20, zero_init_residual=True))
    model.eval()
    blk = get_block(model, "stage1.block1")
    assert isinstance(blk, BasicBlock)
    x = torch.relu(torch.randn(2, 16, 32, 32))
    assert torch.allclose(blk(x), x)  # relu(0 + x) for x >= 0


def test_summary_flops_shapes_and_receptive_field() -> None:
    s = summarize(ModelConfig(depth=20, shortcut="A"))
    assert s.params == 269_722
    assert 80e6 < s.flops < 82e6  # 81.1 MFLOPs measured for ResNet-20 (2 per multiply-add)
    assert [b.out_shape for b in s.blocks][::3] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert [b.shape_changes for b in s.blocks].count(True) == 2
    rfs = [b.receptive_field for b in s.blocks]
    assert rfs == sorted(rfs) and rfs[0] == 7
    assert s.stem_params + sum(b.params for b in s.blocks) + s.head_params == s.params


SEEDED = [ModelConfig(depth=8, shortcut=s) for s in ("A", "B", "C", "none")] + [
    ModelConfig(depth=11, shortcut="B", block="bottleneck"),
    ModelConfig(depth=8, shortcut="C", width=2, zero_init_residual=True, num_classes=7),
]


@pytest.mark.parametrize("config", SEEDED, ids=lambda c: c.label)
def test_a_generator_gives_the_weights_of_the_global_seed_and_leaves_the_global_rng_alone(config) -> None:
    # Runs, benchmarks and interpolation slices made with torch.manual_seed(s) keep their weights.
    for seed in (0, 7):
        torch.manual_seed(seed)
        expected = build_model(config).state_dict()
        before = torch.random.get_rng_state()
        got = build_model(config, generator=torch.Generator().manual_seed(seed)).state_dict()
        assert torch.equal(torch.random.get_rng_state(), before)
        assert got.keys() == expected.keys()
        assert [k for k in got if not torch.equal(got[k], expected[k])] == []
        assert all(t.device.type == "cpu" for t in got.values())
    a, b = (build_model(SEEDED[0], generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    assert not torch.equal(a.conv1.weight, b.conv1.weight)
