"""The pages' model work, cached by content and shared by every session of this server.

A page reruns its whole script on every click, and a class asks the same questions of the
same models: each result here is keyed by what it is computed from (the model's weights
fingerprint, a digest of the input's pixels, the method, the block), never by a file name or
a widget key. A rerun with unchanged inputs does no model work, two sessions asking the same
thing pay once (Streamlit computes one key at a time, under a lock), and an upload with the
same name and other pixels is another input.

``st.cache_data`` pickles each result, so every caller gets its own copy. The heavy objects
ride along as ``_``-prefixed arguments, which Streamlit does not hash: the fingerprints in
front of them are the key. On a miss the model is built fresh for that one computation:
Captum hooks the module it runs on, so two sessions never run it on one shared module.
The computations themselves stay in the library (``experiments.attribution``, ``nets``).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import streamlit as st
from PIL import Image
from plotly.graph_objects import Figure
from torch import Tensor, nn

from resnet_viz.app import resources
from resnet_viz.app.resources import Weights
from resnet_viz.config import ModelConfig
from resnet_viz.data import uploads
from resnet_viz.experiments import attribution, convolution
from resnet_viz.experiments.attribution.faithfulness import scores_beside_random
from resnet_viz.nets import imagenet, summary
from resnet_viz.store.models import tensors_fingerprint

# Bounds for a server that runs for weeks: results and figures are small (a ResNet-20 feature
# map is 64 KB, a 224 px map 200 KB, a figure of a 224 px photo and its map about 0.4 MB), so
# the few hundred of each kept stay around 100 MB at worst; an hour unused and one goes.
TTL = 3600
MAX_ENTRIES = 256


# What any page uses of an upload: 32 px for the CIFAR nets, 224 for the ImageNet ones, and a
# preview. Decoding a 12-megapixel photo again on every rerun took about 0.3 s of each page run.
MAX_UPLOAD_SIDE = 2048


@st.cache_data(show_spinner=False, max_entries=16, ttl=TTL)
def _decoded(digest: str, _data: bytes) -> Image.Image:
    img = uploads.open_upload(_data)
    img.thumbnail((MAX_UPLOAD_SIDE, MAX_UPLOAD_SIDE), Image.Resampling.LANCZOS)
    return img


def decoded_upload(data: bytes) -> Image.Image:
    """An upload decoded by ``data.uploads.open_upload`` (which raises ``ImageError`` for a bad
    file), at most ``MAX_UPLOAD_SIDE`` pixels a side: once per content, whatever its name."""
    return _decoded(hashlib.sha256(data).hexdigest(), data)


def input_tag(x: Tensor) -> str:
    """A digest of an input's pixels (and shape and dtype): what results are cached by."""
    return tensors_fingerprint({"input": x}, "input")


@st.cache_resource(show_spinner=False, max_entries=MAX_ENTRIES, ttl=TTL)
def _chart(key: str, _build: Callable[[], Figure]) -> Figure:
    return _build()


def chart(builder: Callable[..., Figure], *args: Any, **kwargs: Any) -> Figure:
    """``builder(*args, **kwargs)``, a ``plots`` function (plain data in, a figure out), built
    once per content of its arguments and shared by every session: Plotly takes 15-250 ms to
    build a figure here, Streamlit 1-7 ms to send one already built. Shared: draw it, never
    change it (Streamlit's ``plotly_chart`` only reads it)."""
    def plain(a: Any) -> Any:
        return a.detach().cpu().numpy() if isinstance(a, Tensor) else a

    # The key is the arguments' pickle (only written, never read back). Streamlit's own hash of a
    # large array samples it; a figure must match every value. Without the memo ("fast" mode)
    # equal content gives equal bytes: with it, a string that two fields share in one object (a
    # field named "pad" and a value "pad") but not in its cached copy pickled differently.
    what = (builder.__module__, builder.__qualname__, [plain(a) for a in args],
            sorted((k, plain(v)) for k, v in kwargs.items()))
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True
    pickler.dump(what)
    return _chart(hashlib.sha256(buffer.getvalue()).hexdigest(), partial(builder, *args, **kwargs))


# ------------------------------------------------------------------ CIFAR models


@st.cache_data(show_spinner=False, max_entries=MAX_ENTRIES, ttl=TTL)
def _feature_maps(weights_fp: str, input_fp: str, block: str, _w: Weights, _x: Tensor) -> Tensor:
    with resources.inference():
        return attribution.feature_maps(_w.model(), _x, block)


def feature_maps(w: Weights, x: Tensor, block: str) -> Tensor:
    """``attribution.feature_maps`` of the model ``w`` for the image ``x``, cached by content."""
    return _feature_maps(w.fingerprint, input_tag(x), block, w, x)


@st.cache_data(show_spinner=False, max_entries=MAX_ENTRIES, ttl=TTL)
def _block_norms(weights_fp: str, input_fp: str, _w: Weights, _x: Tensor) -> dict[str, dict[str, float]]:
    with resources.inference():
        return attribution.block_norms(_w.model(), _x)


def block_norms(w: Weights, x: Tensor) -> dict[str, dict[str, float]]:
    """``attribution.block_norms`` of the model ``w`` for ``x``, cached by content."""
    return _block_norms(w.fingerprint, input_tag(x), w, x)


