"""Secrets stay secret: the store URI never on a command line, MLflow credentials never in a job's environment,
no unauthenticated server beyond loopback (issue 13, item 5). The cluster configs' side is in
tests/test_cluster_configs.py, a running server's command line in tests/test_mlflow_server.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.mlflow_server import (
    STORE_ENV,
    MlflowServerError,
    refuse_open_without_auth,
    server_command,
    server_env,
)
from orchestrator import remote

RESNETCTL = str(Path(sys.executable).with_name("resnetctl"))
STORE = "postgresql+psycopg2://mlflow:hunter2@db.internal:5432/mlflow"


def test_the_store_reaches_the_server_by_environment_never_its_command_line():
    cmd = server_command(port=5001, auth=True)
    assert not any("hunter2" in part or "postgresql" in part for part in cmd)
    assert "--backend-store-uri" not in cmd
    env = server_env(STORE, auth_config=Path("/tmp/basic_auth.ini"), admin_password="pw")
    assert env[STORE_ENV] == STORE


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "head.example.org"])
def test_a_server_beyond_loopback_needs_a_login(host):
    with pytest.raises(MlflowServerError, match="without a login"):
        refuse_open_without_auth(host, auth=False)
    refuse_open_without_auth(host, auth=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_needs_no_login(host):
    refuse_open_without_auth(host, auth=False)


def test_ui_on_every_interface_without_auth_exits_2_before_starting(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    started = time.monotonic()
    result = subprocess.run([RESNETCTL, "ui", "--host", "0.0.0.0", "--store", f"sqlite:///{tmp_path}/m.db"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--host 0.0.0.0 would serve the store to the network without a login" \
        in result.stderr
    assert time.monotonic() - started < 30 and list(tmp_path.iterdir()) == []


def test_ui_prints_its_store_redacted(tmp_path):
    """A store URI with a password in an error of `ui` is shown redacted."""
    result = subprocess.run([RESNETCTL, "ui", "--store", "http://admin:hunter2@mlflow.internal:5000"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "hunter2" not in result.stderr and "admin:***@mlflow.internal" in result.stderr


def test_submit_to_a_cluster_keeps_mlflow_credentials_out_of_the_job(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    monkeypatch.setattr("orchestrator.capacity.dashboard_nodes", lambda url, headers: [{"CPU": 8.0}])
    warnings = remote.cluster_warnings("http://127.0.0.1:8265", {}, [])
    assert warnings == ["MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD stay here, out of the job's environment: "
                        "the cluster's nodes need their own (~/.mlflow/credentials, or a Kubernetes Secret)"]
    with pytest.raises(remote.RemoteError, match="carries a password") as info:
        remote.check_tracking(STORE, cluster_is_local=True)
    assert "hunter2" not in str(info.value) and "mlflow:***@db.internal" in str(info.value)


def test_ui_on_a_store_that_does_not_answer_is_one_redacted_line_and_starts_nothing(tmp_path):
    from cluster.net import free_port

    store = f"postgresql+psycopg2://mlflow:hunter2@127.0.0.1:{free_port()}/mlflow"
    started = time.monotonic()
    result = subprocess.run([RESNETCTL, "ui", "--store", store, "--port", str(free_port())], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "hunter2" not in result.stderr, result.stderr
    assert lines[0].startswith("Error: the tracking database postgresql+psycopg2://mlflow:***@127.0.0.1:")
    assert time.monotonic() - started < 30 and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_tune_writes_no_store_uri_into_its_trial_files(trained_digits_grid):
    """A PostgreSQL URI carries its password: the trials get it through Ray's object store, so Tune's params.json,
    params.pkl, result.json and experiment state (all under results/tune-GRID/) never hold it."""
    tune_files = [p for p in (trained_digits_grid["workdir"] / "results").glob("tune-*/**/*") if p.is_file()]
    assert any(p.name == "params.json" for p in tune_files)
    assert [p for p in tune_files if b"mlflow.db" in p.read_bytes()] == []
