"""The project's layout rules, checked on the source: Streamlit stays in one UI module,
the library is layered by
package, pages stay thin, and training never runs in a page script."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "resnet_viz"
PAGES = ROOT / "app_pages"


def _imports(path: Path) -> set[str]:
    """Top-level module names ``path`` imports (at any nesting: function-level imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_app_package_imports_streamlit():
    users = {p.relative_to(ROOT).as_posix() for p in LIBRARY.rglob("*.py") if "streamlit" in _imports(p)}
    assert users and all(u.startswith("resnet_viz/app/") for u in users), users


# A package imports only from packages of a lower rank: the arrows of the README's layout.
# Packages of one rank (nets and data) stay independent of each other.
RANKS = {
    "config": 0, "fsutil": 0, "limits": 0, "access": 0,
    "nets": 1, "data": 1,
    "store": 2, "plots": 2,
    "training": 3,
    "experiments": 4,
    "background": 5,
    "report": 6,
    "app": 7, "cli": 7,
}


def _package_of(path: Path) -> str:
    parts = path.relative_to(LIBRARY).with_suffix("").parts
    return parts[0]


def test_every_module_sits_in_a_layer_package():
    top = {p.stem for p in LIBRARY.glob("*.py")} - {"__init__", "__main__"}
    base = {"config", "fsutil", "limits", "access"}
    assert top == base, f"modules outside a layer package: {sorted(top - base)}"
    for pkg in (d for d in LIBRARY.iterdir() if d.is_dir() and not d.name.startswith("__")):
        assert pkg.name in RANKS, f"{pkg.name}/ has no rank in RANKS"


def test_imports_point_down_the_layers():
    wrong = []
    for path in LIBRARY.rglob("*.py"):
        me = _package_of(path)
        if me not in RANKS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("resnet_viz."):
                other = node.module.split(".")[1]
                if other != me and RANKS.get(other, 99) >= RANKS[me]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {node.module}")
    assert not wrong, "\n".join(wrong)


def _modules(path: Path) -> set[str]:
    """Full dotted names of what ``path`` imports, and of ``from X import y`` as X.y."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return out


def test_pages_never_train_or_start_threads():
    """Training runs in the job registry's worker; a page asks for it through app.resources."""
    banned = {"threading", "multiprocessing", "concurrent.futures", "resnet_viz.training",
              "resnet_viz.training.loop", "resnet_viz.training.distributed"}
    for page in sorted(PAGES.glob("*.py")):
        tree = ast.parse(page.read_text(encoding="utf-8"), str(page))
        assert not _modules(page) & banned, (page.name, _modules(page) & banned)
        calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not calls & {"backward", "zero_grad"}, (page.name, calls & {"backward", "zero_grad"})


# "About 300 lines a module, about 60 a function" (nanoGPT's rule of a file read in one sitting
# and a function that fits on a screen); the slack keeps a docstring from tipping a file over.
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 320, 65


def test_modules_and_functions_stay_short():
    long = []
    for path in sorted(LIBRARY.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        if source.count("\n") > MAX_MODULE_LINES:
            long.append(f"{where}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{where}:{node.lineno} {node.name}(): {size} lines")
    assert not long, "split these into named parts:\n" + "\n".join(long)


def test_no_code_names_this_machines_absolute_paths():
    """CI runs a fresh clone somewhere else: a path like /work/shared passed here and failed there."""
    offenders = []
    for folder in ("resnet_viz", "tests", "benchmarks", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if "/work/" in text and path.name != "test_layout.py":
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"absolute checkout paths in: {offenders}; use paths relative to the checkout"
