"""A tracking store that cannot be used: one line naming it (password redacted) within seconds, exit 2, nothing
written, neither Ray nor MLflow started (issue 13, item 1).

Left to MLflow these were a traceback (a SQLite file that is not a database, a missing PostgreSQL driver)
or minutes of retries (a server or database nobody answers for). Every store here is on loopback or
in a temporary folder: a port nothing listens on, a file of random bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.net import free_port
from orchestrator import stores

RESNETCTL = str(Path(sys.executable).with_name("resnetctl"))
SECRET = "hunter2"
FAST_S = 30  # the interpreter's start-up and the grid's validation included; each check gives up after 8 s


@pytest.fixture()
def workdir(tmp_path, digits_root):
    """A folder with a valid one-cell digits grid tracked at `{uri}` (filled in per test)."""
    (tmp_path / "grid.yaml.in").write_text(
        "name: store-check\n"
        f"dataset: {{name: digits, path: {digits_root}}}\n"
        "grid: {depth: [8]}\ntrain: {epochs: 1}\ntracking: {uri: '{uri}'}\n")
    return tmp_path


def _submit(workdir: Path, uri: str, command: str = "submit") -> tuple[subprocess.CompletedProcess, float]:
    template = (workdir / "grid.yaml.in").read_text()
    (workdir / "grid.yaml").write_text(template.replace("{uri}", uri))
    before = sorted(p.name for p in workdir.iterdir())
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    started = time.monotonic()
    result = subprocess.run([RESNETCTL, command, "grid.yaml"], cwd=workdir, env=env, capture_output=True,
                            text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert sorted(p.name for p in workdir.iterdir()) == before  # no mlflow.db, results/, logs/, mlruns/
    return result, elapsed


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert SECRET not in result.stderr and "Traceback" not in result.stderr
    return lines[0]


def test_a_sqlite_file_that_is_not_a_database(workdir):
    store = workdir / "not-a-db.sqlite"
    store.write_bytes(os.urandom(4096))
    for command in ("submit", "run"):
        result, elapsed = _submit(workdir, f"sqlite:///{store}", command)
        line = _one_line(result)
        assert f"tracking store sqlite:///{store}" in line and "file is not a database" in line
        assert elapsed < FAST_S


def test_a_sqlite_file_in_a_folder_that_does_not_exist(workdir):
    result, elapsed = _submit(workdir, f"sqlite:///{workdir}/nowhere/m.db")
    assert f"the folder {workdir}/nowhere does not exist" in _one_line(result) and elapsed < FAST_S


def test_an_unreachable_postgresql_database(workdir):
    port = free_port()
    result, elapsed = _submit(workdir, f"postgresql+psycopg2://alice:{SECRET}@127.0.0.1:{port}/mlflow")
    line = _one_line(result)
    assert f"the tracking database postgresql+psycopg2://alice:***@127.0.0.1:{port}/mlflow does not answer" in line
    assert elapsed < FAST_S


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_the_plain_scheme_names_the_store_whether_or_not_its_default_driver_is_installed(workdir, scheme):
    """SQLAlchemy's default driver for a plain postgresql:// or mysql:// may be missing (psycopg, MySQLdb):
    either way one line names the store; when it is missing the line says which drivers are installed."""
    port = free_port()
    result, elapsed = _submit(workdir, f"{scheme}://alice:{SECRET}@127.0.0.1:{port}/mlflow")
    line = _one_line(result)
    assert f"{scheme}://alice:***@127.0.0.1:{port}/mlflow" in line and elapsed < FAST_S
    assert "its database driver is not installed" in line or "does not answer" in line


def test_an_unreachable_tracking_server(workdir):
    url = f"http://127.0.0.1:{free_port()}"
    result, elapsed = _submit(workdir, url)
    assert f"the tracking server {url} does not answer" in _one_line(result) and elapsed < FAST_S


def test_a_missing_driver_is_named_with_the_installed_alternatives(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # `import psycopg2` now fails as if not installed
    with pytest.raises(stores.StoreError) as info:
        stores.check_store(f"postgresql+psycopg2://alice:{SECRET}@127.0.0.1:{free_port()}/mlflow")
    message = str(info.value)
    assert "postgresql+psycopg2://alice:***@127.0.0.1:" in message and SECRET not in message
    assert "its database driver is not installed" in message


def test_a_healthy_store_passes_and_a_new_sqlite_file_is_not_created(tmp_path):
    stores.check_store(f"sqlite:///{tmp_path}/new.db")
    assert not (tmp_path / "new.db").exists()
