"""Published CIFAR ResNets (akamaster's): option A padding on both sides, their input
normalization, the pinned download (a local http.server stands in for GitHub) and, when the
real files sit beside the checkout, their accuracy on CIFAR-10 JPEG test images."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR_JPEG
from PIL import Image

from resnet_viz.config import INPUT_NORMS, ModelConfig, RunConfig
from resnet_viz.data.batches import normalize
from resnet_viz.data.sources import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from resnet_viz.nets.cifar import PadShortcut, build_model
from resnet_viz.store import published
from resnet_viz.store.models import load_model_file, model_refs
from resnet_viz.store.published import DownloadError, PublishedNet

REAL = published.SHARED_COPY  # ../shared/data/published-cifar-resnets beside the checkout, when there


# ------------------------------------------------------------------ the net


def test_pad_and_input_norm_are_validated_and_old_configs_load() -> None:
    with pytest.raises(ValueError, match="option A padding 'left'"):
        ModelConfig(pad="left")
    with pytest.raises(ValueError, match="input normalization 'mnist'"):
        ModelConfig(input_norm="mnist")
    old = RunConfig().to_dict()
    del old["model"]["pad"], old["model"]["input_norm"]  # a config.json written before both existed
    assert RunConfig.from_dict(old).model == ModelConfig()
    assert ModelConfig(pad="both").label == "ResNet(A)-20 (pad both)" and ModelConfig().label == "ResNet(A)-20"
    assert INPUT_NORMS["cifar10"] == (CIFAR10_MEAN, CIFAR10_STD)  # the app's one normalization


def test_pad_both_splits_the_zero_channels_around_the_subsampled_identity() -> None:
    x = torch.randn(2, 16, 8, 8)
    both = PadShortcut(16, 32, 2, pad="both")(x)
    after = PadShortcut(16, 32, 2)(x)
    sub = x[:, :, ::2, ::2]
    assert torch.equal(both[:, 8:24], sub) and not both[:, :8].any() and not both[:, 24:].any()
    assert torch.equal(after[:, :16], sub) and not after[:, 16:].any()
    model = build_model(ModelConfig(depth=8, pad="both"))
    assert model.stage2.block0.shortcut.pad == "both"


def test_input_map_feeds_the_weights_the_pixels_they_were_trained_on() -> None:
    torch.manual_seed(0)
    theirs = build_model(ModelConfig(depth=8, pad="both")).eval()  # a net fed ImageNet-normalized pixels
    ours = build_model(ModelConfig(depth=8, pad="both", input_norm="imagenet")).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # the map adds nothing to the state_dict
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    mean, std = INPUT_NORMS["imagenet"]
    with torch.no_grad():
        want = theirs(normalize(pixels, mean, std, channels_last=False))
        got = ours(normalize(pixels, channels_last=False))  # the app's normalization
    assert torch.allclose(got, want, atol=1e-5)
    # Made on the meta device and filled from a generator, the map's buffers are filled too.
    seeded = build_model(ModelConfig(depth=8, input_norm="imagenet"), generator=torch.Generator().manual_seed(0))
    assert torch.equal(seeded.input_map.scale, ours.input_map.scale)


# ------------------------------------------------------------------ a stand-in server


def _their_format(model: torch.nn.Module) -> dict:
    """``model``'s weights as akamaster saves them: module. prefix, layerN.i, linear, no step counters."""
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        parts = k.split(".")
        if parts[0].startswith("stage"):
            parts[:2] = [parts[0].replace("stage", "layer"), parts[1].removeprefix("block")]
        elif parts[0] == "fc":
            parts[0] = "linear"
        state["module." + ".".join(parts)] = v.clone()
    return {"state_dict": state, "best_prec1": 12.5}


