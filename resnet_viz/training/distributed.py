"""Training across processes (``torchrun``) and the GPU path's model wrappers.

``torchrun --nproc_per_node=N -m resnet_viz train ...`` starts N copies of the CLI with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; :func:`session` turns
that into a :class:`DistContext` (gloo for CPU tensors, NCCL for CUDA tensors). Without
those variables the context is a single process and ``torch.distributed`` is never touched.

How a step is split (see ``fit``): every rank computes the same global batch order from
``(seed, step)`` and takes its contiguous share of ``batch_size / world_size`` images;
DistributedDataParallel averages the gradients, so the update equals a single process's
on the global batch, exactly so with synchronized batch norm (up to float summation order).
Only rank 0 writes the run folder.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from resnet_viz.store.checkpoint import Checkpoint
from resnet_viz.store.rundir import RunDir

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the training processes; the default is a lone process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the GPU index on this machine
    backend: str = ""  # "" for a lone process; "gloo" or "cpu:gloo,cuda:nccl"

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(
                f"rank {self.rank} of world size {self.world_size} (local rank {self.local_rank}) is not a valid "
                "process position; start several processes with torchrun, which sets these"
            )
        if self.world_size > 1 and not self.backend:
            raise ValueError("several processes need a torch.distributed backend (gloo or nccl)")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def device(self, device: torch.device) -> torch.device:
        """Each process on its own GPU (``cuda:LOCAL_RANK``); other devices as they are."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.is_distributed else device

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous ``(lo, hi)`` share of ``n`` items (sizes differ by at most one)."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the ranks in place (every rank must call this) and return it."""
        if self.is_distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (pickled; for run ids, configs and checkpoints)."""
        if not self.is_distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BN running statistics) on every rank, e.g. before a sharded evaluation:
        without synchronized BN each rank's last step moved its own statistics."""
        if self.is_distributed:
            for b in model.buffers():
                dist.broadcast(b, src=0)

    def agree(self, stats: torch.Tensor, flags: Sequence[bool]) -> tuple[torch.Tensor, list[bool]]:
        """Per-step ``stats`` (P, 2) = (loss, correct) of each rank's shard as global figures, the
        loss averaged and the counts summed, and each flag true where any rank's is: one collective.

        The flags carry stop requests: a signal reaching one rank stops all of them at the same
        step, so none is left waiting in a collective the others never join.
        """
        if not self.is_distributed:
            return stats, list(flags)
        f = torch.tensor([float(v) for v in flags], dtype=torch.float32, device=stats.device)  # (F,)
        packed = self.all_reduce_sum(torch.cat([stats.float().flatten(), f]))  # (2P + F,)
        out = packed[: stats.numel()].view(-1, 2) * torch.tensor([1.0 / self.world_size, 1.0], device=stats.device)
        return out, [v > 0 for v in packed[stats.numel():].tolist()]


