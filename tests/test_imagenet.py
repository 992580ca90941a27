"""torchvision's ImageNet ResNets: building, ReLU splitting, inputs, summaries, attribution.

Random weights only: nothing here downloads. Pretrained loading runs on a temporary
torch.hub folder, with ``torch.hub.download_url_to_file`` replaced.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from resnet_viz.experiments.attribution import AttributionError, attribute
from resnet_viz.nets import imagenet
from resnet_viz.nets.cifar import block_names, get_block
from resnet_viz.nets.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_MODELS,
    IMAGENET_STD,
    ImageNetError,
    WeightsUnavailable,
    build_imagenet,
    imagenet_blocks,
    imagenet_categories,
    imagenet_input,
    imagenet_label,
    imagenet_summary,
)

SMALL = (1, 3, 64, 64)  # enough for structure checks; the full 224 px only where sizes matter


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return build_imagenet("resnet18", pretrained=False)


def _relu_calls(model: nn.Module) -> dict[str, int]:
    calls: dict[str, int] = {}
    handles = [
        m.register_forward_hook(lambda mod, i, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
        for n, m in model.named_modules() if isinstance(m, nn.ReLU)
    ]
    try:
        with torch.no_grad():
            model(torch.randn(SMALL))
    finally:
        for h in handles:
            h.remove()
    return calls


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_build_matches_torchvision_and_splits_relus(name: str) -> None:
    plain = getattr(torchvision.models, name)().eval()
    model = build_imagenet(name, pretrained=False)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    # Same keys, so torchvision's pretrained state_dict loads strictly.
    assert list(model.state_dict()) == list(plain.state_dict())
    model.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(SMALL)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-5)  # the rewritten forward computes the same
    calls = _relu_calls(model)
    assert calls and max(calls.values()) == 1, {n: c for n, c in calls.items() if c > 1}
    # The check above would catch the bug: plain torchvision calls each block's relu 2-3 times.
    assert max(_relu_calls(plain).values()) > 1


def test_unknown_model_name() -> None:
    with pytest.raises(ImageNetError, match="resnet18, resnet34, resnet50"):
        build_imagenet("resnet101", pretrained=False)


def test_categories() -> None:
    cats = imagenet_categories()
    assert len(cats) == 1000 and len(set(cats)) >= 998 and all(isinstance(c, str) and c for c in cats)
    assert cats[0] == "tench"
    cats.append("mutated")
    assert len(imagenet_categories()) == 1000  # a fresh list each call


def test_input_shape_and_normalization() -> None:
    white = imagenet_input(Image.new("RGB", (400, 300), (255, 255, 255)))
    assert white.shape == (1, 3, 224, 224) and white.dtype == torch.float32
    want = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    assert torch.allclose(white[0].mean((1, 2)), want, atol=1e-3)
    assert torch.allclose(white[0].amin((1, 2)), white[0].amax((1, 2)), atol=1e-3)  # constant stays constant
    mean_grey = tuple(round(m * 255) for m in IMAGENET_MEAN)
    assert imagenet_input(Image.new("RGB", (224, 500), mean_grey)).abs().max() < 0.02
    assert imagenet_input(Image.new("L", (50, 80), 128)).shape == (1, 3, 224, 224)  # upsampled, 3 channels
    with pytest.raises(ImageNetError, match="PIL image"):
        imagenet_input(torch.zeros(3, 224, 224))  # type: ignore[arg-type]


def test_block_names(resnet18: nn.Module) -> None:
    assert imagenet_blocks(resnet18) == [f"layer{s}.{i}" for s in (1, 2, 3, 4) for i in (0, 1)]
    assert block_names(resnet18) == imagenet_blocks(resnet18)


# (params in millions, GFLOPs = 2 x the paper's billions of multiply-adds, blocks per stage)
EXPECTED = {"resnet18": (11.7, 3.6, (2, 2, 2, 2)), "resnet34": (21.8, 7.3, (3, 4, 6, 3)),
            "resnet50": (25.6, 8.2, (3, 4, 6, 3))}
PAPER_MULT_ADDS = {"resnet18": 1.8e9, "resnet34": 3.6e9, "resnet50": 3.8e9}


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_summary_numbers(name: str) -> None:
    s = imagenet_summary(name)
    params_m, gflops, per_stage = EXPECTED[name]
    assert abs(s["params"] / 1e6 - params_m) < 0.05
    assert abs(s["flops"] / 1e9 - gflops) < 0.05
    assert abs(s["flops"] / 2 / PAPER_MULT_ADDS[name] - 1) < 0.1
    blocks = s["blocks"]
    assert tuple(sum(b["stage"] == st for b in blocks) for st in (1, 2, 3, 4)) == per_stage
    assert s["stem_params"] + s["head_params"] + sum(b["params"] for b in blocks) == s["params"]
    # Convs and the fc are all counted: the blocks hold everything but the stem conv and the head.
    stem_flops = 2 * 64 * 112 * 112 * 7 * 7 * 3
    assert s["flops"] - sum(b["flops"] for b in blocks) == stem_flops + 2 * s["head_params"] - 2 * 1000
    bottleneck = name == "resnet50"
    assert {b["type"] for b in blocks} == {"bottleneck" if bottleneck else "basic"}
    assert blocks[0]["in_shape"] == (64, 56, 56)
    assert blocks[-1]["out_shape"] == ((2048 if bottleneck else 512), 7, 7)
    for b in blocks:
        assert b["shape_changes"] == (b["in_shape"] != b["out_shape"]) == (b["shortcut"] == "projection")
    # The first block of stages 2-4 halves the map and doubles the width; ResNet-50's
    # first block also changes shape (64 -> 256 channels).
    changes = [b["name"] for b in blocks if b["shape_changes"]]
    assert changes == (["layer1.0"] if bottleneck else []) + ["layer2.0", "layer3.0", "layer4.0"]


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_summary_describes_the_layout(name: str) -> None:
    # What the Build page's Fig. 3 diagram draws: depth, the stem, each block's convs.
    s = imagenet_summary(name)
    depth = int(name.removeprefix("resnet"))
    assert s["label"] == imagenet_label(name) == f"ResNet-{depth}" and s["depth"] == depth
    assert s["blocks_per_stage"] == EXPECTED[name][2] and s["num_classes"] == 1000
    conv, pool = s["stem"]
    assert (conv["kernel"], conv["filters"], conv["stride"], conv["out_shape"]) == (7, 64, 2, (64, 112, 112))
    assert conv["params"] == s["stem_params"] and conv["flops"] == 2 * 64 * 112 * 112 * 7 * 7 * 3
    assert (pool["kind"], pool["kernel"], pool["stride"], pool["out_shape"]) == ("max pool", 3, 2, (64, 56, 56))
    by_name = {b["name"]: b for b in s["blocks"]}
    if name == "resnet50":  # bottleneck: 1x1 reduce, 3x3 (stride 2 in torchvision's v1.5), 1x1 expand
        assert by_name["layer1.0"]["convs"] == [(1, 64, 1), (3, 64, 1), (1, 256, 1)]
        assert by_name["layer2.0"]["convs"] == [(1, 128, 1), (3, 128, 2), (1, 512, 1)]
    else:
        assert by_name["layer1.0"]["convs"] == [(3, 64, 1), (3, 64, 1)]
        assert by_name["layer4.0"]["convs"] == [(3, 512, 2), (3, 512, 1)]
    with pytest.raises(ImageNetError, match="unknown ImageNet model"):
        imagenet_label("resnet152")


@pytest.mark.filterwarnings("ignore:Setting backward hooks")  # Captum announces its temporary hooks
@pytest.mark.parametrize("method", ["saliency", "guided_backprop"])
def test_attribution_at_224(resnet18: nn.Module, method: str) -> None:
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    a = attribute(resnet18, x, method, target=207)
    assert a.shape == (224, 224) and bool(torch.isfinite(a).all()) and float(a.abs().sum()) > 0


def test_gradcam_on_a_torchvision_block(resnet18: nn.Module) -> None:
    # Blocks are found by torchvision's names ("layer4.1"): a lookup that knows only the
    # CIFAR block classes fails here rather than skipping.
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    a = attribute(resnet18, x, "gradcam", target=207, block="layer4.1")
    assert a.shape == (224, 224) and bool(torch.isfinite(a).all()) and float(a.min()) >= 0
    assert torch.equal(a, attribute(resnet18, x, "gradcam", target=207))  # the last block by default
    early = attribute(resnet18, x, "gradcam", target=207, block="layer2.0")
    assert early.shape == (224, 224) and not torch.equal(early, a)
    assert get_block(resnet18, "layer4.1") is resnet18.layer4[1]
    with pytest.raises(AttributionError, match="no block named 'layer5.0'"):
        attribute(resnet18, x, "gradcam", target=207, block="layer5.0")


def test_module_names_its_public_api() -> None:
    assert all(hasattr(imagenet, n) for n in imagenet.__all__)


# Pretrained weights are read from torch.hub's cache by resnet_viz, not torchvision: the file's
# SHA-256 must match the prefix in torchvision's file name, and it is unpickled with weights_only.


class _Marker:
    """Unpickling this object creates ``path``: proof that a load ran code from the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch.hub's checkpoints folder, empty and temporary; downloading fails as if offline."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise URLError("tests do not download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def _saved(obj: object) -> tuple[bytes, str]:
    """``obj`` as torch.save writes it, and the first 8 hex digits of its SHA-256."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue(), hashlib.sha256(buf.getvalue()).hexdigest()[:8]


def _name_files_by(monkeypatch: pytest.MonkeyPatch, prefix: str) -> str:
    """Make torchvision's URL for the weights name ``prefix`` as their hash; the file name."""
    monkeypatch.setattr(imagenet, "_weights_url", lambda name: f"https://download.pytorch.org/models/{name}-{prefix}.pth")
    return f"resnet18-{prefix}.pth"


