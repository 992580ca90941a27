"""Who holds a run: the process that wrote a live status (queued, running, paused).

A status records its writer's pid, the pid's start time, a token made once per process and
the host name. The pid alone is not enough: containers restart their app under the same pid,
and the kernel hands a freed pid to the next process. The start time (``/proc/<pid>/stat``)
tells a reused pid apart; the token tells this process from an earlier one under its pid.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Mapping
from typing import Any


def _proc_stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (the state first), or None
    without /proc (macOS, Windows) or when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The command name may hold spaces and ')', so split after its last ')'.
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat), or None
    where it cannot be read. A pid is reused by the next process; its start time tells them apart."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields is not None else None  # field 22; fields[0] is field 3
    except (IndexError, ValueError):
        return None


# Who this process is, written with every status: a container restarted under the same pid,
# or a pid reused by another process, must not pass for the writer of a live status.
_me: tuple[int, str, int | None] | None = None
_me_lock = threading.Lock()  # two threads' first statuses must not record two tokens


def _self() -> tuple[int, str, int | None]:
    """(pid, token, start time) of this process, made once per process."""
    global _me
    pid = os.getpid()
    with _me_lock:
        if _me is None or _me[0] != pid:  # a forked child is a process of its own, with its own start
            _me = (pid, uuid.uuid4().hex, _start_time(pid))
        return _me


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` runs on this host and, when ``start`` is known, is the process
    that started then (not a later one given the same pid)."""
    if pid <= 0:
        return False
    if os.name != "posix":
        return True  # os.kill(pid, 0) would send CTRL_C on Windows; we cannot tell, so trust the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc (macOS): kill(pid, 0) succeeding is the best we know
    # A killed child the app has not reaped yet is a zombie: kill(pid, 0) succeeds
    # but it will never write again.
    if fields[0] in (b"Z", b"X"):
        return False
    return start is None or _start_time(pid) in (start, None)


def gone(st: Mapping[str, Any]) -> str | None:
    """Why the process that wrote the live status ``st`` cannot still hold its run, or None
    if it may: the run was written on another host, by an earlier process under our pid, or by
    a process that has exited (or whose pid now belongs to a newer process)."""
    pid, host = st.get("pid"), st.get("hostname")
    if not this_host(st):
        return f"it was {st.get('status')} on host {host!r}, and this is {socket.gethostname()!r}"
    if not isinstance(pid, int):
        return "its status names no process"
    if pid == os.getpid():
        if st.get("process_token") == _self()[1]:
            return None
        return f"the process (pid {pid}) that had this run {st.get('status')} was restarted"
    start = st.get("pid_start")
    if not pid_alive(pid, start if isinstance(start, int) else None):
        return f"the process (pid {pid}) that had this run {st.get('status')} is gone: it crashed or was killed"
    return None


def this_host(st: Mapping[str, Any]) -> bool:
    """Whether status ``st`` was written on this machine."""
    return st.get("hostname") == socket.gethostname()


def identity() -> dict[str, Any]:
    """This process, as a status records its writer."""
    pid, token, start = _self()
    return {"pid": pid, "pid_start": start, "process_token": token, "hostname": socket.gethostname()}
