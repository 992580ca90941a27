"""Ray is an optional extra: without ``RESNET_VIZ_RAY_ADDRESS`` the worker pool never imports it
(it is heavy, and a fresh clone does not have it). Runs whether Ray is installed or not."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    from resnet_viz.background.jobs import JobRegistry
    from resnet_viz.background.tasks import Call, TaskRegistry
    from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from resnet_viz.experiments import signal

    if __name__ == "__main__":
        task = TaskRegistry(isolate=True).start("signal", Call(signal.signal_sweep, depths=(8,), batch=8))
        assert task.wait(120) and task.snapshot().state == "done", task.snapshot().error
        reg = JobRegistry(Path(sys.argv[1]), isolate=True)
        train = TrainConfig(steps=3, epochs=None, batch_size=16, log_every=1, eval_every=0, threads=1)
        cfg = RunConfig(model=ModelConfig(depth=8), data=DataConfig(synthetic_train=64, synthetic_test=32),
                        train=train)
        job = reg.submit(cfg)
        assert job.wait(120) and job.snapshot().state == "finished", job.snapshot().message
        reg.shutdown()
        cluster = "resnet_viz.background.cluster" in sys.modules
        print("ray imported:", "ray" in sys.modules, "cluster imported:", cluster)
""")


@pytest.mark.slow
def test_the_pool_without_a_cluster_setting_never_imports_ray(tmp_path: Path) -> None:
    script = tmp_path / "use_the_pool.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RESNET_VIZ_RAY_ADDRESS", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray imported: False cluster imported: False" in done.stdout, done.stdout
