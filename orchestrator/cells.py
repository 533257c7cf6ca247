"""A cell is one point of the grid: one architecture, dataset and seed with a resolved config.

Cells are plain frozen dataclasses so that they pickle into Ray Tune trials unchanged and
hash to a stable id: the same resolved config always gives the same `cell_id`, which is
how reruns find their MLflow run and their checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Shortcut = Literal["plain", "A", "B", "C"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything the training loop needs, resolved from the dataset preset plus overrides.

    A schedule is given either in iterations (the paper's CIFAR runs) or in epochs; exactly
    one of `iterations` / `epochs` is set. `lr_milestones` are in the same unit.
    """

    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    iterations: int | None = None
    epochs: int | None = None
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    lr_on_plateau: bool = False  # ImageNet: divide by 10 when the val error plateaus
    plateau_patience: int = 5
    warmup_lr: float | None = None  # ResNet-110: train at 0.01 ...
    warmup_iterations: int = 0  # ... for at most this many iterations ...
    warmup_until_train_err: float | None = None  # ... or until training error (%) drops below this
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool = False
    loader: Literal["ffcv", "torch"] = "ffcv"
    num_workers: int = 1  # data-loading threads/processes per training worker
    eval_protocol: Literal["center", "10crop", "full", "multiscale"] = "full"
    lighting: float = 0.0  # std of AlexNet's PCA colour noise in training (ImageNet preset: 0.1)
    zero_init_residual: bool = False
    stride_in_1x1: bool = True
    max_train_batches: int | None = None  # cap per epoch; for smoke tests and benchmarks


@dataclass(frozen=True)
class Resources:
    workers_per_cell: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_concurrent_cells: int = 1


@dataclass(frozen=True)
class Cell:
    """One trial of the grid. `name` is the MLflow run name and the Tune trial name."""

    grid: str
    arch: str  # models' readable name: "resnet56-A", "plain20", "resnet50-B"
    depth: int
    shortcut: Shortcut
    variant: Literal["cifar", "imagenet"]
    dataset: str
    dataset_path: str
    seed: int
    train: TrainConfig
    resources: Resources = field(default_factory=Resources)
    axes: tuple[tuple[str, Any], ...] = ()  # the grid axes that produced this cell, in order
    # training-field axes in the name ("lr0.05"), so cells differing only in them get distinct names
    label: str = ""

    @property
    def name(self) -> str:
        base = f"{self.arch}-{self.dataset}-s{self.seed}"
        return f"{base}-{self.label}" if self.label else base

    @property
    def cell_id(self) -> str:
        """Stable 12-hex id of what is trained.

        Resources and the data's location are excluded: they change where a cell runs and reads,
        not what it trains, so a grid resubmitted from another folder or cluster finds its runs.
        """
        payload = dataclasses.asdict(self)
        payload.pop("resources")
        payload.pop("dataset_path")
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        data = dict(data)
        train = data.pop("train")
        train["lr_milestones"] = tuple(train.get("lr_milestones", ()))
        resources = data.pop("resources", {})
        axes = tuple(tuple(a) for a in data.pop("axes", ()))
        return cls(train=TrainConfig(**train), resources=Resources(**resources), axes=axes, **data)
