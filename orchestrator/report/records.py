"""What the report reads from the store: one `RunRecord` per MLflow run, whichever path read it.

Both readers (SQL and MLflow client) produce these same records, so everything downstream
(tables, figures, renderers) is shared and the two paths cannot disagree by construction
beyond what they read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator import conventions as cv
from resnetctl.errors import UserError

# metric histories: run_id -> metric key -> [(step, value), ...] sorted by step
Histories = dict[str, dict[str, list[tuple[int, float]]]]


class ReportError(UserError):
    """Bad selection or an unreadable store; the message says what to change. Exit status 2."""


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run with its tags, params, latest metrics and the registered versions made from it."""

    run_id: str
    name: str
    experiment_id: str
    status: str  # MLflow's run status: RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    start_time: int | None
    end_time: int | None
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    model_versions: tuple[str, ...] = ()  # "cifar10-resnet56-A v3", sorted

    @property
    def grid(self) -> str | None:
        return self.tags.get(cv.TAG_GRID)

    @property
    def arch(self) -> str:
        return self.tags.get(cv.TAG_ARCH, self.name)

    @property
    def dataset(self) -> str | None:
        return self.tags.get(cv.TAG_DATASET) or self.params.get(cv.PARAM_DATASET)

    @property
    def eval_protocol(self) -> str | None:
        return self.tags.get(cv.TAG_EVAL_PROTOCOL)

    @property
    def shortcut(self) -> str | None:
        return self.params.get(cv.PARAM_SHORTCUT) or self.axis(cv.PARAM_SHORTCUT)

    @property
    def depth(self) -> int | None:
        return _as_int(self.params.get(cv.PARAM_DEPTH) or self.axis(cv.PARAM_DEPTH))

    @property
    def seed(self) -> int | None:
        return _as_int(self.params.get(cv.PARAM_SEED) or self.axis(cv.PARAM_SEED))

    @property
    def cell_id(self) -> str:
        return self.tags.get(cv.TAG_CELL_ID, self.run_id)

    @property
    def finished(self) -> bool:
        """The writer marks a cell finished only once its final metrics and model are logged."""
        return self.tags.get(cv.TAG_STATUS) == cv.STATUS_FINISHED

    @property
    def is_evaluation(self) -> bool:
        """An evaluation cell's run (trained networks tested once: Table 4, an ensemble), not a training run."""
        return self.tags.get(cv.TAG_CELL_KIND) == cv.KIND_EVALUATION

    @property
    def ensemble(self) -> str | None:
        """The ensemble's name, for an evaluation of averaged networks."""
        return self.tags.get(cv.TAG_ENSEMBLE)

    def final_metric(self, key: str) -> float | None:
        """The run's number for `key` as the report shows it: its final test (`final_<key>`, where the epochs
        validated with a cheaper view than `eval_protocol`), else the metric's last value."""
        final = self.metric(cv.FINAL_PREFIX + key)
        return final if final is not None else self.metric(key)

    def axis(self, name: str) -> str | None:
        return self.tags.get(cv.axis_tag(name))

    def value(self, name: str) -> str | None:
        """A grid axis by name: its axis tag, else the param, else a derived attribute."""
        found = self.axis(name) or self.params.get(name)
        if found is None and name in ("arch", "dataset", "eval_protocol", "grid"):
            found = getattr(self, name)
        return found

    def metric(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return None if value is None or math.isnan(value) else value


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Selection:
    """The runs of one grid (or experiment), all statuses, as read from the store."""

    experiment: str
    grid: str | None
    runs: tuple[RunRecord, ...]
    ignored: int = 0  # runs of the experiment that belong to no grid or to another grid
    experiment_tags: Mapping[str, str] = field(default_factory=dict)  # the grid's claims and verdict settings


class StoreReader(Protocol):
    """What the report needs from a store; implemented over SQL tables and over the MLflow client."""

    def experiments(self) -> dict[str, str]:
        """Active experiments: name -> id."""

    def grids(self) -> dict[str, int]:
        """Grid tag value -> number of active runs carrying it."""

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        """One experiment's tags (`submit` records each grid's claims there)."""

    def runs(self, experiment_id: str) -> list[RunRecord]:
        """Every active run of one experiment, with tags, params, latest metrics and model versions."""

    def histories(self, run_ids: Sequence[str], keys: Sequence[str]) -> Histories:
        """Full metric histories (all steps) of some runs, for the figures."""
