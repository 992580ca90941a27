"""The degradation experiment of He et al. (Fig. 1 and Fig. 6) as configs, numbers and words.

Four runs that differ only in depth and shortcut: plain-20, plain-56, ResNet-20 and
ResNet-56 (option A, no extra parameters, so the comparison with the plain nets is
like for like). Plotting lives in ``plots.compare_curves``; this module decides what
the finished runs show and says it in plain words about *these* numbers.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resnet_viz.config import RunConfig, TrainConfig
from resnet_viz.fsutil import as_number

DEGRADATION_DEPTHS: tuple[int, int] = (20, 56)
NAME_PREFIX = "degradation "
RESNET_SHORTCUT = "A"  # parameter-free, so plain-n and ResNet-n have exactly the same parameters
# Differences in training error below this are "about the same". The final training
# error averages the last 50 steps of batch 128 (6,400 images); at 40% error its
# sampling standard deviation is sqrt(0.4 * 0.6 / 6400), about 0.6 points, and a
# difference of two such averages about 0.9 points: 1 point is the noise floor.
SAME_TOLERANCE = 0.01
# A ResNet gap at most this share of the plain gap "removed most of the degradation".
MOSTLY_FIXED_SHARE = 0.5
SLIGHT = 0.05  # a deeper-net gap up to 5 points is called "slightly worse"
FINISHED_STATUSES = ("finished", "diverged")  # a diverged run is a result, not a missing one
# The budget the reference numbers were measured at (plain-20 43%, plain-56 72%, ResNet-20
# 36%, ResNet-56 38% training error): long enough for plain-56 to fall clearly behind,
# short enough to run while reading on a fast CPU (11 minutes for all four with bf16; a slow
# one gets the quick replay, ``estimates.quick_steps``).
DEFAULT_STEPS = 1000
# A run's name says which experiment it belongs to: "degradation plain-20 #TAG", made by
# ``run_name`` and read back by ``parse_run_name`` (the only two places that know the format).
_NAME_RE = re.compile(r"^degradation (plain|resnet)-(\d+)(?: #(.+))?$")


def train_config(steps: int = DEFAULT_STEPS, evaluations: int = 4) -> TrainConfig:
    """The experiment's training settings: ``steps`` of batch 128 and the usual schedule,
    with ``evaluations`` spread evenly (the last at the end) and no test-time flips: one pass
    over 10,000 test images costs about 25 training steps (50 with flips), and the verdict
    reads training error."""
    if isinstance(evaluations, bool) or not isinstance(evaluations, int) or evaluations < 1:
        raise ValueError(f"evaluations must be a positive integer, got {evaluations!r}")
    return TrainConfig(epochs=None, steps=steps, batch_size=128, eval_every=max(1, -(-steps // evaluations)),
                       eval_tta=False)


def default_train_config() -> TrainConfig:
    """The full replay's settings: ``DEFAULT_STEPS`` steps (``train_config``)."""
    return train_config(DEFAULT_STEPS)


def run_key(depth: int, shortcut: str) -> str:
    """"plain-20", "resnet-56": the keys of ``degradation_verdict``'s mapping."""
    return f"{'plain' if shortcut == 'none' else 'resnet'}-{depth}"


def new_tag() -> str:
    """A tag for four runs queued together: the time, so that the largest tag is the newest."""
    return time.strftime("%Y%m%d-%H%M%S")


def run_name(key: str, tag: str = "") -> str:
    """"degradation plain-20 #TAG" for run ``key`` ("plain-20") of the experiment ``tag``
    (no " #TAG" when the tag is empty); ``parse_run_name`` reads it back."""
    if parse_run_name(NAME_PREFIX + key) is None:
        raise ValueError(f"not a degradation run key: {key!r} (expected e.g. 'plain-20' or 'resnet-56')")
    if tag != tag.strip() or "\n" in tag:
        raise ValueError(f"a tag must not start or end with spaces or hold a line break, got {tag!r}")
    return NAME_PREFIX + key + (f" #{tag}" if tag else "")


