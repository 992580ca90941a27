"""Faithfulness of attribution maps: deletion, insertion and ROAD against hand computations,
a known net where the gradient map must beat a random one, and the shipped nets.

Run with ``-s`` to see the shipped nets' scores.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
import torch
from conftest import CIFAR_JPEG
from test_cli import cli
from torch import nn

from resnet_viz.config import DataConfig
from resnet_viz.data.sources import load_data
from resnet_viz.experiments import Cancelled
from resnet_viz.experiments.attribution import attribute
from resnet_viz.experiments.attribution.faithfulness import RANDOM, faithfulness_study, fixed_images, reading
from resnet_viz.experiments.attribution.removal import auc, curves, map_scores, ranking, road_curves
from resnet_viz.experiments.attribution.road import impute
from resnet_viz.store.models import ASSETS_DIR, load_model_file

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class PatchSum(nn.Module):
    """logits = fc(sum of channel 0 over ``patch``): class 0's probability is sigmoid(sum) with
    fc = [[1], [0]], so every curve point can be worked out by hand. Counts its forwards."""

    def __init__(self, patch: tuple[slice, slice] = (slice(None), slice(None)), offset: float = 0.0) -> None:
        super().__init__()
        self.patch, self.offset = patch, offset
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [0.0]]))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x[:, 0][:, self.patch[0], self.patch[1]].sum((1, 2))[:, None] - self.offset)


def sigmoid(s: float) -> float:
    return 1 / (1 + math.exp(-s))


def test_auc_is_the_trapezoid_rule() -> None:
    assert auc([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)
    assert auc([0, 0.25, 1], [0, 1, 1]) == pytest.approx(0.125 + 0.75)
    assert auc([0.3], [0.7]) == 0.0
    with pytest.raises(ValueError, match="2 fractions but 3 values"):
        auc([0, 1], [1, 2, 3])


def test_deletion_and_insertion_by_hand() -> None:
    model = PatchSum()
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[3.0, -1.0], [2.0, 0.5]])
    x[0, 1:] = 7.0  # ignored by the model
    amap = x[0, 0].clone()  # ranks 3, 2, 0.5, -1: the signed value, largest first
    fr = [0, 0.25, 0.5, 0.75, 1]
    deletion, insertion = curves(model, x, amap, 0, fractions=fr, start=torch.zeros(1, 3, 2, 2))
    assert model.calls == 1  # both curves, all points: one batched forward
    # Deleting to 0 the pixels 3, 2, 0.5, -1 in turn: the sum goes 4.5, 1.5, -0.5, -1, 0.
    assert deletion == pytest.approx([sigmoid(s) for s in (4.5, 1.5, -0.5, -1.0, 0.0)], abs=1e-6)
    # Inserting them into a zero image: 0, 3, 5, 5.5, 4.5.
    assert insertion == pytest.approx([sigmoid(s) for s in (0.0, 3.0, 5.0, 5.5, 4.5)], abs=1e-6)
    by_hand = 0.25 * (sigmoid(4.5) / 2 + sigmoid(1.5) + sigmoid(-0.5) + sigmoid(-1.0) + sigmoid(0.0) / 2)
    s = map_scores(model, x, amap, 0, fractions=fr)
    assert s["deletion_auc"] == pytest.approx(by_hand, abs=1e-6)
    # The default start is the blurred image, not the zero one: only deletion is the same.
    assert s["deletion"] == pytest.approx(deletion, abs=1e-6) and s["insertion"] != pytest.approx(insertion)
    # The ranking reversed deletes the evidence last: a worse (larger) deletion area.
    assert map_scores(model, x, -amap, 0, fractions=fr)["deletion_auc"] > by_hand + 0.2


def test_ranking_puts_ties_and_nan_in_a_seeded_order() -> None:
    amap = torch.tensor([[1.0, 0.0], [float("nan"), 0.0]])
    assert ranking(amap)[0] == 0 and ranking(amap)[-1] == 2
    assert torch.equal(ranking(amap, seed=3), ranking(amap, seed=3))
    assert {tuple(ranking(torch.zeros(4, 4), seed=s)[:4].tolist()) for s in range(5)} != {(0, 1, 2, 3)}


def test_road_imputation_by_hand() -> None:
    x = torch.arange(9.0).view(1, 3, 3)
    centre = torch.zeros(3, 3, dtype=torch.bool)
    centre[1, 1] = True
    filled = impute(x, centre, noise=0.0)
    # Edges 1, 3, 5, 7 weigh 1/6, diagonals 0, 2, 6, 8 weigh 1/12; the weights sum to 1.
    assert filled[0, 1, 1] == pytest.approx((1 + 3 + 5 + 7) / 6 + (0 + 2 + 6 + 8) / 12)
    corner = torch.zeros(3, 3, dtype=torch.bool)
    corner[0, 0] = True
    assert impute(x, corner, noise=0.0)[0, 0, 0] == pytest.approx(((1 + 3) / 6 + 4 / 12) / (5 / 12))
    # Two removed pixels side by side in a 1x4 row [1, ?, ?, 4]: v1 = (1 + v2)/2, v2 = (v1 + 4)/2.
    row = torch.tensor([[[1.0, 0.0, 0.0, 4.0]]])
    out = impute(row, torch.tensor([[False, True, True, False]]), noise=0.0)
    assert out[0, 0].tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0])
    noisy = impute(x, centre, noise=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy[~centre[None]], x[~centre[None]]) and noisy[0, 1, 1] != filled[0, 1, 1]
    with pytest.raises(ValueError, match="every pixel is removed"):
        impute(x, torch.ones(3, 3, dtype=torch.bool))


def test_road_curves_remove_the_most_and_the_least_relevant_first() -> None:
    model = PatchSum()
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, 0, 0] = 8.0  # the evidence: one bright pixel in a dark image
    amap = x[0, 0].clone()
    morf, lerf = road_curves(model, x, amap, 0, fractions=[0.0625], noise=0.0)
    assert model.calls == 1
    # MoRF fills the bright pixel from its dark neighbours (0); LeRF fills a dark one from
    # dark neighbours (and the bright one), keeping most of the evidence.
    assert morf == pytest.approx([sigmoid(0.0)])
    assert lerf[0] > sigmoid(7.0)


def known_net_and_images() -> tuple[PatchSum, torch.Tensor]:
    """A 'trained' tiny net whose evidence is the top-left 4x4 patch, and images bright there:
    sure of class 0 on them (logit about 5.6), unsure once most of the patch is gone or blurred."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 12, 12, generator=g) * 0.2
    x[:, 0, :4, :4] += 1.0
    return PatchSum((slice(0, 4), slice(0, 4)), offset=12.0), x


