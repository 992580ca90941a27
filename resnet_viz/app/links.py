"""Links that reopen a view: each page's main choices live in the URL's query parameters.

A page calls ``seeded`` before it creates a widget (the URL's value, when it brings a new
one, becomes the widget's session state) and ``keep`` after it (the choice goes back to the
URL), so the address bar is always a link to what the page shows: ``/build?depth=56&shortcut=none``.
A value that cannot be used leaves the widget at its default and says so in a short note
naming the parameter; a link never raises. Other parameters (the visitor's ``?visitor=``
token) are left as they are: only the names in ``PARAMS`` are written.

Seeding happens once per value: the URL keeps the value ``keep`` last wrote until the next
run, and taking it again then would undo the change the user just made.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import streamlit as st

from resnet_viz.app.state import Keys
from resnet_viz.config import ModelConfig
from resnet_viz.store.models import ModelRef

_ALWAYS = object()  # ``keep``'s default: no value is left out of the URL
_MAX_SHOWN = 60  # characters of a bad value repeated in its note


@dataclass(frozen=True)
class Param:
    """One query parameter: ``parse(text, options)`` gives the widget's value or raises
    ValueError saying why; ``show(value)`` is the text the URL holds."""

    name: str
    parse: Callable[[str, Sequence[Any]], Any]
    show: Callable[[Any], str] = str


def ref_id(ref: ModelRef) -> str:
    """A model's name in a link: a shipped file by its stem, a run by its id; never a
    server path (the link is shared, and a path from a URL is never opened)."""
    if ref.kind == "untrained":
        return "untrained"
    return Path(ref.key).stem if ref.kind == "file" else ref.key


def slug(label: str) -> str:
    """A tab's label as URL text: "Skip & branch" -> "skip-and-branch"."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower().replace("&", "and")).strip("-")


def _first_word(label: str) -> str:
    """A long option's name in a link: "ImageNet ResNet (Table 1)" -> "imagenet"."""
    return label.split()[0].lower()


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:8])
    return shown + (f" and {len(items) - 8} more" if len(items) > 8 else "") if items else "nothing yet"


def _choice(show: Callable[[Any], str] = str) -> Callable[[str, Sequence[Any]], Any]:
    """One of the widget's options, named in the URL by ``show``."""
    def parse(raw: str, options: Sequence[Any]) -> Any:
        for option in options:
            if show(option) == raw:
                return option
        raise ValueError(f"not one of {_listed([show(o) for o in options])}")
    return parse


def _position(raw: str, options: Sequence[Any]) -> int:
    """The index of ``raw`` among the options' names (a test image's class)."""
    names = [str(o) for o in options]
    if raw not in names:
        raise ValueError(f"not one of {_listed(names)}")
    return names.index(raw)


def _whole(raw: str, options: Sequence[Any]) -> int:
    """A whole number, within ``options`` (a range) when the page gives one."""
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("not a whole number") from None
    if options and value not in options:
        raise ValueError(f"outside {min(options)} to {max(options)}")
    return value


def _flag(raw: str, options: Sequence[Any]) -> bool:
    words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
    if raw.lower() not in words:
        raise ValueError("not true or false")
    return words[raw.lower()]


def _several(raw: str, options: Sequence[Any]) -> list[Any]:
    """Comma-separated ids, each one of the options; unknown ones refuse the whole list
    (a partial selection would look like the teacher's and not be it)."""
    wanted = [p for p in raw.split(",") if p]
    unknown = [p for p in wanted if p not in options]
    if unknown:
        raise ValueError(f"no such {'item' if len(unknown) == 1 else 'items'} here: {_listed(unknown)}")
    return wanted


