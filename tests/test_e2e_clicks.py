"""A click is never lost: two background tasks started in quick succession on a slow page.

Each script run of this page takes 1.5 s (as the Experiments page does on a loaded CPU). A
second click during the run that the first click started cuts that run short; when
``tasks.run_task`` started its task on the button's return value, the first start was dropped
every time (5 of 5 here). It now starts the task in the click's callback, which Streamlit
runs first thing in the next run, whatever happens to it. Skipped without Debian chromium,
as the main browser test is.
"""

from __future__ import annotations

import pytest
import test_e2e_browser as e2e  # tests/ is on sys.path; skips this module too without chromium

pytestmark = pytest.mark.e2e

# The task's function lives in a module beside the page: a task runs in a worker process,
# which gets its function by reference (a function defined in the page script has none).
CLICK_JOB = '''
import time


def work(i, *, progress, stop):
    for k in range(20):  # 2 s, with progress
        progress(k / 20, "working")
        time.sleep(0.1)
    return f"DONE-{i}"
'''

SLOW_PAGE = '''
import time
import streamlit as st
from resnet_viz.app import tasks
from resnet_viz.background.tasks import Call
import clickjob

round_ = st.number_input("round", 0, 100, 0, key="round")
time.sleep(1.5)  # a heavy page: plots, models, data

for i in range(2):
    res = tasks.run_task(f"click-test-{i}-{round_}", f"Start {i}", Call(clickjob.work, i))
    if res:
        st.write(f"{res} in round {round_}")
'''


@pytest.fixture(scope="module")
def slow_app(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("clicks")
    script = tmp / "slow_page.py"
    script.write_text(SLOW_PAGE, encoding="utf-8")
    (tmp / "clickjob.py").write_text(CLICK_JOB, encoding="utf-8")
    # Two tasks of one visitor at once: the test is about clicks, not the per-visitor share.
    env = {"RESNET_VIZ_MAX_TASKS_PER_VISITOR": "2"}
    with e2e.streamlit_server(script, tmp, env) as base, e2e.browser_tab() as tab:
        tab.goto(base)
        e2e.wait_for_app(tab)
        yield tab


@pytest.mark.parametrize("round_", [0, 1])
def test_two_quick_starts_both_run(slow_app, round_: int) -> None:
    page = slow_app
    if round_:
        field = page.get_by_label("round")
        field.fill(str(round_))
        field.press("Enter")
        e2e.wait_for_app(page)
    page.get_by_role("button", name="Start 0").click()
    page.wait_for_timeout(300)  # inside the 1.5 s run that the first click started
    page.get_by_role("button", name="Start 1").click()
    for i in range(2):
        e2e.expect(page.get_by_text(f"DONE-{i} in round {round_}")).to_be_visible(timeout=30_000)
    e2e.expect(page.locator("[data-testid='stProgress']")).to_have_count(0)
    e2e.assert_healthy(page)
