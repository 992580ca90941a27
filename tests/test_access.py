"""Runs and tasks belong to the visitor who started them: others watch (or do not see) them,
only the owner or an admin steers them, and each visitor has their own share of the limits."""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from resnet_viz.access import (
    OPERATOR,
    Access,
    NotYours,
    Visitor,
    access_settings,
    issue_token,
    may_control,
    may_see,
    server_secret,
    token_value,
    visitor_for,
)
from resnet_viz.app.state import Keys
from resnet_viz.background.jobs import JobRegistry
from resnet_viz.background.tasks import TaskRegistry
from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from resnet_viz.data.sources import make_synthetic
from resnet_viz.limits import ServerLimits
from resnet_viz.store.listing import list_runs

ROOT = Path(__file__).resolve().parents[1]
ANN, BOB, ADMIN = Visitor("browser:ann", "ann"), Visitor("browser:bob", "bob"), Visitor("user:t@x", "t@x", admin=True)


def config(steps: int = 100_000) -> RunConfig:
    return RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic"),
                     train=TrainConfig(steps=steps, epochs=None, batch_size=32, eval_every=0))


# ------------------------------------------------------------------ the rules


def test_only_the_owner_or_an_admin_controls_and_others_see_as_the_server_says() -> None:
    read, hidden = Access(), Access(others="hidden")
    assert may_control(ANN, ANN.id) and not may_control(BOB, ANN.id) and may_control(ADMIN, ANN.id)
    assert not may_control(ANN, None) and may_control(ADMIN, None)  # the operator's runs: admins only
    assert may_see(BOB, ANN.id, read) and not may_see(BOB, ANN.id, hidden) and may_see(ADMIN, ANN.id, hidden)
    assert may_see(BOB, None, hidden)  # the operator's runs are for the class


def test_settings_are_read_and_a_bad_one_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNET_VIZ_ADMINS", " T@X , b@y ")
    monkeypatch.setenv("RESNET_VIZ_OTHERS", "hidden")
    a = access_settings()
    assert a.admins == {"t@x", "b@y"} and a.others == "hidden" and not a.everyone_admin
    assert visitor_for("user", "", b"s", a, email="T@x").admin
    assert not visitor_for("user", "", b"s", a, email="z@x").admin
    monkeypatch.setenv("RESNET_VIZ_ADMINS", "*")
    assert visitor_for("browser", "anything", b"s", access_settings()).admin  # one person's own machine
    monkeypatch.setenv("RESNET_VIZ_OTHERS", "everything")
    with pytest.raises(ValueError, match="RESNET_VIZ_OTHERS"):
        access_settings()


