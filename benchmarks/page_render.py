"""How long each page takes to render (one script run through AppTest, warm caches).

    python benchmarks/page_render.py

The reference, in the same process, is a page that only writes a title: the ratio says
how much work a page adds over Streamlit's own cost. Uses the synthetic data set so the
figure does not depend on a data cache. Also times the Explain page's core work alone:
feature maps + Integrated Gradients (50 steps) for one image on ResNet-20.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import os  # noqa: E402

from streamlit.testing.v1 import AppTest  # noqa: E402

from resnet_viz.app.state import Keys  # noqa: E402
from resnet_viz.config import DataConfig  # noqa: E402

PAGES = ["home", "build", "train", "compare", "inspect", "explain"]


def render(name: str, repeats: int = 3) -> float:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[Keys.DATA_CONFIG] = DataConfig(source="synthetic")
    at.switch_page(f"app_pages/{name}.py").run()  # warm: data set, models, imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
    assert not at.exception, at.exception
    return statistics.median(times)


def reference(repeats: int = 3) -> float:
    at = AppTest.from_string("import streamlit as st\nst.title('reference')", default_timeout=60).run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
    print(f"reference page (a title only): {ref * 1000:.0f} ms")
    worst = 0.0
    for name in PAGES:
        t = render(name)
        worst = max(worst, t)
        print(f"{name:>8}: {t * 1000:6.0f} ms  ({t / ref:.1f}x the reference)")
    print(f"feature maps + Integrated Gradients (50 steps), ResNet-20, one image: {explain_core() * 1000:.0f} ms")
    print(f"ratio slowest page/reference: {worst / ref:.2f}")


if __name__ == "__main__":
    main()