def check_batch_split(batch_size: int, world_size: int) -> int:
    """Images per process for a global ``batch_size``; a ValueError unless it divides evenly."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if batch_size % world_size:
        lo, hi = batch_size // world_size * world_size, -(-batch_size // world_size) * world_size
        raise ValueError(
            f"batch size {batch_size} does not split evenly over {world_size} processes; "
            f"use a multiple of {world_size} such as {max(lo, world_size)} or {hi}"
        )
    return batch_size // world_size


def checkpoint_from_main(ctx: DistContext, run: RunDir | None) -> Checkpoint | None:
    """Rank 0's checkpoint of ``run`` on every rank (None if it has none): only rank 0 needs
    the run folder, so the machines of a multi-node run need no shared disk."""
    ckpt = run.load_checkpoint(map_location="cpu") if ctx.is_main and run is not None and run.has_checkpoint() else None
    return ctx.broadcast_object(ckpt)


def from_env(env: dict[str, str] | None = None) -> DistContext:
    """The context torchrun's environment describes, joining the process group; a lone
    process (no ``WORLD_SIZE``, or 1) gets the default context and joins nothing."""
    env = dict(os.environ) if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
    if world == 1:
        return DistContext(rank=rank, world_size=1, local_rank=local)
    if not dist.is_available():
        raise ValueError("this PyTorch build has no torch.distributed; train in one process")
    cuda = torch.cuda.is_available()
    # Both backends in one group: CPU tensors (and CPU training) go through gloo, CUDA
    # tensors through NCCL, so a run asked to train on the CPU still works on a GPU machine.
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)  # before the group forms: NCCL binds each rank to its GPU
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)  # torchrun's MASTER_ADDR/PORT (or rendezvous) env
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, backend=backend)


@contextmanager
def session(env: dict[str, str] | None = None) -> Iterator[DistContext]:
    """``from_env()`` for the length of a ``with`` block; leaves the process group on the way out."""
    ctx = from_env(env)
    ok = False
    try:
        yield ctx
        ok = True
    finally:
        if ctx.is_distributed and dist.is_initialized():
            if ok:  # no rank tears its group down while another is still in a collective
                dist.barrier()
            # The DDP wrapper holds the group too, possibly in a reference cycle: free it now,
            # not during interpreter teardown, where gloo's threads may outlive Python.
            gc.collect()
            dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: every rank's output depends on every rank's input, so
    the gradient reaching a rank's input is the sum of all ranks' output gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm with statistics over every rank's shard, for CPU tensors.

    ``nn.SyncBatchNorm`` only runs on GPUs (its kernels have no CPU version). Here the
    per-channel sums travel through a differentiable all-reduce whose backward sums the
    gradients over ranks too (as nn.SyncBatchNorm's backward does), so autograd yields the
    gradient of batch norm on the global batch. Two passes (mean, then centered squares) keep
    the variance as accurate as the single-process kernel's. Eval mode is plain batch norm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W), B = this rank's shard
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        # Statistics in at least fp32 (bf16 under autocast comes in), as the native kernel keeps them.
        x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        n = x32.numel() // x32.shape[1] * dist.get_world_size()  # shards are equal-sized
        mean = all_reduce(x32.sum((0, 2, 3))) / n  # (C,)
        centered = x32 - mean[None, :, None, None]  # (B, C, H, W)
        var = all_reduce(centered.square().sum((0, 2, 3))) / n  # (C,) biased, as used to normalize
        y = centered * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        tracked = self.num_batches_tracked
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None \
                and tracked is not None:
            with torch.no_grad():  # the running variance is unbiased, as nn.BatchNorm2d keeps it
                tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_((var.detach() * n / max(n - 1, 1)).to(self.running_var.dtype), m)
        return y.to(x.dtype)


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm2d synchronized over ranks (same parameters and state keys)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap_bn(model)


def _swap_bn(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        new = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        like = next(iter(module.parameters()), module.running_mean)
        if like is not None:
            new = new.to(device=like.device, dtype=like.dtype)
        new.load_state_dict(module.state_dict())  # the same values and keys: checkpoints still load
        return new.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, _swap_bn(child))
    return module


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device, sync_bn: bool) -> nn.Module:
    """``model`` as one process trains it: DistributedDataParallel when there are several.

    Returns the module to call for training steps; ``model`` itself (which the caller keeps)
    is what is checkpointed, evaluated and probed: the app loads it like any other run's.
    """
    if not ctx.is_distributed:
        return model  # one process already normalizes over the whole batch
    # With synchronized BN every rank's running statistics are equal; without it rank 0's are
    # broadcast each step so evaluation and checkpoints agree on every rank.
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=not sync_bn
    )


class CompileError(ValueError):
    """``torch.compile`` cannot run here; the message says what to install or change."""


def compile_model(model: nn.Module, device: torch.device) -> Any:
    """``torch.compile(model)``, checking first for what the inductor backend needs on a CPU."""
    if device.type == "cpu":
        cxx = os.environ.get("CXX") or next((c for c in ("g++", "clang++") if shutil.which(c)), None)
        if not cxx or not shutil.which(cxx):
            raise CompileError(
                "torch.compile on a CPU needs a C++ compiler (g++ or clang++, or CXX set to one); "
                "install one (e.g. apt-get install g++) or train without --compile"
            )
    try:
        return torch.compile(model)
    except Exception as e:  # e.g. a Python version torch.compile does not support yet: say so plainly
        raise CompileError(
            f"torch.compile is not available here ({type(e).__name__}: {e}); train without --compile"
        ) from e


def compile_failure(e: BaseException) -> CompileError | None:
    """A CompileError for an exception torch.compile raised while compiling a step, else None."""
    mod = type(e).__module__
    if mod.startswith(("torch._dynamo", "torch._inductor")):
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return CompileError(f"torch.compile failed ({first}); train without --compile")
    return None
