"""The CAM family from pytorch-grad-cam (``grad-cam`` on PyPI): Grad-CAM++, Score-CAM,
Layer-CAM, Eigen-CAM and HiResCAM at any block, as entries of ``METHODS``.

Captum stays for the gradient methods and for plain Grad-CAM; grad-cam brings the CAM
variants Captum lacks. Every call builds the grad-cam object in its context-manager form,
so its hooks (two forward hooks on the target block, a tensor hook on its output) are
removed when the block ends, also when the call raises: without ``with``, a traceback that
keeps the frame alive (a page showing the error, a debugger) keeps the CAM object and its
hooks on the model, and the next forward pass of that model collects activations into it.

grad-cam's own habits that ``cam_map`` undoes or guards against:

- ``BaseCAM.__init__`` calls ``model.eval()``: ``attribute`` already runs in
  ``eval_mode``, which puts every module's flag back afterwards;
- the gradient CAMs call ``model.zero_grad()``, which would drop gradients a caller had
  accumulated: they are put back;
- ``BaseCAM.__exit__`` swallows an ``IndexError`` (it prints it and returns True), so a
  failed call would silently give no map: that becomes an ``AttributionError``;
- every map is min-max scaled to [0, 1] per image (``scale_cam_image``) and resized to the
  input with OpenCV's bilinear resize: the absolute scale is lost, as on grad-cam's own
  plots; ``normalize_map`` leaves a [0, 1] map as it is except for its top 1%.
"""

from __future__ import annotations

import math
import threading
from contextvars import ContextVar
from typing import Any, ClassVar

import torch
from pytorch_grad_cam import EigenCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from resnet_viz.experiments.attribution.core import MAX_BATCH, AttributionError, blocks_of, layer
from resnet_viz.experiments.attribution.inspect import predict
from resnet_viz.experiments.attribution.methods import AttributionMethod, Settings, attribute, normalize_map
from resnet_viz.experiments.common import ProgressFn, check, report

# (progress, stop) of the ``explain_cam`` call running in this thread (a context variable:
# ``attribute`` and ``Settings`` stay as every other method has them).
_REPORTING: ContextVar[tuple[ProgressFn | None, threading.Event | None]] = ContextVar("cam_reporting",
                                                                                        default=(None, None))


class _Reporting(nn.Module):
    """The model, with progress and stop between forward passes: Score-CAM's only loop
    (one pass per channel batch) runs inside grad-cam, which shows it with tqdm on stderr."""

    def __init__(self, model: nn.Module, passes: int, progress: ProgressFn | None,
                 stop: threading.Event | None) -> None:
        super().__init__()
        self.model, self.passes, self.progress, self.stop, self.done = model, passes, progress, stop, 0

    def forward(self, x: Tensor) -> Tensor:
        check(self.stop)
        out = self.model(x)
        self.done += 1
        report(self.progress, self.done / self.passes, f"forward pass {self.done} of {self.passes}")
        return out


def _channels(model: nn.Module, where: nn.Module) -> int:
    """Channels of ``where``'s output: its last BatchNorm's (the stem's ReLU: the stem's BN)."""
    bns = [m for m in where.modules() if isinstance(m, nn.BatchNorm2d)] or \
        [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][:1]
    return bns[-1].num_features if bns else MAX_BATCH