def parse_run_name(name: str) -> tuple[str, str] | None:
    """(run key, tag) of a name made by ``run_name``, e.g. ("plain-20", "20260101-120000");
    None for any other name. The depth is read as a number: "plain-020" is "plain-20"."""
    m = _NAME_RE.match(name)
    if m is None:
        return None
    return f"{m.group(1)}-{int(m.group(2))}", m.group(3) or ""


def _check_depths(depths: Sequence[int]) -> tuple[int, int]:
    if len(depths) != 2 or not all(isinstance(d, int) for d in depths) or depths[0] >= depths[1]:
        raise ValueError(f"depths must be two integers, shallow then deep, e.g. (20, 56); got {tuple(depths)}")
    return depths[0], depths[1]


def degradation_configs(base: RunConfig, depths: Sequence[int] = DEGRADATION_DEPTHS,
                        tag: str = "") -> list[RunConfig]:
    """plain-shallow, plain-deep, ResNet-shallow, ResNet-deep (option A), in that order,
    named by ``run_name`` with ``tag`` (e.g. ``new_tag()``) so that they group together.

    Everything but depth, shortcut and name comes from ``base``: the same data, seed (so
    the same data order and initialisation stream) and training budget, so any difference
    in the results is the depth and the shortcuts. Raises ValueError for a depth the
    block type cannot build.
    """
    _check_depths(depths)
    out = []
    for shortcut in ("none", RESNET_SHORTCUT):
        for d in depths:
            model = dataclasses.replace(base.model, depth=d, shortcut=shortcut)  # validates the depth
            out.append(dataclasses.replace(base, model=model, name=run_name(run_key(d, shortcut), tag)))
    return out


@dataclass(frozen=True)
class Verdict:
    plain_degrades: bool | None  # None until both plain runs are in
    resnet_degrades: bool | None
    text: str
    numbers: dict[str, dict[str, float | None]]  # run key -> final_errors()


def degradation_groups(infos: Sequence[Any],
                       depths: Sequence[int] = DEGRADATION_DEPTHS) -> list[tuple[str, dict[str, Any]]]:
    """Experiments found among runs, newest first: (tag, {run key: run}).

    A run belongs to one when ``parse_run_name`` reads its name (as ``degradation_configs``
    names the four queued together; an untagged name groups under ""). Runs are RunInfo-like
    (``name`` attribute), newest first as ``list_runs`` gives them, so when a key repeats
    within a tag the newest run wins. Keys outside ``depths`` are ignored.
    """
    shallow, deep = _check_depths(depths)
    groups: dict[str, dict[str, Any]] = {}
    for info in infos:
        parsed = parse_run_name(str(getattr(info, "name", "") or ""))
        if parsed is None or int(parsed[0].split("-")[1]) not in (shallow, deep):
            continue
        key, tag = parsed
        groups.setdefault(tag, {}).setdefault(key, info)
    # Tags are timestamps (YYYYmmdd-HHMMSS), so the largest is the newest.
    return sorted(groups.items(), key=lambda kv: kv[0], reverse=True)


