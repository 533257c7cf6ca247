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


def rng_state(device: torch.device | str | None = None) -> dict[str, Any]:
    """torch's, numpy's and Python's RNG states, as tensors and plain values (loadable with weights_only),
    and the CUDA state of this worker's own `device` (no other: another rank may see fewer GPUs)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {"torch": torch.get_rng_state(), "numpy": (str(kind), keys.tolist(), int(position), int(has_gauss),
                                                      float(gauss)), "python": random.getstate()}
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | str | None = None) -> None:
    """Restore `rng_state`'s states; the CUDA state onto this worker's own `device` only.

    A checkpoint of an older resnetctl holds a list, one state per GPU rank 0 saw: this worker takes
    the entry of its own device index where the list has one, and leaves its generator alone otherwise.
    """
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
    device = torch.device(device) if device is not None else None
    cuda = state.get("cuda")
    if cuda is None or device is None or device.type != "cuda" or not torch.cuda.is_available():
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    if isinstance(cuda, list | tuple):
        if index >= len(cuda):
            return
        cuda = cuda[index]
    torch.cuda.set_rng_state(cuda, device)


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
