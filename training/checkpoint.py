"""Checkpoint files and the random-number state that makes a resumed epoch repeat the uninterrupted one.

A checkpoint is written to a temporary file and renamed into place, so a write torn by a kill is
never loaded. It holds tensors and plain Python values written by this code on the same cluster;
it is loaded with `weights_only=False` because the RNG states are numpy/Python tuples, so never
point `load_checkpoint` at a file from elsewhere.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
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
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint is incomplete (no {CHECKPOINT_FILE})")
    return torch.load(path, map_location="cpu", weights_only=False)
