"""This visitor (``access.Visitor``), found once per browser session.

In order: the signed-in user when the server is set up with Streamlit's login (``st.login``);
else this browser, known by the session cookie Streamlit's XSRF protection sets (the same in
every tab and across reloads; two browsers are two visitors); else a signed token the app puts
in the page's URL (``?visitor=``), kept across reloads. Nothing here decides what a visitor may
do: that is ``resnet_viz.access``.
"""

from __future__ import annotations

import itertools

import streamlit as st

from resnet_viz.access import Visitor, access_settings, issue_token, server_secret, token_value, visitor_for
from resnet_viz.app.state import Keys
from resnet_viz.store.rundir import default_runs_dir

XSRF_COOKIE = "_streamlit_xsrf"
URL_PARAM = "visitor"


def visitor() -> Visitor:
    """Who is looking at this page (the same for the whole session)."""
    found = st.session_state.get(Keys.VISITOR)
    if isinstance(found, Visitor):
        return found
    try:
        access, secret = access_settings(), server_secret(default_runs_dir())
    except (ValueError, OSError) as e:  # the operator's setting or folder: say which, serve nothing
        st.error(f"This server's visitor settings cannot be used: {e}")
        st.stop()
    email = _signed_in_email()
    if email:
        found = visitor_for("user", "", secret, access, email=email)
    else:
        browser = _browser_secret()
        if browser is None:
            param = st.query_params.get(URL_PARAM)
            if token_value(param, secret) is None:  # none, or not one this server issued
                param = issue_token(secret)
            st.session_state[Keys.VISITOR_TOKEN] = param
            keep_in_url()
            browser = f"url:{token_value(param, secret)}"
        found = visitor_for("browser", browser, secret, access)
    st.session_state[Keys.VISITOR] = found
    return found


def keep_in_url() -> None:
    """Put a URL visitor's token back in the address after a page switch cleared it, so a
    reload finds the same visitor (a cookie visitor needs nothing)."""
    token = st.session_state.get(Keys.VISITOR_TOKEN)
    if token and st.query_params.get(URL_PARAM) != token:
        st.query_params[URL_PARAM] = token


def _signed_in_email() -> str | None:
    try:
        if st.user.is_logged_in:
            return str(st.user.get("email") or st.user.get("sub") or "") or None
    except (AttributeError, KeyError, RuntimeError):  # no login configured, or no session
        return None
    return None


def _browser_secret() -> str | None:
    """The token inside the XSRF cookie: the server may mask it afresh each time it sends it
    ("2|mask|masked|time"), so the unmasked token is what stays the same for a browser."""
    try:
        cookie = st.context.cookies.get(XSRF_COOKIE)
    except (AttributeError, RuntimeError):
        return None
    if not isinstance(cookie, str) or not cookie:  # none (XSRF off), or a test harness's stand-in
        return None
    parts = cookie.split("|")
    if len(parts) == 4 and parts[0] == "2":
        try:
            mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
        except ValueError:
            return f"xsrf:{cookie}"
        return "xsrf:" + bytes(m ^ b for m, b in zip(itertools.cycle(mask), masked, strict=False)).hex()
    return f"xsrf:{cookie}"
