"""Several small cells on one GPU (issue 15, item 3): `resources.gpus_per_worker` takes fractions; and the
grid budget applied while cells run (item 6).

Ray's fractional GPUs do the packing; on this CPU-only machine a local Ray declares one logical GPU,
and two cells asking for half of it each must run at the same time (asking for a whole one, they
would take turns) and both finish. A cell given a GPU share trains on the CPU where CUDA is absent.
The same Ray runs a budgeted grid whose first cell holds its GPU longer than estimated: the rest stay
pending, and a larger budget runs them.
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


@pytest.fixture(scope="module")
def one_logical_gpu():
    """A local Ray with 2 CPUs and one logical GPU, for this module's tests."""
    import ray

    from orchestrator.tune_runner import apply_fast_env

    apply_fast_env()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_two_cells_with_half_a_gpu_each_share_one_gpu_and_finish(digits_root, tmp_path, one_logical_gpu):
    from ray import tune

    from orchestrator.tune_runner import run_cells

    class Spans(tune.Callback):
        def __init__(self):
            self.spans: dict[str, tuple[float, float]] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.spans[trial.trial_id] = (result["trial_started_at"], result["last_step_at"])

    res = Resources(use_gpu=True, gpus_per_worker=0.5, cpus_per_worker=0.5, max_concurrent_cells=2)
    cells = [_cell(digits_root, seed, res) for seed in (0, 1)]
    spans = Spans()
    outcomes = run_cells(cells, grid_name="packing", tracking_uri=None, experiment_id=None,
                         storage_path=tmp_path / "results", max_concurrent_cells=2, callbacks=[spans])
    assert [(o.status, o.error) for o in outcomes] == [("finished", None)] * 2
    (a_start, a_end), (b_start, b_end) = spans.spans.values()
    assert a_start < b_end and b_start < a_end  # both held their half of the GPU at the same time


def test_cells_stop_starting_once_what_the_grid_spent_leaves_no_room_and_a_larger_budget_runs_them(
        digits_root, tmp_path, one_logical_gpu):
    from orchestrator.estimate import BudgetPlan
    from orchestrator.tune_runner import run_cells

    cells = [_cell(digits_root, seed, Resources(use_gpu=True, cpus_per_worker=1)) for seed in (0, 1, 2)]
    estimate_h = 0.1 / 3600  # each cell promises a tenth of a GPU-second: the budget covers all their estimates
    plan = BudgetPlan(limit=0.5 / 3600, spent=0.0, estimates={c.cell_id: estimate_h for c in cells},
                      gpus={c.cell_id: 1.0 for c in cells})
    outcomes = run_cells(cells, grid_name="budget", tracking_uri=None, experiment_id=None,
                         storage_path=tmp_path / "results", budget=plan)
    # the first cell held its GPU for seconds, not a tenth of one: nothing else starts
    assert [o.status for o in outcomes] == ["finished", "held", "held"]
    larger = BudgetPlan(limit=1.0, spent=plan.limit, estimates=plan.estimates, gpus=plan.gpus)
    rest = run_cells(cells[1:2], grid_name="budget", tracking_uri=None, experiment_id=None,
                     storage_path=tmp_path / "results", budget=larger)
    assert [(o.status, o.error) for o in rest] == [("finished", None)]