@pytest.fixture()
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, torch.nn.Module, Path]]:
    """A depth-8 net in their format served on 127.0.0.1, registered as "resnet20"; no shared copy,
    downloads into tmp_path/data/published. Yields (base URL, the net as trained, the file)."""
    torch.manual_seed(5)
    model = build_model(ModelConfig(depth=8, pad="both")).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    served = tmp_path / "served"
    served.mkdir()
    blob = served / "resnet8-standin.th"
    torch.save(_their_format(model), blob)
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    net = PublishedNet("resnet20", 8, blob.name, sha, 8.27, blob.stat().st_size)
    monkeypatch.setattr(published, "PUBLISHED", {"resnet20": net})
    monkeypatch.setattr(published, "SHARED_COPY", None)
    monkeypatch.setattr(published, "CHUNK", 16 << 10)  # several chunks, so that Stop has a moment
    monkeypatch.setenv("RESNET_VIZ_DATA", str(tmp_path / "data"))
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setenv(published.URL_ENV, url)
    try:
        yield url, model, blob
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there now: as good as offline


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_download_checks_the_hash_maps_the_keys_and_the_pickers_list_it(stand_in, tmp_path: Path) -> None:
    _, model, _ = stand_in
    seen: list[float] = []
    got = published.download("resnet20", progress=lambda f, m, *a: seen.append(f))
    path = Path(got["path"])
    assert path.parent == tmp_path / "data" / "published" and got["from"].startswith("http://127.0.0.1")
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 3
    assert _leftovers(path.parent) == [path.name]  # no temporary file left behind
    loaded, cfg, meta = load_model_file(path)
    assert cfg.model == ModelConfig(depth=8, pad="both", input_norm="imagenet") and "BSD-2-Clause" in meta["licence"]
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        want = model(normalize(pixels, *INPUT_NORMS["imagenet"], channels_last=False))
        assert torch.allclose(loaded(normalize(pixels, channels_last=False)), want, atol=1e-5)
    labels = [r.label for r in model_refs(tmp_path / "runs", folder=tmp_path / "no-assets")]
    assert labels[0] == "ResNet(A)-8 (pad both) · published (akamaster) · 91.7% reported (official test set)"
    assert published.download("resnet20")["from"] == "already here"