PARAMS: dict[str, Param] = {p.name: p for p in [
    # The Build page's CIFAR network: text here, judged by ModelConfig (``seed_model_config``);
    # elsewhere "block" is one of a network's blocks (Inspect, Grad-CAM).
    Param("block", _choice()), Param("depth", _whole), Param("shortcut", _choice()), Param("width", _whole),
    Param("zero_init", _flag, lambda v: str(bool(v)).lower()), Param("pad", _choice()),
    Param("family", _choice(_first_word), _first_word), Param("net", _choice()),
    # The pickers other pages share: models by ``ref_id``, a test image by class name and index.
    Param("model", _choice(ref_id), ref_id), Param("vs", _choice(ref_id), ref_id),
    Param("run", _choice(lambda r: r.key), lambda r: r.key),
    Param("class", _position), Param("index", _whole),
    Param("method", _choice()), Param("stat", _choice()), Param("tab", _choice(slug), slug),
    Param("runs", _several, ",".join), Param("x", _choice()), Param("show", _choice()),
]}
# URL name -> (ModelConfig field, the text's type); block first: whether a depth is valid depends on it.
BUILD_FIELDS: dict[str, tuple[str, Callable[[str, Sequence[Any]], Any]]] = {
    "block": ("block", lambda raw, _: raw), "depth": ("depth", _whole), "shortcut": ("shortcut", lambda raw, _: raw),
    "width": ("width", _whole), "zero_init": ("zero_init_residual", _flag), "pad": ("pad", lambda raw, _: raw)}


def _seen() -> dict[str, str | None]:
    seen = st.session_state.get(Keys.LINK_SEEN)
    if not isinstance(seen, dict):
        seen = st.session_state[Keys.LINK_SEEN] = {}
    return seen


def _new(name: str) -> str | None:
    """The URL's value of ``name`` when this session has not taken or written it yet."""
    raw = st.query_params.get(name)
    seen = _seen()
    if raw is None or seen.get(name) == raw:
        return None
    seen[name] = raw
    return raw


def _note(name: str, raw: str, why: Exception) -> None:
    from resnet_viz.app.widgets import literal  # widgets imports this module

    shown = raw if len(raw) <= _MAX_SHOWN else raw[:_MAX_SHOWN] + "..."
    st.info(f"The link's {literal(name)}={literal(shown)} was not used ({literal(why)}): showing the default.",
            icon=":material/link_off:")


def seeded(name: str | None, key: str, options: Sequence[Any] = ()) -> str:
    """``key``, after giving its widget the URL's value of ``name`` (one of ``options`` where
    the widget has a list), when the URL brings a new one. Call it before the widget; a
    ``name`` of None (a widget that is not linked here) changes nothing."""
    if not name:
        return key
    raw = _new(name)
    if raw is not None:
        try:
            st.session_state[key] = PARAMS[name].parse(raw, options)
        except ValueError as e:
            _note(name, raw, e)
    return key


def keep(name: str | None, value: Any, default: Any = _ALWAYS) -> None:
    """Write the widget's ``value`` to the URL as ``name``; a value equal to ``default``
    leaves the parameter out, so links stay short (``/build?depth=56``)."""
    if not name:
        return
    text = None if value is None or (default is not _ALWAYS and value == default) else PARAMS[name].show(value)
    if text is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != text:
        st.query_params[name] = text
    _seen()[name] = text


def seed_model_config(current: ModelConfig, widths: Sequence[int], max_blocks: int) -> ModelConfig:
    """``current`` with the fields a link sets (``BUILD_FIELDS``), each judged by ModelConfig
    and by the Build page's own ranges (``widths``, at most ``max_blocks`` per stage); it
    becomes the session's build. Call it before the Build page's widgets."""
    cfg = current
    for name, (field, parse) in BUILD_FIELDS.items():
        raw = _new(name)
        if raw is None:
            continue
        try:
            candidate = replace(cfg, **{field: parse(raw, ())})  # ModelConfig checks it
            if candidate.width not in widths:
                raise ValueError(f"the width multiplier here is one of {_listed([str(w) for w in widths])}")
            if candidate.blocks_per_stage > max_blocks:
                raise ValueError(f"this page builds up to {max_blocks} blocks per stage")
            cfg = candidate
        except ValueError as e:
            _note(name, raw, e)
    if cfg != current:
        st.session_state[Keys.BUILD_CONFIG] = cfg
    return cfg


def keep_model_config(cfg: ModelConfig) -> None:
    """The Build page's network in the URL, each field left out where it is the default."""
    default = ModelConfig()
    for name, (field, _) in BUILD_FIELDS.items():
        keep(name, getattr(cfg, field), getattr(default, field))
