"""Faults: a worker node of the local multi-node cluster is lost, or preempted, while a cell trains on it.

The local cluster (`cluster.local`: a head with no CPU and two one-CPU worker nodes, MLflow
server beside it) runs a one-cell grid submitted through the Jobs API. Once the cell has a
registered checkpoint, the node its process lives on (its Tune trial: a single-worker cell trains
there) is stopped (its whole process group: raylet, workers), either without a word (a lost node) or
after a drain notice for preemption whose deadline has passed (what a cloud does to a spot node). The
cell must move to the other node, resume from its checkpoint and finish, with each epoch's metrics
exactly once in its one run; a lost node is charged to the cell's failure budget, a preempted one is not.
The two tests share one cluster: the second starts a worker node in place of the one the first stopped.
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


def _live_workers(cluster, count: int = 2) -> list:
    """`count` live worker nodes, starting new ones in place of those an earlier test stopped."""
    while sum(node.alive() for node in cluster.workers) < count:
        cluster.add_worker(cpus=1)
    return [node for node in cluster.workers if node.alive()][:count]


def _fault_mid_cell(cluster, tmp_path, grid_file, digits_root, wait_for, ray_cells, *, name: str, epochs: int, fault,
                    notice=None):
    """Submit a one-cell grid, apply `notice(node)` to the worker node the cell trains on as soon as it is there
    and `fault(node)` once the cell has a checkpoint, check the cell moved to the other node and the submit
    succeeded; returns when the fault began (UNIX ms)."""
    workers = _live_workers(cluster)
    grid_file(tmp_path / "grid.yaml", name=name, data=digits_root, train={"epochs": epochs})
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # the grid's driver joins the cluster as a Ray Job's entrypoint does (`resnetctl run` with RAY_ADDRESS);
    # on this machine it attaches to the head node, so only the cell's Train worker is on a worker node
    env.update(RAY_ADDRESS=cluster.gcs_address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=cluster.token_file,
               MLFLOW_TRACKING_URI=cluster.tracking_uri, COLUMNS="200")

    def node_of_the_cell():
        hosts = [node for node in workers if _train_worker_pids(node.pid, ray_cells.is_cell_process)]
        return hosts[0] if hosts else None

    with open(tmp_path / "submit.log", "w") as log:
        submit = subprocess.Popen([*RESNETCTL, "run", "grid.yaml"], cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        def wait(predicate, what: str):
            return wait_for(predicate, timeout=400, alive=lambda: submit.poll() is None, what=what,
                            detail=lambda: (tmp_path / "submit.log").read_text()[-4000:])

        victim = wait(node_of_the_cell, "the cell training on a worker node")
        if notice is not None:
            notice(victim)
        wait(lambda: ray_cells.checkpointed(tmp_path / "results"), "a checkpoint of the cell")
        assert node_of_the_cell() is victim
        faulted_at_ms = int(time.time() * 1000)
        fault(victim)
        assert not victim.alive()
        survivor = next(node for node in workers if node is not victim)
        moved = None
        while moved is None and submit.poll() is None:
            moved = _train_worker_pids(survivor.pid, ray_cells.is_cell_process) or None
            time.sleep(0.1)
        submit.wait(400)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait(30)
    assert submit.returncode == 0, (tmp_path / "submit.log").read_text()[-4000:]
    assert moved, "the cell never ran on the surviving node"
    return faulted_at_ms


def _resumed_run(cluster, tmp_path, *, name: str, epochs: int, faulted_at_ms: int):
    """The cell's one MLflow run, after checking it finished with each epoch once, resumed after the fault."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cluster.tracking_uri)
    experiment = client.get_experiment_by_name(name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags[cv.TAG_STATUS] == cv.STATUS_FINISHED
    iterations = sorted(client.get_metric_history(run.info.run_id, cv.M_ITERATION), key=lambda m: m.step)
    for key in cv.EPOCH_METRICS:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == list(range(1, epochs + 1)), key
    assert [int(m.value) for m in iterations] == [19 * epoch for epoch in range(1, epochs + 1)]
    before = [m.step for m in iterations if m.timestamp < faulted_at_ms]
    assert before and before[-1] < epochs, before  # the fault came mid-cell, after a checkpoint
    # resumed, not restarted: the new process reported only epochs after the checkpoint (Tune's result log;
    # an epoch reported in the very moment the node went may be missing from it, never twice in it)
    (results,) = (tmp_path / "results").glob(f"tune-{name}/*/result.json")
    reported = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    epochs_reported = [r["epoch"] for r in reported]
    assert epochs_reported == sorted(set(epochs_reported)) and epochs_reported[-1] == epochs, epochs_reported
    after = [r["epoch"] for r in reported if r["worker_started_at"] * 1000 > faulted_at_ms]
    assert reported[0]["worker_started_at"] * 1000 < faulted_at_ms and after and after[0] > 1, epochs_reported
    return run


def _trial_failures(tmp_path, name: str) -> list[int]:
    """Each trial's failure count as Tune saved it (what its FailureConfig.max_failures is held to)."""
    (state,) = (tmp_path / "results").glob(f"tune-{name}/experiment_state-*.json")
    return [json.loads(metadata)["num_failures"] for _, metadata in json.loads(state.read_text())["trial_data"]]


def test_a_stopped_worker_node_moves_the_cell_which_resumes_and_finishes(local_cluster, tmp_path, digits_root, grid_file,
                                                                         wait_for, ray_cells):
    faulted_at_ms = _fault_mid_cell(local_cluster, tmp_path, grid_file, digits_root, wait_for, ray_cells,
                                    name="fault-node", epochs=EPOCHS, fault=lambda node: node.stop(timeout=5))
    run = _resumed_run(local_cluster, tmp_path, name="fault-node", epochs=EPOCHS, faulted_at_ms=faulted_at_ms)
    # a node lost without notice is a failure: charged to the cell's budget, and said so in its run
    assert _trial_failures(tmp_path, "fault-node") == [1]
    assert run.data.tags.get(cv.TAG_FAILURES) == "1" and cv.TAG_PREEMPTIONS not in run.data.tags


def test_a_preempted_worker_node_moves_the_cell_without_spending_its_failure_budget(
        local_cluster, tmp_path, digits_root, grid_file, wait_for, ray_cells):
    # the notice comes while the cell trains (its first epoch), the node goes after its checkpoint
    faulted_at_ms = _fault_mid_cell(local_cluster, tmp_path, grid_file, digits_root, wait_for, ray_cells,
                                    name="fault-preempt", epochs=EPOCHS,
                                    notice=lambda node: local_cluster.drain(node, notice_s=1),
                                    fault=local_cluster.preempt)
    run = _resumed_run(local_cluster, tmp_path, name="fault-preempt", epochs=EPOCHS, faulted_at_ms=faulted_at_ms)
    assert _trial_failures(tmp_path, "fault-preempt") == [0]  # Ray did not count it: the budget is whole
    assert run.data.tags.get(cv.TAG_PREEMPTIONS) == "1" and cv.TAG_FAILURES not in run.data.tags
