"""Fig. 7 of He et al. 2015: the std of each 3x3 layer's response, after BN, before addition and ReLU."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from resnet_viz.config import ModelConfig
from resnet_viz.experiments.responses import layer_responses, reading, recorded_responses, response_layers
from resnet_viz.nets.cifar import build_model


def _net(**kw) -> nn.Module:
    return build_model(ModelConfig(**{"depth": 8, **kw}), generator=torch.Generator().manual_seed(0))


def _images(n: int = 12) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_the_layers_are_the_bn_after_every_3x3_conv() -> None:
    names = [n for n, _ in response_layers(_net(depth=14))]
    # The stem, then two per basic block: depth - 1 layers, as the paper counts them.
    assert len(names) == 13
    assert names[:5] == ["bn1", "stage1.block0.bn1", "stage1.block0.bn2", "stage1.block1.bn1", "stage1.block1.bn2"]
    assert names[-1] == "stage3.block1.bn2"
    # A projection shortcut's BN (options B and C) follows a 1x1 conv: not a layer of Fig. 7.
    assert [n for n, _ in response_layers(_net(shortcut="C"))] == [n for n, _ in response_layers(_net())]
    # A bottleneck block's one 3x3 conv is its middle one.
    bott = [n for n, _ in response_layers(_net(depth=11, block="bottleneck", shortcut="B"))]
    assert bott == ["bn1", "stage1.block0.bn2", "stage2.block0.bn2", "stage3.block0.bn2"]
    with pytest.raises(ValueError, match="CifarResNet"):
        response_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))


def test_std_by_hand_when_every_conv_outputs_zero() -> None:
    # Every conv weight zero: each BN outputs its bias per channel, whatever the input, so the
    # std over all images, channels and positions is the population std of the bias values
    # (every channel has the same number of elements). A mean of per-channel stds would be 0.
    model = _net()
    g = torch.Generator().manual_seed(2)
    expected = []
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
        for i, (_, bn) in enumerate(response_layers(model)):
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * (i + 1))
            expected.append(statistics.pstdev(bn.bias.tolist()))
    r = layer_responses(model, _images(), batch_size=5)
    assert r.std == pytest.approx(expected, rel=1e-6)
    assert r.sorted_std == pytest.approx(sorted(expected, reverse=True), rel=1e-6)
    assert r.mean_std == pytest.approx(statistics.fmean(expected))


def test_std_matches_the_layer_output_computed_directly_at_any_batch_size() -> None:
    model = _net(shortcut="A").eval()
    x = _images(10)
    with torch.no_grad():
        stem = model.bn1(model.conv1(x))
        blk = model.stage1.block0
        first = blk.bn1(blk.conv1(model.relu(stem)))
    direct = [stem.std(unbiased=False).item(), first.std(unbiased=False).item()]
    for bs in (1, 3, 10):
        r = layer_responses(model, x, batch_size=bs)
        assert r.std[:2] == pytest.approx(direct, rel=1e-5), bs
    assert r.layers[:2] == ["bn1", "stage1.block0.bn1"] and r.images == 10 and r.depth == 8


def test_the_hooked_bn_is_the_one_before_the_addition() -> None:
    # Zero the second BN of a residual branch: F(x) = 0 there, so that layer's std is 0 while the
    # block's output (its shortcut after the addition) is not; every other layer is untouched.
    model = _net(shortcut="A")
    blk = model.stage2.block0
    with torch.no_grad():
        blk.bn2.weight.zero_()
        blk.bn2.bias.zero_()
    out = []
    handle = blk.register_forward_hook(lambda m, i, o: out.append(o))
    r = layer_responses(model, _images())
    handle.remove()
    at = r.layers.index("stage2.block0.bn2")
    assert r.std[at] == 0.0
    assert all(s > 0 for i, s in enumerate(r.std) if i != at)
    assert out[0].std() > 0  # after the addition the block still passes its input on


def test_hooks_removed_and_model_left_as_found_even_on_an_exception() -> None:
    model = _net()
    model.train()
    model.stage1.requires_grad_(False)
    bns = [bn for _, bn in response_layers(model)]

    def boom(fraction: float, message: str) -> None:
        assert all(len(bn._forward_hooks) == 1 for bn in bns)  # hooked while it runs
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        layer_responses(model, _images(), batch_size=4, progress=boom)
    assert all(not bn._forward_hooks for bn in bns)
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [
        not n.startswith("stage1.") for n, _ in model.named_parameters()]
    running = model.bn1.running_mean.clone()
    layer_responses(model, _images())
    assert torch.equal(model.bn1.running_mean, running)  # eval mode: BN statistics not updated
    with pytest.raises(ValueError), recorded_responses(model):
        raise ValueError("inside")
    assert all(not bn._forward_hooks for bn in bns)


def test_stop_and_bad_inputs() -> None:
    import threading

    from resnet_viz.experiments.common import Cancelled

    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        layer_responses(_net(), _images(), stop=stop)
    for x in (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, 3, 32, 32), torch.zeros(3, 32, 32)):
        with pytest.raises(ValueError, match="x must"):
            layer_responses(_net(), x)
    with pytest.raises(ValueError, match="batch_size"):
        layer_responses(_net(), _images(), batch_size=0)


def test_reading_follows_the_numbers() -> None:
    def r(label, depth, plain, m):
        return {"label": label, "depth": depth, "plain": plain, "mean_std": m}

    text = reading([r("plain-20", 20, True, 1.0), r("ResNet-20", 20, False, 0.6), r("ResNet-56", 56, False, 0.4)])
    assert "closer to zero, as the paper found" in text and "change the signal less" in text
    text = reading([r("plain-20", 20, True, 0.5), r("ResNet-20", 20, False, 0.6), r("ResNet-56", 56, False, 0.7)])
    assert "not closer to zero" in text and "not smaller" in text
    assert reading([]) == ""


def _model_file(path, shortcut: str) -> str:
    """An untrained depth-8 net as an exported model file, trained (it says) on the synthetic set."""
    import json

    from safetensors.torch import save_file

    from resnet_viz.config import DataConfig, RunConfig, TrainConfig

    cfg = RunConfig(model=ModelConfig(depth=8, shortcut=shortcut), train=TrainConfig(epochs=None, steps=1),
                    data=DataConfig(source="synthetic", synthetic_train=100, synthetic_test=60))
    state = {k: v.contiguous() for k, v in _net(shortcut=shortcut).state_dict().items()}
    save_file(state, str(path), metadata={"config": json.dumps(cfg.to_dict())})
    return str(path)


@pytest.mark.slow
def test_cli_prints_one_json_object_for_all_nets(tmp_path) -> None:
    import json

    from test_cli import cli

    files = [_model_file(tmp_path / "plain.safetensors", "none"), _model_file(tmp_path / "res.safetensors", "A")]
    out = cli("responses", *files, "--images", "40", "--batch-size", "16")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 1
    r = json.loads(out.stdout)
    assert r["experiment"] == "responses" and r["images"] == 40 and r["data"].startswith("Synthetic")
    assert [n["plain"] for n in r["nets"]] == [True, False]
    assert all(len(n["std"]) == 7 and n["sorted_std"][0] == max(n["std"]) for n in r["nets"])
    assert "Mean response std per layer" in r["reading"]
    bad = cli("responses", files[0], "--images", "0")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--images" in bad.stderr
    missing = cli("responses", files[0], "no-such-run", "--out", str(tmp_path))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr


def test_figure_by_layer_and_sorted_plain_dashed_colour_by_depth() -> None:
    from resnet_viz.plots.responses import responses_figure

    assert "Measure a net" in responses_figure([]).layout.annotations[-1].text
    x = _images(4)
    results = [layer_responses(_net(depth=d, shortcut=s), x, label=f"{s}-{d}").to_dict()
               for d, s in ((8, "none"), (8, "A"), (14, "A"))]
    fig = responses_figure(results)
    by_layer = [t for t in fig.data if t.showlegend is not False]
    assert [t.line.dash for t in by_layer] == ["dash", "solid", "solid"]
    assert by_layer[0].line.color == by_layer[1].line.color != by_layer[2].line.color  # one colour per depth
    assert list(fig.data[1].y) == sorted(fig.data[0].y, reverse=True)  # the right panel: sorted, largest first
    assert list(by_layer[2].x) == list(range(1, 14))


def test_estimate_is_one_fp32_forward_pass_per_image() -> None:
    from conftest import fake_speed

    from resnet_viz.experiments.estimates import responses_seconds

    s = fake_speed(threads=2)
    cfg = ModelConfig(depth=20)
    assert responses_seconds(cfg, 1000, s) == pytest.approx(1000 / 2000.0)  # fp32 at 2000 images/s for depth 20
    assert responses_seconds(cfg, 1000, s, threads=1) == pytest.approx(2 * responses_seconds(cfg, 1000, s))
    assert responses_seconds(ModelConfig(depth=56), 1000, s) == pytest.approx(1000 / 800.0)
