"""Several small cells on one GPU (issue 15, item 3): `resources.gpus_per_worker` takes fractions.

Ray's fractional GPUs do the packing; on this CPU-only machine a local Ray declares one logical GPU,
and two cells asking for half of it each must run at the same time (asking for a whole one, they
would take turns) and both finish. A cell given a GPU share trains on the CPU where CUDA is absent.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.cells import Cell, Resources, TrainConfig

pytestmark = pytest.mark.slow


def _cell(root, seed: int, resources: Resources) -> Cell:
    cfg = TrainConfig(batch_size=64, lr=0.1, epochs=1, loader="torch", num_workers=0, eval_protocol="full",
                      max_train_batches=2)
    return Cell(grid="packing", arch="resnet8-A", depth=8, shortcut="A", variant="cifar", dataset="digits",
                dataset_path=str(root), seed=seed, train=cfg, resources=resources)


def test_a_fraction_of_a_gpu_is_what_the_trial_reserves():
    from orchestrator.tune_runner import _trial_resources

    res = Resources(use_gpu=True, gpus_per_worker=0.25, cpus_per_worker=0.5)
    cell = Cell(grid="g", arch="resnet8-A", depth=8, shortcut="A", variant="cifar", dataset="digits",
                dataset_path="/nowhere", seed=0, train=TrainConfig(batch_size=64, lr=0.1, epochs=1), resources=res)
    assert _trial_resources({"cell": cell.to_dict()}).bundles == [{"CPU": 0.5, "GPU": 0.25}]
    assert Resources(gpus_per_worker=0.25).gpus == 0  # without use_gpu, no GPU at all


@pytest.mark.parametrize(("fields", "message"), [
    ({"gpus_per_worker": 1.5}, "whole GPUs"),
    ({"gpus_per_worker": 0.5, "workers_per_cell": 2}, "need a whole GPU each"),
    ({"gpus_per_worker": 0.00001}, "greater than or equal"),
])
def test_gpu_shares_ray_cannot_give_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        Resources(use_gpu=True, **fields)


def test_two_cells_with_half_a_gpu_each_share_one_gpu_and_finish(digits_root, tmp_path):
    import ray
    from ray import tune

    from orchestrator.tune_runner import apply_fast_env, run_cells

    class Spans(tune.Callback):
        def __init__(self):
            self.spans: dict[str, tuple[float, float]] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.spans[trial.trial_id] = (result["trial_started_at"], result["last_step_at"])

    res = Resources(use_gpu=True, gpus_per_worker=0.5, cpus_per_worker=0.5, max_concurrent_cells=2)
    cells = [_cell(digits_root, seed, res) for seed in (0, 1)]
    apply_fast_env()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)  # one logical GPU
    try:
        spans = Spans()
        outcomes = run_cells(cells, grid_name="packing", tracking_uri=None, experiment_id=None,
                             storage_path=tmp_path / "results", max_concurrent_cells=2, callbacks=[spans])
    finally:
        ray.shutdown()
    assert [(o.status, o.error) for o in outcomes] == [("finished", None)] * 2
    (a_start, a_end), (b_start, b_end) = spans.spans.values()
    assert a_start < b_end and b_start < a_end  # both held their half of the GPU at the same time
