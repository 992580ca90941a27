"""Lesion study of Veit, Wilber and Belongie (2016): delete blocks from a trained net.

Veit et al. read a ResNet as an ensemble of many paths of different lengths: deleting one
residual block from a trained ResNet removes only the paths through that block, so test
accuracy barely moves (except at the blocks that change the shape), and it falls smoothly
as more blocks are deleted. A plain net has a single path, so deleting any block breaks it.

What "deleting" means here (``deleted_blocks``):

- Residual block, ``y = relu(F(x) + shortcut(x))``: the branch F is removed and the skip
  kept, so the block computes ``relu(shortcut(x))``, i.e. its own forward with F set to
  zero. With the identity or the option-A shortcut (zero-padded channels, stride-2
  subsampling) the ReLU changes nothing, because x is the output of a ReLU (the stem's or
  the previous block's) and subsampling or padding with zeros keeps it non-negative: the
  block is exactly its skip, as in the paper. With a 1x1 conv + BN projection (options B
  and C) ``shortcut(x)`` can be negative; keeping the ReLU keeps the output non-negative,
  which is what every later block was trained to receive.
- Plain block, ``y = relu(F(x))``: there is no skip to fall back on, and F set to zero
  would output zeros (deleting the whole signal, not a block). The honest analogue is to
  let the input through: the identity where the shape is unchanged, and the
  parameter-free option-A mapping where the block changes the shape. The layers after it
  were never trained on that, so the plain net is expected to collapse.

The swap replaces the block in its parent by a small stand-in module for the duration of
a ``with`` block and puts the original object back in ``finally``: no parameter is
touched, and afterwards the model is the same module tree with the same weights.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import statistics
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, nn

from resnet_viz.experiments.common import ProgressFn, accuracy, check, report
from resnet_viz.nets.cifar import BasicBlock, Bottleneck, PadShortcut, Projection, block_names, get_block

__all__ = ["LesionResult", "deleted_blocks", "lesion_study", "max_k_for"]

# Random deletions go up to this many blocks by default in the app: Veit et al. plot up to
# about a third of ResNet-56's 27 blocks, where a plain net has long collapsed.
MAX_K = 9


def max_k_for(model: nn.Module, limit: int = MAX_K) -> int:
    """The largest k ``lesion_study`` should try on ``model``: ``limit``, or every block
    when the net has fewer (ResNet-8 has 3, ResNet-14 has 6)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
    return min(limit, len(block_names(model)))


@dataclass(frozen=True)
class LesionResult:
    label: str  # the model, for titles: "ResNet(A)-20"
    baseline_acc: float  # accuracy of the intact model on the given images
    single: list[dict[str, Any]]  # per block, forward order: block, acc, drop (baseline - acc), downsampling
    random_k: list[dict[str, Any]]  # per k = 0..max_k: k, mean_acc, std_acc (population), trials
    plain: bool  # True when no block has a skip path
    note: str  # what deleting a block meant for this net

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Deleted(nn.Module):
    """Stands in for a deleted block: ``y = relu_out(shortcut(x))``.

    The attribute names match the block's, so while a block is deleted the model's
    state_dict is the intact one minus that block's branch (a projection keeps its keys).
    """

    def __init__(self, shortcut: nn.Module, relu_out: nn.Module) -> None:
        super().__init__()
        self.shortcut = shortcut
        self.relu_out = relu_out

    def forward(self, x: Tensor) -> Tensor:
        return self.relu_out(self.shortcut(x))


def _cifar_block(block: nn.Module) -> BasicBlock | Bottleneck:
    # get_block also finds torchvision's blocks; a stand-in needs the CIFAR blocks' attributes.
    if not isinstance(block, (BasicBlock, Bottleneck)):
        raise ValueError(f"the lesion study deletes CIFAR ResNet blocks, not {type(block).__name__}")
    return block


def _io_channels(block: nn.Module) -> tuple[int, int]:
    b = _cifar_block(block)
    return b.conv1.in_channels, b.last_bn.num_features


def _changes_shape(block: nn.Module) -> bool:
    in_ch, out_ch = _io_channels(block)
    return _cifar_block(block).stride != 1 or in_ch != out_ch


