"""Fault: a worker node of the local multi-node cluster is stopped while a cell trains on it.

The local cluster (`cluster.local`: a head with no CPU and two one-CPU worker nodes, MLflow
server beside it) runs a one-cell grid submitted through the Jobs API. Once the cell has a
registered checkpoint, the node its process lives on (its Tune trial: a single-worker cell trains
there) is stopped (its whole process group: raylet, workers). The cell must move to the other node, resume from its checkpoint and
finish, with each epoch's metrics exactly once in its one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from orchestrator import conventions as cv

pytestmark = pytest.mark.slow

EPOCHS = 3
RESNETCTL = [sys.executable, "-c", "from orchestrator.cli import main; main()"]



def _train_worker_pids(node_pid: int, is_cell_process) -> list[int]:
    """The processes a cell trains in (its Tune trial, or Ray Train workers) under one node's `ray start` tree."""
    try:
        tree = psutil.Process(node_pid).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for proc in tree:
        try:
            if is_cell_process(" ".join(proc.cmdline())):
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    from cluster import local
    state = tmp_path_factory.mktemp("fault-node-cluster")
    old = os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION")
    # the server's background job runners (GenAI jobs) are not used here and triple its start-up time
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    try:
        cluster = local.up(state, workers=2, cpus_per_worker=1, backend="sqlite")
    finally:
        if old is None:
            os.environ.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)
        else:
            os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = old
    try:
        yield cluster
    finally:
        cluster.down()


def test_a_stopped_worker_node_moves_the_cell_which_resumes_and_finishes(local_cluster, tmp_path, digits_root, grid_file,
                                                                         wait_for, ray_cells):
    from mlflow.tracking import MlflowClient

    cluster = local_cluster
    grid_file(tmp_path / "grid.yaml", name="fault-node", data=digits_root, train={"epochs": EPOCHS})
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # the grid's driver joins the cluster as a Ray Job's entrypoint does (`resnetctl run` with RAY_ADDRESS);
    # on this machine it attaches to the head node, so only the cell's Train worker is on a worker node
    env.update(RAY_ADDRESS=cluster.gcs_address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=cluster.token_file,
               MLFLOW_TRACKING_URI=cluster.tracking_uri, COLUMNS="200")

    def node_of_the_checkpointed_cell():
        if ray_cells.checkpointed(tmp_path / "results"):
            hosts = [node for node in cluster.workers if _train_worker_pids(node.pid, ray_cells.is_cell_process)]
            return hosts[0] if hosts else None
        return None

    with open(tmp_path / "submit.log", "w") as log:
        submit = subprocess.Popen([*RESNETCTL, "run", "grid.yaml"], cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        victim = wait_for(node_of_the_checkpointed_cell, timeout=400, alive=lambda: submit.poll() is None,
                          what="a checkpoint of the cell on a worker node",
                          detail=lambda: (tmp_path / "submit.log").read_text()[-4000:])
        stopped_at_ms = int(time.time() * 1000)
        victim.stop(timeout=5)
        assert not victim.alive()
        survivor = next(node for node in cluster.workers if node is not victim)
        moved = None
        while moved is None and submit.poll() is None:
            moved = _train_worker_pids(survivor.pid, ray_cells.is_cell_process) or None
            time.sleep(0.1)
        submit.wait(400)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait(30)
    log_text = (tmp_path / "submit.log").read_text()
    assert submit.returncode == 0, log_text[-4000:]
    assert moved, "the cell never ran on the surviving node"

    client = MlflowClient(cluster.tracking_uri)
    experiment = client.get_experiment_by_name("fault-node")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags[cv.TAG_STATUS] == cv.STATUS_FINISHED
    iterations = sorted(client.get_metric_history(run.info.run_id, cv.M_ITERATION), key=lambda m: m.step)
    for key in cv.EPOCH_METRICS:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2, 3], key
    assert [int(m.value) for m in iterations] == [19, 38, 57]
    before = [m.step for m in iterations if m.timestamp < stopped_at_ms]
    assert before and before[-1] < EPOCHS, before  # stopped mid-cell, after a checkpoint
    # resumed, not restarted: the new worker reported only epochs after the checkpoint (Tune's result log)
    (results,) = (tmp_path / "results").glob("tune-fault-node/*/result.json")
    reported = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert [r["epoch"] for r in reported] == list(range(1, EPOCHS + 1)), [r["epoch"] for r in reported]
    assert reported[0]["worker_started_at"] * 1000 < stopped_at_ms < reported[-1]["worker_started_at"] * 1000
