"""Model + optimizer checkpoints as one safetensors file.

Layout of the file:

* ``model.<key>``: every tensor of the model's ``state_dict()``;
* ``optim.state.<param index>.<name>``: every tensor of the optimizer's per-parameter
  state (momentum buffers, Adam moments, ...);
* metadata (string to string, JSON inside): ``meta`` (step, epoch, ... as the trainer
  likes), ``optim.param_groups`` and ``optim.scalars`` (per-parameter state that is not a
  tensor, e.g. a ``None`` momentum buffer), plus a format version.

safetensors rather than ``torch.save`` because loading a pickle runs arbitrary code, and
the app loads checkpoints that users upload or copy around.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from resnet_viz.fsutil import atomic_path

FORMAT_VERSION = "1"
MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim.state."
# A safetensors header is JSON describing tensors; anything this large is garbage, and
# bounding it keeps a corrupt length field from making us allocate gigabytes.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint cannot be written (bad input) or read (missing, truncated, corrupt)."""


@dataclass
class Checkpoint:
    model_state: dict[str, torch.Tensor]
    # In ``torch.optim.Optimizer.state_dict()`` format, ready for ``load_state_dict``;
    # None when the checkpoint was saved without an optimizer.
    optimizer_state: dict[str, Any] | None
    meta: dict[str, Any]


def _to_json(value: Any, what: str) -> str:
    try:
        # NaN/inf are allowed on purpose: a diverged run's last loss is worth keeping,
        # and Python's json reads them back.
        return json.dumps(value)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{what} cannot be stored as JSON ({e}); keep it to numbers, strings, booleans, None, lists and dicts"
        ) from None


def _plain(t: torch.Tensor, seen: set[int]) -> torch.Tensor:
    # safetensors wants dense, CPU, contiguous tensors; channels_last weights are not
    # contiguous. It also refuses two entries sharing memory (tied weights), hence the clone.
    t = t.detach().to("cpu").contiguous()
    if t.numel() and t.untyped_storage().data_ptr() in seen:
        t = t.clone()
    seen.add(t.untyped_storage().data_ptr())
    return t


def save_checkpoint_file(
    path: Path,
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
) -> None:
    """Write a checkpoint atomically: readers see the previous file or this one, never a mix."""
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model_state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"model state entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[MODEL_PREFIX + key] = _plain(value, seen)
    metadata = {
        "format": "pt",
        "resnet_viz.checkpoint": FORMAT_VERSION,
        "meta": _to_json(dict(meta), "checkpoint meta"),
    }
    if optimizer_state is not None:
        state = optimizer_state.get("state")
        groups = optimizer_state.get("param_groups")
        if not isinstance(state, Mapping) or not isinstance(groups, (list, tuple)):
            raise CheckpointError(
                "optimizer_state must be what torch.optim.Optimizer.state_dict() returns "
                "(a dict with 'state' and 'param_groups')"
            )
        scalars: dict[str, dict[str, Any]] = {}
        for idx, entries in state.items():
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise CheckpointError(f"optimizer state is keyed by {idx!r}; expected integer parameter indices")
            for name, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{OPTIM_PREFIX}{idx}.{name}"] = _plain(value, seen)
                else:
                    scalars.setdefault(str(idx), {})[name] = value
        metadata["optim.param_groups"] = _to_json(list(groups), "optimizer param_groups")
        metadata["optim.scalars"] = _to_json(scalars, "optimizer state")
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def load_checkpoint_file(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint; any problem with the file becomes a CheckpointError saying what."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.name} is missing")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except (OSError, SafetensorError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e})") from None
    version = metadata.get("resnet_viz.checkpoint")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name} has checkpoint format {version!r}, this version reads {FORMAT_VERSION!r}"
        )
    for key, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"tensor {key!r} holds NaN or infinite values (the run diverged before this save)")
    try:
        meta = json.loads(metadata.get("meta", "{}"))
        groups = json.loads(metadata["optim.param_groups"]) if "optim.param_groups" in metadata else None
        scalars = json.loads(metadata.get("optim.scalars", "{}"))
    except ValueError as e:
        raise CheckpointError(f"{path.name} has garbled metadata ({e})") from None
    if not isinstance(meta, dict) or not isinstance(scalars, dict):
        raise CheckpointError(f"{path.name} has garbled metadata (meta or optimizer state is not a JSON object)")

    model_state: dict[str, torch.Tensor] = {}
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        if key.startswith(MODEL_PREFIX):
            model_state[key[len(MODEL_PREFIX):]] = t
        elif key.startswith(OPTIM_PREFIX) and groups is not None:
            idx, _, name = key[len(OPTIM_PREFIX):].partition(".")
            if not idx.isdigit() or not name:
                raise CheckpointError(f"{path.name} has a malformed optimizer entry {key!r}")
            state.setdefault(int(idx), {})[name] = t
        else:
            raise CheckpointError(f"{path.name} has an unexpected entry {key!r}")
    optimizer_state = None
    if groups is not None:
        for idx, entries in scalars.items():
            if not str(idx).isdigit() or not isinstance(entries, dict):
                raise CheckpointError(f"{path.name} has malformed optimizer state for parameter {idx!r}")
            state.setdefault(int(idx), {}).update(entries)
        optimizer_state = {"state": state, "param_groups": groups}
    return Checkpoint(model_state=model_state, optimizer_state=optimizer_state, meta=meta)


def checkpoint_problem(path: Path) -> str | None:
    """A cheap health check for listings: reads only the header, not the tensors.

    Returns None for a file that looks whole, else the reason (missing, truncated,
    garbled header). Bit flips inside tensor data are only caught by a full load.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            n = int.from_bytes(head, "little")
            if n > min(size - 8, _MAX_HEADER_BYTES):
                return f"{path.name} is truncated or its header is garbled"
            header = json.loads(f.read(n))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except FileNotFoundError:
        return f"{path.name} is missing"
    except OSError as e:
        return f"{path.name} cannot be read ({e.strerror or e})"
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return f"{path.name} has a garbled header"
    expected = 8 + n + end
    if size < expected:
        return f"{path.name} is truncated ({size} of {expected} bytes)"
    return None
