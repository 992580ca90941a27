"""Watch a net learn: every ``watch_every`` steps the trainer records a frame (``store.watchfile``).

A frame holds (a) the feature maps of one fixed test image (the test set's first) at the
last block of each stage: the mean over channels and the ``TOP_K`` strongest channels,
uint8 with their range; and (b) per parameter group (the stem, each block, the classifier)
the histogram of the weights and of their gradients over fixed bins. ``fit`` calls
``Watcher.after_backward`` once per step, after ``backward`` and before the optimizer step:
the gradients are the ones this step applies to the weights it records.

The maps come from a separate forward pass of that one image, without gradients, in eval
mode (BatchNorm's running statistics, which it leaves untouched), hooks attached only for
that pass; the model's modes and ``requires_grad`` flags are put back as found. Only the
process that writes the run records (rank 0 under torchrun). Cost: one image's forward and
two passes over the parameters per frame, ~64 frames a run: well under 1% of training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from resnet_viz.data.batches import normalize
from resnet_viz.nets.cifar import eval_mode, get_block
from resnet_viz.store import watchfile

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from resnet_viz.training.records import RecordSink
    from resnet_viz.training.state import Setup

TOP_K = 4  # channels kept per block besides the mean: a readable row of maps
FRAMES = 64  # ``watch_every=None``: about this many frames a run


def watch_every(every: int | None, total: int) -> int:
    """Steps between frames: ``every``, or for None about ``FRAMES`` frames over ``total`` steps."""
    return max(1, math.ceil(total / FRAMES)) if every is None else every


def watched_blocks(model: nn.Module) -> list[str]:
    """The last block of each stage (``stage1.block2`` ... for ResNet-20): where a stage's work shows."""
    names = [n for n, _ in model.named_modules() if n.count(".") == 1 and n.startswith("stage")]
    last: dict[str, str] = {}
    for n in names:
        last[n.split(".")[0]] = n
    return list(last.values())


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters by block (``stage2.block0``), with ``stem`` before the first and ``fc`` for the classifier."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0].startswith("stage") else ("fc" if parts[0] == "fc" else "stem")
        groups.setdefault(key, []).append(p)
    return groups


@contextmanager
def block_outputs(model: nn.Module, names: list[str]) -> Iterator[dict[str, Tensor]]:
    """The outputs of blocks ``names`` of the forward passes run in the body (hooks removed after)."""
    seen: dict[str, Tensor] = {}
    handles = []
    try:
        for n in names:
            handles.append(get_block(model, n).register_forward_hook(
                lambda m, i, o, n=n: seen.__setitem__(n, o.detach())))
        yield seen
    finally:
        for h in handles:
            h.remove()


def _quantize(maps: Tensor) -> dict[str, Any]:
    """(k, H, W) floats as uint8 with each map's own (lo, hi): 1 byte a pixel, 1/255 of its range."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    span = (hi - lo).clamp_min(1e-12)
    q = ((maps - lo[:, None, None]) / span[:, None, None] * 255).round().clamp(0, 255).to(torch.uint8)
    return {"shape": list(maps.shape), "lo": lo.tolist(), "hi": hi.tolist(),
            "data": watchfile.encode_u8(q.cpu().numpy())}


@torch.no_grad()
def feature_maps(model: nn.Module, x: Tensor, blocks: list[str], k: int = TOP_K) -> dict[str, dict[str, Any]]:
    """Per block: the channel mean and the ``k`` channels with the largest mean, for image ``x`` (1, 3, H, W)."""
    with eval_mode(model), block_outputs(model, blocks) as seen:
        model(x)
    out = {}
    for n in blocks:
        a = seen[n][0].float()  # (C, H, W)
        top = a.mean((1, 2)).topk(min(k, a.shape[0])).indices
        maps = torch.cat([a.mean(0, keepdim=True), a[top]])
        out[n] = {"channels": [-1, *top.tolist()], **_quantize(maps)}
    return out


@torch.no_grad()
def histograms(tensors: list[list[Tensor | None]], params: list[list[nn.Parameter]]) -> Tensor:
    """(groups, N_BINS) counts of each group's tensors over ``watchfile.EDGES``; a missing
    tensor (a parameter without a gradient) counts as zeros, so each row sums to the group's size."""
    device = params[0][0].device
    inner = torch.as_tensor(watchfile.EDGES[1:-1], dtype=torch.float32, device=device)
    idx = []
    for g, (ts, ps) in enumerate(zip(tensors, params, strict=True)):
        for t, p in zip(ts, ps, strict=True):
            v = t.detach().reshape(-1).float() if t is not None else torch.zeros(p.numel(), device=device)
            idx.append(torch.bucketize(v, inner, right=True) + g * watchfile.N_BINS)  # [lo, hi) as numpy
    counts = torch.bincount(torch.cat(idx), minlength=len(tensors) * watchfile.N_BINS)
    return counts.reshape(len(tensors), watchfile.N_BINS)


