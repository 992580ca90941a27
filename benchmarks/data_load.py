"""How long loading a data set takes: first (decode + write the cache) and second (cache).

    python benchmarks/data_load.py [PATH]      # default: ../shared/data/cifar10-jpg

The first load decodes every image into a uint8 tensor and writes the cache; the second
reads the cache. The reference is the first load in the same process, so the last line
is ``ratio second/first: X.XXX`` (issue target: the second load of the 60,000-image
JPEG folder under 3 s on a 2-core CPU).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_viz.config import DataConfig  # noqa: E402
from resnet_viz.data.sources import load_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "cifar10-jpg"
    if not folder.is_dir():
        print(f"skipped: {folder} does not exist (pass a folder of class folders)")
        return
    cfg = DataConfig(source="folder", path=str(folder))
    with tempfile.TemporaryDirectory() as cache:  # a cold cache, whatever the machine has
        times = []
        for what in ("first (decode + cache)", "second (from cache)"):
            t0 = time.perf_counter()
            data = load_data(cfg, cache_dir=Path(cache), trusted=True)  # the operator's own folder
            times.append(time.perf_counter() - t0)
            print(f"{what:>24}: {times[-1]:6.2f} s  ({len(data.train_y):,} + {len(data.test_y):,} images)")
    print(f"ratio second/first: {times[1] / times[0]:.3f}")


if __name__ == "__main__":
    main()
