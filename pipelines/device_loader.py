"""The device-resident loader (`loader: device`): a whole 32x32 split held on the training device as uint8.

airbench's approach for small datasets: CIFAR-10's 50k training images are 150 MB as uint8, so they are
read from the `.beton` once, shipped to the device once, and every epoch is a gather of rows plus
batched torch ops there (pad, crop, flip, normalise), with no decoding threads or processes and no
host-to-device copy per batch. On a GPU the loader then costs a few kernels per batch instead of a CPU
pipeline that has to keep up with a ResNet-20 step.

It is the torch path's batch-level work on another tensor: the same sample order (`shard_positions`),
the same seeded draws for each (seed, epoch, sample index) (`flip_translate_draws`, `lighting_offsets`),
the same `_Normalizer` (padding after the mean image is subtracted, channel or pixel-mean normalisation,
ten-crop), so its batches equal the torch loader's and `set_epoch(e)` replays epoch e exactly. An
epoch's flip and crop draws are computed at its start and copied to the device in one go.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from pipelines.augment import CIFAR_PAD, flip_translate_draws
from pipelines.loaders import BetonDataset, LoaderSpec, _Normalizer, batch_count, shard_positions


def read_split(dataset: BetonDataset) -> tuple[np.ndarray, np.ndarray]:
    """Every stored image of a 32x32 split, (N, H, W, C) uint8, and its int64 labels, in file order."""
    pairs = [dataset.raw(index) for index in range(len(dataset))]
    images = np.stack([image for image, _ in pairs])
    return images, np.array([label for _, label in pairs], dtype=np.int64)


class DeviceImageLoader:
    """The split on `spec.device` as one (N, C, H, W) uint8 tensor; one `iter()` per epoch, as the other loaders."""

    def __init__(self, spec: LoaderSpec):
        if not spec.view.small:
            raise ValueError("the device loader is for 32x32 data")  # build_loader refuses it before this
        self.spec = spec
        self._norm = _Normalizer(spec)
        images, labels = read_split(BetonDataset(spec.path, spec.view))
        self.images = torch.from_numpy(images).to(spec.device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(labels).to(spec.device)
        self._next_epoch = 0

    @property
    def epoch(self) -> int:
        return self._next_epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next `iter()` epoch `epoch` (resuming from a checkpoint)."""
        self._next_epoch = epoch

    def _positions(self, epoch: int) -> np.ndarray:
        s = self.spec
        return shard_positions(len(self.labels), epoch, seed=s.seed, rank=s.rank, world_size=s.world_size,
                               shuffle=s.shuffle, equal_shards=s.drop_last)

    def __len__(self) -> int:
        return batch_count(len(self._positions(0)), self.spec)  # every epoch's shard has the same size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._next_epoch
        self._next_epoch += 1
        positions = self._positions(epoch)
        device, size = self.spec.device, self.spec.batch_size
        rows = torch.from_numpy(positions).to(device)
        draws = None
        if self.spec.view.train:  # the whole epoch's flips and crop offsets, on the device in one copy each
            flips, offsets = flip_translate_draws(CIFAR_PAD, self.spec.seed, epoch, positions)
            draws = flips.to(device), offsets.to(device)
        for k in range(batch_count(len(positions), self.spec)):
            batch = slice(k * size, (k + 1) * size)
            images = self._norm.from_uint8(self.images.index_select(0, rows[batch]))
            mine = None if draws is None else (draws[0][batch], draws[1][batch])
            yield self._norm.finish(images, epoch, positions[batch], mine), self.labels.index_select(0, rows[batch])
