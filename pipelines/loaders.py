"""Sharded, seeded loaders over a prepared dataset: FFCV `Loader` or a torchvision-style `DataLoader`
(and, for 32x32 data, the device-resident loader of `pipelines.device_loader`).

The paths read the same `.beton` files, visit the same sample order (`shard_positions`), apply
the same augmentation geometry (`pipelines.augment`) and yield `(images, labels)`: float32 NCHW
normalised images (or (B, 10, C, H, W) for the 10-crop protocol) and int64 labels.

Iterating a loader once is one epoch; the next `iter()` is the next epoch (reshuffled with
seed + epoch in training). Build one loader per worker and reuse it: FFCV compiles its
pipeline with numba when a Loader is created.

FFCV reuses its output buffers: a batch is valid until `batches_ahead` more batches have been
drawn; `clone()` what you keep.

Normalisation (`normalization`), the same on both paths: "channel" is (x - mean) / std per channel;
"pixel_mean" is the paper's x - mean image, divided by nothing, with the mean image of the split the
model trains on (`stats_split`, also for the splits it is evaluated on). The mean image is shaped
like each view: 32x32 data use it as stored; ImageNet's is stored as the centre square of the whole
shorter side at 256x256 (see `pipelines.prepare`), which is the mean of the "full" and "10crop"
views (the crops are taken after subtracting; up to the loss of the stored JPEG), whose centre 224
square is that of "center", and which is resized to 640 for "multiscale". A training crop is taken
at a random scale and place, and the exact mean over such crops is a blurred, rescaled version of
the centre mean: training views subtract the "center" mean (224), an approximation (the paper does
not say how it matched its mean image to scale-augmented crops).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.augment import (
    CIFAR_PAD,
    EVAL_RESIZE,
    MULTISCALE_SIDES,
    SMALL_IMAGE,
    TRAIN_CROPS,
    ViewSpec,
    ffcv_image_decoder,
    flip_translate_draws,
    lighting_offsets,
    pad_frame,
    random_flip_translate,
    ten_crop,
    torch_sample_view,
)
from pipelines.catalog import EVAL_PROTOCOLS, LOADERS, NORMALIZATIONS
from pipelines.ffcv_threads import closing_epoch
from pipelines.manifest import load_manifest


def shard_positions(
    n: int, epoch: int, *, seed: int, rank: int, world_size: int, shuffle: bool, equal_shards: bool
) -> np.ndarray:
    """Positions in range(n) this rank visits in this epoch.

    A permutation seeded by seed + epoch (identity when not shuffling) is dealt round-robin to the
    ranks, so shards are disjoint and together cover the split. With `equal_shards` (training),
    every rank keeps n // world_size of them so that all ranks run the same number of steps.
    """
    order = np.random.default_rng(seed + epoch).permutation(n) if shuffle else np.arange(n)
    shard = order[rank::world_size]
    if equal_shards:
        shard = shard[: n // world_size]
    return shard


@dataclass(frozen=True)
class LoaderSpec:
    path: Path  # the split's .beton
    manifest: dict
    root: Path
    view: ViewSpec
    batch_size: int
    rank: int
    world_size: int
    seed: int
    num_workers: int
    device: torch.device
    channels_last: bool
    drop_last: bool
    normalization: str
    lighting: float = 0.0  # std of AlexNet's PCA colour noise in training; 0 = off
    stats_split: str = "train"  # whose mean image "pixel_mean" subtracts: the split the model trains on

    @property
    def shuffle(self) -> bool:
        return self.view.train


def mean_image_for_view(mean_image: np.ndarray, view: ViewSpec) -> np.ndarray:
    """The stored mean image (H x W x C, 0-255) shaped like the view each sample is decoded to (see the module doc)."""
    import cv2

    if view.small:
        return mean_image
    side = view.decode_size
    if side == MULTISCALE_SIDES[-1]:
        return cv2.resize(mean_image, (side, side), interpolation=cv2.INTER_LINEAR)
    border = (EVAL_RESIZE - side) // 2  # 0 for the 256 views; the centre 224 square otherwise
    return np.ascontiguousarray(mean_image[border : border + side, border : border + side])


class _Normalizer:
    """Batch-level work shared by both paths: uint8 -> normalised float, padding, ten-crop, layout.

    Both paths first apply the per-channel (mean, std) of `channel_stats` (FFCV's compiled stage on the
    CPU, `from_uint8` otherwise: (0, 1) for "pixel_mean"); `finish` subtracts the mean image and does the rest.
    """

    def __init__(self, spec: LoaderSpec):
        self.spec = spec
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in self.channel_stats(spec))
        self.mean, self.std = mean.to(spec.device), std.to(spec.device)
        # padded pixels: 0 after per-pixel mean subtraction; black (a zero pixel) with channel normalisation
        pixel = spec.normalization == "pixel_mean"
        self.pad_value = (torch.zeros(3) if pixel else -mean / std).to(spec.device)
        self.pixel_mean = None
        if pixel:
            info = spec.manifest["splits"][spec.stats_split]
            image = mean_image_for_view(np.load(spec.root / info["mean_image_file"]), spec.view)
            self.pixel_mean = torch.from_numpy(image).float().permute(2, 0, 1).contiguous().to(spec.device)

    @staticmethod
    def channel_stats(spec: LoaderSpec) -> tuple[list[float], list[float]]:
        """The per-channel (mean, std) both paths apply first: the manifest's, or (0, 1) before a mean image."""
        if spec.normalization == "pixel_mean":
            return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        return list(spec.manifest["mean"]), list(spec.manifest["std"])

    def from_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) uint8 -> float32, with the per-channel (mean, std) applied."""
        return (images.float() - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)

    def finish(self, images: torch.Tensor, epoch: int, indices: np.ndarray,
               flip_translate: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, C, H, W) float after `from_uint8` -> what the loader yields (the batch may be changed in place).

        `indices`: the batch's sample indices, which with (seed, epoch) decide its training draws (`pipelines.draws`).
        `flip_translate`: the batch's `flip_translate_draws` where the caller drew them already (the device loader
        draws a whole epoch's at once, so that no batch waits on a host-to-device copy).
        """
        view = self.spec.view
        if self.pixel_mean is not None:
            images = images.sub_(self.pixel_mean)
        if view.train and self.spec.lighting > 0:
            shift = lighting_offsets(self.spec.lighting, self.spec.seed, epoch, indices).to(self.std.device)
            images = images.add_((shift / self.std).view(-1, 3, 1, 1))
        if view.train and view.small:  # after the mean image is subtracted: see pipelines.augment
            flips, offsets = flip_translate or flip_translate_draws(CIFAR_PAD, self.spec.seed, epoch, indices)
            images = random_flip_translate(images, CIFAR_PAD, self.pad_value, flips, offsets)
        if view.ten_crop:
            if view.small:
                images = pad_frame(images, CIFAR_PAD, self.pad_value)
            return ten_crop(images, view.image_size).contiguous()
        if self.spec.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images.contiguous()


