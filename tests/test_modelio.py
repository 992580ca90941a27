"""Exported model files: round trip, damage, and the models shipped in assets/."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import CIFAR10_CLASSES
from resnet_viz.data.synthetic import SYNTHETIC_CLASSES
from resnet_viz.store.models import (
    ASSETS_DIR,
    ModelFileError,
    class_names,
    export_model,
    load_model_file,
    shipped_models,
)
from resnet_viz.store.rundir import RunDir


def _run_with_checkpoint(root: Path, shortcut: str = "A") -> tuple[RunDir, torch.nn.Module]:
    from resnet_viz.nets.cifar import build_model

    cfg = RunConfig(model=ModelConfig(depth=8, shortcut=shortcut), train=TrainConfig(steps=1, epochs=None))
    run = RunDir.create(root, cfg, "export-me")
    torch.manual_seed(3)
    model = build_model(cfg.model)
    run.save_checkpoint(model.state_dict(), None, {"step": 1})
    run.append_metrics([{"kind": "eval", "step": 1, "test_acc": 0.5, "test_loss": 1.0}])
    return run, model


def test_export_then_load_gives_the_same_model(tmp_path: Path) -> None:
    run, model = _run_with_checkpoint(tmp_path)
    path = export_model(run, tmp_path / "m.safetensors", {"note": "made by a test"})
    loaded, cfg, meta = load_model_file(path)
    assert cfg == run.config() and meta["note"] == "made by a test" and meta["test_acc"] == "0.5"
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(loaded(x), model(x)) and not loaded.training


def test_damaged_or_foreign_files_give_clear_errors(tmp_path: Path) -> None:
    run, _ = _run_with_checkpoint(tmp_path)
    good = export_model(run, tmp_path / "good.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ModelFileError, match="not a readable model file"):
        load_model_file(cut)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model_file(tmp_path / "missing.safetensors")
    pickle_like = tmp_path / "evil.safetensors"
    pickle_like.write_bytes(b"\x80\x04\x95 not safetensors, never unpickled")
    with pytest.raises(ModelFileError):
        load_model_file(pickle_like)
    # Weights that do not fit the architecture named in the metadata.
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has keys() but is not iterable)
    tensors.pop("fc.weight")
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match="does not fit"):
        load_model_file(tmp_path / "short.safetensors")
    tensors = {k: v.clone() for k, v in tensors.items()}
    tensors["fc.bias"] = torch.full_like(tensors["fc.bias"], float("nan"))
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match="non-finite"):
        load_model_file(tmp_path / "nan.safetensors")


def test_class_names_follow_the_training_data() -> None:
    synth = RunConfig(data=DataConfig(source="synthetic"))
    cifar = RunConfig(data=DataConfig(source="cifar10"))
    assert class_names(synth) == SYNTHETIC_CLASSES and class_names(cifar) == CIFAR10_CLASSES
    odd = RunConfig(model=ModelConfig(num_classes=3), data=DataConfig(source="folder", path="/nonexistent"))
    assert class_names(odd) == ("class 0", "class 1", "class 2")


def test_shipped_models_load_and_are_trained() -> None:
    refs = shipped_models()
    if not refs:
        pytest.skip(f"no shipped models in {ASSETS_DIR}")
    labels = [r.label for r in refs]
    assert labels[0].startswith("ResNet(A)-20") and any(lbl.startswith("plain-20") for lbl in labels)
    for ref in refs:
        model, cfg, meta = load_model_file(Path(ref.key))
        assert cfg.data.source == "folder" and cfg.model.num_classes == 10
        assert float(meta["test_acc"]) > 0.8  # trained on CIFAR-10 by the CLI (assets/README.md)
        assert Path(ref.key).stat().st_size < 1.5e6


def test_model_refs_list_shipped_then_runs_then_untrained(tmp_path: Path) -> None:
    from resnet_viz.store.models import UNTRAINED, model_refs

    run, _ = _run_with_checkpoint(tmp_path / "runs")
    bare = RunDir.create(tmp_path / "runs", run.config(), "no-checkpoint")  # nothing to load: left out
    refs = model_refs(tmp_path / "runs")
    kinds = [r.kind for r in refs]
    assert kinds == ["file"] * len(shipped_models()) + ["run", "untrained"] and refs[-1] == UNTRAINED
    assert refs[-2].key == run.path.name and bare.path.name not in {r.key for r in refs}
    assert model_refs(tmp_path / "runs", include_untrained=False)[-1].kind == "run"
    assert model_refs(tmp_path / "none", folder=tmp_path / "no-assets") == [UNTRAINED]