class Watcher:
    """Records frames of one ``fit``; inactive (every call a no-op) without a run folder or with ``watch_every=0``."""

    def __init__(self, s: Setup, sink: RecordSink) -> None:
        self.every = watch_every(s.tc.watch_every, s.total)
        self.active = s.writer is not None and self.every > 0
        self.s, self.sink, self.total = s, sink, s.total
        if not self.active or s.writer is None:
            return
        self.blocks = watched_blocks(s.model)
        self.groups = param_groups(s.model)
        img, label = s.data.test_x[0], int(s.data.test_y[0])
        self.x = normalize(img[None], channels_last=False).to(s.device)
        if not watchfile.rewind(s.writer.path, s.start_step):
            sink.watch([{"kind": "image", "label": label, "class": s.data.classes[label],
                         "pixels": watchfile.encode_u8(img.numpy()), "blocks": self.blocks,
                         "groups": list(self.groups), "edges": watchfile.EDGES.tolist()}])

    def after_backward(self, step: int) -> None:
        """Record frame ``step`` (updates done so far) if it is due: call between backward and the optimizer step."""
        if not self.active or not (step % self.every == 0 or step == self.total - 1):
            return
        params = list(self.groups.values())
        w = histograms([list(ps) for ps in params], params)
        g = histograms([[p.grad for p in ps] for ps in params], params)
        both = torch.stack([w, g]).tolist()  # one device sync for both
        names = list(self.groups)
        self.sink.watch([{"kind": "frame", "step": step, "maps": feature_maps(self.s.model, self.x, self.blocks),
                          "weights": dict(zip(names, both[0], strict=True)),
                          "grads": dict(zip(names, both[1], strict=True))}])


def to_tensorboard(tb: SummaryWriter, record: dict[str, Any]) -> None:
    """A frame as TensorBoard images (``watch/<block>``: the maps side by side) and histograms
    (``weights/<group>``, ``grads/<group>``, over the same bins as the file)."""
    if record.get("kind") != "frame":
        return
    step = record["step"]
    for block, m in record["maps"].items():
        q = watchfile.decode_u8(m["data"], tuple(m["shape"]))  # (k, H, W)
        k, h, w = q.shape
        strip = np.full((h, k * (w + 1) - 1), 255, dtype=np.uint8)  # 1 px white between maps
        for i in range(k):
            strip[:, i * (w + 1): i * (w + 1) + w] = q[i]
        tb.add_image(f"watch/{block}", strip[None], step, dataformats="CHW")
    centres = (watchfile.EDGES[:-1] + watchfile.EDGES[1:]) / 2
    for kind in ("weights", "grads"):
        for group, counts in record[kind].items():
            c = np.asarray(counts, dtype=np.float64)
            n = float(c.sum())
            if n == 0:
                continue
            nz = np.nonzero(c)[0]
            tb.add_histogram_raw(f"{kind}/{group}", min=float(watchfile.EDGES[nz[0]]),
                                 max=float(watchfile.EDGES[nz[-1] + 1]), num=n, sum=float(c @ centres),
                                 sum_squares=float(c @ centres**2), bucket_limits=watchfile.EDGES[1:].tolist(),
                                 bucket_counts=c.tolist(), global_step=step)
