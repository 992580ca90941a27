"""The project as a package: pyproject.toml agrees with the requirements files, and a wheel
built from the checkout installs a working ``resnet-viz`` command that finds its shipped
models and keeps runs and data out of site-packages."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from resnet_viz import fsutil
from resnet_viz.cli.main import console
from resnet_viz.store.models import ASSETS_DIR

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SHIPPED = ("resnet20.safetensors", "plain20.safetensors", "degradation.json")


def _requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_files_list_exactly_the_pyproject_dependencies() -> None:
    # scripts/env.sh installs from the requirements files; `pip install .` from pyproject.toml.
    assert sorted(_requirements("requirements.txt")) == sorted(PYPROJECT["project"]["dependencies"])
    assert sorted(_requirements("requirements-dev.txt")) == sorted(PYPROJECT["project"]["optional-dependencies"]["dev"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert sorted(_requirements("requirements-cluster.txt")) == sorted(extras["cluster"])


def test_torch_and_torchvision_are_pinned_together() -> None:
    pins = dict(re.match(r"([a-z]+)==(.+)", d).groups() for d in PYPROJECT["project"]["dependencies"]
                if re.match(r"torch(vision)?==", d))
    assert set(pins) == {"torch", "torchvision"}, "torchvision's compiled ops need the torch build they were made for"


def test_every_subpackage_is_packaged() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "resnet_viz").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_a_checkout_keeps_runs_data_and_assets_beside_the_package() -> None:
    assert fsutil.PROJECT_ROOT == ROOT and fsutil.work_dir() == ROOT
    assert ASSETS_DIR == ROOT / "assets"


def test_console_exits_with_mains_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        console(["summary", "--depth", "7"])
    assert done.value.code == 2 and "6n+2" in capsys.readouterr().err


# ------------------------------------------------------------------ a real build and install


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout (a build in place would leave build/ behind)."""
    src = tmp_path_factory.mktemp("src")
    top = {".git", ".venv", "runs", "data", "docs", "build", "resnet_viz.egg-info"}  # runs and data: the user's

    def skip(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n == "__pycache__" or (Path(folder) == ROOT and n in top)}

    shutil.copytree(ROOT, src, ignore=skip, dirs_exist_ok=True)
    out = tmp_path_factory.mktemp("dist")
    # No build isolation: setuptools comes from this environment, so nothing is downloaded.
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (whl,) = out.glob("resnet_viz-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_holds_the_library_and_the_shipped_models_only(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"resnet_viz/cli/main.py", "resnet_viz/nets/cost.py", "resnet_viz/__main__.py"} <= names
    assert {f"resnet_viz/assets/{f}" for f in SHIPPED} <= names
    assert not [n for n in names if n.endswith(".pt") or n.startswith(("tests/", "app_pages/", "benchmarks/"))]
    (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "resnet-viz = resnet_viz.cli.main:console" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.slow
def test_installed_package_runs_outside_a_checkout(wheel: Path, tmp_path: Path) -> None:
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # The heavy dependencies come from this environment; resnet_viz from the install only.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESNET_VIZ_", "WORLD_SIZE"))}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")

    def run(*cmd: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=work, env={**env, **extra}, capture_output=True, text=True, timeout=300)

    probe = run(sys.executable, "-c", "import json, resnet_viz\n"
                "from resnet_viz import fsutil\n"
                "from resnet_viz.data.sources import default_data_dir\n"
                "from resnet_viz.store.models import ASSETS_DIR, shipped_models\n"
                "from resnet_viz.store.rundir import default_runs_dir\n"
                "print(json.dumps({'file': resnet_viz.__file__, 'root': str(fsutil.PROJECT_ROOT),\n"
                "  'runs': str(default_runs_dir()), 'data': str(default_data_dir()), 'assets': str(ASSETS_DIR),\n"
                "  'shipped': len(shipped_models())}))")
    assert probe.returncode == 0, probe.stderr[-3000:]
    got = json.loads(probe.stdout)
    assert Path(got["file"]).is_relative_to(site) and got["root"] == "None"
    assert (got["runs"], got["data"]) == (str(work / "runs"), str(work / "data"))  # not in site-packages
    assert Path(got["assets"]).is_relative_to(site) and got["shipped"] == 2

    script = str(site / "bin" / "resnet-viz")
    for cmd in ([script], [sys.executable, "-m", "resnet_viz"]):
        assert run(*cmd, "--help").returncode == 0
        bad = run(*cmd, "summary", "--depth", "7")
        assert bad.returncode == 2 and "6n+2" in bad.stderr
        # As a torchrun rank: the process leaves through os._exit, after flushing its output.
        rank = run(*cmd, "summary", "--depth", "8", WORLD_SIZE="2")
        assert rank.returncode == 0 and "stage3.block0" in rank.stdout, rank.stderr[-2000:]
    assert not list(site.glob("*.pt")) and not (work / "runs").exists()
