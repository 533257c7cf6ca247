"""Submitting to a cluster: a wrong address or a dead tracking server fails fast, clearly, and submits nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cluster.net import free_port
from orchestrator import remote, stores
from orchestrator.grid_loading import load_cells
from resnetctl.errors import UserError

pytestmark = pytest.mark.slow  # starts small HTTP servers (fake Ray head, fake MLflow)

RESNETCTL = str(Path(sys.executable).with_name("resnetctl"))
FAST_S = stores.CHECK_TIMEOUT_S + 4  # "within seconds": each check gives up after CHECK_TIMEOUT_S

class FakeHead(BaseHTTPRequestHandler):
    """Answers like a Ray dashboard's /api/version (or 401s) and records every job submission attempt."""

    server_version = "fake-ray"

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        self.server.seen.append(("GET", self.path, self.headers.get("Authorization")))
        if self.server.require_token and self.headers.get("Authorization") != "Bearer right-token":
            self._reply(401, {"error": "unauthorized"})
        elif self.path.startswith("/api/version"):
            self._reply(200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "x", "session_name": "s"})
        else:
            self._reply(404, {})

    def do_POST(self):
        self.server.seen.append(("POST", self.path, self.headers.get("Authorization")))
        self.server.submissions += 1
        self._reply(500, {})

    do_PUT = do_POST

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeMlflow(FakeHead):
    """/health answers; every API call is refused with 401 (a server with auth on, no credentials given)."""

    def do_GET(self):
        if self.path == "/health":
            self._reply(200, {})
        else:
            self._reply(401, {"error_code": "UNAUTHENTICATED"})


@pytest.fixture()
def serve():
    servers = []

    def start(handler, *, require_token: bool = False) -> tuple[str, ThreadingHTTPServer]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.seen, server.submissions, server.require_token = [], 0, require_token
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def write_grid(tmp_path, grid_file):
    """`write(uri, data=tmp_path/"digits")`: this file's grid, two digits cells (whose data nothing here reads)
    tracked at `uri`."""
    def write(uri: str, data=None) -> Path:
        return grid_file(tmp_path / "grid.yaml", name="remote-check", data=tmp_path / "digits" if data is None else data,
                         seeds=(0, 1), train={"epochs": 1}, tracking_uri=uri)

    return write


@pytest.fixture()
def submit(write_grid, monkeypatch):
    """`submit(uri, address)`: submits the grid and returns the message of the RemoteError it must fail with,
    within seconds. Checkpoints on the configs' shared mount: these fake heads are no `cluster up --local`
    cluster, so they count as remote (tests/test_gpu_paths.py checks the storage refusal)."""
    monkeypatch.setenv(remote.STORAGE_ENV, "/mnt/shared/ray_results")

    def run(uri: str, address: str) -> str:
        path = write_grid(uri)
        spec, cells = load_cells(path, check_data=False)
        started = time.monotonic()
        with pytest.raises(remote.RemoteError) as err:
            remote.submit_to_cluster(path, spec, cells, address=address, detach=True, restart=False)
        assert time.monotonic() - started < FAST_S
        assert isinstance(err.value, UserError)  # the CLI prints it as one line and exits 2
        return str(err.value)

    return run