def final_errors(records: Sequence[dict], window: int = 50) -> dict[str, float | None]:
    """{"train_error", "test_error", "train_loss"} at the end of a run; None where unknown.

    Training figures average the last ``window`` step records, because one batch's
    accuracy is too noisy to compare; test error is the last evaluation's. A diverged
    run's NaN loss stays NaN, so it cannot pass for a number.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 step, got {window}")
    steps = [r for r in records if isinstance(r, dict) and r.get("kind") == "step"][-window:]
    accs = [a for a in (as_number(r.get("acc")) for r in steps) if a is not None and math.isfinite(a)]
    losses = [v for v in (as_number(r.get("loss")) for r in steps) if v is not None]
    evals = [a for a in (as_number(r.get("test_acc")) for r in records
                         if isinstance(r, dict) and r.get("kind") == "eval") if a is not None]
    return {
        "train_error": 1.0 - sum(accs) / len(accs) if accs else None,
        "test_error": 1.0 - evals[-1] if evals else None,
        "train_loss": sum(losses) / len(losses) if losses else None,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _pts(d: float) -> str:
    d = abs(d) * 100
    return f"{d:.1f} points" if d < 9.95 else f"{d:.0f} points"


def _missing(results: Mapping[str, Sequence[dict]], key: str, require_finished: bool) -> str | None:
    """Why run ``key`` cannot be judged yet, or None when it can."""
    records = results.get(key)
    if not records:
        return f"{key} (no records)"
    steps = [r for r in records if isinstance(r, dict) and r.get("kind") == "step"]
    if not steps:
        return f"{key} (no training steps yet)"
    if require_finished:
        end = next((r for r in reversed(records) if isinstance(r, dict) and r.get("kind") == "end"), None)
        if end is None:
            return f"{key} (still training, step {steps[-1].get('step', '?')})"
        if end.get("status") not in FINISHED_STATUSES:
            return f"{key} ({end.get('status', 'unfinished')} at step {end.get('steps', '?')})"
    return None


def _pair_sentence(kind: str, shallow: int, deep: int, e_s: float, e_d: float, plain_gap: float | None) -> str:
    """One sentence on one pair; for the ResNets, weighed against the plain nets' gap."""
    what = "plain net" if kind == "plain" else "ResNet"
    d = e_d - e_s
    plain_degraded = plain_gap is not None and plain_gap > SAME_TOLERANCE
    if abs(d) <= SAME_TOLERANCE:
        body = f"about the same (within {100 * SAME_TOLERANCE:g} point)"
        if kind == "resnet" and plain_degraded:
            body += ", so the shortcuts removed the degradation"
    elif d < 0:
        body = f"the deeper net trained better by {_pts(d)}"
    elif kind == "plain":
        body = f"the deeper net trained worse by {_pts(d)} (degradation)"
    elif plain_degraded and d <= MOSTLY_FIXED_SHARE * plain_gap:  # type: ignore[operator]
        # The paper's point is the contrast, so a small ResNet gap is stated next to the plain one.
        body = (f"{'slightly worse' if d <= SLIGHT else 'worse'} ({_pts(d)}), far less than the plain nets' "
                f"{_pts(plain_gap)}, so the shortcuts removed most of the degradation")  # type: ignore[arg-type]
    elif plain_degraded:
        gap = _pts(plain_gap)  # type: ignore[arg-type]
        body = f"worse by {_pts(d)}, close to the plain nets' {gap}: the shortcuts did not fix it here"
    else:
        body = f"the deeper net trained worse by {_pts(d)}"
    return (f"The {deep}-layer {what} ended with {_pct(e_d)} training error against {_pct(e_s)} "
            f"for the {shallow}-layer {what}: {body}.")


