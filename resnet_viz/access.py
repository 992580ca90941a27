"""Who a visitor is, and what they may do with runs and tasks others started.

A visitor is the signed-in user when the server is set up with Streamlit's login (OIDC), else
their browser: the app derives an id from a secret of the browser's session (a cookie the
server set) or, without one, from a token it issued in the page's URL (kept across reloads).
Ids are derived with the server's secret, so a visitor cannot pick another's id, and run
folders never hold the browser's own secrets.

A visitor controls (pauses, stops, resumes) only what they started; what others started is
visible read-only (``RESNET_VIZ_OTHERS=read``, the default: a class learns from each other)
or hidden (``hidden``). Runs no visitor owns were started from the command line, by the
server's operator: visible, and controlled by admins only. Admins control everything; they
are the signed-in users listed in ``RESNET_VIZ_ADMINS`` (comma-separated e-mail addresses), or
every visitor with ``RESNET_VIZ_ADMINS=*`` (one person's own machine: the README's set-up).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

ADMINS_ENV = "RESNET_VIZ_ADMINS"
OTHERS_ENV = "RESNET_VIZ_OTHERS"
SECRET_ENV = "RESNET_VIZ_SECRET"
SECRET_FILE = ".visitor-secret"  # in the runs folder, so ids outlive a restart
OTHERS_MODES = ("read", "hidden")


@dataclass(frozen=True)
class Visitor:
    id: str  # "user:<e-mail>" or "browser:<digest>"
    name: str  # how the app names them to themselves
    admin: bool = False


OPERATOR = Visitor("operator", "the server's operator", admin=True)  # the CLI, tests: may do anything


class NotYours(ValueError):
    """A visitor asked to control a run or task someone else started."""


@dataclass(frozen=True)
class Access:
    admins: frozenset[str] = frozenset()
    everyone_admin: bool = False
    others: str = "read"


def access_settings() -> Access:
    """The server's settings, read now; a bad value raises ValueError naming its variable."""
    raw = os.environ.get(ADMINS_ENV, "").strip()
    others = os.environ.get(OTHERS_ENV, "read").strip().lower() or "read"
    if others not in OTHERS_MODES:
        raise ValueError(f"{OTHERS_ENV} must be one of {', '.join(OTHERS_MODES)}, got {others!r}")
    names = frozenset(a.strip().lower() for a in raw.split(",") if a.strip() and a.strip() != "*")
    return Access(admins=names, everyone_admin=raw == "*", others=others)


def visitor_for(kind: str, value: str, secret: bytes, access: Access, email: str | None = None) -> Visitor:
    """The visitor behind a signed-in ``email`` (kind "user") or a browser secret (kind
    "browser"): the id is a digest of ``value`` under the server's ``secret``."""
    if kind == "user":
        if not email:
            raise ValueError("a signed-in visitor needs an e-mail address")
        mail = email.strip().lower()
        return Visitor(f"user:{mail}", mail, admin=access.everyone_admin or mail in access.admins)
    digest = hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:20]
    return Visitor(f"browser:{digest}", "this browser", admin=access.everyone_admin)


def issue_token(secret: bytes) -> str:
    """A new URL token: random, and signed so that the server accepts only tokens it issued."""
    token = secrets.token_urlsafe(16)
    return f"{token}.{_sign(token, secret)}"


def token_value(param: str | None, secret: bytes) -> str | None:
    """The token inside a URL parameter the server issued, or None for anything else."""
    if not param or param.count(".") != 1:
        return None
    token, sig = param.split(".")
    return token if hmac.compare_digest(sig, _sign(token, secret)) else None


def _sign(token: str, secret: bytes) -> str:
    return hmac.new(secret, b"url:" + token.encode(), hashlib.sha256).hexdigest()[:16]


def server_secret(folder: Path) -> bytes:
    """``$RESNET_VIZ_SECRET``, else a random secret kept in ``folder`` (made on first use,
    readable by the server's user only)."""
    given = os.environ.get(SECRET_ENV, "")
    if given:
        return given.encode()
    path = Path(folder) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # exclusive: two server processes starting at once must end up with one secret
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(32) + "\n")
    for _ in range(50):  # the other process may be between its create and its write
        text = path.read_text(encoding="ascii").strip()
        if len(text) == 64:
            return bytes.fromhex(text)
        time.sleep(0.01)
    raise ValueError(f"the visitor secret in {path.name} of the runs folder is damaged: delete it (visitors "
                     "then get new ids) or set " + SECRET_ENV)


def may_control(visitor: Visitor, owner: str | None) -> bool:
    """Whether ``visitor`` may pause, stop or resume what ``owner`` started (None: the operator)."""
    return visitor.admin or (owner is not None and owner == visitor.id)


def may_see(visitor: Visitor, owner: str | None, access: Access) -> bool:
    """Whether ``visitor`` sees what ``owner`` started: their own, the operator's, or, unless
    the server hides them, everyone's."""
    return access.others == "read" or owner is None or may_control(visitor, owner)


def check_control(visitor: Visitor, owner: str | None, what: str) -> None:
    """Raise ``NotYours`` (a ValueError a page shows) unless ``visitor`` may control ``what``."""
    if not may_control(visitor, owner):
        whose = "the server's operator" if owner is None else "another visitor"
        raise NotYours(f"{what} was started by {whose}: you can watch it, but only they (or an admin) can "
                       "pause, stop or resume it. Start your own on the Train page.")
