"""Stopping the background processes we started, by pid, and only those.

Each service is started in its own session, so its pid is also its process-group id and a
signal to the group reaches the children it spawned (Ray's raylet, MLflow's workers). A pid
is only signalled when its start time still matches the recorded one, so a recycled pid
belonging to someone else is never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil


def start_time(pid: int) -> float | None:
    """The process's start time (psutil's create_time), or None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_alive(pid: int, started: float | None = None) -> bool:
    """Running (not a zombie) and, when `started` is given, still the same process."""
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > 0.01:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status when `pid` is our own child (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_process_group(pid: int, started: float | None = None, timeout: float = 20.0) -> None:
    """SIGTERM the group led by `pid`, wait up to `timeout` s, then SIGKILL what is left of it."""
    if not is_alive(pid, started):
        _reap(pid)
        return
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_alive(pid):
            break
        time.sleep(0.2)
    # SIGKILL the rest of the group too: children may outlive a leader that exited on SIGTERM
    _signal_group(pid, signal.SIGKILL)
    _reap(pid)
