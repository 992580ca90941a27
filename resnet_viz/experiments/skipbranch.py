"""Skip and branch per block over training, from the trainer's probe records.

Every probed step records, per residual block, ||F(x)|| / ||x|| (how much the branch adds
against what the skip passes on) and cos(F(x), x). This module turns those records into
depth x step matrices (for heatmaps) and a short reading in words of what *this* run's
numbers show; it never claims what they do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from resnet_viz.fsutil import as_number


@dataclass(frozen=True)
class SkipBranch:
    blocks: list[str]  # forward order (stage1.block0 first)
    steps: list[int]  # probed steps
    ratio: list[list[float | None]]  # [block][step]
    cos: list[list[float | None]]
    reading: str

    def to_dict(self) -> dict:
        return asdict(self)


def _matrix(probes: Sequence[dict], blocks: list[str], stat: str) -> list[list[float | None]]:
    out = []
    for b in blocks:
        row = []
        for p in probes:
            v = p["blocks"].get(b, {}).get(stat)
            row.append(as_number(v, finite=True))
        out.append(row)
    return out


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def skip_branch(records: Sequence[dict]) -> SkipBranch:
    """Matrices and a reading from one run's records (``kind == "probe"``)."""
    probes = [r for r in records if r.get("kind") == "probe" and isinstance(r.get("blocks"), dict)]
    if not probes:
        return SkipBranch([], [], [], [], "This run has no per-block probes yet (the trainer records them "
                                           "every 10th step by default).")
    blocks = list(probes[-1]["blocks"])
    ratio, cos = _matrix(probes, blocks, "ratio"), _matrix(probes, blocks, "cos")
    steps = [int(p["step"]) for p in probes]
    return SkipBranch(blocks, steps, ratio, cos, _reading(blocks, steps, ratio, cos))


def _reading(blocks: list[str], steps: list[int], ratio: list[list[float | None]],
             cos: list[list[float | None]]) -> str:
    first = [row[0] for row in ratio]
    last = [row[-1] for row in ratio]
    if all(v is None for v in last):
        return ("This is a plain net: no block has a skip path, so there is no branch-to-skip ratio. "
                "Compare its activation and gradient norms with a residual run instead.")
    m0, m1 = _mean(first), _mean(last)
    parts = [f"At step {steps[-1]:,} the residual branches add on average {m1:.0%} of the signal their "
             f"skip passes on (||F(x)||/||x||), against {m0:.0%} at step {steps[0]:,}."]
    ranked = sorted(((v, b) for v, b in zip(last, blocks, strict=True) if v is not None), reverse=True)
    if ranked:
        top = ", ".join(f"{b} ({v:.0%})" for v, b in ranked[:2])
        parts.append(f"The largest contributions are in {top}.")
        small = [b for v, b in ranked if v < 0.25]
        if small:
            parts.append(f"{len(small)} of {len(ranked)} blocks add less than a quarter of their input: "
                         "they stay close to the identity, which is the residual idea at work.")
    c1 = _mean([row[-1] for row in cos])
    if c1 is not None:
        how = "mostly opposes" if c1 < -0.2 else "mostly follows" if c1 > 0.2 else "is nearly orthogonal to"
        parts.append(f"The mean cosine of F(x) with x is {c1:+.2f}: each branch {how} its skip signal.")
    return " ".join(parts)