def degradation_verdict(results: Mapping[str, Sequence[dict]], depths: Sequence[int] = DEGRADATION_DEPTHS,
                        require_finished: bool = True, window: int = 50) -> Verdict:
    """What the four runs show, keyed "plain-20", "plain-56", "resnet-20", "resnet-56".

    A run counts once it has an "end" record saying finished or diverged (with
    ``require_finished=False``: once it has any step, for a live preview). A pair's bool
    is None until both its runs count; a deeper net "degrades" when its final training
    error is more than ``SAME_TOLERANCE`` above the shallower one's.
    """
    shallow, deep = _check_depths(depths)
    keys = [run_key(d, s) for s in ("none", RESNET_SHORTCUT) for d in (shallow, deep)]
    numbers = {k: final_errors(results[k], window) for k in keys if results.get(k)}
    missing = {k: why for k in keys if (why := _missing(results, k, require_finished))}
    sentences: list[str] = []
    verdicts: dict[str, bool | None] = {}
    gaps: dict[str, float] = {}
    for kind in ("plain", "resnet"):
        ks, kd = f"{kind}-{shallow}", f"{kind}-{deep}"
        e_s, e_d = (numbers.get(k, {}).get("train_error") for k in (ks, kd))
        if ks in missing or kd in missing or e_s is None or e_d is None:
            verdicts[kind] = None
            continue
        gaps[kind] = e_d - e_s
        verdicts[kind] = e_d - e_s > SAME_TOLERANCE
        sentence = _pair_sentence(kind, shallow, deep, e_s, e_d, gaps.get("plain"))
        sentences.append(sentence)
        for k in (ks, kd):
            loss = numbers[k].get("train_loss")
            if loss is not None and not math.isfinite(loss):
                sentences.append(f"{k} diverged (its loss became non-finite), so its error is that of a broken net.")
    if verdicts.get("plain") is False and verdicts.get("resnet") is not None:
        sentences.append("The plain nets did not degrade in these runs, so they show nothing for the shortcuts to fix.")
    e_pd, e_rd = (numbers.get(k, {}).get("train_error") for k in (f"plain-{deep}", f"resnet-{deep}"))
    if e_pd is not None and e_rd is not None and not {f"plain-{deep}", f"resnet-{deep}"} & missing.keys():
        sentences.append(f"At {deep} layers, training error was {_pct(e_pd)} without shortcuts "
                         f"and {_pct(e_rd)} with them.")
    tests = {k: numbers.get(k, {}).get("test_error") for k in keys if k not in missing}
    if all(v is not None for v in tests.values()) and len(tests) == 4:
        listed = ", ".join(f"{k} {_pct(v)}" for k, v in tests.items())  # type: ignore[arg-type]
        sentences.append(f"Test error: {listed}.")
    if missing:
        sentences.append("Still missing: " + ", ".join(missing[k] for k in keys if k in missing) + ".")
    return Verdict(plain_degrades=verdicts["plain"], resnet_degrades=verdicts["resnet"],
                   text=" ".join(sentences), numbers=numbers)


# ---------------------------------------------------------------- a measured result, shipped

_KEEP = {"step": ("step", "epoch", "loss", "acc"), "eval": ("step", "epoch", "test_loss", "test_acc"),
         "end": ("status", "steps", "elapsed")}


def _compact(records: Sequence[dict]) -> list[dict]:
    """The records the verdict and the curves read, floats to 5 significant digits (a
    1,000-step run is then ~70 kB of JSON; probes, learning rates and speeds are left out)."""
    out = []
    for r in records:
        keep = _KEEP.get(r.get("kind", "")) if isinstance(r, dict) else None
        if keep:
            out.append({"kind": r["kind"], **{k: (float(f"{r[k]:.5g}") if isinstance(r[k], float) else r[k])
                                              for k in keep if k in r}})
    return out


def export_result(results: Mapping[str, Sequence[dict]], about: Mapping[str, Any]) -> dict[str, Any]:
    """A finished experiment as one JSON-ready dict: ``about`` (data set, budget, machine,
    times) and each run's compact records, for ``assets/degradation.json``."""
    missing = [k for k in (run_key(d, s) for s in ("none", RESNET_SHORTCUT) for d in DEGRADATION_DEPTHS)
               if _missing(results, k, require_finished=True)]
    if missing:
        raise ValueError(f"the experiment is not finished: {', '.join(missing)}")
    return {"about": dict(about), "runs": {k: _compact(v) for k, v in results.items()}}


def read_result(doc: Any) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """(runs' records, about) from ``export_result``'s dict; a ValueError if it is not one."""
    runs = doc.get("runs") if isinstance(doc, dict) else None
    about = doc.get("about") if isinstance(doc, dict) else None
    if not isinstance(runs, dict) or not isinstance(about, dict) or not all(
            isinstance(v, list) and all(isinstance(r, dict) for r in v) for v in runs.values()):
        raise ValueError("not a degradation result: expected {'about': {...}, 'runs': {'plain-20': [records], ...}}")
    return {str(k): list(v) for k, v in runs.items()}, about