def cam_map(cam_class: Any, model: nn.Module, where: nn.Module, x: Tensor, target: int) -> Tensor:
    """(1, H, W) map of class ``target`` for one prepared image x (1, 3, H, W) by the grad-cam
    class ``cam_class`` at module ``where``, in [0, 1].

    The caller (``attribute``) has put the model in eval mode with frozen parameters and made
    x require grad for the gradient CAMs.
    """
    grads = [p.grad for p in model.parameters()]  # the gradient CAMs' zero_grad() drops them
    progress, stop = _REPORTING.get()
    passes = 1 + (math.ceil(_channels(model, where) / MAX_BATCH) if cam_class is ScoreCAM else 0)
    found: Any = None
    try:
        with cam_class(model=_Reporting(model, passes, progress, stop), target_layers=[where]) as cam:
            # Score-CAM: one forward pass per channel of the block, this many at a time
            # (grad-cam's default is 16; ResNet-18's last block has 512 channels).
            cam.batch_size = MAX_BATCH
            found = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
            cam.outputs = None  # the forward's output and, through it, its autograd graph
    finally:
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g
    if found is None:  # grad-cam's __exit__ printed an IndexError and swallowed it
        raise AttributionError(f"{cam_class.__name__} failed on this model and block (see the message above)")
    return torch.from_numpy(found).to(torch.float32)  # (1, H, W): a copy, grad-cam's own array


class _Cam(AttributionMethod):
    """A grad-cam method at ``Settings.block`` (default: the last block, as for Grad-CAM)."""

    cam_class: ClassVar[Any]
    uses_block = True

    def map(self, model: nn.Module, x: Tensor, target: int, s: Settings) -> Tensor:
        where = layer(model, s.block if s.block is not None else blocks_of(model)[-1])
        return cam_map(self.cam_class, model, where, x, target)


class GradCamPlusPlus(_Cam):
    label = "Grad-CAM++"
    help = ("Grad-CAM with each location's positive gradient weighted by higher-order terms, so several "
            "instances of a class all light up (Chattopadhay et al. 2018; pytorch-grad-cam)")
    cam_class = GradCAMPlusPlus


class ScoreCam(_Cam):
    label = "Score-CAM"
    help = ("no gradients: each channel of the block, upsampled, masks the image, and the class score of the "
            "masked image weights that channel; one forward pass per channel (Wang et al. 2020; pytorch-grad-cam)")
    cam_class = ScoreCAM
    gradients = False


class LayerCam(_Cam):
    label = "Layer-CAM"
    help = ("each activation weighted by its own positive gradient rather than the channel's mean, which keeps "
            "detail at early blocks (Jiang et al. 2021; pytorch-grad-cam)")
    cam_class = LayerCAM


class EigenCam(_Cam):
    label = "Eigen-CAM"
    help = ("the first principal component of the block's activations over locations: no gradients and no "
            "class, it shows what dominates the block (Muhammad & Yeasin 2020; pytorch-grad-cam)")
    cam_class = EigenCAM
    gradients = False


class HiResCam(_Cam):
    label = "HiResCAM"
    help = ("gradient times activation summed over channels, per location: unlike Grad-CAM's averaged "
            "gradients it shows only where the model looked (Draelos & Carin 2020; pytorch-grad-cam)")
    cam_class = HiResCAM


CAMS: dict[str, AttributionMethod] = {
    "gradcam_plusplus": GradCamPlusPlus(),
    "scorecam": ScoreCam(),
    "layercam": LayerCam(),
    "eigencam": EigenCam(),
    "hirescam": HiResCam(),
}


def explain_cam(model: nn.Module, x: Tensor, method: str, block: str | None = None, target: int | None = None, *,
                progress: ProgressFn | None = None, stop: threading.Event | None = None) -> tuple[Tensor, Tensor]:
    """(class probabilities (classes,), the map scaled for display by ``normalize_map`` (H, W))
    of one image by a CAM method: what the Explain and ImageNet pages show, as a background
    task (``progress(fraction, text)`` after each forward pass, ``stop`` checked before each).

    Score-CAM takes one forward pass per 64 channels of the block: 8 passes at 224 px for
    ResNet-18's last block, over a minute on this machine's CPU.
    """
    if method not in CAMS:
        raise AttributionError(f"{method!r} is not a grad-cam method; choose one of {', '.join(CAMS)}")
    token = _REPORTING.set((progress, stop))
    try:
        amap = attribute(model, x, method, target, block=block)
    finally:
        _REPORTING.reset(token)
    return predict(model, x)[0], normalize_map(amap)
