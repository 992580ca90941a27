"""Batched data augmentation and batching on the training device (airbench style).

The whole training set lives on the device as uint8; each batch is gathered, cropped and
flipped there in a few tensor ops, and only then converted to normalized float32. Per-image
Python loops (or a DataLoader with PIL transforms) would cost more than the ResNet's own
forward pass on CPU; here a batch of 128 takes well under a millisecond.

Randomness never comes from the global RNG: every batch is a pure function of
``(seed, step)``, so a run resumed at step k sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from resnet_viz.data.sources import CIFAR10_MEAN, CIFAR10_STD, DataError

_MASK64 = (1 << 64) - 1
_TAG_EPOCH, _TAG_AUGMENT = 1, 2  # separate random streams for shuffling and augmentation


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 finalizer): nearby inputs give unrelated seeds."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h >> 1  # torch.Generator.manual_seed wants a non-negative int64


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise DataError(f"expected a batch of images shaped (B, C, H, W), got shape {tuple(x.shape)}")


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each image by ``pad`` and cut an HxW window at a random offset in [0, 2*pad].

    x: (B, C, H, W), any dtype; returns the same shape and dtype. One gather for the batch.
    """
    return _crop_flip(x, pad, generator, flip=False)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2. x: (B, C, H, W), any dtype."""
    _check_images(x)
    flip = (torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _crop_flip(
    x: torch.Tensor, pad: int, generator: torch.Generator, flip: bool = True,
    part: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``random_flip(random_crop(x, pad, g), g)`` in a single gather (same random draws, same result).

    The flip only reverses the column order of each window, so it folds into the gather index
    for free instead of costing two more batch-sized copies.

    ``part=(lo, n)``: ``x`` holds rows ``lo:lo+B`` of a batch of ``n`` images. The random
    numbers are drawn for all ``n`` and those of these rows used, so a process that
    augments only its shard gets exactly the pixels the whole batch would have had there.
    """
    _check_images(x)
    if pad < 0:
        raise DataError(f"crop padding must be >= 0, got {pad}")
    b, c, h, w = x.shape
    lo, n = part if part is not None else (0, b)
    if not (lo >= 0 and lo + b <= n):
        raise DataError(f"rows {lo}:{lo + b} are not inside a batch of {n} images")
    wp = w + 2 * pad
    dev = generator.device  # random numbers drawn where the generator lives: same on every device
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=dev)[:, lo : lo + b]  # (2, B)
    offsets = offsets.to(x.device)
    cols = torch.arange(w, device=x.device).expand(b, w)  # (B, W)
    if flip:
        flipped = (torch.rand(n, generator=generator, device=dev)[lo : lo + b] < 0.5).to(x.device)  # (B,)
        cols = torch.where(flipped[:, None], w - 1 - cols, cols)
    padded = F.pad(x, (pad, pad, pad, pad)).reshape(b, c, -1)  # (B, C, Hp*Wp), zeros = black border
    rows = torch.arange(h, device=x.device)[None, :, None] * wp  # (1, H, 1)
    index = (rows + cols[:, None, :]).reshape(b, -1) + (offsets[0] * wp + offsets[1])[:, None]  # (B, H*W)
    return padded.gather(2, index[:, None, :].expand(b, c, h * w)).reshape(b, c, h, w)


def _affine(mean: Sequence[float], std: Sequence[float], scale: float, device: torch.device) -> torch.Tensor:
    """(2, 1, C, 1, 1) float32: the multiplier 1/(scale*std) and the offset -mean/std."""
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    return torch.stack([1.0 / (scale * s), -m / s]).to(torch.float32).view(2, 1, -1, 1, 1).to(device)


