"""Background tasks: progress, stop, failure, and finding a task again by its key."""

from __future__ import annotations

import functools
import os
import time

import pytest
from conftest import wait_until

from resnet_viz.background.tasks import TaskRegistry
from resnet_viz.experiments import check, report
from resnet_viz.limits import ServerLimits


def _slow(n: int, delay: float, progress, stop) -> dict:
    for i in range(n):
        check(stop)
        report(progress, (i + 1) / n, f"step {i + 1} of {n}")
        time.sleep(delay)
    return {"n": n}


def slow(n: int, delay: float = 0.01):
    # A partial of a module-level function: it can be sent to a worker process, a closure cannot.
    return functools.partial(_slow, n, delay)


def boom(progress, stop):
    raise ValueError("the model has no block named 'x'")


def partial_then_wait(gate: str, progress, stop) -> dict:
    report(progress, 0.25, "coarse grid done", partial={"grid": 3})
    report(progress, 0.5, "half way")  # no partial: the last one stays
    deadline = time.monotonic() + 10
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"grid": 5}


@pytest.fixture(params=[True, False], ids=["worker", "thread"])
def isolate(request) -> bool:
    """Each registry test runs with tasks in worker processes (the app's way) and in threads."""
    return request.param


def test_a_task_reports_progress_and_its_result(isolate: bool) -> None:
    reg = TaskRegistry(isolate=isolate)
    task = reg.start("a", slow(20))
    assert task.wait(20)
    snap = task.snapshot()
    assert snap.state == "done" and snap.result == {"n": 20} and snap.fraction == 1.0 and snap.done
    assert reg.start("a", slow(99)) is task  # same key, finished: the result is reused


def test_stop_ends_a_task_within_one_step_and_a_new_start_reruns_it(isolate: bool) -> None:
    reg = TaskRegistry(isolate=isolate)
    task = reg.start("b", slow(10_000))
    wait_until(lambda: task.snapshot().fraction > 0, "the task to report progress", timeout=20)
    task.stop()
    assert task.wait(5)
    assert task.snapshot().state == "stopped" and task.snapshot().result is None
    again = reg.start("b", slow(3))
    assert again is not task and again.wait(20) and again.snapshot().state == "done"


def test_a_failing_task_keeps_its_message(isolate: bool) -> None:
    task = TaskRegistry(isolate=isolate).start("c", boom)
    assert task.wait(20)
    assert task.snapshot().state == "failed" and "no block" in task.snapshot().error


def test_finished_lists_the_succeeded_tasks_with_their_titles(isolate: bool) -> None:
    reg = TaskRegistry(isolate=isolate)
    reg.limits = ServerLimits(max_tasks=3)  # the three may all be running at once
    tasks = [reg.start("lesion|a", slow(2), title="Lesion study: ResNet-20"), reg.start("broken", boom),
             reg.start("signal|20", slow(3))]
    assert all(t.wait(20) for t in tasks)
    done = reg.finished()
    assert [(s.key, s.title, s.result) for s in done] == [
        ("lesion|a", "Lesion study: ResNet-20", {"n": 2}), ("signal|20", "signal|20", {"n": 3})]


def test_a_task_keeps_its_latest_partial_result_and_estimates_the_time_left(isolate: bool, tmp_path) -> None:
    gate = tmp_path / "gate"
    task = TaskRegistry(isolate=isolate).start("partial", functools.partial(partial_then_wait, str(gate)))
    wait_until(lambda: task.snapshot().fraction >= 0.5, "the task to report half way", timeout=20)
    snap = task.snapshot()
    assert snap.partial == {"grid": 3} and not snap.done and snap.result is None
    assert snap.eta_s is None or snap.eta_s == pytest.approx(snap.elapsed, rel=0.01)  # half done: as long again
    time.sleep(1.05)
    snap = task.snapshot()
    assert snap.eta_s == pytest.approx(snap.elapsed, rel=0.01)
    gate.touch()
    assert task.wait(10)
    assert task.snapshot().result == {"grid": 5} and task.snapshot().eta_s is None


def test_clock_and_eta_read_as_a_person_expects() -> None:
    from resnet_viz.background.progress import bar, clock, eta

    assert [clock(s) for s in (0, 59.4, 83.4, 3599.6, 3725)] == ["0:00", "0:59", "1:23", "1:00:00", "1:02:05"]
    assert clock(-3) == "0:00"
    assert eta(10.0, 0.25) == 30.0 and eta(0.5, 0.5) is None and eta(10.0, 0.01) is None and eta(10.0, 1.0) is None
    assert bar(0.5, 10) == "[#####     ]  50%"


def test_experiment_keys_name_the_data_set() -> None:
    from resnet_viz.background.tasks import data_tag, experiment_key
    from resnet_viz.config import DataConfig

    small, large = DataConfig(synthetic_train=640), DataConfig(synthetic_train=800)
    key = experiment_key("lesion", "run-1", data_tag(small, "Synthetic shapes"), 160)
    assert key == experiment_key("lesion", "run-1", data_tag(small, "Synthetic shapes"), 160)
    assert key != experiment_key("lesion", "run-1", data_tag(large, "Synthetic shapes"), 160)
    assert key != experiment_key("lesion", "run-1", data_tag(small, "My photos"), 160)
    with pytest.raises(ValueError, match="data set"):
        experiment_key("lesion", "run-1", "", 160)


def test_the_experiments_page_keys_a_model_on_two_data_sets_apart(tmp_path, monkeypatch) -> None:
    # The same untrained model, 160 test images of each of two synthetic sets: two lesion studies.
    from pathlib import Path

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from resnet_viz.app import tasks as app_tasks
    from resnet_viz.app.state import Keys
    from resnet_viz.background.jobs import JobRegistry
    from resnet_viz.config import DataConfig

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(root)
    keys: list[str] = []
    monkeypatch.setattr(app_tasks, "run_task", lambda key, *a, **kw: keys.append(key))
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(root / "app.py"), default_timeout=60)
        lesions = []
        for train in (640, 800):
            at.session_state[Keys.DATA_CONFIG] = DataConfig(source="synthetic", synthetic_train=train,
                                                            synthetic_test=160)
            at.switch_page("app_pages/experiments.py").run()
            model = next(s for s in at.selectbox if s.label == "Model")
            model.set_value(next(o for o in model.options if "Untrained" in o)).run()
            assert not at.exception, at.exception
            lesions.append({k for k in keys if k.startswith("lesion|")})
            keys.clear()
        assert all(len(k) == 1 for k in lesions), lesions
        assert lesions[0] != lesions[1]
    finally:
        JobRegistry.reset_shared()
        TaskRegistry.reset_shared()
        st.cache_resource.clear()