def _stand_in(module: nn.Module) -> _Deleted:
    block = _cifar_block(module)
    if block.shortcut is not None:
        skip = block.shortcut  # the block's own module (shared, not copied): same weights, same hooks
    elif _changes_shape(block):
        skip = PadShortcut(*_io_channels(block), block.stride)  # no parameters: nothing to place on a device
    else:
        skip = nn.Identity()
    sub = _Deleted(skip, block.relu_out)
    sub.training = block.training  # train() would also flip the shared shortcut's flag
    return sub


def _check_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        raise ValueError(f"pass a list of block names, not one string (did you mean [{names!r}]?)")
    names = list(names)
    seen: set[str] = set()
    for name in names:
        get_block(model, name)  # ValueError naming the bad block
        if name in seen:
            raise ValueError(f"block {name!r} is listed twice; list each block to delete once")
        seen.add(name)
    return names


@contextmanager
def deleted_blocks(model: nn.Module, names: Sequence[str]) -> Iterator[nn.Module]:
    """``model`` with the named blocks deleted (see the module docstring) inside the body.

    Each block is swapped out of its parent (an ``nn.Sequential`` stage) for a stand-in and
    put back in ``finally``, at the same position; the ``training`` flags of the blocks'
    modules are restored too. Not thread-safe: do not run the same model object elsewhere
    meanwhile.
    """
    names = _check_names(model, names)
    blocks = [(name, get_block(model, name)) for name in names]
    modes = [(m, m.training) for _, blk in blocks for m in blk.modules()]
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for name, blk in blocks:
            parent_name, _, key = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            # Module.__setattr__ replaces the entry of parent._modules in place, so a
            # Sequential keeps its order.
            setattr(parent, key, _stand_in(blk))
            swapped.append((parent, key, blk))
        yield model
    finally:
        for parent, key, original in reversed(swapped):
            setattr(parent, key, original)
        for m, training in modes:
            m.training = training


def _subsets(n: int, k: int, trials: int, rng: random.Random) -> list[tuple[int, ...]]:
    """Up to ``trials`` distinct k-subsets of range(n), sorted; all of them if there are fewer."""
    if math.comb(n, k) <= trials:
        return list(itertools.combinations(range(n), k))  # exhaustive beats sampling with repeats
    chosen: dict[tuple[int, ...], None] = {}  # insertion-ordered set: reproducible for a seed
    while len(chosen) < trials:
        chosen[tuple(sorted(rng.sample(range(n), k)))] = None
    return list(chosen)


def _note(model: nn.Module, names: list[str], plain: bool) -> str:
    if plain:
        return (
            "Plain net: a block has no skip path, so deleting it lets its input through unchanged "
            "(identity), or through the parameter-free option-A mapping (stride-2 subsampling, "
            "zero-padded channels) where the block changes the shape. Every later layer was trained "
            "on the block's output, not its input, so accuracy is expected to collapse."
        )
    kinds = {type(get_block(model, n).shortcut) for n in names if _changes_shape(get_block(model, n))}
    where = ""
    if PadShortcut in kinds:
        where = " At the downsampling blocks the skip is option A: stride-2 subsampling with zero-padded channels."
    elif Projection in kinds:
        where = " At the downsampling blocks the skip is a 1x1 conv + BN projection, and the ReLU then matters."
    return (
        "Residual net: deleting a block removes its residual branch F and keeps its skip path "
        "(Veit et al. 2016), so the block computes relu(shortcut(x)); with an identity skip this "
        "is x itself." + where
    )


