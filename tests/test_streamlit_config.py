"""The served app's Streamlit settings (.streamlit/config.toml): each one is there for a reason
its comment gives; these are the ones a visitor would feel if they went missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info < (3, 11):  # tomllib is 3.11's; the project also runs on 3.10
    pytest.skip("reading TOML needs Python 3.11's tomllib", allow_module_level=True)
import tomllib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def settings() -> dict:
    return tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))


def test_page_runs_pay_for_no_source_watching_and_no_full_collection() -> None:
    # Each cost about 0.1-0.3 s of every page run on the server, under the interpreter's lock,
    # so ten visitors waited for each other's: see benchmarks/serve_load.py.
    s = settings()
    assert s["server"]["fileWatcherType"] == "none"
    assert s["runner"]["postScriptGC"] is False


def test_visitors_see_messages_not_tracebacks_and_forms_are_protected() -> None:
    s = settings()
    assert s["client"]["showErrorDetails"] == "none" and s["client"]["toolbarMode"] == "viewer"
    assert s["server"]["enableXsrfProtection"] is True  # also what tells one browser from another
