"""One real cell through Ray Tune + Ray Train + MLflow SQLite: metrics, registered model, checkpoint."""

from __future__ import annotations

import pytest

from orchestrator import conventions as cv
from orchestrator.cells import Cell, Resources, TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from orchestrator.tune_runner import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def _cell(root: str, *, workers: int = 1, loader: str = "torch") -> Cell:
    cfg = TrainConfig(batch_size=64, lr=0.1, epochs=2, loader=loader, num_workers=0, eval_protocol="full",
                      max_train_batches=4)
    return Cell(grid="ray-test", arch="resnet8-A", depth=8, shortcut="A", variant="cifar", dataset="digits",
                dataset_path=root, seed=0, train=cfg, resources=Resources(workers_per_cell=workers),
                axes=(("depth", 8),))


def test_one_cell_trains_logs_registers_and_checkpoints(ray_session, tmp_path_factory):
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    import pipelines
    from orchestrator import tracking
    from orchestrator.tune_runner import run_cells, train_run_name

    work = tmp_path_factory.mktemp("one-cell")
    root = str(work / "digits")
    pipelines.prepare_dataset("digits", root, num_workers=1)
    uri = tracking.resolve_tracking_uri(None, cwd=work)
    experiment_id = tracking.ensure_experiment(uri, "ray-test")
    cell = _cell(root)

    outcomes = run_cells([cell], grid_name="ray-test", tracking_uri=uri, experiment_id=experiment_id,
                         storage_path=work / "results")
    assert [(o.status, o.error) for o in outcomes] == [("finished", None)]
    assert outcomes[0].metrics["epoch"] == 2

    client = MlflowClient(uri)
    runs = client.search_runs([experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "resnet8-A-digits-s0"
    assert run.data.tags[cv.TAG_STATUS] == "finished" and run.data.tags[cv.TAG_CELL_ID] == cell.cell_id
    for key in cv.EPOCH_METRICS:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2], key
    assert run.data.metrics[cv.M_WORKER_HOURS] > 0
    assert len(client.get_metric_history(run.info.run_id, cv.M_LAYER_RESPONSE)) == 7

    versions = client.search_model_versions(f"name = '{cv.registered_model_name('digits', 'resnet8-A')}'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pytorch.load_model(f"models:/digits-resnet8-A/{versions[0].version}")
    finally:
        mlflow.set_tracking_uri(None)
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)

    checkpoints = sorted((work / "results" / train_run_name(cell)).glob("checkpoint_*/state.pt"))
    assert checkpoints, "every epoch leaves a checkpoint"
    state = torch.load(checkpoints[-1], weights_only=False)
    assert state["epoch"] == 2 and state["iteration"] == 8 and state["cell_id"] == cell.cell_id
