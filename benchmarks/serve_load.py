"""Server time of each page while N visitors open them at once, and a training run's speed meanwhile.

    python benchmarks/serve_load.py --sessions 1 10 [--train] [--rounds 2] [--data FOLDER|synthetic]

Starts ``streamlit run app.py`` on a free port (runs folder in a temp dir, so real runs are not
touched) and drives sessions through Streamlit's own websocket protocol (benchmarks/serve_client.py:
the messages a browser sends to open a page; no browser shares the cores). After one warm-up
visit of every page (imports, data set, caches: reported apart), each load starts N sessions at
once; each opens every page of ``st.navigation`` in turn, ``--rounds`` times. Round 1 is a
session's first visit of a page, later rounds its repeat visits. A page's time is the server's:
from sending the rerun to ``script_finished``. A failure is an exception element in the page, a
compile error, a missing page or no ``script_finished`` within ``--timeout``.

With ``--train`` a ResNet-20 trains meanwhile through the CLI, in its own process, on the same
data, into a runs folder the app does not show (so pages do the same work with and without it).
Its speed comes from its own metrics.jsonl: (step, training seconds) at the flushes that bound
each window, images = steps x batch. The same run gives every figure: a quiet window before
each load, the load window (it starts at a flush and ends at the last flush while sessions are
still at work), and a quiet window after it. ``ratio`` = loaded / the mean of the two quiet
windows; quiet before vs after shows the drift of a shared machine. The training is killed at
the end, so it never evaluates. Read the figures against the targets: a repeat visit by one
session <= 0.2 s; 10 sessions while training: p90 <= 2 s, no failures, training ratio >= 0.9.
The last line is all of it as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_client import Page, PageRun, list_pages, open_session, visit  # noqa: E402

STEADY_STEP = 20  # the trainer's first flush window holds its warm-up; speed is read after it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_data() -> str:
    """The app's own default: ``$RESNET_VIZ_CIFAR_FOLDER``, else the CIFAR-10 copy beside the checkout."""
    beside = ROOT.parent / "shared" / "data" / "cifar10-jpg"
    env = os.environ.get("RESNET_VIZ_CIFAR_FOLDER")
    return env or (str(beside) if beside.is_dir() else "synthetic")


def app_env(data: str, runs: Path) -> dict[str, str]:
    env = {**os.environ, "RESNET_VIZ_RUNS": str(runs)}
    if data == "synthetic":
        env["RESNET_VIZ_DEFAULT_DATA"] = "synthetic"
    else:
        env["RESNET_VIZ_CIFAR_FOLDER"] = str(Path(data).resolve())
    return env


