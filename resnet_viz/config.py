"""Frozen configurations for models, data and training (stdlib only).

Each config validates itself in ``__post_init__`` and raises ``ValueError`` with a message a person can act on;
the CLI prints it and the app shows it. Configs round-trip through plain dicts (``to_dict`` / ``from_dict``):
a run folder's ``config.json`` is the whole truth about a run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

IMAGE_SIZE = 32  # CIFAR images are 32x32; every source is brought to this size
SHORTCUTS: tuple[str, ...] = ("none", "A", "B", "C")
SHORTCUT_HELP: dict[str, str] = {
    "none": "plain net: the same layers with no identity path",
    "A": "identity; zero-padded channels and stride-2 subsampling where the shape changes (no parameters)",
    "B": "identity; a 1x1 conv + BN projection only where the shape changes",
    "C": "a 1x1 conv + BN projection on every block",
}
# Option A's zero channels where the shape changes: appended after the identity (this app's
# nets), or split over both sides (akamaster/pytorch_resnet_cifar10, whose published weights
# work only with theirs: 81% against 13.6% on the CIFAR-10 JPEG copy).
PADS: tuple[str, ...] = ("after", "both")
PAD_HELP: dict[str, str] = {"after": "zeros after the identity (this app)", "both": "on both sides (akamaster)"}
# The per-channel (mean, std) a net's weights were trained with. Every page feeds inputs
# normalized with CIFAR-10's; a net trained with other statistics maps them to its own first.
INPUT_NORMS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
BLOCKS: tuple[str, ...] = ("basic", "bottleneck")
# Layers per block: a basic block has two 3x3 convs, a bottleneck three (1x1, 3x3, 1x1).
LAYERS_PER_BLOCK: dict[str, int] = {"basic": 2, "bottleneck": 3}
MAX_BLOCKS_PER_STAGE = 200
SCHEDULES: tuple[str, ...] = ("onecycle", "cosine", "paper", "constant")
SOURCES: tuple[str, ...] = ("synthetic", "cifar10", "folder")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def depth_for(blocks_per_stage: int, block: str = "basic") -> int:
    """Depth of a CIFAR ResNet with n blocks per stage: 6n+2 (basic) or 9n+2 (bottleneck)."""
    if block not in BLOCKS:
        raise ValueError(f"unknown block type {block!r}; choose one of {', '.join(BLOCKS)}")
    return 3 * LAYERS_PER_BLOCK[block] * blocks_per_stage + 2


def valid_depths(block: str = "basic") -> list[int]:
    return [depth_for(n, block) for n in range(1, MAX_BLOCKS_PER_STAGE + 1)]


def blocks_for_depth(depth: int, block: str = "basic") -> int:
    """The n of depth = 3*L*n + 2, or a ValueError naming the nearest valid depths."""
    if block not in BLOCKS:
        raise ValueError(f"unknown block type {block!r}; choose one of {', '.join(BLOCKS)}")
    per = 3 * LAYERS_PER_BLOCK[block]
    n, rem = divmod(depth - 2, per)
    if rem == 0 and 1 <= n <= MAX_BLOCKS_PER_STAGE:
        return n
    lo = max(1, min(MAX_BLOCKS_PER_STAGE, (depth - 2) // per))
    near = sorted({depth_for(lo, block), depth_for(min(lo + 1, MAX_BLOCKS_PER_STAGE), block)})
    near = [d for d in near if d != depth] or [depth_for(1, block)]
    formula = f"{per}n+2" if block == "basic" else f"{per}n+2 (bottleneck)"
    raise ValueError(
        f"depth {depth} is not {formula} with 1 <= n <= {MAX_BLOCKS_PER_STAGE}; "
        f"nearest valid: {' or '.join(map(str, near))}"
    )


@dataclass(frozen=True)
class ModelConfig:
    """A CIFAR ResNet (He et al. 2015, section 4.2)."""

    depth: int = 20
    shortcut: str = "A"  # one of SHORTCUTS
    block: str = "basic"  # one of BLOCKS
    width: int = 1  # multiplies the 16/32/64 filters of the three stages
    num_classes: int = 10
    zero_init_residual: bool = False  # zero the last BN of each residual branch
    pad: str = "after"  # one of PADS: where option A puts its zero channels
    input_norm: str = "cifar10"  # one of INPUT_NORMS: the normalization the weights expect

    def __post_init__(self) -> None:
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {self.shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
        if self.pad not in PADS:
            raise ValueError(f"unknown option A padding {self.pad!r}; choose one of {', '.join(PADS)}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input normalization {self.input_norm!r}; "
                             f"choose one of {', '.join(INPUT_NORMS)}")
        if self.block not in BLOCKS:
            raise ValueError(f"unknown block type {self.block!r}; choose one of {', '.join(BLOCKS)}")
        for name in ("depth", "width", "num_classes"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        blocks_for_depth(self.depth, self.block)
        if not 1 <= self.width <= 16:
            raise ValueError(f"width multiplier must be between 1 and 16, got {self.width}")
        if not 2 <= self.num_classes <= 100_000:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")

    @property
    def blocks_per_stage(self) -> int:
        return blocks_for_depth(self.depth, self.block)

    @property
    def stage_widths(self) -> tuple[int, int, int]:
        return (16 * self.width, 32 * self.width, 64 * self.width)

    @property
    def label(self) -> str:
        kind = "plain" if self.shortcut == "none" else f"ResNet({self.shortcut})"
        extra = "" if self.block == "basic" else "-bottleneck"
        extra += "" if self.width == 1 else f"-x{self.width}"
        # Only option A pads; the default padding goes unsaid, as in every label before it existed.
        extra += " (pad both)" if self.shortcut == "A" and self.pad == "both" else ""
        return f"{kind}-{self.depth}{extra}"


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from. ``path`` is the folder tree for ``folder`` and the
    download/cache root for ``cifar10``; ``None`` means the default data folder."""

    source: str = "synthetic"  # one of SOURCES
    path: str | None = None
    download: bool = True  # cifar10 only: fetch the official archive when missing
    holdout_fraction: float = 0.1  # folder only: test share when there is no test/ folder
    synthetic_train: int = 10_000
    synthetic_test: int = 2_000
    seed: int = 0  # synthetic generation, folder hold-out split and validation split
    # Training images held out (seeded) as a validation set; 5000 gives the paper's 45k/5k split.
    validation: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown data source {self.source!r}; choose one of {', '.join(SOURCES)}")
        if self.source == "folder" and not self.path:
            raise ValueError("the folder data source needs a path to a folder of class folders")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be between 0 and 1, got {self.holdout_fraction}")
        if self.synthetic_train < 10 or self.synthetic_test < 10:
            raise ValueError("the synthetic data set needs at least 10 training and 10 test images")
        if not (_is_int(self.validation) and 0 <= self.validation <= 10_000_000):
            raise ValueError(f"validation must be a count of training images >= 0, got {self.validation!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Exactly one of ``epochs`` and ``steps`` sets the budget.

    The defaults are the brief recipe: ResNet-20 reaches 86% test accuracy on CIFAR-10
    (JPEG copy) in 14 epochs: 9 minutes on a 2-core CPU with bf16, 4-6 times as long on
    one without (README); ``training.speed`` estimates it for the machine at hand.
    """

    epochs: float | None = 14.0
    steps: int | None = None
    batch_size: int = 128
    lr: float = 0.2  # peak learning rate of the one-cycle schedule (the paper's step schedule uses 0.1)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # one of SCHEDULES
    warmup_fraction: float = 0.15  # onecycle: share of the budget spent rising to lr
    paper_warmup: bool | None = None  # paper: 0.01 for the first 400 steps; None = only for depth >= 110
    label_smoothing: float = 0.1
    augment: bool = True  # random crop (4 px zero padding) + horizontal flip
    seed: int = 0
    eval_every: int = 0  # steps between test evaluations; 0 = once per epoch
    probe_every: int = 10  # steps between per-block probes; 0 = never
    watch_every: int | None = None  # steps between "watch it learn" frames (training.watch); None: ~64 a run; 0: off
    log_every: int = 10  # steps per flushed batch of per-step records
    eval_tta: bool = True  # evaluate with horizontal-flip test-time augmentation
    device: str = "auto"  # one of DEVICES
    precision: str = "auto"  # bf16 autocast on CUDA and on CPUs with native bf16; fp32 elsewhere
    threads: int | None = None  # torch intra-op threads; None = all cores
    channels_last: bool = True
    sync_bn: bool = False  # several processes: batch-norm statistics over the global batch, not each shard
    compile: bool = False  # torch.compile the model (on CPU this needs a C++ compiler)
    # The first ``steps`` of a longer schedule (the quick degradation replay); None: it spans the budget.
    schedule_steps: int | None = None
    snapshot_every: int | None = None  # steps between weight snapshots (snapshots/); None: each epoch, 0: none

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one budget: epochs or steps")
        if self.epochs is not None and not (0 < self.epochs <= 10_000):
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.steps is not None and not (_is_int(self.steps) and 0 < self.steps <= 10_000_000):
            raise ValueError(f"steps must be a positive integer, got {self.steps}")
        for name in ("batch_size", "seed", "eval_every", "probe_every", "log_every"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not 1 <= self.batch_size <= 65_536:
            raise ValueError(f"batch size must be a positive integer, got {self.batch_size}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 100):
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown LR schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if not 0 < self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be between 0 and 1, got {self.warmup_fraction}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("eval_every", "probe_every", "snapshot_every", "watch_every"):
            if (getattr(self, name) or 0) < 0 or not _is_int(getattr(self, name) or 0):
                raise ValueError(f"{name} must be a whole number >= 0, got {getattr(self, name)!r}")
        if self.log_every < 1:
            raise ValueError("log_every must be >= 1")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.schedule_steps is not None and not (_is_int(self.schedule_steps) and self.schedule_steps >= (
                self.steps or 10**9)):
            raise ValueError(f"schedule_steps must be at least the budget's steps, got {self.schedule_steps!r}")

    @classmethod
    def recipe(cls, name: str, **overrides: Any) -> TrainConfig:
        """The named recipe (``RECIPES``) with ``overrides`` on top, e.g. ``recipe("paper", steps=300)``."""
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
        fields = {**RECIPES[name], **overrides}
        if "epochs" in overrides and "steps" not in overrides:
            fields["steps"] = None  # an explicit epoch budget replaces the recipe's step budget
        if "steps" in overrides and "epochs" not in overrides:
            fields["epochs"] = None
        return cls(**fields)

    def total_steps(self, train_size: int) -> int:
        """The step budget for a training set of ``train_size`` images (last partial batch dropped)."""
        if self.steps is not None:
            return self.steps
        per_epoch = max(1, train_size // self.batch_size)
        return max(1, round(float(self.epochs or 0) * per_epoch))


# Learning rates are quoted at the paper's batch of 128 and scaled linearly with the batch
# size (Goyal et al. 2017), so one number means the same step size at any batch size.
BASE_BATCH = 128


def scaled_lr(lr_at_base: float, batch_size: int) -> float:
    """The learning rate for ``batch_size`` when ``lr_at_base`` suits batch ``BASE_BATCH``:
    0.2 at batch 128 is 0.05 at batch 32."""
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    return lr_at_base * batch_size / BASE_BATCH


def base_lr(train: TrainConfig) -> float:
    """``train``'s learning rate quoted at batch ``BASE_BATCH`` (the inverse of ``scaled_lr``)."""
    return train.lr * BASE_BATCH / train.batch_size


# Training recipes as TrainConfig fields over its defaults ("brief"). "paper": He et al. 2015,
# section 4.2: batch 128, SGD momentum 0.9 (not Nesterov), weight decay 1e-4, LR 0.1 divided by 10 at
# 32k and 48k iterations, stop at 64k, for 110 layers 0.01 for the first 400 (schedule "paper" does
# both); single-view testing, no label smoothing.
RECIPES: dict[str, dict[str, Any]] = {
    "brief": {},
    # The Train page's offer before the machine is measured: the brief recipe over 5 epochs.
    "quick": {"epochs": 5.0},
    "paper": {
        "epochs": None, "steps": 64_000, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": False,
        "weight_decay": 1e-4, "schedule": "paper", "label_smoothing": 0.0, "eval_tta": False,
    },
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; written whole to ``config.json``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        return cls(
            model=_build(ModelConfig, d.get("model", {})),
            data=_build(DataConfig, d.get("data", {})),
            train=_build(TrainConfig, d.get("train", {})),
            name=str(d.get("name", "")),
        )


T = TypeVar("T")


def _build(cls: type[T], d: Mapping[str, Any]) -> T:
    """Build a dataclass from a dict, ignoring keys a newer or older version added."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{cls.__name__} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in d.items() if k in names})
    except TypeError as e:  # e.g. a string where a number belongs, in a hand-edited config.json
        raise ValueError(f"{cls.__name__}: {e}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