def test_a_cached_file_that_is_not_torchvisions_is_refused_unread(hub: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    real_name = torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]  # resnet18-f37072fd.pth
    torch.save(_Marker(marker), hub / real_name)  # someone who can write the cache put it there
    with pytest.raises(WeightsUnavailable) as info:
        build_imagenet("resnet18", pretrained=True)
    assert not marker.exists(), "the cached file was unpickled and ran code"
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    for part in ("not torchvision's resnet18 weights", "SHA-256", "f37072fd", "not loaded", str(hub / real_name)):
        assert part in msg


def test_a_file_matching_its_hash_loads_the_same_weights(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    source = torchvision.models.resnet18().state_dict()
    data, prefix = _saved(source)
    (hub / _name_files_by(monkeypatch, prefix)).write_bytes(data)
    state = build_imagenet("resnet18", pretrained=True).state_dict()
    assert list(state) == list(source)
    assert all(torch.equal(state[k], v) for k, v in source.items())
    assert max(_relu_calls(build_imagenet("resnet18", pretrained=True)).values()) == 1


def test_a_file_matching_its_hash_still_runs_no_code(hub: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Defence in depth: even a file whose hash matches is unpickled with weights_only=True.
    marker = tmp_path / "code-ran"
    data, prefix = _saved(_Marker(marker))
    (hub / _name_files_by(monkeypatch, prefix)).write_bytes(data)
    with pytest.raises(WeightsUnavailable, match="could not be loaded"):
        build_imagenet("resnet18", pretrained=True)
    assert not marker.exists()


def test_a_missing_file_is_downloaded_with_its_hash_checked(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(4)
    source = torchvision.models.resnet18().state_dict()
    data, prefix = _saved(source)
    name = _name_files_by(monkeypatch, prefix)
    calls: list[tuple[str, str, str | None]] = []

    def download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, dst, hash_prefix))
        Path(dst).write_bytes(data)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    model = build_imagenet("resnet18", pretrained=True)
    assert calls == [(f"https://download.pytorch.org/models/{name}", str(hub / name), prefix)]
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])
    build_imagenet("resnet18", pretrained=True)
    assert len(calls) == 1  # cached now


@pytest.mark.parametrize("error", [URLError("no route to host"), RuntimeError("invalid hash value")])
def test_pretrained_offline_raises_helpful_error(hub: Path, monkeypatch: pytest.MonkeyPatch,
                                                 error: Exception) -> None:
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    with pytest.raises(WeightsUnavailable) as info:
        build_imagenet("resnet18", pretrained=True)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    for part in ("download.pytorch.org", "TORCH_HOME", "random weights", str(hub), "resnet18-f37072fd.pth",
                 "must begin with f37072fd"):
        assert part in msg
    assert not any(hub.iterdir())  # nothing was put in the cache
