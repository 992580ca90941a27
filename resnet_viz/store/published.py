"""Published CIFAR ResNets: akamaster/pytorch_resnet_cifar10's ResNet-20/32/44/56, opened like shipped nets.

Their checkpoints are torch pickles of ``{"state_dict": {"module.layer1.0.conv1.weight": ...},
"best_prec1": ...}``. ``download`` gets one (from a copy beside the checkout when there is one,
else by URL), checks its pinned sha256, reads it with ``torch.load(weights_only=True)`` (never
their hub code), maps its keys to this app's module names and writes an exported model
(``store.models``: safetensors with the config in its metadata) to ``published_dir()``, where
every model picker finds it.

Two things make their weights work here: their option A pads the new channels on both sides
(``ModelConfig.pad="both"``), and they were trained on ImageNet's input normalization
(``input_norm="imagenet"``; the model maps the app's normalized input to theirs).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from resnet_viz.config import DataConfig, ModelConfig, RunConfig
from resnet_viz.data.sources import default_data_dir
from resnet_viz.fsutil import PROJECT_ROOT, TEMP_PREFIX, atomic_path
from resnet_viz.nets.cifar import build_model

BASE_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
URL_ENV = "RESNET_VIZ_PUBLISHED_URL"  # a base URL to fetch the files from instead (a mirror, a test server)
ORIGIN = "akamaster/pytorch_resnet_cifar10"
LICENCE = ("BSD-2-Clause. Copyright (c) 2018, Yerlan Idelbayev. "
           "https://github.com/akamaster/pytorch_resnet_cifar10/blob/master/LICENSE")
CHUNK = 64 << 10
TIMEOUT_S = 20.0
# The team's copy beside a checkout (as data.sources finds the CIFAR-10 JPEG copy): no network needed.
SHARED_COPY: Path | None = (PROJECT_ROOT.parent / "shared" / "data" / "published-cifar-resnets"
                            if PROJECT_ROOT is not None else None)

ProgressFn = Callable[..., None]


class DownloadError(ValueError):
    """A published net cannot be had; the message says why and what to do."""


class Cancelled(Exception):  # noqa: N818 - the name background.tasks reads as "stopped", not "failed"
    """The download was stopped by its stop event."""


@dataclass(frozen=True)
class PublishedNet:
    name: str  # "resnet20"
    depth: int
    file: str  # their file name; its 8 hex digits start its sha256, as torch.hub names files
    sha256: str
    error: float  # top-1 error (%) they report on the official CIFAR-10 test set
    size: int  # bytes

    @property
    def config(self) -> ModelConfig:
        return ModelConfig(depth=self.depth, shortcut="A", pad="both", input_norm="imagenet")

    @property
    def url(self) -> str:
        return (os.environ.get(URL_ENV) or BASE_URL).rstrip("/") + "/" + self.file

    @property
    def model_file(self) -> str:
        return f"akamaster-{self.name}.safetensors"


PUBLISHED: dict[str, PublishedNet] = {n.name: n for n in (
    PublishedNet("resnet20", 20, "resnet20-12fca82f.th",
                 "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", 8.27, 1_099_231),
    PublishedNet("resnet32", 32, "resnet32-d509ac18.th",
                 "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850", 7.37, 1_890_043),
    PublishedNet("resnet44", 44, "resnet44-014dd654.th",
                 "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4", 6.90, 2_680_855),
    PublishedNet("resnet56", 56, "resnet56-4bfd9763.th",
                 "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367", 6.61, 3_471_733),
)}


def published_dir() -> Path:
    """Where downloaded nets are kept: ``<data folder>/published`` (``$RESNET_VIZ_DATA`` moves it)."""
    return default_data_dir() / "published"


def net(name: str) -> PublishedNet:
    if name not in PUBLISHED:
        raise DownloadError(f"unknown published net {name!r}; choose one of {', '.join(PUBLISHED)}")
    return PUBLISHED[name]


def installed(name: str, dest: Path | None = None) -> Path | None:
    """The model file of ``name`` in ``dest`` (default ``published_dir()``), or None before its download."""
    path = Path(dest or published_dir()) / net(name).model_file
    return path if path.is_file() else None


def download(name: str, dest: Path | None = None, *, progress: ProgressFn | None = None,
             stop: threading.Event | None = None) -> dict[str, Any]:
    """Get published net ``name`` into ``dest`` (default ``published_dir()``) as a model file the
    app opens; a file already there is kept. Returns plain data: name, path, bytes, where from."""
    n = net(name)
    folder = Path(dest or published_dir())
    out = folder / n.model_file
    if out.is_file():
        return {"name": n.name, "path": str(out), "bytes": out.stat().st_size, "from": "already here"}
    folder.mkdir(parents=True, exist_ok=True)
    local = _local_copy(n)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f"{TEMP_PREFIX}{n.file}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if local is None:
            _fetch(n, tmp, progress, stop)
        _say(progress, 0.95, f"{n.file}: converting to this app's module names")
        state = load_published(local or tmp, n.config)
        _save(state, n, out)
    finally:
        tmp.unlink(missing_ok=True)
    _say(progress, 1.0, f"{n.name}: ready")
    return {"name": n.name, "path": str(out), "bytes": out.stat().st_size,
            "from": str(local) if local is not None else n.url}


def _local_copy(n: PublishedNet) -> Path | None:
    """Their file in the team's copy beside the checkout, if it is there with the pinned hash."""
    path = SHARED_COPY / n.file if SHARED_COPY is not None else None
    return path if path is not None and path.is_file() and _sha256(path) == n.sha256 else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _say(progress: ProgressFn | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def _open(url: str) -> Any:
    host = urllib.parse.urlsplit(url).netloc or url
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "resnet-viz"}),
                                      timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{host} answered {url} with HTTP {e.code} ({e.reason}); "
                            f"the file may have moved: set {URL_ENV} to a mirror") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot reach {host} ({reason}): this machine looks offline; the published nets "
                            f"need that download (or a mirror named by {URL_ENV})") from None


