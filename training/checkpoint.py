"""Checkpoint files and the random-number state that makes a resumed epoch repeat the uninterrupted one.

A checkpoint is written to a temporary file and renamed into place, so a write torn by a kill is
never loaded. It holds tensors and plain Python values only (the numpy and Python RNG states as
lists and tuples of integers), so it loads with `weights_only=True`: torch's restricted unpickler,
which calls nothing a file names. A checkpoint that asks for more (an older resnetctl's numpy
arrays, or a planted payload) is refused, not run.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint file that is not one of ours: it holds more than tensors and plain values."""


def rng_state() -> dict[str, Any]:
    """torch's, numpy's and Python's RNG states, as tensors and plain values (loadable with weights_only)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {"torch": torch.get_rng_state(), "numpy": (str(kind), keys.tolist(), int(position), int(has_gauss),
                                                      float(gauss)), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | Path, state: dict[str, Any]) -> Path:
    """Write `state.pt` via a temporary file and an atomic rename: a torn write never looks complete."""
    path = Path(folder) / CHECKPOINT_FILE
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(folder: str | Path) -> dict[str, Any]:
    """The state `save_checkpoint` wrote, through torch's restricted unpickler; CheckpointError for anything else."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint is incomplete (no {CHECKPOINT_FILE})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not loaded: it holds more than tensors and plain values ({reason})") from None
