"""The CAM family from grad-cam (experiments/attribution/cams.py) on a small untrained
ResNet-8 and on torchvision's ResNet-18: maps, Eigen-CAM by hand, and no leaked hooks,
state or memory."""

from __future__ import annotations

import gc
import json
import threading
from pathlib import Path

import pytest
import torch
from conftest import fake_speed
from PIL import Image
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from resnet_viz.cli.cam import map_stats
from resnet_viz.cli.main import main
from resnet_viz.config import ModelConfig
from resnet_viz.experiments.attribution import METHODS, AttributionError, attribute
from resnet_viz.experiments.attribution.cams import CAMS, explain_cam
from resnet_viz.experiments.common import Cancelled
from resnet_viz.experiments.estimates import scorecam_seconds
from resnet_viz.experiments.sanity import sanity_check
from resnet_viz.nets.cifar import block_names, build_model, get_block
from resnet_viz.nets.imagenet import build_imagenet
from resnet_viz.store.models import ASSETS_DIR

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_full_backward_hooks",
              "_backward_pre_hooks", "_full_backward_pre_hooks")

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def state(m: nn.Module) -> tuple[list[bool], list[bool]]:
    return [x.training for x in m.modules()], [p.requires_grad for p in m.parameters()]


def hooks(m: nn.Module) -> int:
    return sum(len(getattr(mod, d, {})) for mod in m.modules() for d in HOOK_DICTS)


def live_tensors() -> int:
    gc.collect()
    # type(), not isinstance(): the latter reads __class__, and a deprecated torch alias warns on that.
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return build_imagenet("resnet18", pretrained=False)


def test_the_cams_are_registry_entries_with_a_block() -> None:
    assert list(CAMS) == ["gradcam_plusplus", "scorecam", "layercam", "eigencam", "hirescam"]
    assert all(METHODS[name] is m for name, m in CAMS.items())  # the pages' and the CLI's menus
    assert {n for n, m in METHODS.items() if m.uses_block} == {"gradcam", *CAMS}


@pytest.mark.parametrize("method", list(CAMS))
def test_every_cam_gives_a_finite_map_on_a_cifar_net(model: nn.Module, image: torch.Tensor, method: str) -> None:
    for block in (None, "stage1.block0", "stem"):
        a = attribute(model, image, method, target=3, block=block)
        assert a.shape == (32, 32) and a.dtype == torch.float32 and not a.requires_grad
        assert torch.isfinite(a).all() and float(a.min()) >= 0 and float(a.max()) <= 1 + 1e-6
        assert float(a.max()) > 0.99  # grad-cam scales each map to [0, 1]


@pytest.mark.parametrize("method", list(CAMS))
def test_every_cam_gives_a_finite_map_on_resnet18(resnet18: nn.Module, method: str) -> None:
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    block = "layer4.1" if method != "scorecam" else "layer2.0"  # Score-CAM: 128 channels, not 512
    a = attribute(resnet18, x, method, target=207, block=block)
    assert a.shape == (224, 224) and bool(torch.isfinite(a).all()) and float(a.max()) > 0.99
    assert hooks(resnet18) == 0


def test_eigencam_is_the_first_principal_component_of_the_block(model: nn.Module) -> None:
    # A tiny input: stage 1 keeps the 8x8 size, so no resize enters the comparison.
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    a = attribute(model, x, "eigencam", target=0, block="stage1.block0")
    with torch.no_grad():
        model.eval()
        acts = get_block(model, "stage1.block0")(model.relu(model.bn1(model.conv1(x))))[0]  # (C, 8, 8)
    m = acts.flatten(1).T.double()  # locations x channels
    m = m - m.mean(0)  # principal components of centred data
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    proj = (m @ vh[0]).reshape(8, 8)  # the first component's score at each location
    # An SVD's sign is arbitrary (numpy's and torch's may differ): one of the two must match.
    expected = []
    for p in (proj, -proj):
        p = p.clamp(min=0)
        p = p - p.min()
        expected.append((p / (p.max() + 1e-7)).float())
    assert min(float((a - e).abs().max()) for e in expected) < 1e-4


def test_scorecam_matches_grad_cams_own_loop(model: nn.Module, image: torch.Tensor) -> None:
    # Our Score-CAM runs grad-cam's code through a wrapper that reports progress; the map is grad-cam's.
    model.eval()
    with ScoreCAM(model=model, target_layers=[get_block(model, "stage2.block0")]) as cam:
        own = torch.from_numpy(cam(input_tensor=image, targets=[ClassifierOutputTarget(5)]))[0]
    seen: list[float] = []
    _, ours = explain_cam(model, image, "scorecam", "stage2.block0", 5, progress=lambda f, t: seen.append(f))
    assert torch.allclose(attribute(model, image, "scorecam", 5, block="stage2.block0"), own, atol=1e-6)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) == 2  # the forward, then 32 channels
    assert ours.shape == (32, 32)