def test_nothing_listening_at_the_address(submit, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    address = f"http://127.0.0.1:{free_port()}"
    message = submit("http://127.0.0.1:5000", address)
    assert message.startswith(f"no Ray dashboard answers at {address}")


def test_an_address_that_never_answers_times_out_within_seconds(submit):
    # TEST-NET-1 (RFC 5737): never routed, so the connect either hangs until our timeout or fails at once
    message = submit("http://127.0.0.1:5000", "192.0.2.123:8265")
    assert "no Ray dashboard answers at http://192.0.2.123:8265" in message


def test_dead_tracking_server_submits_nothing(submit, serve):
    address, head = serve(FakeHead)
    dead = f"http://127.0.0.1:{free_port()}"
    message = submit(dead, address)
    assert message.startswith(f"the tracking server {dead} does not answer")
    assert head.submissions == 0
    assert [path for _, path, _ in head.seen] == ["/api/version"]


def test_tracking_server_refusing_credentials_submits_nothing(submit, serve, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    address, head = serve(FakeHead)
    tracking, _ = serve(FakeMlflow)
    message = submit(tracking, address)
    assert "refused our credentials (HTTP 401)" in message
    assert head.submissions == 0


def test_dead_tracking_database_submits_nothing(submit, serve):
    address, head = serve(FakeHead)
    uri = f"postgresql+psycopg2://u:secret@127.0.0.1:{free_port()}/mlflow"
    with pytest.raises(remote.RemoteError, match="carries a password"):  # never into a job's environment
        remote.check_tracking(uri, cluster_is_local=True)
    uri = f"postgresql+psycopg2://u@127.0.0.1:{free_port()}/mlflow"  # the password in the nodes' ~/.pgpass
    message = submit(uri, address)
    assert message.startswith(f"the tracking database {uri} does not answer")
    assert head.submissions == 0


def test_a_sqlite_file_cannot_be_the_store_of_a_remote_cluster(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(remote.RemoteError, match="is a file on this machine"):
        remote.check_tracking(uri, cluster_is_local=False)
    remote.check_tracking(uri, cluster_is_local=True)  # a cluster on this machine shares its files
    assert remote._is_loopback("http://127.0.0.1:8265") and not remote._is_loopback("http://10.0.0.5:8265")


def test_cluster_with_token_auth_needs_the_token(submit, serve, monkeypatch):
    address, head = serve(FakeHead, require_token=True)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    message = submit("http://127.0.0.1:5000", address)
    assert "refused us (401)" in message and "RAY_AUTH_TOKEN" in message
    monkeypatch.setenv("RAY_AUTH_TOKEN", "right-token")
    assert remote.check_dashboard(address, remote.ray_auth_headers(address)) == "2.60.0"
    assert head.submissions == 0


@pytest.mark.parametrize("address", ["", "ray://head:10001", "http://"])
def test_malformed_addresses_are_usage_errors(address):
    with pytest.raises(remote.RemoteError):
        remote.dashboard_url(address)


def test_dashboard_url_adds_the_scheme():
    assert remote.dashboard_url("head:8265/") == "http://head:8265"
    assert remote.dashboard_url("https://head.example:443") == "https://head.example:443"


def test_job_request_is_self_contained_and_carries_no_credentials(tmp_path, monkeypatch, write_grid):
    import yaml

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.chdir(tmp_path)
    grid = write_grid("http://head:5000", data="digits")  # a relative path, which the job must get absolute
    spec, cells = load_cells(grid, check_data=False)
    job = remote.build_job(grid, spec, cells, tracking_uri="http://head:5000", restart=True,
                           storage_path="/mnt/shared/results")
    env = job.runtime_env["env_vars"]
    written = yaml.safe_load(env["RESNETCTL_GRID_YAML"])
    assert written["dataset"]["path"] == str(tmp_path / "digits")  # absolute: the job runs elsewhere
    assert written["tracking"]["uri"] == "http://head:5000"
    assert env["MLFLOW_TRACKING_URI"] == "http://head:5000"
    assert env["RESNETCTL_STORAGE"] == "/mnt/shared/results"
    assert not set(remote.CREDENTIAL_ENV) & set(env) and "pw" not in json.dumps(job.runtime_env)
    assert "working_dir" not in job.runtime_env
    assert job.metadata == {"resnetctl.grid": "remote-check", "resnetctl.experiment": "remote-check",
                            "resnetctl.cells": "2", "resnetctl.tracking_uri": "http://head:5000"}
    # the entrypoint, run by a shell as Ray runs it, writes the grid and calls `resnetctl run grid.yaml --restart`
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "resnetctl").write_text('#!/bin/sh\necho "args: $*"; cat grid.yaml\n')
    (fake_bin / "resnetctl").chmod(0o755)
    result = subprocess.run(job.entrypoint, shell=True, capture_output=True, text=True, timeout=30,
                            env={**env, "PATH": f"{fake_bin}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("args: run grid.yaml --restart\n")
    assert yaml.safe_load(result.stdout.split("\n", 1)[1]) == written


def test_job_commands_with_a_dead_address_exit_2_quickly():
    address = f"http://127.0.0.1:{free_port()}"
    for args in (["status"], ["status", "raysubmit_x"], ["logs", "raysubmit_x"], ["cancel", "raysubmit_x"]):
        started = time.monotonic()
        result = subprocess.run([RESNETCTL, *args, "--address", address], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert f"no Ray dashboard answers at {address}" in result.stderr
        assert time.monotonic() - started < 30  # includes the interpreter's start-up