def _apply(x: torch.Tensor, affine: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last:
        # Re-laying out uint8 moves a quarter of the bytes of float32, and the float copy below
        # keeps the layout: one big allocation per batch instead of two.
        x = x.contiguous(memory_format=torch.channels_last)
    # One multiply-add instead of divide, subtract, divide.
    return x.to(torch.float32).mul_(affine[0]).add_(affine[1])


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    channels_last: bool = True,
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 ``(x/255 - mean)/std``; float input is taken as already in [0, 1]."""
    _check_images(x)
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise DataError(f"mean/std have {len(mean)}/{len(std)} entries but the images have {x.shape[1]} channels")
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    return _apply(x, _affine(mean, std, scale, x.device), channels_last)


class BatchStream:
    """Training batches for global steps: a seeded shuffle per epoch, last partial batch dropped.

    ``batch(step)`` depends only on ``(seed, step)``: the epoch's permutation comes from
    ``(seed, epoch)`` and the crop/flip randomness from ``(seed, step)``, whatever the device.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        augment: bool,
        device: torch.device | str,
        channels_last: bool = True,
        pad: int = 4,
    ) -> None:
        _check_images(x)
        if x.dtype != torch.uint8:
            raise DataError(f"BatchStream wants uint8 images (ImageData.train_x), got {x.dtype}")
        if y.shape != (len(x),):
            raise DataError(f"{len(x)} images but labels shaped {tuple(y.shape)}")
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        if pad < 0:
            raise DataError(f"crop padding must be >= 0, got {pad}")
        if batch_size > len(x):
            raise DataError(
                f"batch size {batch_size} is larger than the training set ({len(x)} images); "
                "lower the batch size or use more data"
            )
        self.device = torch.device(device)
        self.x = x.to(self.device).contiguous()  # (N, C, H, W) uint8, moved once
        self.y = y.to(self.device, dtype=torch.int64)  # (N,)
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.channels_last = channels_last
        self.pad = pad
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.int64)
        # Built once: a per-batch host-to-device copy would make CUDA wait every step.
        self._affine = _affine(CIFAR10_MEAN, CIFAR10_STD, 255.0, self.device)

    def steps_per_epoch(self) -> int:
        return len(self.x) // self.batch_size

    def epoch_permutation(self, epoch: int) -> torch.Tensor:
        """The shuffled image order of ``epoch`` (N,), on the device; cached for the current epoch."""
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(_mix(self.seed, _TAG_EPOCH, epoch))
            # Drawn on the CPU so every device sees the same order.
            self._perm = torch.randperm(len(self.x), generator=gen).to(self.device)
            self._epoch = epoch
        return self._perm

    def batch(self, step: int, rows: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) float32, normalized, and labels (B,) int64 of global step ``step``.

        ``rows=(lo, hi)``: only rows ``lo:hi`` of that batch (one process's shard of the global
        batch), gathered and augmented alone yet identical to the same rows of the whole batch.
        """
        if step < 0:
            raise DataError(f"step must be >= 0, got {step}")
        lo, hi = rows if rows is not None else (0, self.batch_size)
        if not 0 <= lo < hi <= self.batch_size:
            raise DataError(f"rows {lo}:{hi} are not a slice of a batch of {self.batch_size}")
        epoch, i = divmod(step, self.steps_per_epoch())
        start = i * self.batch_size
        idx = self.epoch_permutation(epoch)[start + lo : start + hi]
        xb = self.x[idx]  # (hi - lo, C, H, W) uint8
        if self.augment:
            gen = torch.Generator().manual_seed(_mix(self.seed, _TAG_AUGMENT, step))
            # Crop and flip on uint8: a quarter of the bytes that float32 would move.
            xb = _crop_flip(xb, self.pad, gen, part=(lo, self.batch_size))
        return _apply(xb, self._affine, self.channels_last), self.y[idx]


def eval_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    device: torch.device | str,
    channels_last: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All of (x, y) in order, in batches (the last may be smaller), normalized, not augmented."""
    _check_images(x)
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    if x.dtype != torch.uint8:
        raise DataError(f"eval_batches wants uint8 images (ImageData.test_x), got {x.dtype}")
    device = torch.device(device)
    affine = _affine(CIFAR10_MEAN, CIFAR10_STD, 255.0, device)
    for lo in range(0, len(x), batch_size):
        xb = x[lo : lo + batch_size].to(device)  # (b, C, H, W) uint8
        yield _apply(xb, affine, channels_last), y[lo : lo + batch_size].to(device, dtype=torch.int64)
