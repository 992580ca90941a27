"""Figure builders: realistic, empty and degenerate input; every figure must serialize."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from resnet_viz import plots
from resnet_viz.config import ModelConfig, RunConfig
from resnet_viz.fsutil import as_number
from resnet_viz.nets.summary import summarize
from resnet_viz.plots._base import log_ticks
from resnet_viz.store.listing import RunInfo


def _ok(fig: go.Figure) -> go.Figure:
    assert isinstance(fig, go.Figure)
    assert fig.to_json()
    return fig


def _notes(fig: go.Figure) -> str:
    return " ".join(a.text or "" for a in fig.layout.annotations)


def _run(n: int, eval_every: int = 100, err0: float = 0.9, err1: float = 0.3, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    recs: list[dict] = []
    for s in range(1, n + 1):
        e = err1 + (err0 - err1) * math.exp(-3 * s / n) + rng.normal(0, 0.03)
        recs.append({"kind": "step", "step": s, "epoch": s / 390, "loss": 2.3 * e + 0.05, "acc": 1 - e,
                     "lr": 0.1, "ips": 900.0, "elapsed": s * 0.1})
        if s % eval_every == 0:
            recs.append({"kind": "eval", "step": s, "epoch": s / 390, "test_loss": 2.3 * e + 0.2,
                         "test_acc": 1 - e - 0.05, "elapsed": s * 0.1})
        if s % 10 == 0:
            recs.append({"kind": "probe", "step": s, "blocks": {
                f"stage{k}.block{i}": {"act_norm": 10.0 * k, "grad_norm": 1e-3 * (i + 1) * s, "ratio": 0.5 + 0.1 * i,
                                       "cos": -0.2 + 0.1 * k} for k in (1, 2, 3) for i in range(3)}})
    recs.append({"kind": "end", "status": "finished", "steps": n, "elapsed": n * 0.1})
    return recs


@pytest.fixture(scope="module")
def summaries():
    # Summaries run a forward pass; depth 110 is the slow one, so build each once.
    return {k: summarize(ModelConfig(depth=d, shortcut=s)) for k, (d, s) in
            {"a8": (8, "A"), "a20": (20, "A"), "plain20": (20, "none"), "c20": (20, "C"), "b110": (110, "B"),
             "a38": (38, "A"), "a56": (56, "A")}.items()}


def test_helpers():
    assert plots.run_color(0) != plots.run_color(1) and plots.run_color(len(plots.PALETTE)) == plots.run_color(0)
    np.testing.assert_allclose(plots.ema([3.0, 3.0, 3.0], 0.1), 3.0)  # bias-corrected: no pull to 0
    out = plots.ema([1.0, float("nan"), 1.0], 0.5)
    assert math.isnan(out[1]) and out[2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="alpha"):
        plots.ema([1.0], 0.0)
    y = np.sin(np.arange(10_000) / 50.0)
    y[5000], y[9000] = 9.0, np.nan
    x, yd = plots.downsample(np.arange(10_000), y, 2000)
    assert len(x) <= 2000 and np.nanmax(yd) == 9.0 and np.isnan(yd).any()  # spike and gap survive
    assert len(plots.downsample([1, 2], [1, 2])[0]) == 2


def test_one_number_helper_for_record_fields():
    # fsutil.as_number is the one copy; plots, the report, skip-branch, listing and degradation use it.
    assert as_number(3) == 3.0 and isinstance(as_number(3), float) and as_number(np.float32(0.5)) == 0.5
    assert as_number(True) is None and as_number("3") is None and as_number(None) is None
    assert math.isnan(as_number(float("nan"))) and as_number(float("inf")) == math.inf
    assert as_number(float("nan"), finite=True) is None and as_number(float("-inf"), finite=True) is None
    assert as_number(2.5, finite=True) == 2.5


def test_training_curves_empty_and_single_record():
    fig = _ok(plots.training_curves([]))
    assert not fig.data and "Waiting for the first steps" in _notes(fig)
    fig = _ok(plots.training_curves([{"kind": "step", "step": 1, "loss": 2.3, "acc": 0.1}, {"kind": "junk"}, "bad"]))
    assert all(len(t.x) == 1 for t in fig.data) and {t.mode for t in fig.data} == {"markers"}


def test_training_curves_realistic():
    fig = _ok(plots.training_curves(_run(600), title="ResNet-20"))
    names = [t.name for t in fig.data]
    assert names.count("test") == 2 and names.count("training (smoothed)") == 2 and "training, per step" in names
    test_loss = next(t for t in fig.data if t.name == "test" and t.xaxis == "x")
    assert list(test_loss.x) == [100, 200, 300, 400, 500, 600]
    err = next(t for t in fig.data if t.name == "test" and t.xaxis == "x2")
    assert min(err.y) > 0 and max(err.y) < 100  # percent
    assert "diverged" not in _notes(fig)


def test_training_curves_nan_and_many_records():
    recs = _run(300)
    for r in recs:
        if r["kind"] == "step" and r["step"] >= 250:
            r["loss"] = float("nan")
    fig = _ok(plots.training_curves(recs))
    assert "non-finite at step 250 (diverged)" in _notes(fig) and len(fig.layout.shapes) == 2
    fig = _ok(plots.training_curves(_run(12_000, eval_every=1000)))
    assert max(len(t.x) for t in fig.data) <= plots.MAX_POINTS


def test_compare_curves():
    runs = [("plain-20", _run(400, seed=1)), ("plain-56", _run(400, err1=0.6, seed=2)), ("waiting", [])]
    fig = _ok(plots.compare_curves(runs))
    train = [t for t in fig.data if t.meta["split"] == "train"]
    test = [t for t in fig.data if t.meta["split"] == "test"]
    assert len(train) == len(test) == 2
    assert all(t.line.dash == "dash" for t in test) and all(t.line.dash in (None, "solid") for t in train)
    assert train[0].line.color == test[0].line.color != train[1].line.color
    assert [t.name for t in fig.data if t.showlegend is not False] == ["plain-20", "plain-56"]
    by_epoch = _ok(plots.compare_curves(runs, x_axis="epochs", metric="loss"))
    assert max(by_epoch.data[0].x) == pytest.approx(400 / 390) and by_epoch.layout.yaxis.title.text == "loss"
    assert "Waiting" in _notes(_ok(plots.compare_curves([])))
    with pytest.raises(ValueError, match="x_axis"):
        plots.compare_curves(runs, x_axis="time")
    with pytest.raises(ValueError, match="metric"):
        plots.compare_curves(runs, metric="accuracy")


def _arcs(fig: go.Figure) -> dict[str, go.Scatter]:
    return {t.meta["block"]: t for t in fig.data if isinstance(t.meta, dict) and "shortcut" in t.meta}


def test_architecture_plain_and_option_a(summaries):
    plain = _ok(plots.architecture_diagram(summaries["plain20"]))
    assert not _arcs(plain) and "plain net" in plain.layout.title.subtitle.text
    assert len(plain.layout.shapes) == 11  # stem, 9 blocks, head
    fig = _ok(plots.architecture_diagram(summaries["a20"]))
    arcs = _arcs(fig)
    assert len(arcs) == 9
    dotted = {n for n, t in arcs.items() if t.line.dash == "dot"}
    assert dotted == {"stage2.block0", "stage3.block0"}
    assert all(t.line.dash == "solid" for n, t in arcs.items() if n not in dotted)
    assert "1×1" not in _notes(fig)
    assert "ResNet(A)-20: 20 layers" in fig.layout.title.text and "MFLOPs" in fig.layout.title.text
    layers = next(t for t in fig.data if t.name == "layers")
    assert any("receptive field" in h and "MFLOPs" in h for h in layers.hovertext)


def test_architecture_small_projection_and_deep(summaries):
    small = _ok(plots.architecture_diagram(summaries["a8"]))
    assert {n: t.line.dash for n, t in _arcs(small).items()} == {
        "stage1.block0": "solid", "stage2.block0": "dot", "stage3.block0": "dot"}
    assert "stage 1: 1 block<br>16×32×32" in _notes(small)  # too narrow for a one-line caption
    c20 = _ok(plots.architecture_diagram(summaries["c20"]))
    assert _notes(c20).count("1×1") == 9
    deep = _ok(plots.architecture_diagram(summaries["b110"]))
    layers = next(t for t in deep.data if t.name == "layers")
    assert len(layers.x) <= 14  # 54 blocks compressed to legible boxes
    assert sum("15 more blocks" in t for t in layers.text) == 3
    arcs = _arcs(deep)
    assert {n for n, t in arcs.items() if t.line.dash == "dot"} == {"stage2.block0", "stage3.block0"}
    assert _notes(deep).count("1×1") == 2 and "18 blocks" in _notes(deep)


def test_architecture_crowded_rows_stay_legible(summaries):
    # Six blocks a row (ResNet-38) are drawn whole, named without their stage (its colour and
    # caption say it); ResNet-56's nine a stage are compressed to four boxes, names in full.
    a38 = next(t for t in _ok(plots.architecture_diagram(summaries["a38"])).data if t.name == "layers")
    assert len(a38.x) == 20 and a38.text[1].startswith("<b>block0</b>") and "stage1.block0" in a38.hovertext[1]
    a56 = next(t for t in _ok(plots.architecture_diagram(summaries["a56"])).data if t.name == "layers")
    assert len(a56.x) == 14 and sum("6 more blocks" in t for t in a56.text) == 3
    assert a56.text[1].startswith("<b>stage1.block0</b>")
    a20 = next(t for t in _ok(plots.architecture_diagram(summaries["a20"])).data if t.name == "layers")
    assert a20.text[1].startswith("<b>stage1.block0</b>")


@pytest.fixture(scope="module")
def imagenet_summaries(one_thread):
    from resnet_viz.nets.imagenet import IMAGENET_MODELS, imagenet_summary

    return {name: imagenet_summary(name) for name in IMAGENET_MODELS}  # a forward pass at 224 each


@pytest.mark.parametrize(("name", "n_blocks"), [("resnet18", 8), ("resnet34", 16), ("resnet50", 16)])
def test_architecture_imagenet(imagenet_summaries, name: str, n_blocks: int):
    fig = _ok(plots.architecture_diagram(imagenet_summaries[name]))
    depth = name.removeprefix("resnet")
    assert f"ResNet-{depth}: {depth} layers" in fig.layout.title.text and "GFLOPs" in fig.layout.title.text
    layers = next(t for t in fig.data if t.name == "layers")
    texts = list(layers.text)
    assert len(texts) == len(fig.layout.shapes) == 2 + n_blocks + 1  # conv1 and max pool, every block, head
    assert texts[0].startswith("<b>conv1</b><br>7×7, 64, /2") and texts[1].startswith("<b>max pool</b><br>3×3, /2")
    blocks = [t for t in texts if t.startswith("<b>layer")]
    assert len(blocks) == n_blocks
    bottleneck = name == "resnet50"
    if bottleneck:  # the block type is visible in every box: 1x1, 3x3, 1x1 with the widths
        assert all("1×1" in t for t in blocks)
        assert "<b>layer1.0</b><br>1×1, 64<br>3×3, 64<br>1×1, 256<br>256×56×56" in texts[2]
        assert "3×3, 128, /2" in texts[2 + 3]  # layer2.0 halves the map
    else:  # basic: two 3x3 convs
        assert not any("1×1" in t for t in blocks)
        assert "<b>layer1.0</b><br>3×3, 64<br>3×3, 64<br>64×56×56" in texts[2]
    kind = "bottleneck" if bottleneck else "basic"
    assert f"conv2_x: {2 if name == 'resnet18' else 3} {kind} blocks" in _notes(fig)
    assert "conv5_x" in _notes(fig)
    # One arc per block: dotted 1×1 projections exactly where the shape changes, identity elsewhere.
    arcs = _arcs(fig)
    assert len(arcs) == n_blocks
    changes = {"layer2.0", "layer3.0", "layer4.0"} | ({"layer1.0"} if bottleneck else set())
    assert {n for n, t in arcs.items() if t.line.dash == "dot"} == changes
    assert all(t.meta["shortcut"] == "projection" for n, t in arcs.items() if n in changes)
    assert all(t.meta["shortcut"] == "identity" and t.line.dash == "solid" for n, t in arcs.items() if n not in changes)
    assert _notes(fig).count("1×1") == len(changes)
    assert len({round(y, 6) for y in layers.y}) == 4  # a row per stage: conv lists need the width


# The diagram's geometry, pinned when architecture_diagram was split into layout, data path
# and drawing (fig.to_dict() of ResNet-20/56/110/164, ResNet-18/34/50 compared before and
# after): traces, shapes, height, axis ranges, the first and last box, the data path's points.
ARCH_GEOMETRY = {
    "a20": (11, 11, 730, (-0.75, 6.03), (-4.86, 0.85), (-0.5, -0.31, 0.5, 0.31), (4.78, -4.31, 5.78, -3.69), 38),
    "a56": (14, 14, 730, (-0.75, 7.35), (-4.86, 0.85), (-0.5, -0.31, 0.5, 0.31), (6.1, -4.31, 7.1, -3.69), 47),
    "resnet50": (18, 19, 1136, (-0.75, 9.99), (-8.855, 1.135), (-0.5, -0.595, 0.5, 0.595),
                 (6.1, -8.305, 7.1, -7.115), 66),
}


@pytest.mark.parametrize("name", list(ARCH_GEOMETRY))
def test_architecture_geometry_is_pinned(summaries, imagenet_summaries, name: str):
    fig = _ok(plots.architecture_diagram({**summaries, **imagenet_summaries}[name]))
    d = fig.to_dict()
    lay, shapes = d["layout"], d["layout"]["shapes"]
    path = next(t for t in d["data"] if t["name"] == "data path")

    def r(*v: float) -> tuple[float, ...]:
        return tuple(round(x, 4) for x in v)

    got = (len(d["data"]), len(shapes), lay["height"], r(*lay["xaxis"]["range"]), r(*lay["yaxis"]["range"]),
           *(r(*(sh[c] for c in ("x0", "y0", "x1", "y1"))) for sh in (shapes[0], shapes[-1])), len(path["x"]))
    assert got == ARCH_GEOMETRY[name]
    layers = next(t for t in d["data"] if t["name"] == "layers")
    # Each box's text marker sits at the centre of its rectangle, in data-path order.
    centres = [r((sh["x0"] + sh["x1"]) / 2, (sh["y0"] + sh["y1"]) / 2) for sh in shapes]
    assert centres == [r(x, y) for x, y in zip(layers["x"], layers["y"], strict=True)]


def test_block_detail_and_the_neutral_description(imagenet_summaries, summaries):
    fig = _ok(plots.block_detail([imagenet_summaries["resnet34"], imagenet_summaries["resnet50"]]))
    notes = _notes(fig)
    # basic: 3×3, 64 twice; bottleneck: 1×1, 64 / 3×3, 64 / 1×1, 256
    assert notes.count("<b>3×3, 64</b>") == 3 and notes.count("<b>1×1, ") == 2
    assert "basic block" in notes and "bottleneck block" in notes and "256-d in" in notes
    skips = [t for t in fig.data if isinstance(t.meta, dict) and "shortcut" in t.meta]
    assert [(t.meta["kind"], t.meta["shortcut"]) for t in skips] == [("basic", "identity"), ("bottleneck", "identity")]
    assert "No networks" in _notes(_ok(plots.block_detail([])))
    with pytest.raises(ValueError, match="no identity block with a list of its convs"):
        plots.block_detail([summaries["a20"]])  # CIFAR summaries carry no conv lists
    arch = plots.to_architecture(imagenet_summaries["resnet18"])
    assert plots.to_architecture(arch) is arch and arch.name == "ResNet-18" and arch.stage_name(4) == "conv5_x"
    assert plots.to_architecture(summaries["a20"]).stage_name(2) == "stage 2"
    with pytest.raises(ValueError, match="missing"):
        plots.architecture_diagram({"blocks": []})
    with pytest.raises(ValueError, match="ModelSummary"):
        plots.architecture_diagram(42)  # type: ignore[arg-type]


def test_feature_map_grid():
    maps = np.random.default_rng(0).random((20, 8, 8))
    fig = _ok(plots.feature_map_grid(maps, title="stage1.block0"))
    assert len(fig.data) == 20 and all(t.coloraxis == "coloraxis" for t in fig.data)
    per = _ok(plots.feature_map_grid(torch.randn(1, 100, 4, 4), shared_scale=False, max_channels=12))
    assert len(per.data) == 12 and all(t.coloraxis is None for t in per.data)
    assert "channels 0–11 of 100" in per.layout.title.subtitle.text
    assert "No feature maps" in _notes(_ok(plots.feature_map_grid(np.zeros((0, 8, 8)))))
    _ok(plots.feature_map_grid(np.full((2, 3, 3), np.nan)))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        plots.feature_map_grid(np.zeros((2, 3, 4, 5)))


def test_depth_profile():
    names = [f"stage{s}.block{i}" for s in (1, 2, 3) for i in range(3)]
    fig = _ok(plots.depth_profile([("plain-20", names, [10.0 ** -i for i in range(9)]),
                                   ("ResNet-20", names, [1.0, 0.0, *[1.0] * 7])], "gradient norm"))
    assert len(fig.data) == 2 and fig.layout.yaxis.type == "log"
    assert list(fig.layout.yaxis.ticktext) == ["1e-8", "1e-6", "1e-4", "0.01", "1"]
    assert math.isnan(fig.data[1].y[1])  # 0 cannot sit on a log axis
    assert sum("stage" in (a.text or "") for a in fig.layout.annotations) == 2
    f32 = _ok(plots.depth_profile([("r", ["stem", "stage1.block0"], list(np.float32([0.5, 2.0])))], "act", log_y=False))
    assert list(f32.data[0].y) == [0.5, 2.0]  # numpy scalars are numbers, not gaps
    assert "No per-block" in _notes(_ok(plots.depth_profile([], "x")))
    with pytest.raises(ValueError, match="2 block names but 1 values"):
        plots.depth_profile([("r", ["a", "b"], [1.0])], "x")


def test_log_ticks_label_values_in_full():
    # Norms from 9 to 80: Plotly would write 20 ... 80 as "2" ... "8" above a "10".
    fig = _ok(plots.depth_profile([("r", ["a", "b", "c"], [9.0, 35.0, 80.0])], "activation norm"))
    assert list(fig.layout.yaxis.ticktext) == ["10", "20", "50"]
    assert list(fig.layout.yaxis.tickvals) == pytest.approx([10.0, 20.0, 50.0])
    assert log_ticks(-0.7, 0.5)[1] == ["0.2", "0.5", "1", "2"]
    assert log_ticks(0.0, 0.5)[1] == ["1", "2", "3"]  # fewer than three 1-2-5 ticks: every digit
    assert log_ticks(-12.0, 3.0)[1][:2] == ["1e-12", "1e-10"]  # many decades: every other one
    assert log_ticks(2.0, 6.0)[1] == ["100", "1000", "1e4", "1e5", "1e6"]
    assert log_ticks(0.32, 0.46) == ([], [])  # no round value inside: Plotly's own ticks stay
    with pytest.raises(ValueError, match="finite"):
        log_ticks(float("nan"), 1.0)
    sig = _ok(plots.signal_figure([{"shortcut": "none", "label": "plain", "blocks": ["a", "b"],
                                    "forward_var": [1.0, 1e4], "grad_norm": [0.5, 0.05]}]))
    assert list(sig.layout.yaxis.ticktext)[-1] == "1e4"
    assert list(sig.layout.yaxis2.ticktext) == ["0.05", "0.1", "0.2", "0.5"]


def test_surface_figure_is_labelled_in_loss():
    a = b = [-1.0, 0.0, 1.0]
    loss = [[30.0, 4.0, 40.0], [3.0, 0.4, 5.0], [float("nan"), 6.0, 80.0]]
    surf = {"alphas": a, "betas": b, "loss": loss, "label": "ResNet-20", "seed": 3}
    contour = _ok(plots.surface_figure(surf))
    bar = contour.data[0].colorbar
    assert bar.title.text == "training loss" and list(bar.ticktext) == ["0.5", "1", "2", "5", "10", "20", "50"]
    assert bar.tickvals[1] == pytest.approx(0.0)  # ticks sit at log10 of the loss they name
    assert math.isnan(contour.data[0].z[2][0]) and contour.data[0].customdata[1][1] == 0.4
    assert "seed 3" in contour.layout.title.subtitle.text
    solid = _ok(plots.surface_figure(surf, three_d=True))
    assert list(solid.layout.scene.zaxis.ticktext) == list(bar.ticktext)
    with pytest.raises(ValueError, match="len\\(betas\\)"):
        plots.surface_figure({"alphas": a, "betas": b[:2], "loss": loss})


def test_probe_heatmap():
    recs = _run(200)
    fig = _ok(plots.probe_heatmap(recs, "grad_norm"))
    hm = fig.data[0]
    assert hm.y[0] == "stage1.block0" and hm.y[-1] == "stage3.block2" and len(hm.x) == 20
    assert "bottom" in fig.layout.title.subtitle.text and hm.colorbar.ticktext
    cos = _ok(plots.probe_heatmap(recs, "cos")).data[0]
    assert cos.zmid == 0 and cos.zmin == -1 and cos.zmax == 1
    plain = [{"kind": "probe", "step": 10, "blocks": {"stage1.block0": {"act_norm": 3.0, "grad_norm": 0.1}}}]
    assert "plain net" in _notes(_ok(plots.probe_heatmap(plain, "ratio")))
    assert "No probes yet" in _notes(_ok(plots.probe_heatmap([], "act_norm")))
    many = _ok(plots.probe_heatmap(_run(8000)[::1], "act_norm"))
    assert len(many.data[0].x) <= 600
    with pytest.raises(ValueError, match="unknown probe statistic"):
        plots.probe_heatmap(recs, "mean")


def test_attribution_overlay():
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    att = np.random.default_rng(1).random((32, 32))
    fig = _ok(plots.attribution_overlay(img, att, title="cat"))
    assert [type(t).__name__ for t in fig.data] == ["Image", "Image", "Heatmap"] and fig.data[2].opacity == 0.55
    _ok(plots.attribution_overlay(np.random.default_rng(2).random((16, 16)), np.full((16, 16), np.nan)))
    assert "No image" in _notes(_ok(plots.attribution_overlay(np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0)))))
    with pytest.raises(ValueError, match="does not match"):
        plots.attribution_overlay(img, att[:16])


def test_top_k_bar():
    fig = _ok(plots.top_k_bar([("dog", 0.1), ("cat", 0.85), ("frog", 0.05)]))
    bar = fig.data[0]
    assert list(bar.y) == ["frog", "dog", "cat"] and bar.text[-1] == "85.0%"  # most likely drawn on top
    assert "No prediction" in _notes(_ok(plots.top_k_bar([])))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        plots.top_k_bar([("cat", 1.5)])


def test_error_table_rows():
    cfg = RunConfig(model=ModelConfig(depth=20, shortcut="A"), name="degradation resnet-20")
    full = RunInfo(id="20250101-000000-abcd", path=Path("/tmp/x"), status="finished", name=cfg.name,
                   label=cfg.model.label, config=cfg, steps=600, final_train_acc=0.64, test_accuracy=0.6,
                   elapsed_s=90.0)
    bare = RunInfo(id="broken", path=Path("/tmp/y"), status="unknown")
    rows = plots.error_table_rows([full, bare, SimpleNamespace()])
    assert rows[0] == {"run": "degradation resnet-20", "label": "ResNet(A)-20", "depth": 20, "shortcut": "A",
                       "params": 269_722, "train error %": 36.0, "test error %": 40.0, "steps": 600,
                       "time (min)": 1.5, "status": "finished"}
    assert rows[1]["run"] == "broken" and rows[1]["params"] is None and rows[1]["train error %"] is None
    assert rows[2]["run"] == "" and plots.error_table_rows([]) == []
