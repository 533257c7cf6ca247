"""MLflow bookkeeping: store resolution, one run per cell, epochs logged exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import conventions as cv
from orchestrator import tracking
from orchestrator.cells import Cell, TrainConfig


def _cell(lr: float = 0.1, depth: int = 8) -> Cell:
    return Cell(grid="g", arch=f"resnet{depth}-A", depth=depth, shortcut="A", variant="cifar", dataset="digits",
                dataset_path="/data/digits", seed=0, train=TrainConfig(batch_size=64, lr=lr, epochs=2),
                axes=(("depth", depth), ("lr", lr)))


@pytest.fixture()
def store(tmp_path):
    uri = tracking.resolve_tracking_uri(None, cwd=tmp_path)
    return uri, tracking.ensure_experiment(uri, "g")


def test_uri_precedence_and_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None, cwd=tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert tracking.resolve_tracking_uri(None, cwd=tmp_path) == f"sqlite:///{tmp_path.resolve()}/env.db"
    assert tracking.resolve_tracking_uri("sqlite:///sub/grid.db", cwd=tmp_path) == \
        f"sqlite:///{tmp_path.resolve()}/sub/grid.db"
    assert tracking.resolve_tracking_uri("postgresql://u@h/db", cwd=tmp_path) == "postgresql://u@h/db"
    assert tracking.resolve_tracking_uri("sqlite:////abs/x.db", cwd=tmp_path) == "sqlite:////abs/x.db"


def test_experiment_is_created_once_with_artifacts_beside_the_store(store, tmp_path):
    uri, experiment_id = store
    assert tracking.ensure_experiment(uri, "g") == experiment_id
    from mlflow.tracking import MlflowClient

    location = MlflowClient(uri).get_experiment(experiment_id).artifact_location
    assert Path(location.removeprefix("file://")).is_relative_to(tmp_path.resolve())


def test_a_cell_keeps_one_run_across_reopens_and_restart_replaces_it(store):
    uri, experiment_id = store
    cell = _cell()
    run_id = tracking.open_cell_run(uri, experiment_id, cell)
    tracking.mark_run_failed(uri, run_id)
    assert tracking.open_cell_run(uri, experiment_id, cell) == run_id  # resumed: same run, RUNNING again
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "resnet8-A-digits-s0"
    assert run.data.tags[cv.TAG_CELL_ID] == cell.cell_id
    assert run.data.tags[cv.axis_tag("depth")] == "8" and run.data.tags[cv.axis_tag("lr")] == "0.1"
    assert run.data.params[cv.PARAM_DEPTH] == "8" and run.data.params["train.lr"] == "0.1"

    other = tracking.open_cell_run(uri, experiment_id, _cell(lr=0.05))
    assert other != run_id

    fresh = tracking.open_cell_run(uri, experiment_id, cell, restart=True)
    assert fresh != run_id
    live = client.search_runs([experiment_id], filter_string=f"tags.`{cv.TAG_CELL_ID}` = '{cell.cell_id}'")
    assert [r.info.run_id for r in live] == [fresh]


def test_epochs_are_logged_exactly_once_across_a_resume(store):
    uri, experiment_id = store
    run_id = tracking.open_cell_run(uri, experiment_id, _cell())
    logger = tracking.CellRunLogger(uri, run_id)
    assert logger.log_epoch(1, {cv.M_TRAIN_LOSS: 2.0, cv.M_ITERATION: 10})
    assert not logger.log_epoch(1, {cv.M_TRAIN_LOSS: 9.0, cv.M_ITERATION: 10})

    again = tracking.CellRunLogger(uri, run_id)  # a resumed worker
    assert again.logged_epochs() == {1}
    assert not again.log_epoch(1, {cv.M_TRAIN_LOSS: 9.0, cv.M_ITERATION: 10})
    assert again.log_epoch(2, {cv.M_TRAIN_LOSS: 1.0, cv.M_ITERATION: 20})
    from mlflow.tracking import MlflowClient

    history = MlflowClient(uri).get_metric_history(run_id, cv.M_TRAIN_LOSS)
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.0)]


def test_finished_cells_are_found_and_dangling_runs_closed(store):
    uri, experiment_id = store
    done, dangling = _cell(depth=8), _cell(depth=14)
    done_run = tracking.open_cell_run(uri, experiment_id, done)
    tracking.CellRunLogger(uri, done_run).mark_finished()
    dangling_run = tracking.open_cell_run(uri, experiment_id, dangling)
    assert tracking.finished_cell_ids(uri, experiment_id) == {done.cell_id}
    assert tracking.is_finished(tracking.find_cell_run(uri, experiment_id, done.cell_id))
    assert tracking.close_dangling_runs(uri, experiment_id, [done_run, dangling_run]) == [dangling_run]
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).get_run(dangling_run).info.status == "FAILED"
    assert MlflowClient(uri).get_run(done_run).info.status == "FINISHED"


def test_a_rerun_registers_the_cell_model_once(store):
    """A cell that died between registering its model and its `finished` tag must not get a 2nd version."""
    import torch
    from mlflow.tracking import MlflowClient

    uri, experiment_id = store
    run_id = tracking.open_cell_run(uri, experiment_id, _cell())
    first = tracking.CellRunLogger(uri, run_id).log_model(torch.nn.Linear(2, 2), dataset="digits", arch="resnet8-A")
    second = tracking.CellRunLogger(uri, run_id).log_model(torch.nn.Linear(2, 2), dataset="digits", arch="resnet8-A")
    versions = MlflowClient(uri).search_model_versions(f"name = '{cv.registered_model_name('digits', 'resnet8-A')}'")
    assert [v.run_id for v in versions] == [run_id]
    assert second == f"models:/{versions[0].name}/{versions[0].version}"
    assert first  # the first call's own URI (the logged model)


def test_rank0_logger_samples_system_metrics_until_stopped(store, wait_for):
    uri, experiment_id = store
    run_id = tracking.open_cell_run(uri, experiment_id, _cell())
    logger = tracking.CellRunLogger(uri, run_id)
    logger.start_system_metrics(interval_s=0.2)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        wait_for(lambda: any(k.startswith("system/") for k in client.get_run(run_id).data.metrics), timeout=30,
                 what="MLflow's system metrics in the run")
    finally:
        logger.stop_system_metrics()
    keys = set(client.get_run(run_id).data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys
