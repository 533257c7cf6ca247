"""Datasets to FFCV files, the paper's augmentations and sharded loaders. Knows nothing of Ray or MLflow.

The manifest API imports nothing heavy, so a grid's prepared data can be checked without loading
torch or FFCV; the writers and loaders load them on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipelines.manifest import DatasetError, load_manifest

_LAZY: dict[str, str] = {
    "build_loader": "pipelines.loaders",
    "shard_positions": "pipelines.loaders",
    "prepare_dataset": "pipelines.prepare",
}

__all__ = ["DatasetError", "load_manifest", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
