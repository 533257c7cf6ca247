"""Which restarts of a cell a preemption caused: Ray's own count of the trial's failures decides, no Ray needed.

The cluster test (`test_faults_node.py`) drains and stops a real node; this one feeds `RestartLog` the
trial events Tune would send, with the failure counts Tune's `Trial.handle_error` would leave.
"""

from __future__ import annotations

from types import SimpleNamespace

from orchestrator.cells import Cell, TrainConfig
from orchestrator.preemption import RestartLog, restart_cause


def _trial(cell: Cell, trial_id: str = "t1"):
    return SimpleNamespace(trial_id=trial_id, config={"cell": cell.to_dict()},
                           run_metadata=SimpleNamespace(num_failures=0))


def _cell(seed: int = 0) -> Cell:
    return Cell(grid="g", arch="resnet8-A", depth=8, shortcut="A", variant="cifar", dataset="digits",
                dataset_path="/data", seed=seed, train=TrainConfig(batch_size=64, lr=0.1, epochs=2))


def test_a_restart_that_ray_did_not_charge_to_the_failure_count_was_a_preemption():
    assert restart_cause(0, 0) == "preemption"
    assert restart_cause(0, 1) == "failure"
    assert restart_cause(2, 2) == "preemption"


def test_restarts_are_counted_per_cell_by_cause():
    log = RestartLog()  # no tracking: counts only
    first, second = _cell(0), _cell(1)
    a, b = _trial(first, "a"), _trial(second, "b")
    for trial in (a, b):
        log.on_trial_start(0, [a, b], trial)
    log.on_trial_recover(1, [a, b], a)  # Tune left num_failures alone: its node was preempted
    a.run_metadata.num_failures = 1  # a real failure: Tune charged it
    log.on_trial_recover(2, [a, b], a)
    log.on_trial_start(3, [a, b], a)  # the restarted trial starts again: no new baseline
    log.on_trial_recover(4, [a, b], a)  # preempted again after the failure
    b.run_metadata.num_failures = 1
    log.on_trial_recover(5, [a, b], b)
    assert log.restarts[first.cell_id] == {"preemption": 2, "failure": 1}
    assert log.restarts[second.cell_id] == {"failure": 1}