def test_the_gradient_map_beats_a_random_one_on_a_known_net() -> None:
    model, x = known_net_and_images()
    r = faithfulness_study(model, x, methods=["saliency"], road_fractions=[0.1, 0.5])
    s, rand = r.methods["saliency"], r.methods[RANDOM]
    assert list(r.methods) == ["saliency", RANDOM]
    print({m: {k: round(v, 3) for k, v in d.items() if k in ("deletion_auc", "insertion_auc", "road_gap")}
           for m, d in r.methods.items()})
    assert s["deletion_auc"] < rand["deletion_auc"] - 0.15
    assert s["insertion_auc"] > rand["insertion_auc"] + 0.15
    assert s["road_gap"] > rand["road_gap"] + 0.15
    # The same gradient map with its ranking reversed is worse than random.
    rev = [map_scores(model, x[i:i + 1], -attribute(model, x[i:i + 1], "saliency", 0), 0)["deletion_auc"]
           for i in range(len(x))]
    assert sum(rev) / len(rev) > rand["deletion_auc"]
    assert "Saliency is best" in r.to_dict()["reading"]


def test_study_leaves_the_model_as_found_and_reports_and_stops(model: nn.Module, image: torch.Tensor) -> None:
    model.train()
    model.layer_frozen = None  # an unrelated attribute: the study must not care
    x = torch.cat([image, image.flip(-1)])
    seen: list[float] = []
    r = faithfulness_study(model, x, torch.tensor([0, 1]), methods=["gradcam", "saliency"], road_fractions=None,
                           progress=lambda f, m: seen.append(f))
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert seen == pytest.approx([i / 6 for i in range(1, 7)])
    d = r.to_dict()
    json.dumps(d)
    assert d["images"] == 2 and len(d["methods"]["saliency"]["deletion"]) == 21
    assert "road_gap" not in d["methods"]["saliency"] and len(d["methods"]["gradcam"]["deletion_aucs"]) == 2
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        faithfulness_study(model, x, methods=["saliency"], stop=stop)


