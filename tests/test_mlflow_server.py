"""The MLflow server the project starts: PostgreSQL-backed, loopback-bound, Host-checked, 401 with --auth."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import psutil
import pytest

from cluster.mlflow_server import allowed_hosts_for, server_command, start_mlflow_server
from cluster.net import free_port, wait_for_http
from cluster.postgres import PostgresServer, find_pg_bin
from cluster.processes import is_alive, stop_process_group

pytestmark = pytest.mark.slow
needs_pg = pytest.mark.skipif(find_pg_bin() is None, reason="Debian's postgresql package is not installed")
RESNETCTL = str(Path(sys.executable).with_name("resnetctl"))


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _listening_addresses(pid: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    if find_pg_bin() is None:
        pytest.skip("Debian's postgresql package is not installed")
    pg = PostgresServer.create(tmp_path_factory.mktemp("pg")).start()
    server = start_mlflow_server(pg.uri, state_dir=tmp_path_factory.mktemp("mlflow"), port=free_port())
    yield pg, server
    stop_process_group(server.pid, timeout=5)
    pg.remove()


@needs_pg
def test_server_binds_loopback_and_refuses_a_foreign_host_header(pg_server):
    _, server = pg_server
    port = server.url.rsplit(":", 1)[1]
    assert server.url.startswith("http://127.0.0.1:")
    assert _listening_addresses(server.pid) == {"127.0.0.1"}
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert _get(search) == 200
    assert _get(search, {"Host": f"localhost:{port}"}) == 200
    assert _get(search, {"Host": "attacker.example"}) == 403
    assert _get(search, {"Host": f"10.0.0.7:{port}"}) == 403  # MLflow's default would admit private IPs


@needs_pg
def test_the_store_and_its_password_are_on_no_command_line(pg_server):
    """`ps` shows every local user each process's arguments: the store URI (with the database password)
    reaches the server and its workers through their environment only."""
    pg, server = pg_server
    procs = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    assert len(procs) >= 2  # mlflow server and its uvicorn worker(s)
    for proc in procs:
        assert not any(pg.password in part or pg.uri in part for part in proc.cmdline()), proc.cmdline()
    assert psutil.Process(server.pid).environ()["MLFLOW_BACKEND_STORE_URI"] == pg.uri


@needs_pg
def test_runs_logged_through_the_server_land_in_postgresql(pg_server):
    import sqlalchemy
    from mlflow import MlflowClient

    pg, server = pg_server
    client = MlflowClient(tracking_uri=server.url)
    experiment_id = client.create_experiment("pg-check")
    run = client.create_run(experiment_id, run_name="resnet20-A-digits-s0", tags={"resnetctl.grid": "pg-check"})
    client.log_metric(run.info.run_id, "val_err", 12.5, step=1)
    client.set_terminated(run.info.run_id)

    engine = sqlalchemy.create_engine(pg.uri)
    with engine.connect() as conn:
        name, status = conn.execute(
            sqlalchemy.text("SELECT name, status FROM runs WHERE run_uuid = :id"), {"id": run.info.run_id}
        ).one()
        value = conn.execute(
            sqlalchemy.text("SELECT value FROM metrics WHERE run_uuid = :id AND key = 'val_err'"),
            {"id": run.info.run_id},
        ).scalar()
    engine.dispose()
    assert (name, status, value) == ("resnet20-A-digits-s0", "FINISHED", 12.5)


def test_allowed_hosts_never_include_private_ranges_unless_asked():
    hosts = allowed_hosts_for("127.0.0.1")
    assert "localhost" in hosts and "127.0.0.1:*" in hosts
    assert not any(h.startswith(("10.", "192.168", "172.")) for h in hosts)
    assert "head.internal:5000" in allowed_hosts_for("0.0.0.0", ("head.internal:5000",))
    cmd = server_command(port=5001)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert "--app-name" not in cmd
    with_auth = server_command(auth=True)
    assert with_auth[with_auth.index("--app-name") + 1] == "basic-auth"


def test_ui_with_auth_answers_401_without_credentials(tmp_path):
    """`resnetctl ui --auth` on a SQLite store: 401 anonymous, 200 for the admin, 403 for a foreign Host."""
    port = free_port()
    password = "pw-" + os.urandom(6).hex()
    env = dict(os.environ, MLFLOW_AUTH_ADMIN_PASSWORD=password, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/m.db")
    with open(tmp_path / "ui.log", "wb") as log:
        proc = subprocess.Popen([RESNETCTL, "ui", "--port", str(port), "--auth"], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", 90, alive=lambda: proc.poll() is None, what="resnetctl ui")
        assert _listening_addresses(proc.pid) == {"127.0.0.1"}
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=5"
        assert _get(search) == 401
        basic = "Basic " + b64encode(f"admin:{password}".encode()).decode()
        assert _get(search, {"Authorization": "Basic " + b64encode(b"admin:wrong").decode()}) == 401
        assert _get(search, {"Authorization": basic}) == 200
        assert _get(search, {"Authorization": basic, "Host": "attacker.example"}) == 403
    finally:
        stop_process_group(proc.pid, timeout=5)
    assert not is_alive(proc.pid)
    assert (tmp_path / "basic_auth.db").is_file()


def test_ui_auth_without_password_is_a_usage_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    result = subprocess.run([RESNETCTL, "ui", "--auth", "--store", f"sqlite:///{tmp_path}/m.db"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in result.stderr