def _fetch(n: PublishedNet, tmp: Path, progress: ProgressFn | None, stop: threading.Event | None) -> None:
    """``n``'s file from its URL into ``tmp``, in chunks, with progress and stop; refused unless its
    sha256 is the pinned one."""
    url = n.url
    limit = 4 * n.size  # a server sending far more than the file is not sending the file
    h, got = hashlib.sha256(), 0
    with _open(url) as resp, open(tmp, "wb") as f:
        total = int(resp.headers.get("Content-Length") or 0) or n.size
        while True:
            if stop is not None and stop.is_set():
                raise Cancelled("stopped by the user")
            try:
                chunk = resp.read(CHUNK)
            except OSError as e:
                raise DownloadError(f"the download of {n.file} broke off after {got:,} bytes ({e}); "
                                    "try again") from None
            if not chunk:
                break
            got += len(chunk)
            if got > limit:
                raise DownloadError(f"{url} sent more than {limit:,} bytes, far more than {n.file}; not saved")
            h.update(chunk)
            f.write(chunk)
            _say(progress, 0.9 * min(got / total, 1.0), f"{n.file}: {got / 1e6:.1f} of {total / 1e6:.1f} MB")
    if h.hexdigest() != n.sha256:
        raise DownloadError(f"{n.file} from {url} is not the published file: its sha256 is {h.hexdigest()[:16]}..., "
                            f"pinned {n.sha256[:16]}...; not saved")


def our_key(theirs: str) -> str:
    """Their parameter name as ours: ``module.layer2.0.bn1.weight`` -> ``stage2.block0.bn1.weight``,
    ``module.linear.bias`` -> ``fc.bias``; the stem (``conv1``, ``bn1``) keeps its name."""
    parts = theirs.removeprefix("module.").split(".")
    if parts[0].startswith("layer") and len(parts) > 2:
        parts[:2] = [f"stage{parts[0].removeprefix('layer')}", f"block{parts[1]}"]
    elif parts[0] == "linear":
        parts[0] = "fc"
    return ".".join(parts)


def to_our_state(theirs: Mapping[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Their state_dict under our names, checked against a ``config`` net: every key of theirs has a
    place and every weight of ours a value (their checkpoints predate BatchNorm's step counter,
    which starts at 0 here)."""
    ours = build_model(config).state_dict()
    mapped = {our_key(k): v for k, v in theirs.items()}
    unexpected = sorted(set(mapped) - set(ours))
    missing = sorted(k for k in set(ours) - set(mapped) if not k.endswith("num_batches_tracked"))
    if unexpected or missing:
        raise DownloadError(f"the checkpoint does not fit a {config.label}: "
                            f"{len(missing)} weights missing (e.g. {missing[:2]}), "
                            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    bad = [k for k, v in mapped.items() if tuple(v.shape) != tuple(ours[k].shape)]
    if bad:
        raise DownloadError(f"the checkpoint does not fit a {config.label}: {bad[0]} has shape "
                            f"{tuple(mapped[bad[0]].shape)}, expected {tuple(ours[bad[0]].shape)}")
    return {k: mapped.get(k, ours[k]).detach().to(ours[k].dtype).contiguous() for k in ours}


def load_published(path: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Their checkpoint at ``path`` as a state_dict of a ``config`` net, read with ``weights_only``
    (tensors and plain containers only: no code from the file runs)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a refused or damaged pickle has many exception types
        raise DownloadError(f"{Path(path).name} is not a readable checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DownloadError(f"{Path(path).name} holds no state_dict of tensors")
    return to_our_state(state, config)


def _save(state: dict[str, torch.Tensor], n: PublishedNet, out: Path) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DownloadError(f"{n.file} has non-finite weights (e.g. {bad[0]})")
    config = RunConfig(model=n.config, data=DataConfig(source="cifar10", download=False),
                       name=f"{ORIGIN} {n.name}")
    meta = {
        "config": json.dumps(config.to_dict()),
        "origin": "published (akamaster)",
        "reported_test_acc": json.dumps(round(1 - n.error / 100, 4)),
        "source_url": n.url, "source_file": n.file, "source_sha256": n.sha256, "licence": LICENCE,
        "note": "trained by akamaster on the official CIFAR-10; keys mapped to this app's names by "
                "resnet_viz.store.published (option A padding on both sides, ImageNet input normalization)",
    }
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=meta)


def listing(dest: Path | None = None) -> list[dict[str, Any]]:
    """The four nets as plain data: what they are, where from, and whether they are here yet."""
    return [{"name": n.name, "label": n.config.label, "depth": n.depth, "file": n.file, "url": n.url,
             "sha256": n.sha256, "bytes": n.size, "reported_test_error": n.error,
             "local_copy": _local_copy(n) is not None,
             "path": str(p) if (p := installed(n.name, dest)) is not None else None}
            for n in PUBLISHED.values()]
