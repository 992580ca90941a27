"""Where a CIFAR (or torchvision ImageNet) ResNet looks: predictions, feature maps, block
norms and attribution maps.

The only package that imports Captum and grad-cam, so the rest of the library (and its
tests) do not depend on them. ``methods`` has one entry per attribution method and
``attribute``, ``cams`` the CAM family from grad-cam (added to ``METHODS`` here);
``inspect`` has predictions, feature maps and block norms; ``core`` what they share.
Every public function:

- puts the model in eval mode (train-mode BatchNorm would normalize one image by its own
  statistics and update the running averages) and freezes its parameters (no weight
  gradients are needed, and skipping them makes the backward passes cheaper), then puts
  back every module's ``training`` flag and every parameter's ``requires_grad`` exactly
  as found, in ``finally`` (``nets.cifar.eval_mode(model, frozen=True)``);
- registers no hooks itself: Captum's layer methods and Guided Backprop attach theirs for
  one call and remove them in their own ``finally``;
- returns detached CPU tensors that share no memory with the model or the input.

Inputs are normalized float images ``(B, 3, H, W)`` (a single ``(3, H, W)`` image is also
accepted); uint8 images are normalized here with ``data.batches.normalize``.

The model is used as given, so two threads must not run these functions on the *same*
model object at once (Guided Backprop's hooks would affect the other thread's passes).
"""

from resnet_viz.experiments.attribution.cams import CAMS
from resnet_viz.experiments.attribution.core import STEM, AttributionError
from resnet_viz.experiments.attribution.inspect import (
    block_norms,
    feature_maps,
    predict,
    top_k,
)
from resnet_viz.experiments.attribution.methods import (
    METHODS,
    AttributionMethod,
    Settings,
    attribute,
    normalize_map,
)

# The grad-cam CAMs join the registry here, after Captum's methods (cams.py imports
# methods.py for the base class, so methods.py cannot import it back).
METHODS.update(CAMS)

__all__ = [
    "AttributionError", "AttributionMethod", "METHODS", "STEM", "Settings", "attribute", "block_norms",
    "feature_maps", "normalize_map", "predict", "top_k",
]
