"""Preemptible nodes: which restarts of a cell a preempted node caused, recorded in the cell's MLflow run.

Ray already keeps preemptions off a cell's failure budget; resnetctl only configures that and says so.
A cloud (or `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION --deadline-remaining-seconds N`) tells
the GCS that a node will be taken at a deadline; when the node dies after it, Ray records its death as
AUTOSCALER_DRAIN_PREEMPTED and every actor that died with it raises `RayActorError` with `preempted`
set. Tune's trial (`Trial.handle_error`) then restarts the trial from its checkpoint without adding to
`num_failures`, the count `FailureConfig.max_failures` is held to (unless
RAY_TRAIN_COUNT_PREEMPTION_AS_FAILURE=1); Ray Train's controller charges a worker lost that way to
`FailureConfig.max_preemption_failures` instead of `max_failures`.

What Ray does not do is tell anyone afterwards: a restart is a restart in Tune's results. `RestartLog`
watches Tune's restarts from the driver and classifies each by Ray's own bookkeeping (did this restart
add to the trial's `num_failures`?), then adds it to the cell's run as a tag, so the report and a user
reading the run see that a cell was preempted, and how often it spent its failure budget.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Literal

from orchestrator import conventions as cv
from orchestrator.cells import cell_from_dict

try:  # Ray is imported lazily everywhere else; a Tune callback needs Tune's base class
    from ray.tune import Callback
except ImportError:  # pragma: no cover - ray is a hard dependency
    Callback = object  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

RestartCause = Literal["preemption", "failure"]
RESTART_TAGS: dict[RestartCause, str] = {"preemption": cv.TAG_PREEMPTIONS, "failure": cv.TAG_FAILURES}


def restart_cause(failures_before: int, failures_after: int) -> RestartCause:
    """A restart that Ray did not charge to the trial's failure count was a preemption (see the module)."""
    return "failure" if failures_after > failures_before else "preemption"


class RestartLog(Callback):
    """Counts each cell's restarts by cause and adds them to its MLflow run's tags (when it has one)."""

    def __init__(self, tracking_uri: str | None = None, run_ids: dict[str, str] | None = None):
        self.tracking_uri = tracking_uri
        self.run_ids = dict(run_ids or {})
        self.restarts: dict[str, Counter] = defaultdict(Counter)  # cell id -> {cause: restarts}
        self._failures: dict[str, int] = {}  # trial id -> the num_failures seen last

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks into tuner.pkl: without the store URI (a PostgreSQL one carries its
        password). An unpickled RestartLog counts restarts but tags no run."""
        return {**self.__dict__, "tracking_uri": None}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._failures.setdefault(trial.trial_id, trial.run_metadata.num_failures)

    def on_trial_recover(self, iteration, trials, trial, **info):
        failures = trial.run_metadata.num_failures
        cause = restart_cause(self._failures.get(trial.trial_id, 0), failures)
        self._failures[trial.trial_id] = failures
        cell_id = cell_from_dict(trial.config["cell"]).cell_id
        self.restarts[cell_id][cause] += 1
        run_id = self.run_ids.get(cell_id)
        if self.tracking_uri and run_id:
            try:
                _add_to_tag(self.tracking_uri, run_id, RESTART_TAGS[cause])
            except Exception:  # a tag is worth less than the grid: an error in a Tune callback ends the experiment
                log.warning("could not record a %s restart in run %s", cause, run_id, exc_info=True)


def _add_to_tag(uri: str, run_id: str, tag: str) -> None:
    """One more restart in the run's count (a count kept across submits: a resumed cell's run is the same)."""
    from orchestrator.tracking import _client

    client = _client(uri)
    count = int(client.get_run(run_id).data.tags.get(tag, 0))
    client.set_tag(run_id, tag, str(count + 1))
