"""torchvision's ImageNet ResNets: the paper's Table 1 / Fig. 3 networks, next to the CIFAR ones.

Models come from ``torchvision.models`` so pretrained weights are torchvision's own,
downloaded from download.pytorch.org on first use and cached in torch's hub folder. They are
read here, not by torchvision: torch.hub trusts a file already in its cache (no hash check) and
unpickles it with ``weights_only=False``, so whoever can write that folder could run code in the
server. Every load checks the file's SHA-256 against the prefix in torchvision's file name and
unpickles tensors only (``weights_only=True``).

Two changes are made after building, neither of which touches the ``state_dict``:

- every block gets one ``nn.ReLU`` module per use. torchvision's blocks call the same
  ``self.relu`` twice (three times in a bottleneck); hook-based methods such as Captum's
  Guided Backprop and DeepLift keep per-module state between the forward and backward
  pass, so a reused module mixes up the gradients of its two uses;
- the model is put in eval mode.

FLOPs are counted by ``cost.py``, as for the CIFAR nets: 2 per multiply-add of every conv
and linear layer, so they are twice the paper's "multiply-adds" (1.8 / 3.6 / 3.8 billion).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
import torchvision
from PIL import Image
from torch import Tensor, nn
from torchvision.models import ResNet, ResNet18_Weights, ResNet34_Weights, ResNet50_Weights
from torchvision.models.resnet import BasicBlock, Bottleneck

from resnet_viz.nets.cifar import block_names
from resnet_viz.nets.cost import count_params, traced

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_MODELS",
    "IMAGENET_STD",
    "IMAGE_SIZE",
    "ImageNetError",
    "WeightsUnavailable",
    "build_imagenet",
    "imagenet_blocks",
    "imagenet_categories",
    "imagenet_input",
    "imagenet_label",
    "imagenet_summary",
]

IMAGENET_MODELS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IMAGE_SIZE = 224  # the centre crop the weights were trained and evaluated on
_WEIGHTS = {"resnet18": ResNet18_Weights, "resnet34": ResNet34_Weights, "resnet50": ResNet50_Weights}


class ImageNetError(ValueError):
    """An ImageNet model or input cannot be made; the message says what to change."""


class WeightsUnavailable(ImageNetError):
    """Pretrained weights could not be downloaded or read (offline, proxy, damaged cache file)."""


def _check_name(name: str) -> str:
    if name not in IMAGENET_MODELS:
        raise ImageNetError(f"unknown ImageNet model {name!r}; choose one of {', '.join(IMAGENET_MODELS)}")
    return name


class _SplitReluBasicBlock(BasicBlock):
    """torchvision's BasicBlock with a separate ReLU module after the residual add.

    ``relu2`` has no parameters or buffers, so the state_dict keys stay those of
    BasicBlock and torchvision's pretrained weights load unchanged (strict=True).
    """

    relu2: nn.ReLU

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu2(out + identity)


class _SplitReluBottleneck(Bottleneck):
    """torchvision's Bottleneck with one ReLU module per use: relu, relu2, relu3 (after the add)."""

    relu2: nn.ReLU
    relu3: nn.ReLU

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu3(out + identity)


def _split_relus(model: nn.Module) -> None:
    """Give every block one ReLU module per use, in place (the weights are untouched)."""
    for m in model.modules():
        # Exact type checks: a block already converted is left alone.
        if type(m) is BasicBlock:
            m.__class__ = _SplitReluBasicBlock
            m.relu2 = nn.ReLU(inplace=True)
        elif type(m) is Bottleneck:
            m.__class__ = _SplitReluBottleneck
            m.relu2 = nn.ReLU(inplace=True)
            m.relu3 = nn.ReLU(inplace=True)


def _weights_url(name: str) -> str:
    """Where torchvision publishes ``name``'s default weights, e.g. .../resnet18-f37072fd.pth."""
    return str(_WEIGHTS[name].DEFAULT.url)


def _weights_file(name: str) -> tuple[str, Path, str]:
    """(url, path in torch's hub cache, SHA-256 prefix) of ``name``'s pretrained weights.

    torchvision names each file after the first hex digits of its SHA-256 (``-f37072fd.pth``),
    and torch.hub caches it under that same name in ``<hub dir>/checkpoints``.
    """
    url = _weights_url(name)
    filename = url.rsplit("/", 1)[-1]
    found = re.fullmatch(r".+-([0-9a-f]{8,64})\.pth", filename)
    if found is None:
        raise ImageNetError(f"{url} names no SHA-256 prefix, so its file cannot be checked before loading")
    return url, Path(torch.hub.get_dir()) / "checkpoints" / filename, found.group(1)


def _unavailable(name: str, error: BaseException) -> WeightsUnavailable:
    url, path, prefix = _weights_file(name)
    return WeightsUnavailable(
        f"the pretrained {name} weights could not be loaded ({type(error).__name__}: {error}). "
        f"They download from download.pytorch.org on first use (about 45-100 MB) and are cached in {path.parent} "
        "(set $TORCH_HOME to move torch's hub folder). Connect to the internet and try again, copy torchvision's "
        f"file {url} into that folder by hand under its own name, {path.name} (its SHA-256 must begin with "
        f"{prefix}; any other file is refused), delete a damaged file there, or use random weights to look at "
        "the architecture."
    )


