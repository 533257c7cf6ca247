"""Faults injected into a running cell (real Ray Tune + MLflow, tiny single-worker digits cells).

- The process the cell trains in (its Tune trial: single-worker cells train there, without Ray
  Train) is SIGKILLed mid-epoch after its first checkpoint: Tune restarts it from that checkpoint
  (not from epoch 0) and the cell's one MLflow run ends with each epoch's metrics exactly once.
- The MLflow tracking server is stopped during training and started again on the same port:
  the worker's writes are retried, every epoch lands exactly once, and the cell finishes.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from orchestrator import conventions as cv
from orchestrator.cells import Cell, Resources, TrainConfig

pytestmark = pytest.mark.slow

EPOCHS = 3


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from orchestrator.tune_runner import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def make_cell(root: str, grid: str, *, batches: int) -> Cell:
    cfg = TrainConfig(batch_size=64, lr=0.1, epochs=EPOCHS, loader="torch", num_workers=0, eval_protocol="full",
                      max_train_batches=batches)
    return Cell(grid=grid, arch="resnet8-A", depth=8, shortcut="A", variant="cifar", dataset="digits",
                dataset_path=root, seed=0, train=cfg, resources=Resources(workers_per_cell=1),
                axes=(("depth", 8),))


def train_workers(is_cell_process) -> list[psutil.Process]:
    """This test process's processes that cells train in (never another session's: they descend from us)."""
    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if is_cell_process(" ".join(proc.cmdline())):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def epoch_recorder():
    """A Tune callback that records the `epoch` of every result the cell reports, in order."""
    from ray import tune

    class EpochRecorder(tune.Callback):
        def __init__(self):
            self.epochs: list[int] = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "epoch" in result:
                self.epochs.append(int(result["epoch"]))

    return EpochRecorder()


class Injector(threading.Thread):
    """Runs a fault function beside the cell; keeps its error to re-raise in the test."""

    def __init__(self, fault):
        super().__init__(daemon=True)
        self.fault, self.error, self.stop = fault, None, threading.Event()

    def run(self):
        try:
            self.fault(self.stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def finish(self):
        self.stop.set()
        self.join(120)
        if self.error is not None:
            raise self.error


def epoch_history(client, run_id: str) -> dict[str, list[tuple[int, int]]]:
    """(step, timestamp) of every value of every per-epoch metric of the run."""
    return {key: sorted((m.step, m.timestamp) for m in client.get_metric_history(run_id, key))
            for key in cv.EPOCH_METRICS}


def assert_each_epoch_once(history: dict[str, list[tuple[int, int]]]) -> None:
    for key, values in history.items():
        assert [step for step, _ in values] == list(range(1, EPOCHS + 1)), (key, values)


def test_sigkill_of_the_train_worker_resumes_from_its_last_checkpoint(ray_session, digits_root, tmp_path, wait_for,
                                                                      ray_cells):
    from mlflow.tracking import MlflowClient

    from orchestrator import tracking
    from orchestrator.tune_runner import run_cells
    from training.checkpoint import load_checkpoint

    cell = make_cell(str(digits_root), "fault-worker", batches=19)  # the whole train split: an epoch takes seconds
    uri = tracking.resolve_tracking_uri(None, cwd=tmp_path)
    experiment_id = tracking.ensure_experiment(uri, "fault-worker")
    workers = lambda: train_workers(ray_cells.is_cell_process)  # noqa: E731
    killed: dict = {}

    def kill_worker_after_first_checkpoint(stop):
        def running() -> bool:  # the cell has not finished yet (once it has, the fault comes too late)
            return not stop.is_set()

        wait_for(lambda: ray_cells.checkpointed(tmp_path / "results"), timeout=300, interval=0.05, alive=running,
                 what="a registered checkpoint")
        (victim,) = wait_for(workers, timeout=30, interval=0.05, alive=running, what="the cell's process")
        killed.update(pid=victim.pid, at_ms=int(time.time() * 1000), title=" ".join(victim.cmdline()))
        os.kill(victim.pid, signal.SIGKILL)
        # the cell must come back in a new worker process
        killed["replacement"] = wait_for(lambda: [p.pid for p in workers() if p.pid != victim.pid],
                                         timeout=120, interval=0.05, alive=running, what="a replacement worker")

    recorder = epoch_recorder()
    injector = Injector(kill_worker_after_first_checkpoint)
    injector.start()
    outcomes = run_cells([cell], grid_name="fault-worker", tracking_uri=uri, experiment_id=experiment_id,
                         storage_path=tmp_path / "results", callbacks=[recorder])
    injector.finish()

    assert [(o.status, o.error) for o in outcomes] == [("finished", None)]
    assert ray_cells.is_cell_process(killed["title"]) and not psutil.pid_exists(killed["pid"])
    assert killed["replacement"]

    client = MlflowClient(uri)
    (run,) = client.search_runs([experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags[cv.TAG_STATUS] == cv.STATUS_FINISHED
    history = epoch_history(client, run.info.run_id)
    assert_each_epoch_once(history)
    logged_before_kill = [step for step, ts in history[cv.M_ITERATION] if ts < killed["at_ms"]]
    # killed mid-cell, after a checkpoint: some epochs were done (and checkpointed), the last was not
    assert logged_before_kill and logged_before_kill[-1] < EPOCHS, (logged_before_kill, history[cv.M_ITERATION])
    # resumed from the last checkpoint: each epoch ran once; a restart from scratch reports epoch 1 twice
    assert recorder.epochs == list(range(1, EPOCHS + 1)), recorder.epochs
    assert [int(m.value) for m in sorted(client.get_metric_history(run.info.run_id, cv.M_ITERATION),
                                          key=lambda m: m.step)] == [19 * e for e in range(1, EPOCHS + 1)]
    states = ray_cells.checkpointed(tmp_path / "results").glob("checkpoint_*/state.pt")
    assert load_checkpoint(max(states, key=lambda p: p.stat().st_mtime_ns).parent)["epoch"] == EPOCHS


def test_tracking_server_outage_during_training_loses_no_epoch(ray_session, digits_root, tmp_path, monkeypatch,
                                                              wait_for):
    from mlflow.tracking import MlflowClient

    from cluster.mlflow_server import start_mlflow_server
    from cluster.net import free_port
    from cluster.processes import is_alive, stop_process_group
    from orchestrator import tracking
    from orchestrator.tune_runner import run_cells

    # the server's background job runners (GenAI jobs) are not used here and triple its start-up time
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    store = f"sqlite:///{tmp_path / 'server.db'}"
    port = free_port()
    servers = [start_mlflow_server(store, state_dir=tmp_path / "mlflow", port=port)]
    uri = servers[0].url
    cell = make_cell(str(digits_root), "fault-tracking", batches=10)
    outage: dict = {}
    try:
        experiment_id = tracking.ensure_experiment(uri, "fault-tracking")

        def epochs_logged() -> int:
            runs = MlflowClient(uri).search_runs([experiment_id])
            return len(MlflowClient(uri).get_metric_history(runs[0].info.run_id, cv.M_ITERATION)) if runs else 0

        def take_the_server_down(stop):
            wait_for(lambda: epochs_logged() >= 1, timeout=300, interval=0.05, alive=lambda: not stop.is_set(),
                     what="epoch 1 on the server")
            outage["down_ms"] = int(time.time() * 1000)
            stop_process_group(servers[0].pid)
            time.sleep(6)  # the worker finishes epoch 2 (and tries to log it) while nobody answers
            servers.append(start_mlflow_server(store, state_dir=tmp_path / "mlflow", port=port))
            outage["up_ms"] = int(time.time() * 1000)

        injector = Injector(take_the_server_down)
        injector.start()
        outcomes = run_cells([cell], grid_name="fault-tracking", tracking_uri=uri, experiment_id=experiment_id,
                             storage_path=tmp_path / "results")
        injector.finish()

        assert [(o.status, o.error) for o in outcomes] == [("finished", None)]
        assert not is_alive(servers[0].pid) and len(servers) == 2
        client = MlflowClient(uri)
        (run,) = client.search_runs([experiment_id])
        assert run.info.status == "FINISHED" and run.data.tags[cv.TAG_STATUS] == cv.STATUS_FINISHED
        history = epoch_history(client, run.info.run_id)
        assert_each_epoch_once(history)
        # the outage really overlapped training: some epoch ended while the server was down
        # (its metrics carry that time) and still landed, once
        during = [step for step, ts in history[cv.M_ITERATION] if outage["down_ms"] <= ts <= outage["up_ms"]]
        assert during, (outage, history[cv.M_ITERATION])
        versions = client.search_model_versions(f"name = '{cv.registered_model_name('digits', 'resnet8-A')}'")
        assert [v.run_id for v in versions] == [run.info.run_id]
    finally:
        for server in servers:
            stop_process_group(server.pid)
