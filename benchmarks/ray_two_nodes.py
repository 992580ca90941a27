"""The two-node check of the worker pool on Ray (issue 14), on one machine.

    python benchmarks/ray_two_nodes.py        # needs the cluster extra: pip install .[cluster]

Starts a Ray head and a second Ray node as separate processes (``ray start --head`` and
``ray start --address=...``, each with its own temp dir; 1 CPU each), the second with a custom
resource ``node2``. A training run (synthetic set, checkpoints every 10 steps) is placed on node 2
through the app's settings (``RESNET_VIZ_RAY_ADDRESS``, ``RESNET_VIZ_RAY_RESOURCES={"node2": 1}``);
once its checkpoint has come back to the app's runs folder, every process of node 2 is killed
(its raylet and workers: the machine going away). The run must read "interrupted" with its last
checkpoint; resumed without the resource, it trains on from there on the head. Both Ray nodes
are ended at the end, whatever happened. The last line is ``two-node check: PASS`` or ``FAIL``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _names(proc: Path, folder: Path) -> bool:
    """Whether process ``proc`` names ``folder`` in its command line or holds a file under it
    (Ray's agents rename their command line, but keep their logs in the node's temp dir)."""
    if str(folder).encode() in (proc / "cmdline").read_bytes():
        return True
    for fd in (proc / "fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith(str(folder) + os.sep):
                return True
    return False


def _pids_under(folder: Path) -> list[int]:
    """The processes of the Ray node whose temp dir is ``folder``."""
    mine = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if _names(proc, folder):
                    mine.append(int(proc.name))
    return mine


def _parent(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])


def _raylet(folder: Path) -> int:
    for pid in _pids_under(folder):
        if b"raylet" in (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0]:
            return pid
    raise RuntimeError(f"no raylet runs for {folder}")


def _children(pids: set[int]) -> set[int]:
    """``pids`` and their descendants (Ray's workers are its raylet's children, and rename themselves)."""
    out, grew = set(pids), True
    while grew:
        grew = False
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) not in out:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    if _parent(int(proc.name)) in out:
                        out.add(int(proc.name))
                        grew = True
    return out


def _kill_node(folder: Path) -> list[int]:
    pids = sorted(_children(set(_pids_under(folder))))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _wait(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def _worker_pid(run_path: Path) -> int:
    return int(json.loads((run_path / "status.json").read_text())["worker"]["pid"])


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([RAY, "start", *args], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed: {(done.stderr or done.stdout)[-1500:]}")


def _config() -> RunConfig:
    train = TrainConfig(steps=100_000, epochs=None, batch_size=32, lr=0.05, log_every=5, eval_every=10,
                        probe_every=0, seed=0, threads=1)
    data = DataConfig(source="synthetic", synthetic_train=640, synthetic_test=160)
    return RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=data, train=train)


def check(tmp: Path, say: Callable[[str], None]) -> bool:
    from resnet_viz.background.cluster import connect
    from resnet_viz.background.jobs import JobRegistry
    from resnet_viz.store.rundir import RunDir

    head, node2 = tmp / "head", tmp / "node2"
    port = _free_port()
    # Token authentication, as current Ray has it by default: one token for this cluster only.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    common = ["--num-cpus=1", "--disable-usage-stats"]
    _ray_start(["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={head}",
                *common], env)
    os.environ["RESNET_VIZ_RAY_ADDRESS"] = f"127.0.0.1:{port}"
    # The app connects before node 2 exists: a process joins a raylet of its own machine, and
    # here both are on this one; the app's node must be the head, which stays.
    ray = connect(os.environ["RESNET_VIZ_RAY_ADDRESS"])
    _ray_start([f"--address=127.0.0.1:{port}", f"--temp-dir={node2}", '--resources={"node2": 1}',
                *common], env)
    _wait(lambda: ray.cluster_resources().get("node2", 0) >= 1, "node 2 to join", 60)
    say(f"head (raylet {_raylet(head)}) and node 2 (raylet {_raylet(node2)}, resource node2) on port {port}")
    os.environ["RESNET_VIZ_RAY_RESOURCES"] = json.dumps({"node2": 1})
    reg = JobRegistry(tmp / "runs", isolate=True)
    try:
        job = reg.submit(_config(), name="two-nodes")
        run = RunDir.open(tmp / "runs", job.run_id)
        _wait(lambda: run.has_checkpoint() and job.snapshot().step >= 25, "a synced checkpoint", 180)
        on = _parent(_worker_pid(run.path))
        say(f"run {job.run_id} trains in Ray worker {_worker_pid(run.path)} under raylet {on}: "
            f"{'node 2' if on == _raylet(node2) else 'NOT node 2'}; step {job.snapshot().step}, "
            f"checkpoint at step {run.load_checkpoint().meta['step']}")
        placed = on == _raylet(node2)
        t0 = time.monotonic()
        killed = _kill_node(node2)
        say(f"node 2 killed ({len(killed)} processes, SIGKILL)")
        if not job.wait(180):
            raise RuntimeError("the run did not end after its node died")
        snap, st = job.snapshot(), run.status()
        say(f"after {time.monotonic() - t0:.1f} s the job reads {snap.state!r}: {snap.message}")
        say(f"the run folder reads {st['status']!r}; the app still serves (this process goes on)")
        step = int(run.load_checkpoint().meta["step"])
        # Until Ray has marked node 2 dead it may still place work there, which would fail again.
        _wait(lambda: not any(n.get("Alive") and n["Resources"].get("node2") for n in ray.nodes()),
              "Ray to mark node 2 dead", 120)
        say(f"Ray marked node 2 dead {time.monotonic() - t0:.1f} s after the kill")
        del os.environ["RESNET_VIZ_RAY_RESOURCES"]  # anywhere the cluster has room: the head is left
        again = reg.resume(job.run_id)
        try:
            _wait(lambda: again.snapshot().step > step + 10 and run.status()["status"] == "running"
                  and "worker" in json.loads((run.path / "status.json").read_text()), "the resumed run to train", 120)
        except RuntimeError:
            say(f"resumed job: {again.snapshot().state!r} {again.snapshot().message!r}; status {run.status()}; "
                f"cluster {ray.cluster_resources()}, free {ray.available_resources()}")
            raise
        on_again = _parent(_worker_pid(run.path))
        say(f"resumed from step {step}: now at step {again.snapshot().step} in Ray worker "
            f"{_worker_pid(run.path)} under raylet {on_again} ({'the head' if on_again == _raylet(head) else '?'})")
        again.stop()
        again.wait(60)
        steps = [r["step"] for r in run.read_metrics() if r["kind"] == "step"]
        say(f"stopped: {again.snapshot().state!r}; the history has {len(steps)} step records, "
            f"{'in order without repeats' if steps == sorted(set(steps)) else 'REPEATS OR DISORDER'}")
        return (placed and snap.state == "interrupted" and st["status"] == "interrupted"
                and on_again == _raylet(head) and again.snapshot().state == "stopped" and steps == sorted(set(steps)))
    finally:
        reg.shutdown()
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="rv-ray-"))  # short: Ray's socket paths live under it
    try:
        ok = check(tmp, lambda line: print(line, flush=True))
    except Exception as e:  # noqa: BLE001 - the check reports, and the nodes are ended below
        print(f"error: {e}", flush=True)
        ok = False
    finally:
        for node in ("node2", "head"):
            _kill_node(tmp / node)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"two-node check: {'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
