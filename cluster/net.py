"""Loopback ports and readiness checks shared by the local cluster, the MLflow server and the tests."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free right now on `host` (the OS picks it; a race is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def http_ok(url: str, timeout: float = 3.0) -> bool:
    """True when `url` answers a GET with a 2xx status within `timeout` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_for_http(url: str, timeout: float, *, alive=lambda: True, what: str = "server") -> None:
    """Poll `url` until it answers 2xx; raise TimeoutError (or RuntimeError once `alive()` is false)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(url, timeout=2.0):
            return
        if not alive():
            raise RuntimeError(f"{what} exited before {url} answered")
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not answer at {url} within {timeout:.0f} s")
