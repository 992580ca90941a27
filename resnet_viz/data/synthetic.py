"""The synthetic data set: ten classes of shapes and textures, generated, deterministic.

The default when no CIFAR-10 is reachable. Learnable in a brief run but not trivial: the
labelled shape sits over a smaller distractor, at random place, size, tilt and colour,
under uneven lighting and pixel noise, so a net must learn shape rather than colour or
position. With the app's defaults (brief recipe, 3 epochs of 10,000 images) a ResNet-20
passes 80% test accuracy (README, benchmarks/synthetic_quality.py).

Each class is closed under the training augmentation (4-px crop, horizontal flip): every
shape is mirrored at random, so the flip of an image is an image of the same class, never
one the test set lacks (diagonal stripes come in both directions).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from resnet_viz.config import IMAGE_SIZE

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "disc", "square", "triangle", "ring", "cross", "h-stripes", "v-stripes", "d-stripes", "checkerboard", "dots",
)
_SYNTH_CHUNK = 2048  # images generated per vectorized pass: bounds memory for big sets
# Half the labelled shape's width as a share of the image, and the distractor's: the
# distractor is at most 0.65 times the smallest labelled shape, so which one is labelled
# is never in doubt (when the two ranges met, small shapes were coin flips).
MAIN_HALF = (0.20, 0.40)
DISTRACTOR_HALF = (0.07, 0.13)
# Per-channel difference from the background, up or down. Below ~0.18 a fine texture sank
# into the noise and a brief run spent its first epochs at chance.
CONTRAST = (0.18, 0.45)
NOISE = 0.34  # uniform pixel noise, +-0.17
LIGHT_TILT = 0.25  # lighting ramp across the image, per axis
# Tilt of +-0.2 rad (11 degrees) keeps stripe classes 22 degrees apart at worst: at +-20
# degrees horizontal and diagonal stripes came within 5 degrees of each other.
MAX_ANGLE = 0.2
PERIOD_PX = (3.0, 6.0)  # texture period in pixels: finer stripes blur into the noise at 32x32


def _frac(a: np.ndarray) -> np.ndarray:
    return a - np.floor(a)


# Each shape gets (u, v): pixel offsets from the shape's centre, rotated, mirrored and divided
# by its half-size (so the shape spans [-1, 1]), p: texture period in those units, ph: phase.
_SHAPES: tuple[Callable[..., np.ndarray], ...] = (
    lambda u, v, p, ph: u * u + v * v < 1.0,  # disc
    lambda u, v, p, ph: np.maximum(abs(u), abs(v)) < 0.85,  # square
    lambda u, v, p, ph: (v < 0.75) & (abs(u) < (v + 0.95) * 0.6),  # triangle, apex up
    lambda u, v, p, ph: (u * u + v * v < 1.0) & (u * u + v * v > 0.36),  # ring
    lambda u, v, p, ph: ((abs(u) < 0.3) & (abs(v) < 1)) | ((abs(v) < 0.3) & (abs(u) < 1)),  # cross
    lambda u, v, p, ph: _frac(v / p + ph) < 0.5,  # horizontal stripes
    lambda u, v, p, ph: _frac(u / p + ph) < 0.5,  # vertical stripes
    lambda u, v, p, ph: _frac((u + v) / (p * 1.4142) + ph) < 0.5,  # diagonal stripes (mirrored: the other way)
    lambda u, v, p, ph: (np.floor(u / p + ph) + np.floor(v / p + ph)) % 2 == 0,  # checkerboard
    lambda u, v, p, ph: (_frac(u / p + ph) - 0.5) ** 2 + (_frac(v / p + ph) - 0.5) ** 2 < 0.09,  # dots
)
_TEXTURES = frozenset(range(5, 10))  # confined to a square patch so their extent varies too


def _masks(kind: np.ndarray, centre: np.ndarray, half: np.ndarray, angle: np.ndarray,
           mirror: np.ndarray, period: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """(n, H, W) bool: shape ``kind[i]`` centred at ``centre[i]`` (x, y in pixels), ``half[i]``
    pixels from centre to edge, turned by ``angle[i]`` and mirrored left-right where
    ``mirror[i]`` is -1; ``period`` is the texture period in pixels / half."""
    n, s = len(kind), IMAGE_SIZE
    grid = np.arange(s, dtype=np.float32) + 0.5
    mask = np.empty((n, s, s), dtype=bool)
    for c in np.unique(kind):
        i = np.flatnonzero(kind == c)
        dx = grid[None, None, :] - centre[i, 0, None, None]  # (k, 1, W)
        dy = grid[None, :, None] - centre[i, 1, None, None]  # (k, H, 1)
        cos, sin, h = np.cos(angle[i])[:, None, None], np.sin(angle[i])[:, None, None], half[i, None, None]
        u, v = mirror[i, None, None] * (cos * dx + sin * dy) / h, (cos * dy - sin * dx) / h  # (k, H, W)
        m = _SHAPES[c](u, v, period[i, None, None], phase[i, None, None])
        if c in _TEXTURES:
            m &= (abs(u) < 1) & (abs(v) < 1)
        mask[i] = m
    return mask


def _shape_masks(kind: np.ndarray, rng: np.random.Generator, scale: tuple[float, float]) -> np.ndarray:
    """(n, H, W) bool: one shape of class ``kind[i]`` per image, at a random place, size, tilt and
    mirroring. Every draw is symmetric left-right, so each class is closed under a flip."""
    n, s = len(kind), IMAGE_SIZE
    centre = rng.uniform(0.3 * s, 0.7 * s, (n, 2)).astype(np.float32)
    half = (rng.uniform(*scale, n) * s).astype(np.float32)  # half the shape's width, in pixels
    angle = rng.uniform(-MAX_ANGLE, MAX_ANGLE, n).astype(np.float32)
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    period = (rng.uniform(*PERIOD_PX, n) / half).astype(np.float32)  # texture period in pixels / half
    phase = rng.uniform(0.0, 1.0, n).astype(np.float32)
    return _masks(kind, centre, half, angle, mirror, period, phase)


def _synthetic_chunk(y: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Images of labels ``y`` as (n, 3, 32, 32) uint8.

    The labelled shape is drawn over a smaller distractor of a random class, on a background
    with a light gradient and pixel noise, all in random colours: a net must look at shape,
    not colour or position.
    """
    n, s = len(y), IMAGE_SIZE
    main = torch.from_numpy(_shape_masks(y, rng, MAIN_HALF))[:, None]  # (n, 1, H, W)
    other = torch.from_numpy(_shape_masks(rng.integers(0, len(_SHAPES), n), rng, DISTRACTOR_HALF))[:, None]
    bg = torch.from_numpy(rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32))
    # Shape and distractor differ from the background per channel, up or down (whichever
    # stays in [0, 1]): sometimes faint under the noise, never invisible.
    step = rng.uniform(*CONTRAST, (2, n, 3)) * rng.choice([-1.0, 1.0], (2, n, 3))
    step = torch.from_numpy(step.astype(np.float32))  # (2, n, 3): shape, distractor
    fg, dc = torch.where(((bg + step) >= 0) & ((bg + step) <= 1), bg + step, bg - step)  # (n, 3) each
    tilt = torch.from_numpy(rng.uniform(-LIGHT_TILT, LIGHT_TILT, (n, 2)).astype(np.float32))  # uneven lighting
    noise_gen = torch.Generator().manual_seed(int(rng.integers(2**62)))  # torch's rand is much faster

    ramp = (torch.arange(s, dtype=torch.float32) + 0.5 - s / 2) / (s / 2)  # (W,) in [-1, 1]
    light = tilt[:, 0, None, None] * ramp[None, None, :] + tilt[:, 1, None, None] * ramp[None, :, None]
    bg, fg, dc = (c[:, :, None, None] for c in (bg, fg, dc))  # (n, 3, 1, 1) each
    img = torch.where(main, fg, torch.where(other, dc, bg))  # (n, 3, H, W)
    noise = torch.rand((n, 3, s, s), generator=noise_gen).sub_(0.5).mul_(NOISE)
    img = (img + light[:, None] + noise).mul_(255.0).add_(0.5)
    return img.clamp_(0, 255).to(torch.uint8)


def _synthetic_split(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = rng.permutation(np.arange(n) % len(SYNTHETIC_CLASSES))  # balanced to within one image
    x = torch.cat([_synthetic_chunk(y[lo : lo + _SYNTH_CHUNK], rng) for lo in range(0, n, _SYNTH_CHUNK)])
    return x, torch.from_numpy(y.astype(np.int64))


def generate(n_train: int, n_test: int, seed: int) -> dict[str, object]:
    """Train and test tensors for ``seed``; independent streams, so the test set does not
    change when ``n_train`` does."""
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed & (2**64 - 1)).spawn(2))
    train_x, train_y = _synthetic_split(n_train, train_rng)
    test_x, test_y = _synthetic_split(n_test, test_rng)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y,
            "classes": list(SYNTHETIC_CLASSES)}  # fmt: skip