def test_explain_cam_stops_and_refuses_other_methods(model: nn.Module, image: torch.Tensor) -> None:
    stop = threading.Event()
    stop.set()
    before = state(model)
    with pytest.raises(Cancelled):
        explain_cam(model, image, "scorecam", stop=stop)
    assert state(model) == before and hooks(model) == 0
    with pytest.raises(AttributionError, match="gradcam_plusplus"):
        explain_cam(model, image, "saliency")


@pytest.mark.parametrize("training", [True, False])
def test_state_and_gradients_are_left_as_found(image: torch.Tensor, training: bool) -> None:
    torch.manual_seed(0)
    m = build_model(ModelConfig(depth=8)).train(training)
    m.stage2.eval() if training else m.stage2.train()  # a mixed state must come back as it was
    m.conv1.weight.requires_grad_(False)
    m.fc.weight.grad = torch.ones_like(m.fc.weight)  # a caller's accumulated gradient
    before = state(m)
    bn_mean = m.bn1.running_mean.clone()
    for method in CAMS:
        attribute(m, image, method, block="stage2.block0")
    assert state(m) == before
    assert torch.equal(m.bn1.running_mean, bn_mean)  # eval mode inside: BN statistics untouched
    assert torch.equal(m.fc.weight.grad, torch.ones_like(m.fc.weight))  # grad-cam's zero_grad() undone
    assert all(p.grad is None for n, p in m.named_parameters() if n != "fc.weight")
    assert hooks(m) == 0


def test_no_hooks_remain_when_the_call_fails(model: nn.Module, image: torch.Tensor,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # The failure's traceback keeps cam_map's frame, and so the grad-cam object, alive: without
    # its context manager the object's hooks would stay on the block until the traceback goes.
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the head broke")

    monkeypatch.setattr(model.fc, "forward", broken)
    for method in CAMS:
        with pytest.raises(RuntimeError, match="the head broke") as info:
            attribute(model, image, method, target=3)  # a target: no prediction pass before the CAM's
        assert info.value.__traceback__ is not None
        assert hooks(model) == 0, f"{method} left its hooks on the model"


def test_a_swallowed_index_error_becomes_an_attribution_error(model: nn.Module, image: torch.Tensor,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # grad-cam's __exit__ prints an IndexError and returns True, which would leave no map.
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise IndexError("out of range")

    monkeypatch.setattr(model.fc, "forward", broken)
    with pytest.raises(AttributionError, match="HiResCAM failed"):
        attribute(model, image, "hirescam", target=3)
    assert hooks(model) == 0


def test_many_calls_do_not_grow_hooks_or_live_tensors(model: nn.Module, image: torch.Tensor) -> None:
    for method in CAMS:
        attribute(model, image, method)  # warm up: lazy caches of torch and grad-cam
    before = live_tensors()
    for _ in range(5):
        for method in CAMS:
            attribute(model, image, method, block=block_names(model)[1])
    assert hooks(model) == 0
    assert live_tensors() <= before


def test_sanity_check_takes_a_cam(model: nn.Module, image: torch.Tensor) -> None:
    r = sanity_check(model, image, "layercam", with_ssim=False)
    assert r.method == "layercam" and r.similarity[0] == pytest.approx(1.0) and len(r.similarity) == len(r.layers) + 1
    assert r.similarity[-1] < 0.99  # the map changes once the net is random


def test_cli_prints_one_json_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(img)
    shipped = str(ASSETS_DIR / "resnet20.safetensors")
    assert main(["cam", shipped, str(img), "--method", "eigencam", "--block", "stage2.block1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["experiment"] == "cam" and out["method"] == "eigencam" and out["block"] == "stage2.block1"
    assert out["map"]["shape"] == [32, 32] and 0 <= out["target"] < 10 and len(out["top5"]) == 5
    assert out["target_class"] == out["top5"][0]["class"]
    assert main(["cam", shipped, str(img), "--block", "stage9.block0"]) == 2
    assert "no block named 'stage9.block0'" in capsys.readouterr().err


def test_map_stats_by_hand() -> None:
    amap = torch.zeros(4, 5)
    amap[1, 3], amap[2, 0] = 1.0, 0.5
    s = map_stats(amap)
    assert s == {"shape": [4, 5], "mean": 0.075, "peak": [1, 3], "top10_share": 1.0}  # top 2 of 20 pixels hold all


def test_scorecam_estimate_by_hand() -> None:
    s = fake_speed(threads=2)  # fp32: 800 images/s of ResNet-56
    per_image = 1.0 / (800.0 * s.flops[1])  # seconds per FLOP at that rate
    assert scorecam_seconds(10**9, 63, s) == pytest.approx(64 * 10**9 * per_image)
    assert scorecam_seconds(10**9, 63, s, threads=1) == pytest.approx(2 * 64 * 10**9 * per_image)  # 1 of 2 cores