def _check_inputs(x: Tensor, y: Tensor, max_k: int | None, n: int, trials: int, batch_size: int) -> int:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be normalized images shaped (N, 3, H, W), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x must be float images normalized like the training data, got {x.dtype}; "
                         "use resnet_viz.data.batches.normalize(x, channels_last=False)")
    if not isinstance(y, Tensor) or y.dim() != 1 or len(y) != len(x) or y.is_floating_point():
        raise ValueError(f"y must be integer labels shaped ({len(x)},) to match x, got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    if len(x) == 0:
        raise ValueError("x holds no images; pass at least one (a few thousand give stable accuracies)")
    for name, v in (("trials", trials), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if max_k is None:
        return n
    if isinstance(max_k, bool) or not isinstance(max_k, int) or not 0 <= max_k <= n:
        raise ValueError(f"max_k must be an integer from 0 to {n} (the number of blocks), got {max_k!r}")
    return max_k


class _Lesions:
    """Accuracy of ``model`` with a set of its blocks deleted; each set is evaluated once
    (the baseline and single blocks come up again among the random subsets), and every
    request, evaluated or not, counts one step of progress."""

    def __init__(self, model: nn.Module, names: list[str], x: Tensor, y: Tensor, batch_size: int, total: int,
                 progress: ProgressFn | None, stop: threading.Event | None) -> None:
        self.model, self.names, self.x, self.y, self.batch_size = model, names, x, y, batch_size
        self.total, self.progress, self.stop = total, progress, stop
        self.cache: dict[frozenset[int], float] = {}
        self.done = 0

    def __call__(self, subset: tuple[int, ...], message: str) -> float:
        key = frozenset(subset)
        if key not in self.cache:
            check(self.stop)
            with deleted_blocks(self.model, [self.names[i] for i in subset]):
                self.cache[key] = accuracy(self.model, self.x, self.y, self.batch_size, self.stop)
        self.done += 1
        report(self.progress, self.done / self.total, message)
        return self.cache[key]


def lesion_study(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    max_k: int | None = None,
    trials: int = 5,
    seed: int = 0,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    label: str = "",
) -> LesionResult:
    """Accuracy on (x, y) with each block deleted alone, then with k random blocks deleted.

    ``x`` are normalized images (N, 3, H, W) and ``y`` their labels. For each k from 0 to
    ``max_k`` (default: all blocks), ``trials`` distinct random subsets of k blocks (seeded
    by ``seed``; every subset when there are no more than ``trials``) are deleted together;
    ``random_k`` gives the mean and population std of their accuracies. A subset that was
    already evaluated (the baseline, single blocks) is not run again. ``batch_size`` is
    small on purpose: on a CPU, batches of 64 ran twice as fast as 250 or 500 (ResNet-20,
    one thread), the larger ones' activations falling out of cache. ``progress`` is called
    after every configuration; ``stop`` is checked between batches. Blocks are deleted
    from a private copy: the caller's model is never touched, so another thread (a second
    experiment on the same model) may use it meanwhile.
    """
    model = copy.deepcopy(model)
    names = block_names(model)
    if not names:
        raise ValueError("the model has no blocks to delete; lesion studies need a CifarResNet")
    n = len(names)
    max_k = _check_inputs(x, y, max_k, n, trials, batch_size)
    blocks = [get_block(model, name) for name in names]
    plain = all(b.shortcut is None for b in blocks)
    rng = random.Random(seed)
    per_k = [_subsets(n, k, trials, rng) for k in range(max_k + 1)]
    total = 1 + n + sum(len(s) for s in per_k)
    param = next(model.parameters(), None)
    if param is not None:
        x, y = x.to(param.device), y.to(param.device)

    evaluate = _Lesions(model, names, x, y, batch_size, total, progress, stop)
    baseline = evaluate((), "intact model")
    single = []
    for i, (name, blk) in enumerate(zip(names, blocks, strict=True)):
        acc = evaluate((i,), f"without {name}")
        single.append({"block": name, "acc": acc, "drop": baseline - acc, "downsampling": _changes_shape(blk)})
    random_k = []
    for k, subsets in enumerate(per_k):
        accs = [evaluate(s, f"{k} random blocks deleted, trial {t + 1}/{len(subsets)}")
                for t, s in enumerate(subsets)]
        random_k.append({"k": k, "mean_acc": statistics.fmean(accs), "std_acc": statistics.pstdev(accs),
                         "trials": len(accs)})
    config = getattr(model, "config", None)
    return LesionResult(
        label=label or str(getattr(config, "label", type(model).__name__)),
        baseline_acc=baseline, single=single, random_k=random_k, plain=plain,
        note=_note(model, names, plain),
    )
