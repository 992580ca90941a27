"""What a browser sends a Streamlit server to open a page, without a browser (for benchmarks/serve_load.py).

A browser holds one websocket per tab at ``/_stcore/stream`` and speaks protobuf over it: it
sends a ``BackMsg`` whose ``rerun_script`` (a ``ClientState``) names the page by its
``page_script_hash``, and the server answers with ``ForwardMsg``s (``new_session``,
``navigation`` listing the pages of ``st.navigation``, the page's ``delta``s, ...) up to
``script_finished``. The server picks the page by ``page_script_hash`` first and only falls back
to ``page_name`` (matched against a page's url path), so a hash is what this client sends.

XSRF protection (on in .streamlit/config.toml) does not gate the websocket: Streamlit accepts the
connection and uses the XSRF token of the subprotocol header only to trust the signed login
cookie, which this app has none of. So the header carries the subprotocol alone.

``websockets`` is the client: Streamlit itself depends on it, so this adds nothing to install.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

STREAM_PATH = "/_stcore/stream"


@dataclass(frozen=True)
class Page:
    """A page as ``st.navigation`` lists it."""

    title: str
    script_hash: str


@dataclass(frozen=True)
class PageRun:
    """One script run of a page as the server did it: seconds from request to ``script_finished``."""

    page: str
    seconds: float
    error: str | None  # None: finished without an exception; else what went wrong, in a few words


async def open_session(port: int, host: str = "127.0.0.1") -> ClientConnection:
    """A new browser tab: one websocket, one server-side session (made on connect, run on the first rerun)."""
    # max_size=None: a page's first message may be large (a chart's data); a browser takes any size.
    return await connect(f"ws://{host}:{port}{STREAM_PATH}", subprotocols=[Subprotocol("streamlit")],
                         max_size=None, open_timeout=60)


async def request_page(ws: ClientConnection, script_hash: str) -> None:
    """What a click on a page's link sends: rerun the script for that page (no widget states yet)."""
    msg = BackMsg()
    msg.rerun_script.page_script_hash = script_hash  # "" is the app's default page
    await ws.send(msg.SerializeToString())


def _exception_in(msg: ForwardMsg) -> str | None:
    """The exception a delta shows (``st.exception`` or an uncaught one), in one short line."""
    if msg.delta.WhichOneof("type") != "new_element" or msg.delta.new_element.WhichOneof("type") != "exception":
        return None
    exc = msg.delta.new_element.exception
    return f"exception {exc.type or '?'}: {exc.message[:120]}".strip()


async def wait_finished(ws: ClientConnection, timeout: float) -> tuple[str | None, list[Page]]:
    """Read server messages until the run ends; (the first error or None, the pages ``navigation`` listed).

    A run that calls ``st.rerun()`` ends with FINISHED_EARLY_FOR_RERUN and the server starts the next
    run itself: the page has not finished yet, so reading goes on. Fragment runs come only when a
    browser asks for them (``st.fragment(run_every=...)``); this client never does.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    error: str | None = None
    pages: list[Page] = []
    while True:
        msg = ForwardMsg.FromString(await asyncio.wait_for(ws.recv(), max(deadline - loop.time(), 0.001)))
        kind = msg.WhichOneof("type")
        if kind == "delta":
            error = error or _exception_in(msg)
        elif kind == "navigation":
            pages = [Page(p.page_name, p.page_script_hash) for p in msg.navigation.app_pages]
        elif kind == "page_not_found":
            error = error or "page not found"
        elif kind == "session_event" and msg.session_event.WhichOneof("type") == "script_compilation_exception":
            error = error or "script compilation error"
        elif kind == "script_finished":
            status = msg.script_finished
            if status in (ForwardMsg.FINISHED_EARLY_FOR_RERUN, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY):
                continue
            if status == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                error = error or "finished with a compile error"
            return error, pages


async def visit(ws: ClientConnection, page: Page, timeout: float = 120.0) -> PageRun:
    """Open ``page`` in this session and time the server's run of it; a timeout counts as an error."""
    t0 = time.perf_counter()
    await request_page(ws, page.script_hash)
    try:
        error, _ = await wait_finished(ws, timeout)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        error = f"no script_finished within {timeout:g} s"
    return PageRun(page.title, time.perf_counter() - t0, error)


async def list_pages(port: int, timeout: float = 300.0) -> list[Page]:
    """The app's pages, from the ``navigation`` message of one run of the default page."""
    ws = await open_session(port)
    try:
        await request_page(ws, "")
        error, pages = await wait_finished(ws, timeout)
    finally:
        await ws.close()
    if error or not pages:
        raise RuntimeError(f"the app's default page did not list its pages ({error or 'no navigation message'})")
    return pages
