"""The one collective the trainer needs: combine per-worker numbers across the DDP group.

Outside a process group (one worker, tests, benchmarks) the values pass through unchanged, so
the trainer never asks whether it is distributed.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist


def all_reduce(values: list[float], device: torch.device, op: Literal["sum", "min"] = "sum") -> list[float]:
    """Every worker's `values` summed (or their minimum), element by element, in float64."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MIN)
    return tensor.tolist()


def gather_to_first(value: Any) -> list[Any] | None:
    """Every worker's `value` (any picklable object) on rank 0, in rank order; None on the other ranks."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered
