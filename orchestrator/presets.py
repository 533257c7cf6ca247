"""The paper's training recipes, one per dataset: what a grid's `train:` section overrides.

CIFAR (Sec. 4.2): batch 128, lr 0.1, momentum 0.9, weight decay 1e-4, lr /10 at 32k and 48k
iterations, stop at 64k; ResNet-110 (and deeper) warms up at lr 0.01 until the training error
is below 80% (about 400 iterations; capped at 2000 here); Table 6's models train on all 50k
training images (train + val), the per-pixel mean image subtracted. ImageNet (Sec. 3.4): batch 256, lr 0.1
divided by 10 when the error plateaus, weight decay 1e-4, momentum 0.9, up to 600k iterations. Digits is the
quickstart: scikit-learn's 8x8 digits at 32x32, a few epochs that finish in minutes on a laptop.

This module imports nothing heavy: the grid is validated before torch, Ray or MLflow load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.catalog import DATASETS, VARIANT_OF

# Paper Sec. 4.2: "we use 0.01 to warm up the training until the training error is below 80%
# (about 400 iterations), and then go back to 0.1". Applies from this depth on. The error rule
# decides (training/schedule.py); the iteration count is only a safety cap, at 5x the paper's ~400
# (about 5 epochs, 3% of the 64k schedule), so only a run that is not learning reaches it.
WARMUP_FROM_DEPTH = 110
WARMUP = {"warmup_lr": 0.01, "warmup_iterations": 2000, "warmup_until_train_err": 80.0}
WARMUP_FIELDS = tuple(WARMUP)

_CIFAR: dict[str, Any] = {
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "iterations": 64_000,
    "lr_milestones": (32_000, 48_000),
    "lr_gamma": 0.1,
    "eval_protocol": "full",
    # Sec. 4.2: the schedule was determined on a 45k/5k split; Table 6's models train on the whole 50k
    "train_split": "trainval",
    "normalization": "pixel_mean",  # "the per-pixel mean subtracted"; padding then adds zeros
}

PRESETS: dict[str, dict[str, Any]] = {
    "cifar10": dict(_CIFAR),
    "cifar100": dict(_CIFAR),
    "imagenet": {
        "batch_size": 256,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "iterations": 600_000,
        "lr_milestones": (),
        "lr_gamma": 0.1,
        "lr_on_plateau": True,
        # the paper gives no number of drops; 0.1 -> 0.0001 (three) is fb.resnet.torch's, the authors' code base
        "plateau_max_drops": 3,
        "eval_protocol": "10crop",  # the final test, once; Tables 2-3
        "epoch_eval_protocol": "center",  # each epoch's validation (and the plateau rule): one view, 10x cheaper
        "lighting": 0.1,  # "the standard color augmentation in [21]" (AlexNet's PCA lighting)
        "train_split": "train",  # ImageNet's val is its test set: nothing to add
        "normalization": "pixel_mean",  # Sec. 3.4: "the per-pixel mean subtracted"
    },
    "digits": {
        "batch_size": 64,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "epochs": 3,
        "lr_milestones": (2,),
        "lr_gamma": 0.1,
        "eval_protocol": "full",
        "num_workers": 1,
        "train_split": "train",  # digits has no trainval: its val stays held out
        "normalization": "pixel_mean",
    },
}


# Cells on GPUs (`resources.use_gpu`) train with these unless the grid's `train:` names them: bf16 autocast
# and channels-last tensors are what tensor cores (A100, H100) run fastest. bf16 is a departure from the
# paper's fp32, said in the report's protocol line; `amp: off` in `train:` trains as the paper did. Both are
# ignored on a CPU, so a grid's CPU cells keep their ids (channels_last never changes one: cells.ID_SPEED_FIELDS).
GPU_PRESET: dict[str, Any] = {"amp": "bf16", "channels_last": True}


@dataclass(frozen=True)
class Preset:
    """A dataset's recipe as TrainConfig keyword arguments; `for_depth` adds the deep-net warm-up."""

    dataset: str
    values: dict[str, Any]

    def for_depth(self, depth: int) -> dict[str, Any]:
        values = dict(self.values)
        if VARIANT_OF[self.dataset] == "cifar" and depth >= WARMUP_FROM_DEPTH:
            values.update(WARMUP)
        return values


def preset(dataset: str) -> Preset:
    """The paper's recipe for `dataset`; KeyError names the dataset when there is none."""
    if dataset not in PRESETS:
        raise KeyError(f"dataset={dataset!r}: no preset (choose from {', '.join(DATASETS)})")
    return Preset(dataset, dict(PRESETS[dataset]))