def test_a_file_with_another_hash_is_refused_and_not_kept(stand_in, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    net = published.PUBLISHED["resnet20"]
    monkeypatch.setattr(published, "PUBLISHED", {"resnet20": replace(net, sha256="0" * 64)})
    with pytest.raises(DownloadError, match="is not the published file: its sha256 is"):
        published.download("resnet20")
    assert _leftovers(tmp_path / "data" / "published") == []


def test_stop_ends_the_download_and_leaves_nothing(stand_in, tmp_path: Path) -> None:
    stop = threading.Event()
    with pytest.raises(published.Cancelled):
        published.download("resnet20", progress=lambda *a: stop.set(), stop=stop)  # stop after the first chunk
    assert _leftovers(tmp_path / "data" / "published") == []


def test_offline_says_it_cannot_reach_the_download(stand_in, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(published.URL_ENV, closed_port_url())
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1:\d+ .*offline"):
        published.download("resnet20")
    monkeypatch.setenv(published.URL_ENV, stand_in[0] + "moved/")
    with pytest.raises(DownloadError, match="HTTP 404"):
        published.download("resnet20")
    with pytest.raises(DownloadError, match="unknown published net 'resnet1202'"):
        published.download("resnet1202")


def test_a_copy_beside_the_checkout_needs_no_network(stand_in, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    _, _, blob = stand_in
    monkeypatch.setattr(published, "SHARED_COPY", blob.parent)
    monkeypatch.setenv(published.URL_ENV, closed_port_url())
    assert published.download("resnet20")["from"] == str(blob)


def test_cli_lists_and_gets_them(stand_in, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from resnet_viz.cli.main import main

    assert main(["published"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [n["name"] for n in out["nets"]] == ["resnet20"] and out["nets"][0]["path"] is None and out["got"] == []
    assert main(["published", "--get", "resnet20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nets"][0]["path"] == out["got"][0]["path"] and Path(out["got"][0]["path"]).is_file()
    assert main(["published", "--get", "resnet7"]) == 2
    assert "unknown published net 'resnet7'" in capsys.readouterr().err


# ------------------------------------------------------------------ the real files


@functools.cache
def jpeg_test_images(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` test images of each class of the CIFAR-10 JPEG copy, normalized the app's way."""
    xs, ys = [], []
    for label, name in enumerate(CIFAR10_CLASSES):
        for f in sorted((CIFAR_JPEG / "test" / name).iterdir())[:per_class]:
            xs.append(np.asarray(Image.open(f).convert("RGB")))
            ys.append(label)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    return normalize(x, channels_last=False), torch.tensor(ys)


def _accuracy(name: str, pad: str, per_class: int = 50) -> float:
    n = published.PUBLISHED[name]
    assert REAL is not None
    model = build_model(replace(n.config, pad=pad))
    model.load_state_dict(published.load_published(REAL / n.file, n.config), strict=True)
    x, y = jpeg_test_images(per_class)
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    return float((pred == y).float().mean())


def _need_real(name: str) -> None:
    if REAL is None or not (REAL / published.PUBLISHED[name].file).is_file():
        pytest.skip(f"no {published.PUBLISHED[name].file} in ../shared/data/published-cifar-resnets "
                    "beside the checkout")
    if not CIFAR_JPEG.is_dir():
        pytest.skip("no CIFAR-10 JPEG copy in ../shared/data/cifar10-jpg beside the checkout")


def test_their_keys_map_exactly_onto_ours() -> None:
    for name, n in published.PUBLISHED.items():
        _need_real(name)
        theirs = torch.load(REAL / n.file, map_location="cpu", weights_only=True)["state_dict"]
        ours = set(build_model(n.config).state_dict())
        mapped = {published.our_key(k) for k in theirs}
        assert mapped == {k for k in ours if not k.endswith("num_batches_tracked")}, name
        assert published.load_published(REAL / n.file, n.config).keys() == ours


def test_real_resnet20_needs_padding_on_both_sides(one_thread) -> None:
    _need_real("resnet20")
    both, after = _accuracy("resnet20", "both"), _accuracy("resnet20", "after")
    assert both > 0.7, f"ResNet-20 with its own padding: {both:.1%} of 500 JPEG test images"  # 81.0% on all 10,000
    assert after < 0.3, f"ResNet-20 with zeros appended: {after:.1%}"  # 13.6%: near chance


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet32", "resnet44", "resnet56"])
def test_real_deeper_nets_score_as_reported(name: str, one_thread) -> None:
    _need_real(name)
    assert _accuracy(name, "both") > 0.7


def test_the_shared_copy_downloads_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need_real("resnet20")
    monkeypatch.setenv(published.URL_ENV, closed_port_url())
    got = published.download("resnet20", dest=tmp_path)
    _, cfg, meta = load_model_file(Path(got["path"]))
    assert cfg.model.label == "ResNet(A)-20 (pad both)" and meta["source_sha256"].startswith("12fca82f")


# ------------------------------------------------------------------ the offer in the app


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threaded_tasks) -> Iterator:
    """The app on the synthetic set, with its own runs folder, caches and task registry."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from resnet_viz.app.state import Keys
    from resnet_viz.background.tasks import TaskRegistry
    from resnet_viz.config import DataConfig

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(root)
    st.cache_resource.clear()
    TaskRegistry.reset_shared()
    at = AppTest.from_file(str(root / "app.py"), default_timeout=60)
    at.session_state[Keys.DATA_CONFIG] = DataConfig(source="synthetic", synthetic_train=640, synthetic_test=160)
    yield at
    TaskRegistry.reset_shared()
    st.cache_resource.clear()


def _download_and_wait(at) -> None:
    from resnet_viz.background.tasks import TaskRegistry

    at.switch_page("app_pages/inspect.py").run()
    assert not at.exception, at.exception
    assert any(e.label.startswith("Published nets") for e in at.expander)
    next(b for b in at.button if b.label.startswith("Download ResNet-8 (0.")).click().run()
    task = TaskRegistry.shared().get("published|resnet20")
    assert task is not None and task.wait(30)
    at.run()
    assert not at.exception, at.exception


def test_the_offer_downloads_a_net_into_every_picker(stand_in, app) -> None:
    at = app
    _download_and_wait(at)
    label = "ResNet(A)-8 (pad both) · published (akamaster) · 91.7% reported (official test set)"
    assert label in at.selectbox[0].options
    assert not any(e.label.startswith("Published nets") for e in at.expander)  # all here: nothing left to offer
    at.selectbox[0].select_index(at.selectbox[0].options.index(label)).run()  # and the page works on it
    assert not at.exception and "ResNet(A)-8 (pad both): stage1.block0" in str(at.get("plotly_chart")[0].proto)


def test_the_offer_says_when_it_cannot_reach_the_download(stand_in, app, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(published.URL_ENV, closed_port_url())
    at = app
    _download_and_wait(at)
    assert any("cannot reach 127.0.0.1" in e.value for e in at.error), [e.value for e in at.error]
    assert any(b.label.startswith("Download ResNet-8") for b in at.button)  # offered again


def test_build_page_says_and_sets_the_padding(app) -> None:
    from resnet_viz.app.state import Keys

    at = app.switch_page("app_pages/build.py").run()
    pad = next(r for r in at.radio if r.label == "Option A padding")
    assert pad.value == "after" and "zeros after the identity (this app)" in pad.options
    pad.set_value("both").run()
    assert not at.exception and at.session_state[Keys.BUILD_CONFIG].pad == "both"
    assert any("(pad both)" in str(link.proto) for link in at.get("page_link"))


def test_a_link_carries_the_padding(app) -> None:
    from resnet_viz.app.state import Keys

    app.query_params.update({"pad": "both", "depth": "32"})
    at = app.switch_page("app_pages/build.py").run()
    assert not at.exception and at.session_state[Keys.BUILD_CONFIG] == ModelConfig(depth=32, pad="both")
    next(r for r in at.radio if r.label == "Option A padding").set_value("after").run()
    assert "pad" not in at.query_params and at.query_params["depth"] == "32"  # the default is left out


def test_home_offers_the_published_nets(stand_in, app) -> None:
    at = app.run()  # a newcomer's first page: trained nets to open before training any
    assert not at.exception, at.exception
    assert any(e.label.startswith("Published nets") for e in at.expander)
