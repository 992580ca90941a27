"""Learning-rate schedules as pure functions of the step (so a resumed run continues exactly)."""

from __future__ import annotations

import math

from resnet_viz.config import TrainConfig

PAPER_WARMUP_STEPS = 400  # He et al.: 0.01 "until the training error is below 80% (about 400 iterations)"
PAPER_MILESTONES = (0.5, 0.75)  # 32k and 48k of the paper's 64k iterations


def lr_at(step: int, total: int, cfg: TrainConfig, depth: int = 20) -> float:
    """The learning rate for optimizer step ``step`` (0-based) of ``total``."""
    t = min(max(step, 0), total) / max(total, 1)
    peak = cfg.lr
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "onecycle":
        # Rise linearly from peak/10 to peak, then fall linearly to zero: for brief runs a
        # linear decay to zero beats a cosine tail at the same budget (airbench, tweaked here).
        w = cfg.warmup_fraction
        if t < w:
            return peak * (0.1 + 0.9 * t / w)
        return peak * max(0.0, (1.0 - t) / (1.0 - w))
    if cfg.schedule == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.schedule == "paper":
        warm = cfg.paper_warmup if cfg.paper_warmup is not None else depth >= 110
        if warm and step < PAPER_WARMUP_STEPS:
            return peak / 10
        drops = sum(t >= m for m in PAPER_MILESTONES)
        return peak * (0.1**drops)
    raise ValueError(f"unknown LR schedule {cfg.schedule!r}")