def test_ids_come_from_the_servers_secret_and_tokens_cannot_be_forged(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESNET_VIZ_SECRET", raising=False)
    secret = server_secret(tmp_path)
    assert server_secret(tmp_path) == secret and len(secret) == 32  # kept, so ids outlive a restart
    assert stat.S_IMODE(os.stat(tmp_path / ".visitor-secret").st_mode) == 0o600
    a = visitor_for("browser", "cookie-1", secret, Access())
    assert a == visitor_for("browser", "cookie-1", secret, Access()) != visitor_for("browser", "cookie-2", secret,
                                                                                     Access())
    assert "cookie-1" not in a.id  # run folders never hold the browser's secret
    token = issue_token(secret)
    assert token_value(token, secret) is not None
    forged = token.split(".")[0] + "." + "0" * 16
    assert token_value(forged, secret) is None and token_value("admin", secret) is None
    assert token_value(token, b"another server") is None


# ------------------------------------------------------------------ runs


@pytest.fixture
def registry(tmp_path: Path):
    reg = JobRegistry(tmp_path, isolate=False)
    yield reg
    reg.shutdown()


def test_a_visitor_cannot_steer_anothers_run(registry: JobRegistry) -> None:
    data = make_synthetic(640, 160, seed=0)
    job = registry.submit(config(), name="anns", data=data, by=ANN)
    assert [r.owner for r in list_runs(registry.runs_root)] == [ANN.id]
    for action in (job.pause, job.resume_training, job.stop):
        with pytest.raises(NotYours, match="another visitor"):
            action(BOB)
    job.pause(ANN)
    job.resume_training(ADMIN)
    job.stop(ANN)
    assert job.wait(30)
    with pytest.raises(NotYours):
        registry.resume(job.run_id, BOB)
    cli = registry.submit(config(steps=5), name="cli", data=data)  # the command line: nobody's
    assert cli.wait(60) and list_runs(registry.runs_root)[0].owner is None
    with pytest.raises(NotYours, match="operator"):
        registry.resume(cli.run_id, ANN)


def test_each_visitor_has_their_own_share_of_the_queue(registry: JobRegistry) -> None:
    registry.limits = ServerLimits(max_runs=3, max_runs_per_visitor=1)
    data = make_synthetic(640, 160, seed=0)
    first = registry.submit(config(), data=data, by=ANN)
    with pytest.raises(ValueError, match="you already have 1 of the 1 training runs one visitor may queue"):
        registry.submit(config(), data=data, by=ANN)
    second = registry.submit(config(), data=data, by=BOB)  # Ann's share does not block Bob
    assert len(list_runs(registry.runs_root)) == 2  # the refused run made no folder
    for job in (second, first):
        job.stop()


# ------------------------------------------------------------------ tasks


def _wait_for_gate(gate: str, progress, stop) -> str:
    while not os.path.exists(gate):
        if stop.is_set():
            raise RuntimeError("stopped")
        time.sleep(0.01)
    return "ok"


def test_tasks_belong_to_who_started_them_and_a_shared_one_is_in_both_reports(tmp_path: Path) -> None:
    reg = TaskRegistry(isolate=False)
    reg.limits = ServerLimits(max_tasks=4, max_tasks_per_visitor=1)
    gate = tmp_path / "gate"
    fn = functools.partial(_wait_for_gate, str(gate))
    task = reg.start("lesion|m", fn, by=ANN)
    assert reg.start("lesion|m", fn, by=BOB) is task  # the same computation: done once, for both
    with pytest.raises(NotYours):
        task.stop(BOB)
    with pytest.raises(ValueError, match="you are already running 1 of the 1 experiments one visitor"):
        reg.start("signal|8", fn, by=ANN)
    gate.touch()
    assert task.wait(10)
    other = reg.start("sanity|x", fn, by=BOB)
    assert other.wait(10)
    assert [s.key for s in reg.finished(by=ANN)] == ["lesion|m"]
    assert [s.key for s in reg.finished(by=BOB)] == ["lesion|m", "sanity|x"]
    assert len(reg.finished(by=OPERATOR)) == 2


# ------------------------------------------------------------------ pages, two visitors


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import streamlit as st

    monkeypatch.setenv("RESNET_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("RESNET_VIZ_ADMINS", raising=False)
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    yield
    with contextlib.suppress(Exception):
        JobRegistry.reset_shared()
    TaskRegistry.reset_shared()
    st.cache_resource.clear()


def visit(page: str, query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state[Keys.DATA_CONFIG] = DataConfig(source="synthetic", synthetic_train=640, synthetic_test=160)
    at.query_params.update(query or {})
    return at.switch_page(f"app_pages/{page}.py").run()


def start_a_run(at: AppTest) -> None:
    next(n for n in at.number_input if n.label == "Budget").set_value(1000)
    next(r for r in at.radio if r.label == "Budget in").set_value("steps")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception, at.exception


def test_a_second_visitor_watches_the_first_ones_run_but_cannot_stop_it(served) -> None:
    ann = visit("train")
    start_a_run(ann)
    assert any(b.label == "Stop" for b in ann.button)
    bob = visit("train")
    assert not bob.exception, bob.exception
    assert next(s for s in bob.selectbox if s.label == "Run").options  # he sees it...
    assert not any(b.label in ("Stop", "Pause") for b in bob.button)  # ...but has no controls
    assert any("another visitor" in c.value for c in bob.caption)
    again = visit("train", {"visitor": ann.session_state[Keys.VISITOR_TOKEN]})  # Ann reloads: still hers
    assert any(b.label == "Stop" for b in again.button)
    next(b for b in again.button if b.label == "Stop").click().run()
    assert not again.error, [e.value for e in again.error]


def test_a_server_that_hides_others_runs_shows_a_visitor_only_their_own(served, monkeypatch) -> None:
    monkeypatch.setenv("RESNET_VIZ_OTHERS", "hidden")
    ann = visit("train")
    start_a_run(ann)
    bob = visit("train")
    assert not any(s.label == "Run" for s in bob.selectbox)
    assert any("No runs yet" in i.value for i in bob.info)
    with contextlib.suppress(Exception):
        JobRegistry.reset_shared()


def test_anothers_runs_named_like_a_degradation_experiment_do_not_pass_for_mine(served) -> None:
    from resnet_viz.app import resources
    from resnet_viz.experiments import degradation

    base = RunConfig(model=ModelConfig(num_classes=10), data=DataConfig(source="synthetic", synthetic_train=640,
                                                                       synthetic_test=160),
                     train=TrainConfig(steps=5, epochs=None, batch_size=32, eval_every=0))
    jobs = resources.job_registry().submit_all(degradation.degradation_configs(base, tag=degradation.new_tag()),
                                               by=BOB)
    for job in jobs:
        assert job.wait(120)
    ann = visit("compare")
    assert not ann.exception, ann.exception
    assert any("Until you run it, here is the project's own run" in m.value for m in ann.markdown)


def test_a_signed_in_admin_steers_anothers_run(served, monkeypatch) -> None:
    monkeypatch.setenv("RESNET_VIZ_ADMINS", "teacher@school.example")
    ann = visit("train")
    start_a_run(ann)
    teacher = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    teacher.user = {"email": "teacher@school.example", "is_logged_in": True}
    teacher.switch_page("app_pages/train.py").run()
    assert not teacher.exception, teacher.exception
    assert teacher.session_state[Keys.VISITOR].id == "user:teacher@school.example"
    assert any("admin" in c.value for c in teacher.sidebar.caption)
    next(b for b in teacher.button if b.label == "Stop").click().run()
    assert not teacher.error, [e.value for e in teacher.error]
