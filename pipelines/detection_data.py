"""Prepared detection splits as a torch `Dataset` and sharded, seeded loaders for one DDP worker.

An item is `(image, target)`: the image as float32 C x H x W in 0-255 at its own size (the detector's
transform subtracts the mean and resizes the shorter side to 600, per batch), and the target as
torchvision's detection models take it: `boxes` (N x 4, x0 y0 x1 y1 in pixels), `labels` (1..C; 0 is
the background), plus `image_id`. Training targets leave out VOC's `difficult` and COCO's crowd boxes
(as Fast/Faster R-CNN's training did) and flip half the images left-right (Fast R-CNN Sec. 3.3's only
augmentation), each image's coin seeded by (seed, epoch, index) so a resumed epoch flips the same ones.
Evaluation reads images only; the metrics take the ground truth from the split file itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.detection_prepare import detection_manifest, load_split
from pipelines.loaders import shard_positions
from pipelines.manifest import DatasetError


@dataclass(frozen=True)
class DetectionImage:
    image_id: int
    path: Path
    boxes: np.ndarray  # (N, 4) float32, x0 y0 x1 y1
    labels: np.ndarray  # (N,) int64, 1..C
    ignored: np.ndarray  # (N,) bool: difficult (VOC) or crowd (COCO); never a training target


def label_map(split: dict[str, Any]) -> dict[int, int]:
    """COCO category id -> contiguous label 1..C (VOC's ids already are)."""
    return {category["id"]: i + 1 for i, category in enumerate(split["categories"])}


def split_images(root: str | Path, manifest: dict[str, Any], splits: Sequence[str]) -> list[DetectionImage]:
    """Every image of `splits` once (an image in two splits is kept once), in split and file order."""
    images_root = Path(manifest["images_root"])
    found: dict[int, DetectionImage] = {}
    for split in splits:
        data = load_split(root, manifest, split)
        labels = label_map(data)
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for image in data["images"]:
            anns = by_image.get(image["id"], [])
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
            found.setdefault(image["id"], DetectionImage(
                image["id"], images_root / image["file_name"], boxes.reshape(-1, 4),
                np.array([labels[a["category_id"]] for a in anns], np.int64),
                np.array([bool(a.get("difficult") or a.get("iscrowd")) for a in anns], bool)))
    return list(found.values())


def read_image(path: Path) -> torch.Tensor:
    """An RGB image as float32 C x H x W, 0-255 (greyscale JPEGs, of which COCO has some, become RGB)."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(str(path), mode=ImageReadMode.RGB).float()
    except (RuntimeError, OSError) as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None


class DetectionDataset(torch.utils.data.Dataset):
    """(image, target) pairs of prepared splits; `set_epoch` reseeds the training flips."""

    def __init__(self, images: list[DetectionImage], *, train: bool, hflip: bool = False, seed: int = 0):
        self.images, self.train, self.hflip, self.seed, self.epoch = images, train, hflip, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        item = self.images[index]
        image = read_image(item.path)
        boxes, labels = item.boxes, item.labels
        if self.train:
            height, width = image.shape[1:]
            keep = ~item.ignored
            boxes = np.clip(boxes[keep], 0, [width, height, width, height]).astype(np.float32)
            labels = labels[keep]
            positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, labels = boxes[positive], labels[positive]
            if self.hflip and np.random.default_rng((self.seed, self.epoch, index)).random() < 0.5:
                image = image.flip(-1)
                boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        target = {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.as_tensor(labels, dtype=torch.int64), "image_id": torch.tensor(item.image_id)}
        return image, target


class ShardBatches(torch.utils.data.Sampler):
    """This rank's batches of positions: training shards reshuffled each epoch (equal sizes on every rank,
    `pipelines.loaders.shard_positions`), evaluation shards in order, the last batch possibly short."""

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int, world_size: int, train: bool):
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.train, self.epoch = train, 0

    def positions(self) -> np.ndarray:
        return shard_positions(self.n, self.epoch, seed=self.seed, rank=self.rank, world_size=self.world_size,
                               shuffle=self.train, equal_shards=self.train)

    def __iter__(self) -> Iterator[list[int]]:
        positions = self.positions().tolist()
        stop = len(positions) - len(positions) % self.batch_size if self.train else len(positions)
        for start in range(0, stop, self.batch_size):
            yield positions[start:start + self.batch_size]

    def __len__(self) -> int:
        count = len(self.positions())
        return count // self.batch_size if self.train else -(-count // self.batch_size)


def _collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


class DetectionLoader:
    """One worker's loader: iterating it once is one epoch (the next `iter()` is the next epoch)."""

    def __init__(self, dataset: DetectionDataset, sampler: ShardBatches, num_workers: int):
        self.dataset, self.sampler, self.epoch = dataset, sampler, 0
        self.loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                                  collate_fn=_collate, persistent_workers=False)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[dict]]]:
        self.sampler.epoch = self.epoch
        self.dataset.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)


def build_detection_loader(root: str | Path, splits: Sequence[str], *, train: bool, batch_size: int, seed: int,
                           rank: int = 0, world_size: int = 1, num_workers: int = 0, hflip: bool = False,
                           max_images: int | None = None) -> DetectionLoader:
    """This rank's shard of `splits` (their union) in batches; `max_images` keeps the first images (smoke tests)."""
    manifest = detection_manifest(root)
    images = split_images(root, manifest, splits)[:max_images]
    if not images:
        raise DatasetError(f"{root}: splits {', '.join(splits)} hold no images")
    dataset = DetectionDataset(images, train=train, hflip=hflip, seed=seed)
    sampler = ShardBatches(len(images), batch_size, seed=seed, rank=rank, world_size=world_size, train=train)
    return DetectionLoader(dataset, sampler, num_workers)
