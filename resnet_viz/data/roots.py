"""The folders a served app may read data sets from.

A folder typed into the Train page is a path on the server's disk, typed by anyone the app is
served to. It is read only when, resolved, it lies inside an allowed root: ``$RESNET_VIZ_DATA_ROOTS``
(``os.pathsep``-separated) when set, else the data folder, the checkout's ``../shared/data`` and
``$RESNET_VIZ_CIFAR_FOLDER``. A refusal names only the roots, never the path asked for, so the
message tells nothing about what exists elsewhere on the server.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from resnet_viz.data.files import DataError, DataFolder, why
from resnet_viz.fsutil import PROJECT_ROOT

ROOTS_ENV = "RESNET_VIZ_DATA_ROOTS"


def allowed_roots_for(data_dir: Path) -> tuple[Path, ...]:
    """The allowed roots, resolved, in order; ``data_dir`` is the default data folder."""
    given = [p for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    if given:
        paths = [Path(p.strip()).expanduser() for p in given]
    else:
        paths = [data_dir]
        if PROJECT_ROOT is not None and (PROJECT_ROOT.parent / "shared" / "data").is_dir():
            paths.append(PROJECT_ROOT.parent / "shared" / "data")  # the team's copy beside a checkout
        if os.environ.get("RESNET_VIZ_CIFAR_FOLDER"):
            paths.append(Path(os.environ["RESNET_VIZ_CIFAR_FOLDER"]).expanduser())
    return tuple(dict.fromkeys(_resolved(paths)))


def _resolved(paths: Iterable[Path]) -> Iterable[Path]:
    for p in paths:
        try:
            yield p.resolve()
        except (OSError, RuntimeError):  # unreadable, or a loop of links: not a root
            continue


def root_label(root: Path) -> str:
    """How messages name a root: relative to the checkout when it is in or beside it."""
    if PROJECT_ROOT is not None:
        for base, prefix in ((PROJECT_ROOT, ""), (PROJECT_ROOT.parent, "../")):
            if root.is_relative_to(base.resolve()):
                rel = root.relative_to(base.resolve()).as_posix()
                return prefix + ("" if rel == "." else rel + "/") or "./"
    return root.as_posix().rstrip("/") + "/"


def not_allowed(roots: Sequence[Path]) -> str:
    names = ", ".join(root_label(r) for r in roots) or "none"
    return (
        f"that folder is not under an allowed data folder (allowed: {names}); put the data set in one of "
        f"them, or ask the server's operator to add its folder to {ROOTS_ENV}"
    )


def locate(path: str | Path, roots: Sequence[Path] | None) -> DataFolder:
    """``path`` resolved, as a :class:`DataFolder` inside the first root that holds it; DataError
    naming only the roots otherwise. ``roots`` None trusts the path (the CLI's operator's own)."""
    given = Path(path).expanduser()
    if roots is None:
        try:
            return DataFolder.trusted(given)
        except (OSError, RuntimeError) as exc:
            raise DataError(f"cannot read {given} ({why(exc)})") from None
    try:
        real: Path | None = given.resolve()
    except (OSError, RuntimeError):
        real = None
    for root in roots:
        if real is not None and real.is_relative_to(root):
            rel = real.relative_to(root).as_posix()
            label = root_label(root) + ("" if rel == "." else rel)
            return DataFolder(real, root, label.rstrip("/") or "/")
    raise DataError(not_allowed(roots))
