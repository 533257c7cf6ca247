"""Where a run stands, which its checkpoints carry: epochs and steps done, time spent, the curves so far.

`Trainer` and `DetectionTrainer` step different networks but keep the same account of a run: a
checkpoint of another run is refused (`run_key`: the orchestrator passes the cell id), a resume
restores the RNG state so the next epoch repeats the uninterrupted one, and each epoch's metrics
join the curves the run logs at its end.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from training import metrics as m
from training.checkpoint import rng_state, set_rng_state


class RunProgress:
    """The run's counters and curves, for a trainer that sets `device`, `run_key` and `total_iterations`
    and calls `_start_progress` in its constructor."""

    device: torch.device
    run_key: str | None
    total_iterations: int

    def _start_progress(self) -> None:
        self.epoch = 0  # epochs completed
        self.iteration = 0  # optimiser steps completed
        self.elapsed_s = 0.0  # wall time spent training and evaluating, summed over resumes
        self.last_epoch_s = 0.0
        self.curves: dict[str, list[float]] = {}

    @property
    def done(self) -> bool:
        return self.iteration >= self.total_iterations

    def _progress_state(self) -> dict[str, Any]:
        return {"rng": rng_state(self.device), "epoch": self.epoch, "iteration": self.iteration,
                "elapsed_s": self.elapsed_s, "curves": self.curves, "cell_id": self.run_key}

    def _check_run_key(self, state: dict[str, Any]) -> None:
        if state.get("cell_id") not in (None, self.run_key):
            raise ValueError(f"checkpoint belongs to cell {state['cell_id']}, not {self.run_key}")

    def _load_progress(self, state: dict[str, Any]) -> None:
        set_rng_state(state["rng"], self.device)
        self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        self.elapsed_s = float(state["elapsed_s"])
        self.curves = {k: list(v) for k, v in state["curves"].items()}

    def _end_epoch(self, metrics: dict[str, float], start: float) -> dict[str, float]:
        """The epoch's metrics with the steps done so far, counted in the run's time and appended to its curves."""
        metrics[m.ITERATION] = float(self.iteration)
        self.last_epoch_s = time.perf_counter() - start
        self.elapsed_s += self.last_epoch_s
        for key, value in metrics.items():
            self.curves.setdefault(key, []).append(value)
        self.curves.setdefault("epoch", []).append(self.epoch)
        return metrics
