"""How long each page takes to render, server side: one script run through AppTest, in process.

    python benchmarks/page_render.py

For every page (and a few pages with uploads) three figures: the first run of a session
(imports and the data set already loaded, this page's model work not yet done), the median
repeat run of that session with nothing changed, and a second session's first run of the
same page (what a class pays when one visitor has already asked). The reference, in the same
process, is a page that only writes a title: the ratio says how much work a page adds over
Streamlit's own cost. Uses the synthetic data set so the figures do not depend on a data
cache. Also times the Explain page's core work alone: feature maps + Integrated Gradients
(50 steps) for one image on ResNet-20.
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import os  # noqa: E402

from PIL import Image  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from resnet_viz.app.state import Keys  # noqa: E402
from resnet_viz.config import DataConfig  # noqa: E402

TARGET_MS = 200  # a repeat visit of any page (the issue "A lab a class can share")


def _photo(size: tuple[int, int], seed: int) -> bytes:
    """A JPEG of noise-like pixels (a photo's decoding cost, not a flat colour's)."""
    img = Image.effect_noise(size, 64 + seed).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _upload(label: str, files: list[tuple[str, bytes]]) -> Callable[[AppTest], None]:
    def setup(at: AppTest) -> None:
        radio = [r for r in at.radio if r.label == "Input"]
        if radio:
            radio[0].set_value("Upload").run()
        next(u for u in at.file_uploader if u.label.startswith(label)).set_value(
            [(name, data, "image/jpeg") for name, data in files])
    return setup


def _noop(at: AppTest) -> None:
    pass


# (label, page, what to set before the timed first run)
SCENARIOS: list[tuple[str, str, Callable[[AppTest], None]]] = [
    ("home", "home", _noop), ("build", "build", _noop), ("train", "train", _noop), ("compare", "compare", _noop),
    ("inspect", "inspect", _noop), ("explain", "explain", _noop), ("experiments", "experiments", _noop),
    ("imagenet", "imagenet", _noop),
    ("explain, 3 uploads", "explain", _upload("Images", [(f"p{i}.jpg", _photo((1024, 768), i)) for i in range(3)])),
    ("imagenet, 1 photo", "imagenet", _upload("Photos", [("photo.jpg", _photo((1600, 1200), 9))])),
]


def _session(page: str, setup: Callable[[AppTest], None]) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state[Keys.DATA_CONFIG] = DataConfig(source="synthetic")
    at.switch_page(f"app_pages/{page}.py")
    if setup is not _noop:  # the page's widgets exist only after a first run
        at.run()
        setup(at)
    return at


def _timed(at: AppTest, clock: Callable[[], float] = time.perf_counter) -> float:
    t0 = clock()
    at.run()
    elapsed = clock() - t0
    assert not at.exception, at.exception
    return elapsed


def render(page: str, setup: Callable[[AppTest], None], repeats: int = 3) -> tuple[float, float, float, float]:
    """(first run, median repeat run, its CPU time, a second session's first run) in seconds.

    The CPU time is this process's, all threads: on a machine shared with other work the
    wall time of a run says more about the neighbours than about the page."""
    at = _session(page, setup)
    first = _timed(at)
    repeat = statistics.median(_timed(at) for _ in range(repeats))
    cpu = statistics.median(_timed(at, time.process_time) for _ in range(repeats))
    second = _timed(_session(page, setup))
    return first, repeat, cpu, second


def reference(repeats: int = 3) -> float:
    at = AppTest.from_string("import streamlit as st\nst.title('reference')", default_timeout=60).run()
    return statistics.median(_timed(at) for _ in range(repeats))


def explain_core() -> float:
    import torch

    from resnet_viz.experiments import attribution
    from resnet_viz.nets.cifar import build_model

    model = build_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    attribution.feature_maps(model, x, "stage2.block0")
    attribution.attribute(model, x, "integrated_gradients", steps=50)  # warm
    t0 = time.perf_counter()
    attribution.feature_maps(model, x, "stage2.block0")
    attribution.attribute(model, x, "integrated_gradients", steps=50)
    return time.perf_counter() - t0


def main() -> None:
    os.environ.setdefault("RESNET_VIZ_RUNS", tempfile.mkdtemp(prefix="resnet-viz-bench-runs-"))
    ref = reference()
    _session("home", _noop).run()  # imports, the synthetic data set: not any one page's cost
    print(f"reference page (a title only): {ref * 1000:.0f} ms")
    print(f"{'page':>20}  {'first':>8}  {'repeat':>8}  {'(CPU)':>8}  {'2nd session':>11}  repeat/reference")
    worst = 0.0
    for label, page, setup in SCENARIOS:
        first, repeat, cpu, second = render(page, setup)
        worst = max(worst, repeat)
        print(f"{label:>20}  {first * 1000:5.0f} ms  {repeat * 1000:5.0f} ms  {cpu * 1000:5.0f} ms  "
              f"{second * 1000:8.0f} ms  {repeat / ref:6.1f}x")
    print(f"feature maps + Integrated Gradients (50 steps), ResNet-20, one image: {explain_core() * 1000:.0f} ms")
    print(f"slowest repeat run: {worst * 1000:.0f} ms ({worst / ref:.1f}x the reference; target <= {TARGET_MS} ms)")


if __name__ == "__main__":
    main()
