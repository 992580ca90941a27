"""Skip/branch matrices and their reading, from a real tiny training run's records."""

from __future__ import annotations

import json

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.experiments.skipbranch import skip_branch
from resnet_viz.training.loop import fit


def _records(shortcut: str) -> list[dict]:
    cfg = RunConfig(model=ModelConfig(depth=8, shortcut=shortcut), data=DataConfig(),
                    train=TrainConfig(steps=20, epochs=None, batch_size=32, lr=0.05, probe_every=5, log_every=5))
    recs: list[dict] = []
    fit(cfg, data=make_synthetic(320, 64, 0), on_records=recs.extend)
    return recs


def test_residual_run_gives_matrices_and_a_reading() -> None:
    sb = skip_branch(_records("A"))
    assert sb.blocks == ["stage1.block0", "stage2.block0", "stage3.block0"]
    assert sb.steps == [1, 6, 11, 16]
    assert len(sb.ratio) == 3 and all(len(r) == 4 for r in sb.ratio)
    assert all(v is not None and v > 0 for r in sb.ratio for v in r)
    assert all(-1 <= v <= 1 for r in sb.cos for v in r)
    assert "||F(x)||/||x||" in sb.reading and "step 16" in sb.reading
    json.dumps(sb.to_dict())


def test_plain_run_and_no_records_are_said_plainly() -> None:
    assert "plain net" in skip_branch(_records("none")).reading
    assert "no per-block probes" in skip_branch([]).reading
