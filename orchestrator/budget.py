"""A grid's budget while it runs: Tune starts a cell only while the budget still covers it.

`submit` refuses a grid whose estimate exceeds its `budget:` (without --yes) before anything runs
(`estimate.check_budget`), but estimates are estimates: a cell may hold its GPU for longer than its
multiply-adds promised. So the cells are handed to Tune by `BudgetSearcher`, one at a time, in the
grid's order, and only while

    spent (finished cells: their GPUs x the wall time of their trial, and what earlier submits spent)
  + running cells (the larger of their estimate and what they have held so far)
  + the next cell's estimate

stays within the budget. When the next cell does not fit and nothing runs, the rest stay pending
(their MLflow runs unfinished, their checkpoints kept): a resubmit with a larger budget runs them,
and only them. While a cell runs, the next one waits for it rather than being given up: a cell that
finishes under its estimate may leave room.

Tune's own Searcher API does the starting (`suggest` is asked only when `max_concurrent_trials`
leaves room, its answer FINISHED ends the experiment), so no trial is ever created for a held cell.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ray.tune.search import Searcher

from orchestrator.cells import AnyCell
from orchestrator.estimate import BudgetPlan


@dataclass
class _Running:
    cell_id: str
    started: float


class BudgetSearcher(Searcher):
    """Suggests the grid's cells in order while `plan.limit` covers them (see the module docstring).

    `held` lists the cells it never started, once it has said FINISHED; `spent` is what the grid has
    spent so far, this submit's finished cells included.
    """

    def __init__(self, cells: Sequence[AnyCell], plan: BudgetPlan, *, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._pending = deque(cells)
        self._plan = plan
        self._clock = clock
        self._running: dict[str, _Running] = {}
        self.spent = plan.spent
        self.held: list[AnyCell] = []

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the cells are the search space; the rest of the config is constants

    def _held_so_far(self, running: _Running) -> float:
        return self._plan.gpus.get(running.cell_id, 0.0) * (self._clock() - running.started) / 3600.0

    def committed(self) -> float:
        """GPU-hours spent plus those the running cells are expected to spend."""
        return self.spent + sum(max(self._plan.estimates.get(r.cell_id, 0.0), self._held_so_far(r))
                                for r in self._running.values())

    def suggest(self, trial_id: str):
        if not self._pending:
            return Searcher.FINISHED
        cell = self._pending[0]
        if self.committed() + self._plan.estimates.get(cell.cell_id, 0.0) <= self._plan.limit:
            self._pending.popleft()
            self._running[trial_id] = _Running(cell.cell_id, self._clock())
            return {"cell": cell.to_dict()}
        if self._running:
            return None  # a running cell may finish under its estimate: ask again later
        self.held = list(self._pending)
        self._pending.clear()
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        running = self._running.pop(trial_id, None)
        if running is not None:  # a failed cell held its GPUs too
            self.spent += self._held_so_far(running)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: a resubmit rebuilds the plan from the store (finished cells and their GPU-hours)."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""


__all__ = ["BudgetSearcher"]