def start_app(port: int, env: dict[str, str], log: Path, script: Path = ROOT / "app.py",
              wait_s: float = 180.0) -> subprocess.Popen[bytes]:
    """``streamlit run app.py`` on 127.0.0.1:port (from the checkout, with its config); returns once healthy."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode} before it served: see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return proc
        except OSError:
            pass  # not listening yet
        time.sleep(0.25)
    stop(proc)
    raise RuntimeError(f"the app did not answer /_stcore/health within {wait_s:g} s: see {log}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class Visit:
    run: PageRun
    round: int  # 1: the session's first visit of the page; 2+: repeat visits


async def one_session(port: int, pages: list[Page], rounds: int, timeout: float, think: float = 0.0) -> list[Visit]:
    """One visitor: every page in turn, ``rounds`` times, on one websocket (a new one after a timeout),
    reading each page for ``think`` seconds before the next (0: back to back, the hardest load)."""
    visits: list[Visit] = []
    ws = await open_session(port)
    try:
        for r in range(1, rounds + 1):
            for page in pages:
                run = await visit(ws, page, timeout)
                await asyncio.sleep(think)
                visits.append(Visit(run, r))
                if run.error and run.error.startswith("no script_finished"):
                    # The late run's messages would be read as the next page's: start a fresh tab.
                    await ws.close()
                    ws = await open_session(port)
    finally:
        await ws.close()
    return visits


async def load(port: int, pages: list[Page], sessions: int, rounds: int, timeout: float,
               think: float = 0.0) -> list[Visit]:
    """``sessions`` visitors at once; a session that cannot connect counts as failing every page."""
    results = await asyncio.gather(*(one_session(port, pages, rounds, timeout, think) for _ in range(sessions)),
                                   return_exceptions=True)
    visits: list[Visit] = []
    for res in results:
        if isinstance(res, BaseException):
            visits += [Visit(PageRun(p.title, math.nan, f"session failed: {res!r}"[:160]), r)
                       for r in range(1, rounds + 1) for p in pages]
        else:
            visits += res
    return visits


def p90(xs: list[float]) -> float:
    """Nearest-rank 90th percentile: a value that was measured, also for a handful of samples."""
    s = sorted(xs)
    return s[max(math.ceil(0.9 * len(s)) - 1, 0)]


def summary(runs: list[PageRun]) -> dict[str, float | int]:
    ok = [r.seconds for r in runs if not math.isnan(r.seconds)]
    if not ok:
        return {"n": len(runs), "failures": len(runs)}
    return {"n": len(runs), "median_s": round(statistics.median(ok), 3), "p90_s": round(p90(ok), 3),
            "max_s": round(max(ok), 3), "failures": sum(r.error is not None for r in runs)}


def report(visits: list[Visit], pages: list[Page]) -> dict[str, dict[str, dict[str, float | int]]]:
    """{first|repeat: {page title|all: summary}}."""
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for kind, rounds in (("first", (1,)), ("repeat", tuple(range(2, 100)))):
        sel = [v.run for v in visits if v.round in rounds]
        if sel:
            out[kind] = {p.title: summary([r for r in sel if r.page == p.title]) for p in pages}
            out[kind]["all"] = summary(sel)
    return out


# ---------------------------------------------------------------------------- training alongside


Mark = tuple[int, float]  # (step, training seconds) of a flushed "step" record


class Training:
    """A ResNet-20 training run in its own process (the CLI), read through its metrics.jsonl."""

    def __init__(self, data: str, runs: Path, batch: int, log: Path) -> None:
        cmd = [sys.executable, "-m", "resnet_viz", "train", "--depth", "20", "--data", data, "--steps", "50000",
               "--batch-size", str(batch), "--eval-every", "1000000", "--out", str(runs), "--name", "serve-load"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.runs, self.batch, self.log = runs, batch, log

    def last(self) -> Mark | None:
        for path in self.runs.glob("*/metrics.jsonl"):
            for line in reversed(path.read_text(encoding="utf-8").splitlines()):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line being written
                    continue
                if rec.get("kind") == "step":
                    return int(rec["step"]), float(rec["elapsed"])
        return None

    def next_flush(self, min_step: int = 0, timeout: float = 300.0) -> Mark:
        """Wait for the next flushed record (after ``min_step`` and after the one there now)."""
        now = self.last()
        floor = max(min_step, now[0] if now else 0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the training run exited with {self.proc.returncode}: see {self.log}")
            mark = self.last()
            if mark and mark[0] > floor:
                return mark
            time.sleep(0.05)
        raise RuntimeError(f"the training run flushed no step record within {timeout:g} s: see {self.log}")

    def speed(self, a: Mark, b: Mark | None) -> float | None:
        """Images/s between two flushes; None when no flush came in between (a window too short)."""
        if b is None or b[0] <= a[0]:
            return None
        return (b[0] - a[0]) * self.batch / (b[1] - a[1])

    def quiet(self, seconds: float) -> tuple[float | None, Mark]:
        """A window with no visitors: from the next flush to the first flush ``seconds`` later."""
        a = self.next_flush()
        time.sleep(seconds)
        b = self.next_flush()
        return self.speed(a, b), b


# ---------------------------------------------------------------------------- the run


def ratio(loaded: float | None, before: float | None, after: float | None) -> float | None:
    quiet = [q for q in (before, after) if q]
    return round(loaded / statistics.mean(quiet), 3) if loaded and quiet else None


def run_loads(args: argparse.Namespace, port: int, pages: list[Page], training: Training | None) -> list[dict]:
    results: list[dict] = []
    before, start = training.quiet(args.quiet_s) if training else (None, None)
    for n in args.sessions:
        t0, load_before = time.perf_counter(), os.getloadavg()[0]
        visits = asyncio.run(load(port, pages, n, args.rounds, args.timeout, args.think_s))
        # The machine's 1-minute load average around the load: on shared cores, others' jobs show here.
        res: dict = {"sessions": n, "training": bool(training), "wall_s": round(time.perf_counter() - t0, 1),
                     "loadavg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                     **report(visits, pages), "errors": sorted({v.run.error for v in visits if v.run.error})[:5]}
        if training and start:
            loaded = training.speed(start, training.last())
            after, start = training.quiet(args.quiet_s)
            res["train_ips"] = {"quiet_before": before, "loaded": loaded, "quiet_after": after,
                                "ratio": ratio(loaded, before, after)}
            before = after
        results.append(res)
        print_load(res, pages)
    return results


def fmt(s: dict[str, float | int]) -> str:
    if "median_s" not in s:
        return f"{'-':>7} {'-':>7} {'-':>7} {s['failures']:>4}"
    return f"{s['median_s']:7.3f} {s['p90_s']:7.3f} {s['max_s']:7.3f} {s['failures']:>4}"


def print_load(res: dict, pages: list[Page]) -> None:
    print(f"\n{res['sessions']} session(s){' while training' if res['training'] else ''}, "
          f"{res['wall_s']} s (load average {res['loadavg_1m'][0]} -> {res['loadavg_1m'][1]}); "
          "seconds per page run (server side)")
    print(f"{'page':>18} | {'first: median':>13} {'p90':>7} {'max':>7} {'fail':>4} | "
          f"{'repeat: median':>14} {'p90':>7} {'max':>7} {'fail':>4}")
    for name in [p.title for p in pages] + ["all"]:
        first, repeat = res.get("first", {}).get(name), res.get("repeat", {}).get(name)
        print(f"{name:>18} | {fmt(first) if first else '':>34} | {fmt(repeat) if repeat else '':>35}")
    for e in res["errors"]:
        print(f"  error: {e}")
    if "train_ips" in res:
        t = res["train_ips"]
        show = {k: (f"{v:.0f}" if isinstance(v, float) and k != "ratio" else v) for k, v in t.items()}
        print(f"  training images/s: quiet before {show['quiet_before']}, loaded {show['loaded']}, "
              f"quiet after {show['quiet_after']}; ratio loaded/quiet {t['ratio']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 10], help="one load per value, in order")
    ap.add_argument("--rounds", type=int, default=2, help="visits of every page per session (2+: repeats)")
    ap.add_argument("--train", action="store_true", help="train a ResNet-20 in another process meanwhile")
    ap.add_argument("--data", default=default_data(), help="a CIFAR-10 JPEG folder or 'synthetic'")
    ap.add_argument("--batch-size", type=int, default=32,
                    help="of the training run; small, so that its records (every 10 steps) bound windows finely")
    ap.add_argument("--quiet-s", type=float, default=20.0, help="each quiet window of the training run")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a page run counts as failed")
    ap.add_argument("--port", type=int, default=0, help="0: a free one")
    ap.add_argument("--think-s", type=float, default=0.0,
                    help="seconds each visitor reads a page before the next (0: back to back)")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="resnet-viz-serve-load-"))
    port = args.port or free_port()
    app = start_app(port, app_env(args.data, tmp / "app-runs"), tmp / "app.log")
    training: Training | None = None
    try:
        pages = asyncio.run(list_pages(port))
        warm = asyncio.run(load(port, pages, 1, 1, args.timeout))  # imports, data set, caches: once per server
        print(f"app on port {port}, data {args.data}; warm-up visit (cold server): "
              + ", ".join(f"{v.run.page} {v.run.seconds:.2f} s" for v in warm))
        if args.train:
            training = Training(args.data, tmp / "train-runs", args.batch_size, tmp / "train.log")
            training.next_flush(STEADY_STEP)
        results = run_loads(args, port, pages, training)
    finally:
        if training:
            training.proc.kill()  # no final evaluation: it is not part of any window
            training.proc.wait()
        stop(app)
    shutil.rmtree(tmp, ignore_errors=True)  # kept (with the app's and training's logs) only when something failed
    print(json.dumps({"pages": [p.title for p in pages], "warmup": report(warm, pages)["first"]["all"],
                      "data": args.data, "rounds": args.rounds, "loads": results}))


if __name__ == "__main__":
    main()
