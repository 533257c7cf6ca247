"""Datasets to FFCV files, the paper's augmentations and sharded loaders. Knows nothing of Ray or MLflow.

The manifest API imports nothing heavy, so a grid's prepared data can be checked without loading
torch or FFCV; the writers and loaders load them on first use.
"""

from __future__ import annotations

from pipelines.manifest import DatasetError, load_manifest
from resnetctl.lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "build_loader": "pipelines.loaders",
    "shard_positions": "pipelines.loaders",
    "prepare_dataset": "pipelines.prepare",
}

__all__ = ["DatasetError", "load_manifest", *_LAZY]


__getattr__ = lazy_attributes(__name__, _LAZY)