@st.cache_data(show_spinner=False, max_entries=MAX_ENTRIES, ttl=TTL)
def _explained(model_fp: str, input_fp: str, method: str, block: str | None,
               _build: Callable[[], nn.Module], _x: Tensor) -> tuple[Tensor, Tensor]:
    model = _build()
    with resources.inference():
        probs = attribution.predict(model, _x)[0]
        amap = attribution.normalize_map(attribution.attribute(model, _x, method, block=block))
    return probs, amap


@st.cache_data(show_spinner=False, max_entries=MAX_ENTRIES, ttl=TTL)
def _explained_scored(model_fp: str, input_fp: str, method: str, block: str | None,
                      _build: Callable[[], nn.Module], _x: Tensor) -> tuple[Tensor, Tensor, dict[str, float]]:
    model = _build()  # one model and one map for both: the faithfulness scores rank the raw map
    with resources.inference():
        probs = attribution.predict(model, _x)[0]
        raw = attribution.attribute(model, _x, method, block=block)
        scores = scores_beside_random(model, _x, raw)
    return probs, attribution.normalize_map(raw), scores


def explain_scored(w: Weights, x: Tensor, method: str,
                   block: str | None = None) -> tuple[Tensor, Tensor, dict[str, float]]:
    """(class probabilities, the attribution map scaled to [0, 1], its faithfulness) of ``w``
    for one image ``x`` by ``method`` (at ``block`` for the CAMs), cached by content: the
    map's deletion and insertion areas on this image beside a random map's
    (``faithfulness.scores_beside_random``)."""
    return _explained_scored(w.fingerprint, input_tag(x), method, block, w.model, x)


@st.cache_data(show_spinner=False, max_entries=64, ttl=TTL)
def model_summary(cfg: ModelConfig) -> summary.ModelSummary:
    """``nets.summary.summarize(cfg)`` (a forward pass with hooks: 0.3 s for ResNet-20 here),
    cached by the config's values."""
    return summary.summarize(cfg)


# ------------------------------------------------------------------ ImageNet models


@dataclass(frozen=True)
class ImageNetWeights:
    """A torchvision ImageNet ResNet's weights, held once per server, and their fingerprint."""

    name: str
    state: dict[str, Tensor]
    fingerprint: str

    def model(self) -> nn.Module:
        """A fresh module with these weights (in eval mode), the caller's own."""
        model = imagenet.build_imagenet(self.name, pretrained=False)
        model.load_state_dict(self.state)
        return model.eval()


# Three at most: ResNet-50's weights are 100 MB.
@st.cache_resource(show_spinner="Loading the network...", max_entries=3)
def imagenet_weights(name: str, pretrained: bool) -> ImageNetWeights:
    """``name``'s weights (ImageNet's, or torchvision's random init); raises
    ``imagenet.WeightsUnavailable`` when pretrained weights cannot be had."""
    state = {k: v.detach().clone() for k, v in imagenet.build_imagenet(name, pretrained).state_dict().items()}
    # Random weights differ from one load to the next: the fingerprint is of the values.
    return ImageNetWeights(name, state, tensors_fingerprint(state, f"torchvision {name}"))


def explain_imagenet(w: ImageNetWeights, x: Tensor, method: str, block: str | None = None) -> tuple[Tensor, Tensor]:
    """(class probabilities, the map scaled to [0, 1]) of an ImageNet ResNet for a (1, 3, 224, 224)
    input (at ``block`` for the CAMs), cached by content."""
    return _explained(w.fingerprint, input_tag(x), method, block, w.model, x)


@st.cache_data(show_spinner="Measuring the network on a 224x224 image...", max_entries=8)
def imagenet_summary(name: str) -> dict:
    """``nets.imagenet.imagenet_summary(name)``: counts and shapes do not depend on weights."""
    return imagenet.imagenet_summary(name)


# ------------------------------------------------------------------ convolution by hand


@st.cache_data(show_spinner=False, max_entries=64, ttl=TTL)
def _conv_output_size(weights_fp: str, layer: str, _w: Weights) -> tuple[int, int]:
    return convolution.output_size(_w.model(), layer)


def conv_output_size(w: Weights, layer: str) -> tuple[int, int]:
    """``convolution.output_size`` of conv ``layer`` of ``w``'s model (a forward pass), cached."""
    return _conv_output_size(w.fingerprint, layer, w)


@st.cache_data(show_spinner=False, max_entries=MAX_ENTRIES, ttl=TTL)
def _conv_by_hand(weights_fp: str, input_fp: str, layer: str, out_channel: int, row: int, col: int,
                  _w: Weights, _x: Tensor) -> dict[str, Any]:
    with resources.inference():
        return convolution.convolution_by_hand(_w.model(), _x, layer, out_channel, row, col).to_dict()


def convolution_by_hand(w: Weights, x: Tensor, layer: str, out_channel: int, row: int, col: int) -> dict[str, Any]:
    """``convolution.convolution_by_hand(...).to_dict()`` for ``w``'s model, cached by content;
    a ValueError (a position or layer that cannot be worked by hand) is raised, not kept."""
    return _conv_by_hand(w.fingerprint, input_tag(x), layer, out_channel, row, col, w, x)
