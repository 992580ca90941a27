"""The project's layout rules, checked on the source: Streamlit stays in one UI module,
pages stay thin, and training never runs in a page script."""

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


def test_only_the_ui_module_imports_streamlit():
    users = {p.relative_to(ROOT).as_posix() for p in LIBRARY.rglob("*.py") if "streamlit" in _imports(p)}
    # report.py reads streamlit.__version__ for the report's environment table and nothing else.
    assert users == {"resnet_viz/ui.py", "resnet_viz/report.py"}, users
    report = (LIBRARY / "report.py").read_text(encoding="utf-8")
    assert "streamlit." not in report.replace("streamlit.__version__", ""), "report.py may read the version only"


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
    """Training runs in the job registry's worker; a page asks for it through ui and jobs."""
    banned = {"threading", "multiprocessing", "concurrent.futures", "resnet_viz.train", "resnet_viz.distributed"}
    for page in sorted(PAGES.glob("*.py")):
        tree = ast.parse(page.read_text(encoding="utf-8"), str(page))
        assert not _modules(page) & banned, (page.name, _modules(page) & banned)
        calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not calls & {"backward", "zero_grad"}, (page.name, calls & {"backward", "zero_grad"})
