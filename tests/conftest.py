"""Fixtures and helpers shared by the test modules."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from resnet_viz.config import ModelConfig
from resnet_viz.data.batches import normalize
from resnet_viz.nets.cifar import build_model

# The real CIFAR-10 images sit beside the checkout (../shared/data), wherever the checkout is: CI clones it elsewhere.
CIFAR_JPEG = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10-jpg"


@pytest.fixture(autouse=True)
def no_cifar_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the internet: the app's CIFAR-10 download offer asks a closed local port
    (it then says "cannot be reached"); tests of the download serve a stand-in themselves."""
    from download_standin import closed_port_url

    monkeypatch.setenv("RESNET_VIZ_CIFAR_URL", closed_port_url())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` did not happen, never hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)

def fake_speed(train: tuple[float, float] = (1000.0, 400.0), evals: tuple[float, float] = (4000.0, 1600.0),
               threads: int | None = None):
    """Figures for this machine as ``training.speed`` keeps them, made up: tests see estimates
    at once, without measuring."""
    from resnet_viz.training import speed

    flops = (speed.model_flops(ModelConfig(depth=20)), speed.model_flops(ModelConfig(depth=56)))
    threads = threads or speed.start_threads()  # the key pages and the CLI look figures up under
    device, precision = "cpu", speed.resolve_precision("auto", torch.device("cpu"))
    return speed.Speed(machine=speed.machine_key(device, precision, threads), device=device, precision=precision,
                       threads=threads, flops=flops, train_ips=train, eval_ips=evals, fp32_ips=(2000.0, 800.0),
                       measured_at=time.time())


@pytest.fixture(scope="session", autouse=True)
def known_machine_speed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test (and every server a test starts) finds this machine's speed already measured,
    so no page starts a measurement of its own; tests of the measurement pass their own file."""
    import os

    from resnet_viz.app import resources  # noqa: F401 - first: figures made after its import count as
    from resnet_viz.training import speed  # measured by "this server" (resources.machine_speed)

    file = tmp_path_factory.mktemp("speed") / "machine-speed.json"
    speed.save(fake_speed(), file)
    before = os.environ.get("RESNET_VIZ_SPEED_FILE")
    os.environ["RESNET_VIZ_SPEED_FILE"] = str(file)
    yield file
    if before is None:
        os.environ.pop("RESNET_VIZ_SPEED_FILE", None)
    else:
        os.environ["RESNET_VIZ_SPEED_FILE"] = before


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch intra-op thread for a module of small model passes.

    On 2 cores shared with another job (a training run, CI's other tests), two intra-op
    threads spin against it and each tiny pass gets many times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def model() -> nn.Module:
    """A fresh untrained depth-8 ResNet (seed 0): tests may change its mode or weights."""
    torch.manual_seed(0)
    return build_model(ModelConfig(depth=8))


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """One seeded random image, normalized: (1, 3, 32, 32) float."""
    g = torch.Generator().manual_seed(1)
    return normalize(torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=g), channels_last=False)


@pytest.fixture
def threaded_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks run in threads, for tests whose task functions are lambdas or closures: a worker
    process gets only what pickles (the app's pages pass ``Call`` objects)."""
    from resnet_viz.background.tasks import TaskRegistry

    monkeypatch.setattr(TaskRegistry, "isolate", False)
