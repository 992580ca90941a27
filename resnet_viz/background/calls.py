"""A task as something a worker process can be sent: ``Call`` a library function with its
arguments (a page's lambda does not pickle), ``Deferred`` arguments made in the worker, and
the result turned into plain data on the way back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from resnet_viz.experiments.common import ProgressFn


def _plain(value: Any) -> Any:
    """Experiment results as plain data (their ``to_dict()``), to cross a process boundary."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.to_dict() if hasattr(value, "to_dict") else value


class Deferred:
    """An argument of a ``Call`` made where the call runs, in the worker: ``fn(*args)``. A page
    hands over what it already holds (a model's cached weights) instead of building, on every
    run, a module that only a started task needs."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args = fn, args

    def resolve(self) -> Any:
        return self.fn(*(_resolved(a) for a in self.args))


def _resolved(value: Any) -> Any:
    return value.resolve() if isinstance(value, Deferred) else value


class Call:
    """``fn(*args, **kwargs, progress=..., stop=...)`` as a task function whose result is
    plain data: a library function and its arguments can be sent to a worker process, where
    a page's lambda cannot. ``Deferred`` arguments are made there, just before the call."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self, progress: ProgressFn, stop: threading.Event) -> Any:
        args = [_resolved(a) for a in self.args]
        kwargs = {k: _resolved(v) for k, v in self.kwargs.items()}
        return _plain(self.fn(*args, **kwargs, progress=progress, stop=stop))
