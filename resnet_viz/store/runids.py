"""Run ids: what names a run folder, safely.

An id is ``<UTC yyyymmdd-hhmmss>-<slug of the run's name>``: it sorts by creation time and,
since ids arrive from URLs and the command line and are joined to paths, it is checked
against a pattern that cannot spell "..", a path separator or a hidden file.
"""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from pathlib import Path

# Strict on purpose: ids come from URLs and the CLI and are joined to paths, so only
# characters that can never spell "..", a separator or a hidden file are allowed.
ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
STAMP_RE = re.compile(r"(\d{8}-\d{6})-")
_SLUG_MAX = 40


class RunError(ValueError):
    """A run is missing or damaged (the message says why), or a run id is invalid."""


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is safe to join to a path, else raise RunError."""
    if not isinstance(run_id, str) or not ID_RE.fullmatch(run_id):
        raise RunError(
            f"invalid run id {run_id!r}: use 1-100 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 20261126-193501-resnet20-a)"
        )
    return run_id


def _slug(name: str | None) -> str:
    # Fold accents to ASCII first so "Résumé" becomes "resume", not "r-sum".
    ascii_name = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:_SLUG_MAX].strip("-") or "run"


def make_run_id(name: str | None, root: Path | None = None, now: _dt.datetime | None = None) -> str:
    """``<UTC yyyymmdd-hhmmss>-<slug of name>``; sorts by creation time.

    With ``root``, an id already taken there gets a ``-2``, ``-3``, ... suffix.
    ``RunDir.create`` still claims the folder with an exclusive mkdir, so two processes
    racing for the same id cannot both get it.
    """
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{_slug(name)}"
    if root is None:
        return base
    run_id, n = base, 1
    while (Path(root) / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id
