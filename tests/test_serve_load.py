"""The load benchmark's websocket client (benchmarks/serve_client.py) against a real server.

It speaks Streamlit's protocol without a browser; if a Streamlit upgrade changes the protocol,
these fail instead of the benchmark quietly timing nothing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

from serve_client import PageRun, list_pages, open_session, visit  # noqa: E402
from serve_load import app_env, free_port, start_app, stop  # noqa: E402

pytestmark = pytest.mark.slow


@contextmanager
def serve(script: Path | None, tmp: Path) -> Iterator[int]:
    port = free_port()
    env, log = app_env("synthetic", tmp / "runs"), tmp / "app.log"
    app = start_app(port, env, log, script, wait_s=60) if script else start_app(port, env, log, wait_s=60)
    try:
        yield port
    finally:
        stop(app)


async def first_pages(port: int, count: int) -> list[PageRun]:
    pages = (await list_pages(port, timeout=60))[:count]
    ws = await open_session(port)
    try:
        return [await visit(ws, p, timeout=60) for p in pages]
    finally:
        await ws.close()


def test_one_session_opens_two_pages_of_the_app(tmp_path: Path) -> None:
    with serve(None, tmp_path) as port:
        runs = asyncio.run(first_pages(port, 2))
        assert [r.page for r in runs] == ["Home", "Build"]
        assert [r.error for r in runs] == [None, None], (tmp_path / "app.log").read_text()[-2000:]
        assert all(0 < r.seconds < 60 for r in runs)


def test_an_exception_in_a_page_counts_as_a_failure(tmp_path: Path) -> None:
    """A client that missed exceptions would report a broken page as fast."""
    (tmp_path / "app.py").write_text(
        "import streamlit as st\n"
        "st.navigation([st.Page('ok.py', title='Fine', default=True), st.Page('bad.py', title='Broken')]).run()\n"
    )
    (tmp_path / "ok.py").write_text("import streamlit as st\nst.write('fine')\n")
    (tmp_path / "bad.py").write_text("raise ValueError('on purpose')\n")
    with serve(tmp_path / "app.py", tmp_path) as port:
        fine, broken = asyncio.run(first_pages(port, 2))
        assert fine.error is None
        assert broken.error is not None and broken.error.startswith("exception")
