"""Trained models as small files, and the models the app can open.

An exported model is one safetensors file of the model's ``state_dict`` with the whole
``RunConfig`` and a few facts (data set, test accuracy, how it was made) in its metadata:
about 1 MB for ResNet-20. ``assets/`` ships two of them so Inspect and Explain work on a
first start, before anyone has trained anything.

Loading never unpickles anything (safetensors only), checks that the tensors fit the
architecture (``strict=True``) and are finite.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from resnet_viz.config import ModelConfig, RunConfig
from resnet_viz.fsutil import PACKAGE_DIR, PROJECT_ROOT, atomic_path
from resnet_viz.nets.cifar import CifarResNet, build_model
from resnet_viz.store.listing import list_runs
from resnet_viz.store.published import published_dir
from resnet_viz.store.rundir import RunDir

# assets/ in a checkout; an installed package carries the same files as resnet_viz/assets/
# (pyproject.toml maps the folder there), so README's paths stay true in a checkout.
ASSETS_DIR = PROJECT_ROOT / "assets" if PROJECT_ROOT is not None else PACKAGE_DIR / "assets"
DEGRADATION_FILE = ASSETS_DIR / "degradation.json"  # the project's own run of the experiment (compare.py)


class ModelFileError(ValueError):
    """A model file cannot be used; the message says why."""


@dataclass(frozen=True)
class ModelRef:
    """Something the app can load a model from: a shipped/exported file or a run folder."""

    kind: str  # "file" or "run"
    key: str  # the file path, or the run id
    label: str  # for menus: "ResNet(A)-20 · shipped · 86.1%"


def tensors_fingerprint(tensors: Mapping[str, torch.Tensor], about: str) -> str:
    """A digest of named tensors' values, dtypes and shapes, and of ``about``: what the app
    caches model work by (a model's weights, an input image), so equal content shares a
    result whatever its file or widget was called, and a file rewritten under the same name
    gets a new one.

    For weights ``about`` names the architecture: equal tensors can fill different nets (a
    plain net and a ResNet with parameter-free shortcuts, option A, have the same parameters).
    """
    h = hashlib.sha256(about.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\n{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # as bytes: any dtype, bf16 too
    return h.hexdigest()[:32]


def export_model(run: RunDir, path: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the model of ``run``'s checkpoint (weights only) to ``path``."""
    ckpt = run.load_checkpoint()
    config = run.config()
    status = run.status()
    meta = {"config": json.dumps(config.to_dict()), "run_id": run.id, "status": status.get("status", "")}
    evals = [r for r in run.read_metrics() if r.get("kind") == "eval"]
    if evals:
        meta["test_acc"] = json.dumps(evals[-1]["test_acc"])
        meta["steps"] = json.dumps(evals[-1]["step"])
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt.model_state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_model_file(path: Path) -> tuple[CifarResNet, RunConfig, dict[str, str]]:
    """(model in eval mode, its config, the file's metadata) from an exported model file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except FileNotFoundError:
        raise ModelFileError(f"{path.name}: no such model file") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path.name} is not a readable model file ({e})") from None
    try:
        config = RunConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise ModelFileError(f"{path.name} does not say which architecture it holds ({e})") from None
    return _model_from_state(state, config, path.name), config, meta


def load_run_model(run: RunDir) -> tuple[CifarResNet, RunConfig]:
    """The model of a run's latest checkpoint, in eval mode."""
    config = run.config()
    return _model_from_state(run.load_checkpoint().model_state, config, f"run {run.id}"), config


def model_with_weights(config: ModelConfig, state: Mapping[str, torch.Tensor]) -> CifarResNet:
    """A new ``config`` network in eval mode holding a copy of ``state`` (checked: strict)."""
    model = build_model(config)
    model.load_state_dict(state, strict=True)  # copies: the module shares no memory with ``state``
    return model.eval()


def _model_from_state(state: dict[str, torch.Tensor], config: RunConfig, what: str) -> CifarResNet:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{what} has non-finite weights (e.g. {bad[0]})")
    model = build_model(config.model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ModelFileError(f"{what} does not fit a {config.model.label}: {first}") from None
    return model.eval()


def class_names(config: RunConfig) -> tuple[str, ...]:
    """The class names a model was trained on, from its data config."""
    from resnet_viz.data.files import class_folders, class_tree
    from resnet_viz.data.sources import CIFAR10_CLASSES
    from resnet_viz.data.synthetic import SYNTHETIC_CLASSES

    n = config.model.num_classes
    src = config.data
    if src.source == "synthetic" and n == len(SYNTHETIC_CLASSES):
        return SYNTHETIC_CLASSES
    if src.source == "folder" and src.path:
        try:  # the class folders, sorted, as ImageFolder numbers them: the rules load_folder uses
            names = class_folders(class_tree(Path(src.path)))
        except OSError:
            names = ()
        if len(names) == n:
            return names
    if n == len(CIFAR10_CLASSES):
        return CIFAR10_CLASSES
    return tuple(f"class {i}" for i in range(n))


def shipped_models(folder: Path = ASSETS_DIR) -> list[ModelRef]:
    """The exported models in ``folder`` (``*.safetensors``), labelled from their metadata."""
    refs = []
    for p in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
            cfg = RunConfig.from_dict(json.loads(meta["config"]))
            acc = json.loads(meta["test_acc"]) if "test_acc" in meta else None
            reported = json.loads(meta["reported_test_acc"]) if "reported_test_acc" in meta else None
        except (SafetensorError, OSError, KeyError, ValueError, TypeError):
            continue  # not one of ours: never break the menu
        tail = f" · {acc:.1%} test accuracy" if isinstance(acc, (int, float)) else ""
        # A published net's figure is its authors', on the official test set: said as such.
        tail += f" · {reported:.1%} reported (official test set)" if isinstance(reported, (int, float)) else ""
        label = f"{cfg.model.label} · {meta.get('origin', 'shipped')}{tail}"
        refs.append((cfg.model.shortcut == "none", ModelRef("file", str(p), label)))
    return [ref for _, ref in sorted(refs, key=lambda t: t[0])]  # residual nets first, then plain


UNTRAINED = ModelRef("untrained", "build", "Untrained model from the Build page")


def model_refs(runs_root: Path, include_untrained: bool = True, folder: Path = ASSETS_DIR,
               visible: Callable[[str | None], bool] | None = None, published: Path | None = None) -> list[ModelRef]:
    """What a model picker offers: the shipped models, the published nets downloaded into
    ``published`` (default ``store.published.published_dir()``), then every run under ``runs_root``
    with a readable config and a checkpoint (newest first, labelled with its test accuracy)
    whose owner is ``visible`` (all by default), then (``include_untrained``) the Build page's
    untrained model. Damaged runs are left out."""
    refs = [*shipped_models(folder), *shipped_models(published if published is not None else published_dir())]
    for info in list_runs(runs_root):
        if visible is not None and not visible(info.owner):
            continue
        if info.damaged is None and (info.path / "checkpoint.safetensors").is_file() and info.config is not None:
            acc = f" · {info.test_accuracy:.1%}" if info.test_accuracy is not None else ""
            refs.append(ModelRef("run", info.id, f"{info.label} · {info.name or info.id}{acc}"))
    if include_untrained:
        refs.append(UNTRAINED)
    return refs
