"""What the pipelines offer, by name: datasets, loaders and evaluation protocols, and facts about each dataset.

Each vocabulary is one `Literal`, the single declaration the grid spec, the training config, the
CLI's choices and the loaders all take their names from (tuples through `typing.get_args`). Like
`models.arch`, this module imports nothing heavy, so a grid is validated before torch loads.
"""

from __future__ import annotations

from typing import Literal, get_args

DatasetName = Literal["cifar10", "cifar100", "imagenet", "digits"]
# ffcv: FFCV's compiled Loader (fast); torch: a torchvision-style DataLoader over the same .beton files;
# device: the whole uint8 split held on the training device, augmented there in batched torch ops (32x32 data only)
LoaderName = Literal["ffcv", "torch", "device"]
# full: 32x32 as is, ImageNet the centre 256 square; center: resize 256, centre 224 (single view);
# 10crop: corners + centre and their mirrors (paper Tables 2-3); multiscale: Table 4's fully
# convolutional testing at shorter sides 224-640 (ImageNet-size data only)
EvalProtocol = Literal["center", "10crop", "full", "multiscale"]
EVAL_RESIZE = 256  # ImageNet evaluation: the shorter side before a 224 centre crop (center) or 10 crops
MULTISCALE_SIDES = (224, 256, 384, 480, 640)  # multiscale: the shorter sides at test time, paper Sec. 3.4
# train: the training split proper (CIFAR's 45k of the paper's 45k/5k schedule search; ImageNet; digits);
# trainval: every training image, val included (CIFAR's 50k, on which Table 6's models were trained)
TrainSplit = Literal["train", "trainval"]
# pixel_mean: subtract the training split's per-pixel mean image, divide by nothing (the paper, after AlexNet);
# channel: subtract the per-channel mean and divide by the per-channel std (torchvision's recipes)
Normalization = Literal["pixel_mean", "channel"]

DATASETS: tuple[str, ...] = get_args(DatasetName)
LOADERS: tuple[str, ...] = get_args(LoaderName)
EVAL_PROTOCOLS: tuple[str, ...] = get_args(EvalProtocol)
TRAIN_SPLITS: tuple[str, ...] = get_args(TrainSplit)
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)

# Which network family a dataset trains: the 32x32 CIFAR-style nets or the 224x224 ImageNet ones.
VARIANT_OF: dict[str, str] = {"cifar10": "cifar", "cifar100": "cifar", "digits": "cifar", "imagenet": "imagenet"}
NUM_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100, "digits": 10, "imagenet": 1000}
# The splits each dataset can train on, with their images per epoch where no prepared manifest says
# otherwise (CIFAR: the paper's 45k/5k split and the whole 50k; ImageNet's val is its test set, digits has none).
TRAIN_IMAGES: dict[str, dict[str, int]] = {
    "cifar10": {"train": 45_000, "trainval": 50_000},
    "cifar100": {"train": 45_000, "trainval": 50_000},
    "digits": {"train": 1_258},
    "imagenet": {"train": 1_281_167},
}


def loader_problem(loader: str, dataset: str) -> str | None:
    """Why `loader` cannot read `dataset`, or None: the device loader holds a whole split in device memory, which
    only 32x32 data (CIFAR, digits: 150 MB for CIFAR's 50k) make sensible; ImageNet's 1.28M JPEGs do not."""
    if loader == "device" and VARIANT_OF[dataset] != "cifar":
        return (f"loader 'device' holds a whole 32x32 split on the training device; {dataset} is ImageNet-size "
                "(use ffcv or torch)")
    return None


assert set(VARIANT_OF) == set(NUM_CLASSES) == set(TRAIN_IMAGES) == set(DATASETS)
