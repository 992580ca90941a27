"""torch's CPU thread count is process state: overlapping users of ``one_cpu_thread`` (two
visitors' maps while a job trains) must leave it as they found it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import SimpleNamespace

import pytest
import torch

from resnet_viz.app import resources
from resnet_viz.training.device import one_cpu_thread

Limit = Callable[[], AbstractContextManager[object]]


@pytest.fixture(autouse=True)
def two_threads() -> Iterator[None]:
    """Two threads to start from (one would hide the bug), and the count put back afterwards,
    also after a failure that left it at one."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def count_in_a_new_thread() -> int:
    """The count a thread started now gets: with OpenMP each thread has its own count, and a
    new one (the next page run, the next training job) starts from the last one set."""
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join()
    return out[0]


def overlap(limit: Limit) -> dict[str, int]:
    """A enters, B enters, A leaves, B leaves, each in its own thread; the count each saw inside."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}
    errors: list[BaseException] = []

    def a() -> None:
        with limit():
            seen["a"] = torch.get_num_threads()
            a_in.set()
            assert b_in.wait(10)
        a_out.set()

    def b() -> None:
        assert a_in.wait(10)
        with limit():
            seen["b"] = torch.get_num_threads()
            b_in.set()
            assert a_out.wait(10)

    def run(body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as e:  # reported by the test below; the other thread must not wait
            errors.append(e)
            for event in (a_in, b_in, a_out):
                event.set()

    threads = [threading.Thread(target=run, args=(f,)) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors and not any(t.is_alive() for t in threads), errors
    return seen


def busy_inference() -> AbstractContextManager[object]:
    return resources.inference()


@pytest.mark.parametrize("limit", [one_cpu_thread, busy_inference], ids=["one_cpu_thread", "inference"])
def test_overlapping_uses_run_on_one_thread_and_put_the_count_back(
    limit: Limit, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A training job is active: the page's inference limits its threads.
    monkeypatch.setattr(resources, "job_registry", lambda: SimpleNamespace(active=lambda: object()))
    assert count_in_a_new_thread() == 2
    assert overlap(limit) == {"a": 1, "b": 1}
    assert count_in_a_new_thread() == 2, "the last one out must restore the count from before the first came in"


def test_nested_and_failing_uses_put_the_count_back() -> None:
    with pytest.raises(RuntimeError, match="map failed"), one_cpu_thread():
        with one_cpu_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1  # the outer use is still inside
        raise RuntimeError("map failed")
    assert torch.get_num_threads() == 2 and count_in_a_new_thread() == 2


def test_inference_leaves_the_count_alone_without_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "job_registry", lambda: SimpleNamespace(active=lambda: None))
    with resources.inference():
        assert torch.get_num_threads() == 2
    assert count_in_a_new_thread() == 2
