"""What each table cell cost: the device-hours its finished runs logged, and money at the grid's price.

A table cell (an arch x dataset x protocol entry over its seeds) costs the sum of its runs' own
`gpu_hours` (wall time x GPUs held: workers_per_cell x gpus_per_worker) and `worker_hours` (wall
time x workers). A run that held no GPU counts as CPU worker-hours and is never called a GPU-hour;
money is GPU-hours x `price_per_gpu_hour` (the grid's, recorded by `submit`, or the report's option),
as `plan` estimates it, so a CPU cell costs no money here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator import conventions as cv
from orchestrator.report.records import RunRecord


@dataclass(frozen=True)
class Cost:
    """The compute a set of runs logged, summed (order-independent: `math.fsum`)."""

    runs: int = 0
    worker_hours: float = 0.0  # every run: wall time x workers
    gpu_hours: float = 0.0  # runs on GPUs: wall time x GPUs held
    cpu_worker_hours: float = 0.0  # runs that held no GPU: their worker-hours
    price_per_gpu_hour: float | None = None

    @property
    def money(self) -> float | None:
        return None if self.price_per_gpu_hour is None else self.gpu_hours * self.price_per_gpu_hour

    @property
    def device(self) -> str:
        """gpu | cpu | mixed | none: what the runs trained on, as the hours say."""
        kinds = (self.gpu_hours > 0, self.cpu_worker_hours > 0)
        return {(True, False): "gpu", (False, True): "cpu", (True, True): "mixed"}.get(kinds, "none")

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "device": self.device, "worker_hours": self.worker_hours,
                "gpu_hours": self.gpu_hours, "cpu_worker_hours": self.cpu_worker_hours,
                "price_per_gpu_hour": self.price_per_gpu_hour, "money": self.money}


def cost_of(runs: Iterable[RunRecord], price_per_gpu_hour: float | None = None) -> Cost:
    """The runs' own logged hours, summed; a run without `gpu_hours` (or with 0) held no GPU."""
    workers, gpus, cpus = [], [], []
    for run in runs:
        worker, gpu = run.metric(cv.M_WORKER_HOURS) or 0.0, run.metric(cv.M_GPU_HOURS) or 0.0
        workers.append(worker)
        (gpus if gpu > 0 else cpus).append(gpu if gpu > 0 else worker)
    return Cost(len(workers), math.fsum(workers), math.fsum(gpus), math.fsum(cpus), price_per_gpu_hour)


def hours_text(hours: float) -> str:
    """Two decimals, or two significant digits below 0.1 h (a CPU test cell runs for seconds)."""
    return f"{hours:,.2f}" if hours >= 0.1 or hours == 0 else f"{hours:.2g}"


def cost_text(cost: Cost) -> str:
    """"1.20 GPU-h (cost 3.60)", "0.0031 CPU worker-h", or both for a cell trained on both."""
    parts = []
    if cost.gpu_hours > 0 or cost.device == "none":
        money = cost.money
        parts.append(f"{hours_text(cost.gpu_hours)} GPU-h" + (f" (cost {money:,.2f})" if money is not None else ""))
    if cost.cpu_worker_hours > 0:
        parts.append(f"{hours_text(cost.cpu_worker_hours)} CPU worker-h")
    return " + ".join(parts)


def cost_words(price_per_gpu_hour: float | None, *, per_run: bool = False) -> str:
    """The note under a table with costs: what the hours are and where the money comes from."""
    money = (f"; cost: GPU-h x {price_per_gpu_hour:g} per GPU-hour" if price_per_gpu_hour is not None
             else "; no price_per_gpu_hour, so no money")
    whose = "cost of a run: the hours it logged" if per_run else \
        "cost of a cell: the hours its finished runs logged, summed"
    return (f"{whose} (GPU-h: training wall time x GPUs held; CPU worker-h: wall time x workers, for runs that "
            f"held no GPU){money}")