def test_bad_arguments_say_what_to_change(model: nn.Module, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="methods must be"):
        faithfulness_study(model, image, methods=["salincy"])
    with pytest.raises(ValueError, match="increasing"):
        faithfulness_study(model, image, fractions=[0.5, 0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        faithfulness_study(model, image, road_fractions=[0.5, 1.0])
    with pytest.raises(ValueError, match="the map is"):
        curves(model, image, torch.zeros(8, 8))
    assert reading({"saliency": {"deletion_auc": 0.1}}) == ""


def test_fixed_images_take_each_class_in_turn() -> None:
    x = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1).expand(8, 3, 2, 2).contiguous()
    y = torch.tensor([2, 0, 0, 1, 2, 1, 0, 2])
    _, labels = fixed_images(x, y, 5)
    assert labels.tolist() == [0, 1, 2, 0, 1]
    xs, _ = fixed_images(x, y, 100)  # no more than there are
    assert len(xs) == 8


@pytest.mark.slow
def test_cli_prints_one_json_object(tmp_path: Path) -> None:
    out = cli("train", "--depth", "8", "--data", "synthetic", "--steps", "5", "--batch-size", "16",
              "--out", str(tmp_path), "--name", "tiny")
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout.strip().splitlines()[-1])["run_id"]
    out = cli("faithfulness", run_id, "--out", str(tmp_path), "--images", "2", "--methods", "saliency")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    r = json.loads(lines[0])
    assert len(lines) == 1 and r["experiment"] == "faithfulness" and r["images"] == 2
    assert set(r["methods"]) == {"saliency", RANDOM} and "deletion_auc" in r["methods"]["saliency"]
    bad = cli("faithfulness", run_id, "--out", str(tmp_path), "--methods", "nope")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


@pytest.mark.slow
def test_shipped_nets_road_ranks_real_maps_above_a_random_one() -> None:
    if not CIFAR_JPEG.is_dir():
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {CIFAR_JPEG}: the check needs real images")
    d = load_data(DataConfig(source="folder", path=str(CIFAR_JPEG)))
    x, y = fixed_images(d.test_x, d.test_y, 10)
    for name in ("plain20", "resnet20"):
        path = ASSETS_DIR / f"{name}.safetensors"
        if not path.is_file():
            pytest.skip(f"the shipped model {path} is missing (see assets/README.md)")
        r = faithfulness_study(load_model_file(path)[0], x, y, methods=["integrated_gradients", "occlusion"])
        print(f"\n{name}: " + ", ".join(f"{m} del {s['deletion_auc']:.3f} ins {s['insertion_auc']:.3f} "
                                        f"road {s['road_gap']:.3f}" for m, s in r.methods.items()))
        for m in ("integrated_gradients", "occlusion"):
            assert r.methods[m]["road_gap"] > r.methods[RANDOM]["road_gap"] + 0.1, m


def test_figures_draw_empty_input_and_a_result(model: nn.Module, image: torch.Tensor) -> None:
    from resnet_viz.plots.faithfulness import faithfulness_curves, faithfulness_figure

    assert "Run the comparison" in str(faithfulness_figure([]).layout.annotations)
    assert "No curves" in str(faithfulness_curves({}).layout.annotations)
    r = faithfulness_study(model, image, methods=["gradcam"], road_fractions=[0.5]).to_dict()
    assert len(faithfulness_figure([r, r]).data) == 2 * 3  # per model, a bar trace per score
    assert len(faithfulness_curves(r).data) == 2 * 2  # per method (and random), deletion and insertion