class FFCVImageLoader:
    """An FFCV `Loader` with the paper's augmentations and rank sharding; one `iter()` per epoch."""

    def __init__(self, spec: LoaderSpec):
        threads = torch.get_num_threads()  # before the first `import ffcv`, which sets it to 1
        from ffcv.fields.basics import IntDecoder
        from ffcv.loader import Loader
        from ffcv.transforms import ToDevice, ToTensor, ToTorchImage

        from pipelines.ffcv_ops import NormalizeToCHW
        from pipelines.ffcv_threads import follow_creators_cuda_device
        from pipelines.numba_cache import enable_ffcv_numba_cache

        enable_ffcv_numba_cache()
        follow_creators_cuda_device()  # its loading thread on this worker's GPU, not GPU 0
        self.spec = spec
        self._norm = _Normalizer(spec)
        on_cpu = spec.device.type == "cpu"
        self._decoder = ffcv_image_decoder(spec.view, spec.seed)  # ImageNet training: crops and flips
        image_pipe = [self._decoder]
        if on_cpu:  # normalise and transpose in one compiled pass, straight into an NCHW float buffer
            image_pipe += [NormalizeToCHW(*_Normalizer.channel_stats(spec)), ToTensor()]
        else:  # ship uint8 to the device, normalise there with torch (no cupy needed)
            image_pipe += [ToTensor(), ToDevice(spec.device, non_blocking=True), ToTorchImage(channels_last=True)]
        label_pipe: list = [IntDecoder(), ToTensor()]
        if not on_cpu:
            label_pipe.append(ToDevice(spec.device, non_blocking=True))
        self._loader = Loader(
            str(spec.path),
            batch_size=spec.batch_size,
            num_workers=spec.num_workers,
            order=_shard_order(spec),
            seed=spec.seed,
            drop_last=spec.drop_last,
            pipelines={"image": image_pipe, "label": label_pipe},
            os_cache=True,
            # the seeded decoder's epoch is a constant of its compiled code: compile it again each epoch
            recompile=hasattr(self._decoder, "epoch"),
        )
        torch.set_num_threads(threads)  # FFCV sets torch's thread count to its own; keep the trainer's
        self._torch_threads = threads

    @property
    def epoch(self) -> int:
        return self._loader.next_epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next `iter()` epoch `epoch` (resuming from a checkpoint)."""
        self._loader.next_epoch = epoch

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._loader.next_epoch
        if hasattr(self._decoder, "epoch"):
            self._decoder.epoch = epoch
        # FFCV's batches are consecutive chunks of the traversal order (`_shard_order`): their sample indices
        order = self._loader.next_traversal_order()
        iterator = closing_epoch(iter(self._loader))  # closes FFCV's thread when this generator is closed
        size = self.spec.batch_size
        torch.set_num_threads(self._torch_threads)
        on_cpu = self.spec.device.type == "cpu"
        for k, (images, labels) in enumerate(iterator):
            if torch.get_num_threads() != self._torch_threads:
                torch.set_num_threads(self._torch_threads)
            if not on_cpu:
                images = self._norm.from_uint8(images)
            # FFCV's buffer itself where no batch-level step copies it: valid until `batches_ahead`
            # more batches are drawn (a fresh 38 MB tensor per batch costs more than decoding)
            yield self._norm.finish(images, epoch, order[k * size : (k + 1) * size]), labels.view(-1)


def _shard_order_class():
    from ffcv.traversal_order.base import TraversalOrder

    class ShardOrder(TraversalOrder):
        """FFCV traversal order over `shard_positions`; FFCV calls the instance with the Loader."""

        def __init__(self, spec: LoaderSpec, loader=None):
            self.spec = spec
            if loader is not None:
                super().__init__(loader)

        def __call__(self, loader) -> ShardOrder:
            return ShardOrder(self.spec, loader)

        def sample_order(self, epoch: int):
            s = self.spec
            positions = shard_positions(
                len(self.indices), epoch, seed=s.seed, rank=s.rank, world_size=s.world_size,
                shuffle=s.shuffle, equal_shards=s.drop_last,
            )
            return self.indices[positions]

    return ShardOrder


def _shard_order(spec: LoaderSpec):
    return _shard_order_class()(spec)


# --------------------------------------------------------------------------- torch path


class BetonDataset(torch.utils.data.Dataset):
    """Samples of a `.beton` file read without FFCV's Loader: (HWC uint8 view, label).

    Raw images are memory-mapped; JPEG ones are decoded with OpenCV. The file is opened lazily,
    once per DataLoader worker process.
    """

    def __init__(self, path: Path, view: ViewSpec):
        from ffcv.reader import Reader

        self.path = path
        self.view = view
        reader = Reader(str(path))
        self.names = reader.field_names
        self.metadata = reader.metadata
        order = np.argsort(reader.alloc_table["ptr"])
        self.ptrs = np.ascontiguousarray(reader.alloc_table["ptr"][order])
        self.sizes = np.ascontiguousarray(reader.alloc_table["size"][order])
        self._data: np.ndarray | None = None
        self.seed = self.epoch = 0  # set by the loader before each epoch (its workers are forked after)

    def __len__(self) -> int:
        return len(self.metadata)

    def raw(self, index: int) -> tuple[np.ndarray, int]:
        """The stored image (decoded, before augmentation) and its label."""
        import cv2

        if self._data is None:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        meta = self.metadata[index]
        image_meta, label = meta[0], int(meta[1])
        ptr = image_meta["data_ptr"]
        size = self.sizes[np.searchsorted(self.ptrs, ptr)]
        data = self._data[ptr : ptr + size]
        height, width = int(image_meta["height"]), int(image_meta["width"])
        if image_meta["mode"] == 1:  # raw
            image = np.array(data[: height * width * 3]).reshape(height, width, 3)
        else:
            image = cv2.cvtColor(cv2.imdecode(np.asarray(data), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        """(view, label, index): the index travels with the batch, for the batch-level draws."""
        image, label = self.raw(index)
        return torch.from_numpy(torch_sample_view(image, self.view, self.seed, self.epoch, index)), label, index


class _ShardBatches(torch.utils.data.Sampler):
    """Batches of `shard_positions` for the epoch the owning loader is on."""

    def __init__(self, spec: LoaderSpec, n: int, owner: TorchImageLoader):
        self.spec, self.n, self.owner = spec, n, owner

    def _positions(self) -> np.ndarray:
        s = self.spec
        return shard_positions(
            self.n, self.owner.current_epoch, seed=s.seed, rank=s.rank, world_size=s.world_size,
            shuffle=s.shuffle, equal_shards=s.drop_last,
        )

    def __iter__(self):
        positions = self._positions()
        for start in range(0, len(self), 1):
            yield positions[start * self.spec.batch_size : (start + 1) * self.spec.batch_size].tolist()

    def __len__(self) -> int:
        return batch_count(len(self._positions()), self.spec)


def batch_count(positions: int, spec: LoaderSpec) -> int:
    """Batches in an epoch of `positions` samples: the last partial one dropped or kept, as `drop_last` says."""
    if spec.drop_last:
        return positions // spec.batch_size
    return -(-positions // spec.batch_size)


def _collate(batch: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    images = torch.stack([image for image, _, _ in batch]).permute(0, 3, 1, 2)
    labels = torch.tensor([label for _, label, _ in batch], dtype=torch.int64)
    return images, labels, np.array([index for _, _, index in batch], dtype=np.int64)


class TorchImageLoader:
    """A `torch.utils.data.DataLoader` over the same `.beton`, order and augmentations as FFCV."""

    def __init__(self, spec: LoaderSpec):
        self.spec = spec
        self._norm = _Normalizer(spec)
        self.dataset = BetonDataset(spec.path, spec.view)
        self.current_epoch = 0
        self._next_epoch = 0
        self._batches = _ShardBatches(spec, len(self.dataset), self)
        workers = max(0, spec.num_workers)
        self._loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self._batches,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=spec.device.type == "cuda",
            persistent_workers=False,
        )

    @property
    def epoch(self) -> int:
        return self._next_epoch

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = epoch

    def __len__(self) -> int:
        return len(self._batches)  # every epoch's shard has the same size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.current_epoch = self._next_epoch
        self._next_epoch += 1
        # before the workers start: they are forked per epoch and inherit these
        self.dataset.seed, self.dataset.epoch = self.spec.seed, self.current_epoch
        device = self.spec.device
        non_blocking = device.type == "cuda"
        for images, labels, indices in self._loader:
            images = images.to(device, non_blocking=non_blocking)
            labels = labels.to(device, non_blocking=non_blocking)
            yield self._norm.finish(self._norm.from_uint8(images), self.current_epoch, indices), labels


# --------------------------------------------------------------------------- entry point


def _check_options(manifest: dict[str, Any], root: Path, split: str, *, train: bool, loader: str,
                   eval_protocol: str, train_crop: str, normalization: str, stats_split: str, lighting: float,
                   batch_size: int, rank: int, world_size: int) -> None:
    """ValueError naming the first option `build_loader` cannot honour for this prepared dataset."""
    if split not in manifest["splits"]:
        raise ValueError(f"split {split!r} not in {root} (has {', '.join(manifest['splits'])})")
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, not {loader!r}")
    if eval_protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"eval_protocol must be one of {EVAL_PROTOCOLS}, not {eval_protocol!r}")
    if train_crop not in TRAIN_CROPS:
        raise ValueError(f"train_crop must be one of {TRAIN_CROPS}, not {train_crop!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, not {normalization!r}")
    if normalization == "pixel_mean" and "mean_image_file" not in manifest["splits"].get(stats_split, {}):
        raise ValueError(f"normalization='pixel_mean' needs the mean image of split {stats_split!r}, which {root} "
                         "lacks (prepared before resnetctl stored one per training split: run `resnetctl prepare` "
                         "again)")
    if loader == "device" and int(manifest["image_size"]) > SMALL_IMAGE:
        raise ValueError(f"loader='device' holds a whole split on the device: for 32x32 data, not "
                         f"{manifest['image_size']}px images (use ffcv or torch)")
    if eval_protocol == "multiscale" and int(manifest["image_size"]) <= SMALL_IMAGE:
        raise ValueError(f"eval_protocol='multiscale' is for ImageNet-size images, not {manifest['image_size']}px ones")
    if not 0 <= lighting <= 10:
        raise ValueError(f"lighting must be in 0..10, not {lighting}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")


def build_loader(
    root: str | Path,
    split: str,
    *,
    batch_size: int,
    train: bool,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    loader: str = "ffcv",
    num_workers: int = 1,
    device: str = "cpu",
    channels_last: bool = False,
    eval_protocol: str = "center",
    drop_last: bool | None = None,
    train_crop: str = "scale",
    normalization: str = "channel",
    stats_split: str = "train",
    lighting: float = 0.0,
) -> Any:
    """A loader for `split` of the dataset prepared in `root`, for this rank of `world_size`.

    train=True: paper training augmentation, reshuffled every epoch (seed + epoch), equal
    disjoint shards, drop_last by default. train=False: sequential order, no augmentation,
    `eval_protocol` in center | 10crop | full | multiscale, shards that together cover the split.
    train_crop (ImageNet): "scale" (paper) or "rrc" (RandomResizedCrop); normalization:
    "channel" (mean/std) or "pixel_mean" (the paper: minus the mean image of `stats_split`, the split
    the model trains on, for evaluation splits too); lighting: std of AlexNet's PCA colour noise in
    training (0.1 in AlexNet and the paper's recipe; 0 = off).
    """
    manifest = load_manifest(root)
    root = Path(root)
    _check_options(manifest, root, split, train=train, loader=loader, eval_protocol=eval_protocol,
                   train_crop=train_crop, normalization=normalization, stats_split=stats_split,
                   lighting=lighting, batch_size=batch_size, rank=rank, world_size=world_size)
    view = ViewSpec(int(manifest["image_size"]), train, eval_protocol, train_crop)
    spec = LoaderSpec(
        path=root / manifest["splits"][split]["file"],
        manifest=manifest,
        root=root,
        view=view,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        num_workers=num_workers,
        device=torch.device(device),
        channels_last=channels_last,
        drop_last=train if drop_last is None else drop_last,
        normalization=normalization,
        lighting=float(lighting),
        stats_split=stats_split,
    )
    if loader == "device":
        from pipelines.device_loader import DeviceImageLoader  # it builds on this module's pieces

        return DeviceImageLoader(spec)
    return FFCVImageLoader(spec) if loader == "ffcv" else TorchImageLoader(spec)
