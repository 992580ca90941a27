"""How much of the server one app process lets its visitors use (stdlib only).

A teacher serving the app to a class runs every visitor's training, experiments and
uploads in one process on one machine: one run that needs more memory than the machine
has gets the whole server killed by the kernel, with every session in it. These limits
are checked before anything is created (a run folder, a thread, a decoded image), and a
refusal says which limit and what to change.

Most limits are server-wide; ``max_runs_per_visitor`` and ``max_tasks_per_visitor`` bound
what one visitor (``access.Visitor``) may hold of them, so one visitor cannot fill the queue
for the class. The server's operator (the command line) has no per-visitor limit.

Every limit is read from an environment variable (``ENV``); the defaults suit a 2-core,
24 GB machine. ``ServerLimits.from_env()`` raises a ``ValueError`` naming the variable
when a value cannot be read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

GB = 1024**3

# The share of physical memory a training run may use: the rest is for the app itself,
# the data set it holds, the experiments and the operating system.
TRAIN_MEMORY_FRACTION = 0.5
_FALLBACK_RAM = 8 * GB  # when the platform cannot tell its physical memory

# field name -> environment variable
ENV: dict[str, str] = {
    "max_runs": "RESNET_VIZ_MAX_RUNS",
    "max_tasks": "RESNET_VIZ_MAX_TASKS",
    "max_runs_per_visitor": "RESNET_VIZ_MAX_RUNS_PER_VISITOR",
    "max_tasks_per_visitor": "RESNET_VIZ_MAX_TASKS_PER_VISITOR",
    "max_uploads": "RESNET_VIZ_MAX_UPLOADS",
    "max_upload_megapixels": "RESNET_VIZ_MAX_UPLOAD_MEGAPIXELS",
    "max_train_gb": "RESNET_VIZ_MAX_TRAIN_GB",
    "max_params_millions": "RESNET_VIZ_MAX_PARAMS_MILLIONS",
    "max_steps": "RESNET_VIZ_MAX_STEPS",
}


def physical_memory() -> int:
    """Bytes of physical memory, or a fallback where the platform cannot tell (Windows)."""
    try:
        n = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_RAM
    return n if n > 0 else _FALLBACK_RAM


def default_train_gb() -> float:
    return round(physical_memory() * TRAIN_MEMORY_FRACTION / GB, 1)


@dataclass(frozen=True)
class ServerLimits:
    """What one app process allows all its visitors together."""

    max_runs: int = 8  # training runs queued or running at once (one trains; the rest wait)
    max_tasks: int = 2  # experiment tasks running at once: one per core
    max_runs_per_visitor: int = 4  # of those runs, one visitor's (the degradation experiment queues 4)
    max_tasks_per_visitor: int = 2  # of those tasks, one visitor's (a class: set 1, the other core is someone else's)
    max_uploads: int = 8  # images in one upload
    max_upload_megapixels: float = 64.0  # their pixels together, from the headers (one image may have 40)
    max_train_gb: float = 12.0  # estimated memory of one training run
    max_params_millions: float = 30.0  # parameters of a model to train
    max_steps: int = 100_000  # a run's step budget: the paper's 64k fits

    def __post_init__(self) -> None:
        for name in ("max_runs", "max_tasks", "max_runs_per_visitor", "max_tasks_per_visitor", "max_uploads",
                     "max_steps"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")
        for name in ("max_upload_megapixels", "max_train_gb", "max_params_millions"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")

    @property
    def max_train_bytes(self) -> int:
        return int(self.max_train_gb * GB)

    @property
    def max_params(self) -> int:
        return int(self.max_params_millions * 1e6)

    @property
    def max_upload_pixels(self) -> int:
        return int(self.max_upload_megapixels * 1e6)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerLimits:
        """The limits from ``env`` (``os.environ`` by default): each variable of ``ENV``
        that is set and non-empty replaces its default."""
        env = os.environ if env is None else env
        values: dict[str, int | float] = {"max_train_gb": default_train_gb()}
        for name, var in ENV.items():
            raw = env.get(var, "").strip()
            if raw:
                values[name] = _parse(var, raw, whole=isinstance(getattr(cls, name), int))
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as e:  # name the variable, not the field, for the person who set it
            name = str(e).split(" ", 1)[0]
            raise ValueError(f"{ENV.get(name, name)}: {e}") from None


def _parse(var: str, raw: str, *, whole: bool) -> int | float:
    kind = "a whole number >= 1" if whole else "a positive number"
    try:
        v: int | float = int(raw) if whole else float(raw)
    except ValueError:
        raise ValueError(f"{var}={raw!r} is not {kind}; set it to {kind} or unset it for the default") from None
    if not (math.isfinite(v) and v > 0 and (not whole or v >= 1)):
        raise ValueError(f"{var}={raw!r} is not {kind}; set it to {kind} or unset it for the default")
    return v


def server_limits() -> ServerLimits:
    """The limits of this process, read from the environment now."""
    return ServerLimits.from_env()
