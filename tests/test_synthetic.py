"""The synthetic set teaches: its classes survive the training augmentation, colour alone
does not tell them apart, and (slow) a ResNet-20 with the app's defaults learns it in 3 epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_viz.config import IMAGE_SIZE, DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data import synthetic
from resnet_viz.data.sources import load_data, make_synthetic
from resnet_viz.training.loop import fit


def test_the_flip_of_every_shape_is_a_shape_of_the_same_class() -> None:
    # Mirroring the image equals drawing the same class with the centre mirrored, the tilt
    # negated and the shape's own mirroring swapped: all three are drawn symmetrically, so
    # the flip augmentation never makes an image that no test image of its class resembles.
    rng = np.random.default_rng(0)
    n, s = 40, IMAGE_SIZE
    centre = rng.uniform(0.3 * s, 0.7 * s, (n, 2)).astype(np.float32)
    half = rng.uniform(6, 12, n).astype(np.float32)
    angle = rng.uniform(-0.2, 0.2, n).astype(np.float32)
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    period = (rng.uniform(3, 6, n) / half).astype(np.float32)
    phase = rng.uniform(0, 1, n).astype(np.float32)
    mirrored_centre = np.stack([s - centre[:, 0], centre[:, 1]], axis=1)
    for c, name in enumerate(synthetic.SYNTHETIC_CLASSES):
        kind = np.full(n, c)
        flipped = synthetic._masks(kind, centre, half, angle, mirror, period, phase)[:, :, ::-1]
        redrawn = synthetic._masks(kind, mirrored_centre, half, -angle, -mirror, period, phase)
        assert (flipped != redrawn).mean() < 0.002, name  # a few pixels on a boundary may round apart


def test_no_class_leans_one_way_that_a_flip_would_reverse() -> None:
    # The mean of (d/dx)(d/dy) over a class is zero when the class is closed under a
    # left-right flip and not when its shapes lean one way: diagonal stripes that all ran
    # one way scored 0.28 here, so a flipped training image showed a pattern no test image has.
    d = make_synthetic(2000, 10, seed=0)
    x = d.train_x.float()
    gx = x[..., 1:-1, 2:] - x[..., 1:-1, :-2]  # central differences: no pixel shared by gx and gy
    gy = x[..., 2:, 1:-1] - x[..., :-2, 1:-1]
    lean = (gx * gy).sum((1, 2, 3))
    energy = (gx * gx + gy * gy).sum((1, 2, 3)) / 2
    for c, name in enumerate(d.classes):
        m = d.train_y == c
        assert abs(lean[m].mean() / energy[m].mean()) < 0.05, name


def test_colour_alone_is_at_chance() -> None:
    # Shape, not colour: a nearest-centroid classifier on each image's mean colour learns nothing.
    d = make_synthetic(3000, 1000, seed=1)
    colour = {k: x.float().mean((2, 3)) for k, x in (("train", d.train_x), ("test", d.test_x))}
    centroids = torch.stack([colour["train"][d.train_y == c].mean(0) for c in range(len(d.classes))])
    guess = torch.cdist(colour["test"], centroids).argmin(1)
    assert (guess == d.test_y).float().mean() < 0.15  # chance is 0.10


def test_the_distractor_is_always_smaller_than_the_labelled_shape() -> None:
    # When the two size ranges met, which shape carried the label was a coin flip for small ones.
    assert synthetic.DISTRACTOR_HALF[1] <= 0.7 * synthetic.MAIN_HALF[0]


@pytest.mark.slow
def test_resnet20_learns_the_default_set_in_three_epochs_of_the_brief_recipe() -> None:
    # The app's defaults when there is no CIFAR-10: a brief run must show a net that learns.
    # The old generator reached 11% after one epoch and 23-64% after three.
    data_cfg = DataConfig()
    data = load_data(data_cfg)
    train = TrainConfig.recipe("brief", epochs=3, probe_every=0)
    result = fit(RunConfig(model=ModelConfig(depth=20), data=data_cfg, train=train), data=data)
    assert result.status == "finished"
    assert result.test_acc is not None and result.test_acc >= 0.80, result.test_acc
