"""End to end on a local multi-node Ray cluster (head + 2 one-CPU workers on loopback) with MLflow on PostgreSQL.

`resnetctl cluster up --local`, `submit --address --detach`, `status` while it runs, `cancel` once a
cell has finished, a resubmit that finishes only what was left (followed to its exit status),
every cell logged exactly once in PostgreSQL, `report` from that store, `cluster down --local`.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cluster.postgres import find_pg_bin
from orchestrator import conventions as cv

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_pg_bin() is None, reason="Debian's postgresql package is not installed"),
]
RESNETCTL = str(Path(sys.executable).with_name("resnetctl"))

def resnetctl(env: dict[str, str], cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([RESNETCTL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, digits_root, grid_file) -> Path:
    folder = tmp_path_factory.mktemp("e2e")
    grid_file(folder / "grid.yaml", name="e2e-remote", data=digits_root, shortcuts=("plain", "A"),
              train={"epochs": 1, "max_train_batches": 3})
    return folder


@pytest.fixture(scope="module")
def cluster(workdir):
    from cluster import local

    state = workdir / "state"
    env = dict(os.environ, RESNETCTL_LOCAL_CLUSTER=str(state), COLUMNS="200")
    env.pop("RAY_ADDRESS", None)
    started = time.monotonic()
    up = resnetctl(env, workdir, "cluster", "up", "--local", "--workers", "2", "--backend", "postgres")
    recorded = local.find(state)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        print(f"cluster up: {time.monotonic() - started:.0f} s")
        env["MLFLOW_TRACKING_URI"] = recorded.tracking_uri
        yield recorded, env
    finally:
        if recorded is not None:
            down = resnetctl(env, workdir, "cluster", "down", "--local", timeout=120)
            assert down.returncode == 0, down.stderr[-2000:]
            for proc in [recorded.head, *recorded.workers, *([recorded.mlflow] if recorded.mlflow else [])]:
                assert not proc.alive(), f"pid {proc.pid} survived `cluster down`"
            assert not (state / local.STATE_FILE).exists()


def _listen_ips(pid: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    ips = set()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            ips |= {c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    return ips


def test_cluster_status_shows_three_nodes_and_loopback_services(cluster, workdir):
    recorded, env = cluster
    status = resnetctl(env, workdir, "cluster", "status", "--local")
    assert status.returncode == 0, status.stderr
    assert "nodes alive    3 of 3" in status.stdout
    assert "DOWN" not in status.stdout
    assert recorded.dashboard_url.startswith("http://127.0.0.1:")
    assert _listen_ips(recorded.mlflow.pid) == {"127.0.0.1"}
    again = resnetctl(env, workdir, "cluster", "up", "--local")
    assert again.returncode != 0 and "already up" in again.stderr


def _finished_runs(backend_uri: str) -> list[tuple[str, str, int]]:
    """(cell_id, run_uuid, end_time) of every run tagged finished, read straight from PostgreSQL."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(backend_uri)
    query = sqlalchemy.text(
        "SELECT c.value, r.run_uuid, r.end_time FROM runs r "
        "JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = :status AND s.value = 'finished' "
        "JOIN tags c ON c.run_uuid = r.run_uuid AND c.key = :cell "
        "JOIN tags g ON g.run_uuid = r.run_uuid AND g.key = :grid AND g.value = 'e2e-remote' "
        "WHERE r.lifecycle_stage = 'active'"
    )
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(
                query, {"status": cv.TAG_STATUS, "cell": cv.TAG_CELL_ID, "grid": cv.TAG_GRID})]
    finally:
        engine.dispose()


def test_submit_status_cancel_resubmit_report(cluster, workdir, wait_for):
    recorded, env = cluster
    address = recorded.dashboard_url

    t0 = time.monotonic()
    submitted = resnetctl(env, workdir, "submit", "grid.yaml", "--address", address, "--detach")
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = submitted.stdout.strip().splitlines()[-1]
    assert job_id.startswith("raysubmit_")

    # status while it runs, then cancel as soon as one cell has finished (cells run one at a time)
    saw_running, next_status, seen = False, 0.0, []

    def a_cell_finished():
        nonlocal saw_running, next_status
        if finished := _finished_runs(recorded.backend_store_uri):
            return finished
        if not saw_running and time.monotonic() >= next_status:
            status = resnetctl(env, workdir, "status", job_id)
            assert status.returncode == 0, status.stderr
            assert status.stdout.startswith(f"job {job_id}: ")
            state = status.stdout.split(": ", 1)[1].split()[0]
            assert state in ("PENDING", "RUNNING"), status.stdout + resnetctl(env, workdir, "logs", job_id).stdout
            seen.append(status.stdout)
            saw_running = state == "RUNNING" and re.search(r"cells: 0 done, [01] running, [12] pending", status.stdout)
            next_status = time.monotonic() + 1
        return None

    wait_for(a_cell_finished, timeout=240, interval=0.3, what="a finished cell")
    print(f"first cell finished: {time.monotonic() - t0:.0f} s")
    cancel = resnetctl(env, workdir, "cancel", job_id)
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.strip().endswith("STOPPED")
    done_before = {cell: (run, end) for cell, run, end in _finished_runs(recorded.backend_store_uri)}
    assert len(done_before) == 1, done_before
    assert saw_running, f"status never showed the running job with its cells: {seen}"
    print("status while running:", seen[-1])

    status = resnetctl(env, workdir, "status", job_id)
    assert f"job {job_id}: STOPPED" in status.stdout
    assert "cells: 1 done, 0 running, 1 pending" in status.stdout
    listing = resnetctl(env, workdir, "status")
    assert job_id in listing.stdout and "e2e-remote" in listing.stdout
    print(f"cancelled: {time.monotonic() - t0:.0f} s")

    # the resubmit, followed to the end: runs only the cells that were left
    again = resnetctl(env, workdir, "submit", "grid.yaml", "--address", address, timeout=400)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    assert "2 cells, 1 already finished, 1 to run" in again.stdout
    print(f"resubmit finished: {time.monotonic() - t0:.0f} s")

    finished = _finished_runs(recorded.backend_store_uri)
    cells = [cell for cell, _, _ in finished]
    assert len(cells) == 2 and len(set(cells)) == 2, finished  # every cell logged exactly once
    for cell, run, end in finished:
        if cell in done_before:
            assert (run, end) == done_before[cell]  # a finished cell is not touched again

    second_job = re.search(r"submitted (raysubmit_\w+)", again.stderr).group(1)
    status = resnetctl(env, workdir, "status", second_job)
    assert f"job {second_job}: SUCCEEDED" in status.stdout
    assert "cells: 2 done, 0 running, 0 pending" in status.stdout
    logs = resnetctl(env, workdir, "logs", second_job)
    assert logs.returncode == 0 and "all 2 cells finished" in logs.stdout

    report = resnetctl(env, workdir, "report", "--grid", "e2e-remote", "--no-figures",
                       "--tracking-uri", recorded.backend_store_uri)
    assert report.returncode == 0, report.stderr[-3000:]
    for arch in ("plain8", "resnet8-A"):
        assert arch in report.stdout, report.stdout
