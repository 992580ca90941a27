"""What training a CIFAR ResNet costs in memory, from its config alone (nothing is built).

A server must refuse a run that would not fit before it creates anything, and building a
100M-parameter model to measure it would itself take the memory being protected, so the
parameters and activations are counted from the architecture, layer by layer, as
``nets/cifar.py`` makes them.

Training holds, in float32:

- the parameters, their gradients and SGD's momentum buffer (3 copies), plus one more
  for the optimizer's temporaries and the checkpoint's copy of the state;
- per image of a batch, what autograd saves for the backward pass: for every conv, its
  output (batch norm's input), batch norm's output and the ReLU's output, about
  ``ACTIVATION_COPIES`` tensors of the conv's output size (the conv's input is the
  previous ReLU's output, already counted);
- a fixed overhead for the allocator's cache and oneDNN's workspaces.

Calibration (CPU, fp32, channels_last, one thread, peak RSS growth over two SGD steps):

=================  =====  ========  =========  =====
model              batch  measured  estimate   ratio
=================  =====  ========  =========  =====
ResNet-20          128    350 MB    536 MB     1.5
ResNet-110         128    1346 MB   1818 MB    1.4
ResNet-20          512    981 MB    1364 MB    1.4
ResNet-110         512    4772 MB   6426 MB    1.3
ResNet-56 x4       128    2665 MB   3583 MB    1.3
=================  =====  ========  =========  =====

So the estimate is an upper bound within about 1.5x; bf16 autocast only lowers the real
figure. It leaves out the data set, which the server holds once for every run.
"""

from __future__ import annotations

from dataclasses import dataclass

from resnet_viz.config import IMAGE_SIZE, ModelConfig, RunConfig
from resnet_viz.limits import GB, ServerLimits

BYTES_PER_VALUE = 4  # float32
STATE_COPIES = 4  # weights, gradients, momentum, and one for temporaries and checkpoints
ACTIVATION_COPIES = 3  # conv output, batch-norm output, ReLU output: saved for backward
OVERHEAD_BYTES = 256 * 1024**2  # allocator cache, oneDNN workspaces, the batch itself


@dataclass(frozen=True)
class Architecture:
    """Counts for one model config: parameters, and conv output values per image."""

    params: int
    conv_outputs: int  # values per image written by all convs (summed over layers)


def _shortcut_params(kind: str, in_ch: int, out_ch: int, stride: int) -> int:
    changes = stride != 1 or in_ch != out_ch
    if kind == "C" or (kind == "B" and changes):
        return in_ch * out_ch + 2 * out_ch  # 1x1 conv + BN
    return 0


def architecture(config: ModelConfig, image_size: int = IMAGE_SIZE) -> Architecture:
    """Parameters and conv outputs of the model ``config`` builds, counted without building it."""
    w1 = config.stage_widths[0]
    params = 3 * 9 * w1 + 2 * w1  # the stem's 3x3 conv and its BN
    outputs = w1 * image_size * image_size
    in_ch, side = w1, image_size
    for stage, planes in enumerate(config.stage_widths):
        for i in range(config.blocks_per_stage):
            stride = 2 if stage > 0 and i == 0 else 1
            out_side = side // stride
            area = out_side * out_side
            if config.block == "basic":
                out_ch = planes
                params += 9 * in_ch * planes + 9 * planes * planes + 4 * planes
                outputs += 2 * planes * area
            else:
                out_ch = 4 * planes
                params += in_ch * planes + 9 * planes * planes + planes * out_ch + 4 * planes + 2 * out_ch
                # the 1x1 reduce runs before the stride, the 3x3 and the expand after it
                outputs += planes * side * side + planes * area + out_ch * area
            sc = _shortcut_params(config.shortcut, in_ch, out_ch, stride)
            params += sc
            outputs += out_ch * area if sc else 0
            in_ch, side = out_ch, out_side
    params += in_ch * config.num_classes + config.num_classes  # the linear head
    return Architecture(params=params, conv_outputs=outputs)


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    state_bytes: int  # parameters, gradients, momentum, temporaries
    activation_bytes: int  # saved for backward, for the whole batch
    overhead_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes + self.overhead_bytes


def training_memory(config: ModelConfig, batch_size: int, image_size: int = IMAGE_SIZE) -> MemoryEstimate:
    """An upper-ish estimate (within about 2x) of the memory training ``config`` at
    ``batch_size`` takes beyond the process's baseline."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    arch = architecture(config, image_size)
    return MemoryEstimate(
        params=arch.params,
        state_bytes=STATE_COPIES * BYTES_PER_VALUE * arch.params,
        activation_bytes=ACTIVATION_COPIES * BYTES_PER_VALUE * arch.conv_outputs * batch_size,
        overhead_bytes=OVERHEAD_BYTES,
    )


CIFAR10_TRAIN = 50_000


def known_train_size(config: RunConfig) -> int | None:
    """The training set's size where the config alone tells it (None for a folder: counted
    only when it is read)."""
    data = config.data
    full = {"synthetic": data.synthetic_train, "cifar10": CIFAR10_TRAIN}.get(data.source)
    return None if full is None else max(1, full - data.validation)


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def check_fits(config: RunConfig, limits: ServerLimits, train_size: int | None = None) -> None:
    """Raise a ``ValueError`` saying which server limit ``config`` exceeds and what to change;
    ``train_size`` (the training images) turns an epoch budget into steps, when known."""
    model, train = config.model, config.train
    arch = architecture(model)
    if arch.params > limits.max_params:
        raise ValueError(
            f"{model.label} has {arch.params / 1e6:.1f}M parameters; this server trains models of up to "
            f"{limits.max_params / 1e6:.0f}M: lower the depth or the width."
        )
    need = training_memory(model, train.batch_size).total_bytes
    if need > limits.max_train_bytes:
        raise ValueError(
            f"this run needs about {_gb(need)} for training {model.label} at batch {train.batch_size}; "
            f"this server allows {_gb(limits.max_train_bytes)}: lower the batch size or the depth/width."
        )
    size = train_size if train_size is not None else known_train_size(config)
    steps = train.steps if train.steps is not None else None if size is None else train.total_steps(size)
    if steps is not None and steps > limits.max_steps:
        raise ValueError(
            f"this run's budget is {steps:,} steps; this server allows {limits.max_steps:,} per run: "
            "lower the epochs or the steps."
        )
