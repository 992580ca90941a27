"""The degradation experiment: configs, final errors and the verdict's words."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.experiments.degradation import (
    DEFAULT_STEPS,
    DEGRADATION_DEPTHS,
    SAME_TOLERANCE,
    default_train_config,
    degradation_configs,
    degradation_groups,
    degradation_verdict,
    export_result,
    final_errors,
    new_tag,
    parse_run_name,
    read_result,
    run_key,
    run_name,
)


def _records(train_error: float, test_error: float | None = None, end: str | None = "finished", n: int = 80,
             loss: float = 1.0) -> list[dict]:
    recs: list[dict] = [{"kind": "step", "step": i + 1, "epoch": (i + 1) / 40, "loss": loss, "acc": 1 - train_error,
                         "lr": 0.1, "ips": 1000.0, "elapsed": float(i)} for i in range(n)]
    recs.append({"kind": "eval", "step": n, "epoch": n / 40, "test_loss": 1.2,
                 "test_acc": 1 - (train_error + 0.05 if test_error is None else test_error), "elapsed": float(n)})
    if end:
        recs.append({"kind": "end", "status": end, "message": "", "steps": n, "elapsed": float(n)})
    return recs


def _four(p20: float, p56: float, r20: float, r56: float) -> dict[str, list[dict]]:
    return {"plain-20": _records(p20), "plain-56": _records(p56), "resnet-20": _records(r20),
            "resnet-56": _records(r56)}


def test_configs_differ_only_in_depth_shortcut_and_name():
    base = RunConfig(model=ModelConfig(depth=32, shortcut="B", width=2),
                     data=DataConfig(source="cifar10", seed=3),
                     train=TrainConfig(epochs=None, steps=600, batch_size=128, seed=7), name="mine")
    cfgs = degradation_configs(base)
    assert [c.name for c in cfgs] == ["degradation plain-20", "degradation plain-56",
                                      "degradation resnet-20", "degradation resnet-56"]
    assert [(c.model.depth, c.model.shortcut) for c in cfgs] == [(20, "none"), (56, "none"), (20, "A"), (56, "A")]
    for c in cfgs:
        assert c.train == base.train and c.data == base.data
        assert dataclasses.replace(c.model, depth=32, shortcut="B") == base.model  # width etc. kept
        assert run_key(c.model.depth, c.model.shortcut) == c.name.removeprefix("degradation ")
    assert DEGRADATION_DEPTHS == (20, 56)


def test_configs_reject_bad_depths():
    with pytest.raises(ValueError, match="shallow then deep"):
        degradation_configs(RunConfig(), depths=(56, 20))
    with pytest.raises(ValueError, match="depth 21"):
        degradation_configs(RunConfig(), depths=(21, 56))


def test_final_errors_window_and_missing_parts():
    recs = [{"kind": "step", "step": i, "loss": 2.0 if i < 10 else 1.0, "acc": 0.0 if i < 10 else 0.5}
            for i in range(20)]
    recs.append({"kind": "eval", "step": 10, "test_acc": 0.3})
    recs.append({"kind": "eval", "step": 20, "test_acc": 0.4})
    out = final_errors(recs, window=10)
    assert out["train_error"] == pytest.approx(0.5) and out["train_loss"] == pytest.approx(1.0)
    assert out["test_error"] == pytest.approx(0.6)
    assert final_errors([]) == {"train_error": None, "test_error": None, "train_loss": None}
    assert math.isnan(final_errors([{"kind": "step", "step": 1, "loss": float("nan"), "acc": 0.1}])["train_loss"])
    with pytest.raises(ValueError, match="window"):
        final_errors(recs, window=0)


def test_verdict_reference_numbers():
    # Measured here: 600 steps of batch 128 on CIFAR-10 with a bare loop.
    v = degradation_verdict(_four(0.43, 0.72, 0.36, 0.38))
    assert v.plain_degrades is True
    # 2 points is above the 1-point noise floor, so the bool says the deeper ResNet is
    # worse; the words put it next to the plain nets' 29 points.
    assert v.resnet_degrades is True
    assert "The 56-layer plain net ended with 72% training error against 43% for the 20-layer plain net" in v.text
    assert "worse by 29 points (degradation)" in v.text
    assert "The 56-layer ResNet ended with 38% training error against 36%" in v.text
    assert "slightly worse (2.0 points), far less than the plain nets' 29 points" in v.text
    assert "Still missing" not in v.text
    assert v.numbers["plain-56"]["train_error"] == pytest.approx(0.72)


def test_verdict_without_degradation():
    v = degradation_verdict(_four(0.43, 0.425, 0.36, 0.33))
    assert v.plain_degrades is False and v.resnet_degrades is False
    assert "about the same" in v.text and "trained better by 3.0 points" in v.text
    assert "did not degrade" in v.text and "(degradation)" not in v.text


def test_verdict_tolerance_boundary():
    v = degradation_verdict(_four(0.40, 0.60, 0.30, 0.30 + SAME_TOLERANCE * 0.9))
    assert v.resnet_degrades is False and "so the shortcuts removed the degradation" in v.text


def test_verdict_with_missing_and_unfinished_runs():
    results = {"plain-20": _records(0.43), "plain-56": _records(0.72, end="diverged", loss=float("nan")),
               "resnet-20": _records(0.36, end=None), "resnet-56": []}
    v = degradation_verdict(results)
    assert v.plain_degrades is True  # a diverged run is a result
    assert v.resnet_degrades is None
    assert "plain-56 diverged" in v.text
    assert "Still missing: resnet-20 (still training, step 80), resnet-56 (no records)." in v.text
    stopped = dict(results, **{"resnet-20": _records(0.36, end="stopped"), "resnet-56": _records(0.4)})
    assert "resnet-20 (stopped at step 80)" in degradation_verdict(stopped).text
    preview = degradation_verdict(dict(results, **{"resnet-56": _records(0.4, end=None)}), require_finished=False)
    assert preview.resnet_degrades is True and "Still missing" not in preview.text
    empty = degradation_verdict({})
    assert empty.plain_degrades is None and empty.resnet_degrades is None and empty.numbers == {}
    assert "plain-20 (no records)" in empty.text


def test_default_budget_and_groups():
    tc = default_train_config()
    assert tc.steps == DEFAULT_STEPS == 1000 and tc.batch_size == 128 and tc.epochs is None
    assert not tc.eval_tta and DEFAULT_STEPS % tc.eval_every == 0
    runs = [SimpleNamespace(id=i, name=n) for i, n in (
        ("6", "degradation resnet-56 #20250102-090000"), ("5", "degradation plain-20 #20250102-090000"),
        ("4", "degradation plain-20 #20250101-080000"), ("3", "degradation plain-20 #20250101-080000"),
        ("2", "degradation plain-32 #20250101-080000"), ("1", "my own run"), ("0", "degradation resnet-20"))]
    groups = degradation_groups(runs)
    assert [tag for tag, _ in groups] == ["20250102-090000", "20250101-080000", ""]
    assert {k: r.id for k, r in groups[0][1].items()} == {"resnet-56": "6", "plain-20": "5"}
    assert {k: r.id for k, r in groups[1][1].items()} == {"plain-20": "4"}  # newest wins; depth 32 is not in it
    assert degradation_groups([]) == []


def test_a_finished_experiment_exports_to_json_and_reads_back_to_the_same_verdict():
    results = _four(0.35, 0.65, 0.27, 0.274)
    for recs in results.values():  # records the file leaves out: probes, and fields the page never reads
        recs.insert(0, {"kind": "probe", "step": 1, "blocks": {"stage1.block0": {"ratio": 0.5}}})
    doc = json.loads(json.dumps(export_result(results, {"data": "CIFAR-10 (JPEG copy)", "steps": 80})))
    runs, about = read_result(doc)
    assert about == {"data": "CIFAR-10 (JPEG copy)", "steps": 80} and sorted(runs) == sorted(results)
    assert all(r["kind"] in ("step", "eval", "end") and "ips" not in r for v in runs.values() for r in v)
    assert degradation_verdict(runs).text == degradation_verdict(results).text
    unfinished = dict(results, **{"plain-56": _records(0.65, end=None)})
    with pytest.raises(ValueError, match="not finished: plain-56"):
        export_result(unfinished, {})
    for bad in ([], {"runs": {}}, {"about": {}, "runs": {"plain-20": "x"}}):
        with pytest.raises(ValueError, match="not a degradation result"):
            read_result(bad)


SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "degradation.json"


@pytest.mark.skipif(not SHIPPED.exists(), reason="no assets/degradation.json (benchmarks/degradation.py --export)")
def test_the_shipped_result_shows_the_degradation_problem_and_its_fix():
    """The Compare page shows this file before a person runs the experiment: it must say
    what the paper says, from real CIFAR-10 numbers measured by the benchmark."""
    runs, about = read_result(json.loads(SHIPPED.read_text()))
    assert "CIFAR-10" in about["data"] and about["steps"] == DEFAULT_STEPS
    v = degradation_verdict(runs)
    assert v.plain_degrades is True and "(degradation)" in v.text
    gap = {k: v.numbers[f"{k}-56"]["train_error"] - v.numbers[f"{k}-20"]["train_error"] for k in ("plain", "resnet")}
    assert gap["plain"] > 0.1 and gap["resnet"] < gap["plain"] / 2, gap
    for recs in runs.values():
        got = [r["step"] for r in recs if r["kind"] == "step"]
        assert got == list(range(1, len(got) + 1))


def test_run_names_are_made_and_read_by_one_pair_of_functions():
    for key in ("plain-20", "plain-56", "resnet-20", "resnet-110"):
        for tag in ("20260101-120000", "", "my tag #2"):
            assert parse_run_name(run_name(key, tag)) == (key, tag)
    assert run_name("plain-20", "20260101-120000") == "degradation plain-20 #20260101-120000"
    assert run_name("resnet-56") == "degradation resnet-56"
    for other in ("my own run", "degradation plain20", "degradation deep-20 #x", "degradation plain-20 #"):
        assert parse_run_name(other) is None, other
    with pytest.raises(ValueError, match="not a degradation run key"):
        run_name("plain 20", "x")
    with pytest.raises(ValueError, match="tag"):
        run_name("plain-20", " x")
    tag = new_tag()
    assert parse_run_name(run_name("plain-20", tag)) == ("plain-20", tag) and len(tag) == len("20260101-120000")


def test_queued_configs_carry_their_tag_and_group_together():
    base = RunConfig(model=ModelConfig(), data=DataConfig(source="synthetic"), train=TrainConfig(steps=10, epochs=None))
    cfgs = degradation_configs(base, tag="20260101-120000")
    assert [c.name for c in cfgs] == [f"degradation {k} #20260101-120000"
                                      for k in ("plain-20", "plain-56", "resnet-20", "resnet-56")]
    runs = [SimpleNamespace(id=str(i), name=c.name) for i, c in enumerate(cfgs)]
    [(tag, members)] = degradation_groups(runs)
    assert tag == "20260101-120000" and sorted(members) == ["plain-20", "plain-56", "resnet-20", "resnet-56"]
    assert [c.name for c in degradation_configs(base)][0] == "degradation plain-20"  # untagged, as before