def _checked_state(name: str) -> dict[str, Tensor]:
    """``name``'s pretrained state_dict, downloaded if not cached, read only if its SHA-256 matches."""
    url, path, prefix = _weights_file(name)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        # torch.hub writes a temporary file beside ``path``, checks its hash and only then renames
        # it into place: a broken or foreign download never lands in the cache.
        torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=False)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(prefix):
        raise WeightsUnavailable(
            f"{path} is not torchvision's {name} weights file: its SHA-256 begins with {digest[:len(prefix)]}, "
            f"torchvision's with {prefix}. It was not loaded. Delete it to download the weights again, or "
            f"replace it with the file from {url}."
        )
    # The bytes hashed are the bytes loaded (a second read could see a swapped file), and
    # weights_only=True rebuilds tensors and plain containers, never arbitrary objects.
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{path} holds a {type(state).__name__}, not a state_dict; delete it")
    return state


def build_imagenet(name: str, pretrained: bool) -> nn.Module:
    """torchvision's resnet18/34/50, with its ImageNet weights if ``pretrained``, in eval mode.

    Raises ``WeightsUnavailable`` when the weights cannot be downloaded or read, or when the
    cached file is not torchvision's (its SHA-256 does not match the file name's prefix).
    """
    _check_name(name)
    model = getattr(torchvision.models, name)()
    if pretrained:
        try:
            state = _checked_state(name)
        except (URLError, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            # URLError/OSError: offline, DNS, proxy, disk full; RuntimeError: a download whose hash
            # does not match, or a file torch.load cannot read; EOF/Unpickling: a truncated file.
            raise _unavailable(name, e) from e
        model.load_state_dict(state)  # strict: every key of the architecture, nothing else
    _split_relus(model)
    return model.eval()


def imagenet_label(name: str) -> str:
    """"resnet50" -> "ResNet-50", as the paper names it."""
    return f"ResNet-{_check_name(name).removeprefix('resnet')}"


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, in the weights' output order (shipped with torchvision, offline)."""
    return list(ResNet18_Weights.DEFAULT.meta["categories"])


def imagenet_input(img: Image.Image) -> Tensor:
    """(1, 3, 224, 224) float: shorter side resized to 256, centre 224 crop, ImageNet-normalized.

    Uses the weights' own preprocessing (the same for all three models), so inputs match
    what the pretrained weights saw during evaluation.
    """
    if not isinstance(img, Image.Image):
        raise ImageNetError(f"expected a PIL image (from images.open_upload), got {type(img).__name__}")
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageNetError(f"the image has no pixels ({w}x{h}); upload another image")
    if img.mode != "RGB":
        img = img.convert("RGB")  # the model takes 3 channels; open_upload already gives RGB
    x = ResNet18_Weights.DEFAULT.transforms()(img)  # (3, 224, 224) float
    return x.unsqueeze(0).contiguous()


def imagenet_blocks(model: nn.Module) -> list[str]:
    """Block names in forward order: "layer1.0" ... "layer4.1" (or "layer4.2" for 34/50)."""
    return block_names(model)


def _convs(block: nn.Module) -> list[tuple[int, int, int]]:
    """(kernel, filters, stride) of each conv on a block's residual branch, in order."""
    return [(m.kernel_size[0], m.out_channels, m.stride[0]) for m in block.children() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def imagenet_summary(name: str) -> dict[str, Any]:
    """Parameters, FLOPs per 224x224 image and per-block shapes, for a Fig. 3-style diagram.

    Built with random weights (counts and shapes do not depend on them) and measured with
    forward hooks on one zero image. Shapes are (C, H, W) for one image. Each block lists
    its branch's convs as (kernel, filters, stride); ``stem`` is the 7x7 conv and the max pool.
    """
    model: ResNet = build_imagenet(name, pretrained=False)  # the class, so its layers' attributes are known
    names = set(imagenet_blocks(model))
    with traced(model, names | {"conv1", "maxpool"}) as trace:  # the blocks and the stem
        model(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    # (C, H, W) for one image
    shapes = {n: (inp[1:], out[1:]) for n, (inp, out) in trace.shapes.items()}

    blocks = []
    for n, m in model.named_modules():
        if n not in names:
            continue
        in_shape, out_shape = shapes[n]
        blocks.append({
            "name": n,
            "stage": int(n[len("layer")]),  # "layer3.1" -> 3
            "index": int(n.split(".")[1]),
            "type": "bottleneck" if isinstance(m, Bottleneck) else "basic",
            "convs": _convs(m),
            "in_shape": in_shape,
            "out_shape": out_shape,
            "params": count_params(m),
            "flops": trace.flops_in(n),
            "shortcut": "projection" if m.downsample is not None else "identity",
            # torchvision adds a downsample (1x1 conv + BN) exactly where the shape changes.
            "shape_changes": m.downsample is not None,
        })
    conv, pool, bn1, fc = model.conv1, model.maxpool, model.bn1, model.fc
    return {
        "name": name,
        "label": imagenet_label(name),
        "depth": 2 + sum(len(b["convs"]) for b in blocks),  # the stem conv, the branch convs, the fc
        "image_size": IMAGE_SIZE,
        "num_classes": fc.out_features,
        "blocks_per_stage": tuple(sum(b["stage"] == st for b in blocks) for st in sorted({b["stage"] for b in blocks})),
        "stem": [
            {"kind": "conv", "kernel": conv.kernel_size[0], "filters": conv.out_channels, "stride": conv.stride[0],
             "out_shape": shapes["conv1"][1], "params": count_params(conv) + count_params(bn1),
             "flops": trace.flops["conv1"]},
            {"kind": "max pool", "kernel": pool.kernel_size, "stride": pool.stride, "out_shape": shapes["maxpool"][1]},
        ],
        "params": count_params(model),
        "flops": trace.total_flops,
        "stem_params": count_params(conv) + count_params(bn1),
        "head_params": count_params(fc),
        "blocks": blocks,
    }
