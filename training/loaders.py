"""One worker's loaders: the options they share, which splits a run evaluates on, closing an abandoned pass.

Apart from the trainer because three readers build them alike: `Trainer` (the training split),
`Tester` (the evaluation splits, per epoch and in the final protocol) and an evaluation cell
re-testing a trained network (`orchestrator/eval_entry.py`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch

import pipelines
from training.config import TrainConfig


def loader_options(cfg: TrainConfig, *, batch_size: int, rank: int, world_size: int, seed: int,
                   device: torch.device, channels_last: bool) -> dict[str, Any]:
    """What every loader of a worker shares, training and evaluation alike (and evaluation cells re-testing
    a trained network with its own config: whatever its training loaders did to the images, theirs do too)."""
    return {"rank": rank, "world_size": world_size, "seed": seed, "loader": cfg.loader, "batch_size": batch_size,
            "num_workers": cfg.num_workers, "device": str(device), "channels_last": channels_last,
            # every split is normalised with the statistics of the split the network trains on
            "normalization": cfg.normalization, "stats_split": cfg.train_split}


def held_out_splits(cfg: TrainConfig, splits: set[str]) -> list[str]:
    """The evaluation splits among `splits`: val and test, but not val when it is part of the training split;
    holdout (held out of the training images) when the plateau rule reads it."""
    wanted = ("val", "test", "holdout") if cfg.plateau_split == "holdout" else ("val", "test")
    return [split for split in wanted if split in splits and not (split == "val" and cfg.train_split == "trainval")]


def build_train_loader(cfg: TrainConfig, dataset_path: str, **options: Any):
    """This worker's shard of the training split (options: see `loader_options`)."""
    return pipelines.build_loader(dataset_path, cfg.train_split, train=True, lighting=cfg.lighting,
                                  **loader_options(cfg, **options))


def build_eval_loaders(cfg: TrainConfig, dataset_path: str, splits: set[str], *, protocol: str,
                       **options: Any) -> dict[str, Any]:
    """This worker's shard of each evaluation split (val, test) among `splits`, seen through `protocol`."""
    common = loader_options(cfg, **options)
    return {split: pipelines.build_loader(dataset_path, split, train=False, eval_protocol=protocol, **common)
            for split in held_out_splits(cfg, splits)}


@contextmanager
def epoch_batches(loader):
    """`iter(loader)`, closed on the way out: a loop that breaks early (a truncated epoch, `max_train_batches`,
    the layer responses' few images) stops FFCV's loading thread and frees its pinned buffers then."""
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
