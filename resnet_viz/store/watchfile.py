"""A run's "watch it learn" frames: the file format and its reader (``training.watch`` writes it).

``runs/<run-id>/watch.jsonl`` is append-only, one JSON object per line, like ``metrics.jsonl``:

- first an "image" record, once: the fixed test image every frame shows (uint8 pixels,
  base64), its label and class name, the blocks whose maps are kept, the parameter groups
  and the histogram bin edges (``EDGES``, the same for every group, run and step, so any two
  histograms can be overlaid);
- then one "frame" record per recorded step: ``step`` = optimizer updates done before it (0:
  the initial weights); per block, a few feature maps of the image quantized to uint8 with
  their range (``lo``, ``hi``); per parameter group, the counts of its weights and of their
  gradients in the bins of ``EDGES`` (counts only: they sum to the group's parameter count).

A default ResNet-20 run of ~64 frames takes about 1 MB (README, "A net you watch learn").
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_viz.fsutil import read_jsonl, truncate_lines, write_text_atomic

WATCH_FILE = "watch.jsonl"
# Symmetric log-spaced bin edges: 3 bins a decade for |v| from 1e-8 to 10, and one bin for
# (-1e-8, 1e-8) that holds exact zeros (zero-initialized biases). Weights (~1e-3 to 1) and
# gradients (~1e-7 to 1e-1) both fit, and fixed edges make every histogram comparable.
# Values beyond +-10 are counted in the outermost bins.
_POS = 10.0 ** (np.arange(-24, 4) / 3.0)  # 1e-8 ... 10
EDGES: np.ndarray = np.concatenate([-_POS[::-1], _POS])  # 56 edges, 55 bins
N_BINS = len(EDGES) - 1


def encode_u8(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode("ascii")


def decode_u8(text: str, shape: tuple[int, ...]) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    if a.size != int(np.prod(shape)):
        raise ValueError(f"a stored map has {a.size} values, its shape {shape} needs {int(np.prod(shape))}")
    return a.reshape(shape)


@dataclass(frozen=True)
class Maps:
    """One block's maps at one step: ``channels[i]`` is the channel of ``values[i]``, -1 for
    the mean over all channels."""

    channels: list[int]
    values: np.ndarray  # (k, H, W) float32, dequantized


@dataclass(frozen=True)
class Frame:
    step: int
    maps: dict[str, Maps]
    weights: dict[str, np.ndarray]  # group -> (N_BINS,) counts
    grads: dict[str, np.ndarray]


@dataclass(frozen=True)
class Watch:
    """Everything a run recorded to watch it learn (``read_watch``)."""

    image: np.ndarray  # (3, 32, 32) uint8
    label: int
    class_name: str
    blocks: list[str]
    groups: list[str]
    edges: np.ndarray
    frames: list[Frame] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return [f.step for f in self.frames]

    def at(self, step: int) -> Frame:
        """The last frame recorded at or before ``step`` (the first if ``step`` precedes all)."""
        if not self.frames:
            raise ValueError("the run has recorded no frames yet")
        best = self.frames[0]
        for f in self.frames:
            if f.step <= step:
                best = f
        return best


def append(run_path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Append records as one write (fewer torn lines on a crash); readers see them at once."""
    blob = "".join(json.dumps(dict(r), separators=(",", ":")) + "\n" for r in records).encode("utf-8")
    with open(Path(run_path) / WATCH_FILE, "ab") as f:
        f.write(blob)


def rewind(run_path: Path, start_step: int) -> bool:
    """Prepare the file for a run that continues from ``start_step``: drop a torn last line
    and every frame at ``start_step`` or later (a resumed run records them again, so none
    appears twice). True if the image record is there (it is written once)."""
    path = Path(run_path) / WATCH_FILE
    truncate_lines(path)
    records, _ = read_jsonl(path)
    keep = [r for r in records if r.get("kind") == "image" or int(r.get("step", 0)) < start_step]
    if len(keep) != len(records):
        write_text_atomic(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in keep))
    return any(r.get("kind") == "image" for r in keep)


def _decode_frame(rec: Mapping[str, Any], groups: list[str]) -> Frame:
    maps = {}
    for block, m in rec.get("maps", {}).items():
        shape = tuple(int(v) for v in m["shape"])
        q = decode_u8(m["data"], shape).astype(np.float32) / 255.0
        lo, hi = np.asarray(m["lo"], np.float32), np.asarray(m["hi"], np.float32)
        values = lo[:, None, None] + q * (hi - lo)[:, None, None]
        maps[block] = Maps(channels=[int(c) for c in m["channels"]], values=values)

    def hists(key: str) -> dict[str, np.ndarray]:
        counts = rec.get(key) or {}
        return {g: np.asarray(counts[g], dtype=np.int64) for g in groups if g in counts}

    return Frame(step=int(rec["step"]), maps=maps, weights=hists("weights"), grads=hists("grads"))


def read_watch(run_path: Path) -> Watch | None:
    """The run's frames in step order, or None if it recorded none (older runs, ``watch_every=0``).
    A damaged frame is skipped; a damaged image record raises ValueError."""
    records, _ = read_jsonl(Path(run_path) / WATCH_FILE)
    head = next((r for r in records if r.get("kind") == "image"), None)
    if head is None:
        return None
    try:
        groups = [str(g) for g in head["groups"]]
        watch = Watch(image=decode_u8(head["pixels"], (3, 32, 32)), label=int(head["label"]),
                      class_name=str(head.get("class", head["label"])), blocks=[str(b) for b in head["blocks"]],
                      groups=groups, edges=np.asarray(head["edges"], dtype=np.float64))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{WATCH_FILE} of {Path(run_path).name} is damaged: {e}") from None
    frames: dict[int, Frame] = {}
    for r in records:
        if r.get("kind") != "frame":
            continue
        try:
            f = _decode_frame(r, groups)
        except (KeyError, TypeError, ValueError):
            continue
        frames[f.step] = f  # a step written twice (a crash between a frame and its checkpoint): the last wins
    watch.frames.extend(frames[s] for s in sorted(frames))
    return watch


def median_magnitude(counts: np.ndarray, edges: np.ndarray = EDGES) -> float:
    """The median |value| of a histogram over the symmetric ``edges``, to the bin: the geometric
    middle of the |v| bin that holds the median (0 if that is the centre bin)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.sum() <= 0:
        return float("nan")
    mid = len(c) // 2  # the centre bin around 0
    mag = np.concatenate([[c[mid]], c[mid + 1:] + c[:mid][::-1]])  # by |v|: centre, then outwards
    i = int(np.searchsorted(np.cumsum(mag), mag.sum() / 2))
    if i == 0:
        return 0.0
    lo, hi = edges[mid + i], edges[mid + i + 1]
    return float(np.sqrt(lo * hi))
