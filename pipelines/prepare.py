"""Raw dataset -> one FFCV `.beton` per split plus `manifest.json`, all or nothing.

Every file is first written under a temporary name in the target folder and renamed into place
only when all splits have been written and checked, the manifest last: a failed or interrupted
`prepare` never leaves a `.beton` that later looks whole.

Beside the splits it stores what the paper normalises with (Sec. 3.4, 4.2: "the per-pixel mean
subtracted"): for each split a cell may train on, the mean image of that split. For 32x32 data it is
the exact mean of the stored images. For ImageNet it is the mean, over a seeded sample of training
images (`mean_sample`, recorded in the manifest), of each image's centre square of the whole shorter
side resized to 256x256: the view the "full" protocol decodes, whose centre 224 square is the
"center" view (the loaders derive every view's mean from it). Per-channel mean/std (the `channel`
normalisation) come from the train split for 32x32 data and are torchvision's constants for ImageNet.

ImageNet images are stored by their shorter side (`shorter_side`, default 480: the paper's largest
training scale), shrunk as they are read and never enlarged; FFCV's `max_resolution`, which caps the
longer side, is left off.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from tqdm import tqdm

from pipelines.manifest import MANIFEST_NAME, DatasetError
from pipelines.sources import ArraySamples, RawDataset, SplitSource, load_source

MANIFEST_VERSION = 2  # 2: per-split mean images, trainval (CIFAR), ImageNet stored by its shorter side
MEAN_IMAGE_SIDE = 256  # ImageNet: the mean image is of the centre square at this side (the "full" view)
MEAN_CHUNK = 2048  # images summed at a time (float64), so a 50k split never needs a 1 GB copy
# ImageNet statistics (0-255), used where computing them over the training set is too costly
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
WRITER_DEFAULTS: dict[str, Any] = {
    "num_workers": 2,
    "chunksize": 100,
    "page_size": None,  # None: 2 MiB for 32x32 data, 8 MiB (FFCV default) otherwise
    # ImageNet only (32x32 sets are stored raw): shorter side of the stored images (larger ones shrunk to it,
    # smaller ones kept; 480 = the paper's largest training scale, so training never upsamples a stored image
    # that was larger), JPEG quality 90 as in FFCV's ImageNet example
    "shorter_side": 480,
    "jpeg_quality": 90,
    "write_mode": "jpg",
    "compress_probability": 0.5,
    "progress": False,  # FFCV's tqdm bars on stderr
    "val_size": 5000,  # CIFAR: images held out of the training batches for validation (the paper's 45k/5k)
    "mean_sample": 10_000,  # ImageNet: training images (seeded sample) averaged into the per-pixel mean image
    "holdout_size": 0,  # ImageNet: training images set apart as a `holdout` split (train.plateau_split: holdout)
}


class _GuardedSamples(Sequence):
    """Samples for FFCV's writer processes that never raise.

    FFCV's writer waits forever for a sample count that a crashed worker never reports, so a bad
    image is replaced by a black pixel and flagged in shared memory; the caller fails afterwards.
    """

    def __init__(self, samples: Sequence, flags):
        self.samples = samples
        self.flags = flags

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        try:
            image, label = self.samples[i]
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
                raise ValueError(f"image {image.shape} {image.dtype} is not HxWx3 uint8")
            return image, int(label)
        except Exception:  # reported by the parent as DatasetError with the path
            self.flags[i] = 1
            return np.zeros((1, 1, 3), np.uint8), 0


def _fields(raw: RawDataset, opts: dict[str, Any]):
    from ffcv.fields import IntField, RGBImageField

    if raw.image_size <= 64:  # small images: raw pixels, the fastest to decode and bit-exact
        image = RGBImageField(write_mode="raw")
    else:
        image = RGBImageField(  # already sized by the reader (shorter_side): no cap on the longer side here
            write_mode=opts["write_mode"],
            max_resolution=None,
            jpeg_quality=opts["jpeg_quality"],
            compress_probability=opts["compress_probability"],
        )
    return {"image": image, "label": IntField()}


def _write_split(split: str, source: SplitSource, path: Path, raw: RawDataset, opts: dict[str, Any]) -> None:
    from ffcv.writer import DatasetWriter

    flags = multiprocessing.RawArray("b", len(source.samples))
    guarded = _GuardedSamples(source.samples, flags)
    writer = DatasetWriter(str(path), _fields(raw, opts), page_size=opts["page_size"], num_workers=opts["num_workers"])
    if opts["progress"]:
        writer.from_indexed_dataset(guarded, chunksize=opts["chunksize"])
    else:  # FFCV's writer has no switch for its progress bar
        with mock.patch("ffcv.writer.tqdm", functools.partial(tqdm, disable=True)):
            writer.from_indexed_dataset(guarded, chunksize=opts["chunksize"])
    bad = np.flatnonzero(np.frombuffer(flags, dtype=np.int8))
    if len(bad):
        where = [source.paths[i] if source.paths else f"{split}[{i}]" for i in bad[:5]]
        # re-read the first bad sample in this process for the exact reason
        reason = ""
        try:
            source.samples[int(bad[0])]
        except Exception as exc:
            reason = f": {exc}"
        raise DatasetError(
            f"{where[0]}: unreadable image; {len(bad)} bad image(s) in split '{split}' "
            f"({', '.join(map(str, where))}){reason}. Nothing was written: remove or replace them and rerun."
        )


def _array_moments(samples: ArraySamples) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and mean square (float64, H x W x C, 0-255) of an in-memory split."""
    total = np.zeros(samples.images.shape[1:], np.float64)
    squares = np.zeros_like(total)
    for start in range(0, len(samples.indices), MEAN_CHUNK):
        chunk = samples.images[samples.indices[start:start + MEAN_CHUNK]].astype(np.float64)
        total += chunk.sum(0)
        squares += np.square(chunk).sum(0)
    return total / len(samples.indices), squares / len(samples.indices)


def _sampled_mean_image(source: SplitSource, sample: int, seed: int) -> tuple[np.ndarray, int]:
    """ImageNet: the mean of a seeded sample's centre squares (whole shorter side) at MEAN_IMAGE_SIDE; (image, n)."""
    import cv2

    from pipelines.augment import center_crop

    count = len(source.samples)
    picks = np.sort(np.random.default_rng(seed).choice(count, size=min(count, sample), replace=False))
    total = np.zeros((MEAN_IMAGE_SIDE, MEAN_IMAGE_SIDE, 3), np.float64)
    for index in picks:
        image, _ = source.samples[int(index)]
        i, j, h, w = center_crop(*image.shape[:2], 1.0)
        total += cv2.resize(image[i:i + h, j:j + w], (MEAN_IMAGE_SIDE, MEAN_IMAGE_SIDE), interpolation=cv2.INTER_AREA)
    return total / len(picks), len(picks)


def _statistics(raw: RawDataset, opts: dict[str, Any], seed: int):
    """Per-channel mean/std (0-255), where they come from, and {split: (mean image, images averaged)}."""
    means: dict[str, tuple[np.ndarray, int]] = {}
    mean, std, stats_from = list(IMAGENET_MEAN), list(IMAGENET_STD), "standard ImageNet constants"
    for split in raw.train_splits:
        samples = raw.splits[split].samples
        if isinstance(samples, ArraySamples):
            image, squares = _array_moments(samples)
            means[split] = (image, len(samples))
            if split == "train":
                channel_mean = image.reshape(-1, 3).mean(0)
                channel_var = squares.reshape(-1, 3).mean(0) - np.square(channel_mean)
                mean, std = channel_mean.tolist(), np.sqrt(np.maximum(channel_var, 0)).tolist()
                stats_from = "train split"
        else:
            means[split] = _sampled_mean_image(raw.splits[split], int(opts["mean_sample"]), seed)
    return mean, std, stats_from, means


def _writer_options(root, writer_options: dict[str, Any]) -> dict[str, Any]:
    """The writer defaults with the caller's options, or DatasetError naming the first bad one."""
    unknown = sorted(set(writer_options) - set(WRITER_DEFAULTS))
    if unknown:
        raise DatasetError(f"{root}: unknown writer option(s) {', '.join(unknown)} (known: {', '.join(WRITER_DEFAULTS)})")
    opts = {**WRITER_DEFAULTS, **writer_options}
    if opts["write_mode"] not in ("jpg", "raw", "smart", "proportion"):
        raise DatasetError(f"{root}: write_mode must be jpg, raw, smart or proportion, not {opts['write_mode']!r}")
    if not 1 <= int(opts["jpeg_quality"]) <= 100:
        raise DatasetError(f"{root}: jpeg_quality must be in 1..100, not {opts['jpeg_quality']}")
    if int(opts["shorter_side"]) < 1 or int(opts["mean_sample"]) < 1:
        raise DatasetError(f"{root}: shorter_side and mean_sample must be positive")
    return opts


def _manifest(raw, splits: dict[str, dict[str, Any]], source, opts: dict[str, Any], mean: list[float],
              std: list[float], extra: dict[str, Any]) -> dict[str, Any]:
    """What `manifest.json` records: the splits, the normalisation statistics, where the data came from.

    A split a cell may train on also names its mean image (`mean_image_file`, H x W x C float32, 0-255)
    and how many images were averaged into it (`mean_image_count`).
    """
    return {
        "manifest_version": MANIFEST_VERSION,
        "dataset": raw.name,
        "num_classes": len(raw.classes),
        "image_size": raw.image_size,
        "classes": raw.classes,
        "splits": splits,
        "test_split": raw.notes.get("test_split", "test"),
        "mean": mean,
        "std": std,
        "mean_image_view": f"the stored {raw.image_size}x{raw.image_size} image" if raw.image_size <= 64 else (
            f"centre square of the whole shorter side, resized to {MEAN_IMAGE_SIDE}x{MEAN_IMAGE_SIDE}; a seeded "
            f"sample of at most {opts['mean_sample']} training images"),
        "source": str(Path(source).resolve()) if source is not None else None,
        "source_checksum": raw.source_checksum,
        "split_seed": raw.split_seed,
        "writer": {
            "image_field": "raw" if raw.image_size <= 64 else opts["write_mode"],
            **{k: opts[k] for k in ("shorter_side", "jpeg_quality") if raw.image_size > 64},
            "page_size": opts["page_size"],
            "ffcv": _ffcv_version(),
        },
        "notes": raw.notes,
        **extra,
    }


class StagedFiles:
    """A prepared folder's files, written under temporary names and renamed into place together, the
    manifest last (`commit`): a preparation that fails or is killed leaves no temporary and never a
    manifest naming a half-written file. FFCV splits and detection splits are prepared alike."""

    def __init__(self, root: Path):
        self.root = root
        self.tag = f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        self.pending: list[tuple[Path, Path]] = []  # (temporary, final)

    def stage(self, name: str, suffix: str = "") -> Path:
        """Where to write `root/<name><suffix>` for now (the suffix stays last: np.save appends .npy)."""
        tmp = self.root / f".{name}{self.tag}{suffix}"
        self.pending.append((tmp, self.root / f"{name}{suffix}"))
        return tmp

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write the manifest, then rename every staged file into place; the manifest."""
        self.stage(MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        for tmp, final in self.pending:
            os.replace(tmp, final)
        self.pending.clear()
        return manifest

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, *exc_info) -> None:
        for tmp, _ in self.pending:  # what a failure left behind
            tmp.unlink(missing_ok=True)


def prepare_dataset(
    name: str,
    root: str | Path,
    *,
    source: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    **writer_options: Any,
) -> dict:
    """Write `root/<split>.beton` for each split and `root/manifest.json`; return the manifest.

    writer_options: num_workers, chunksize, page_size, progress, val_size (CIFAR; 0: no val, trainval = train),
    and for ImageNet shorter_side, mean_sample, jpeg_quality, write_mode ("jpg" | "raw" | "smart" |
    "proportion"), compress_probability. `seed` splits CIFAR's val off and draws ImageNet's mean-image sample.
    An unreadable image fails the whole prepare (nothing is skipped silently).
    """
    opts = _writer_options(root, writer_options)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder")

    raw = load_source(name, source, download=download, seed=seed, val_size=int(opts["val_size"]),
                      shorter_side=int(opts["shorter_side"]), holdout_size=int(opts["holdout_size"]))
    opts["page_size"] = int(opts["page_size"] or (1 << 21 if raw.image_size <= 64 else 1 << 23))
    for split, src in raw.splits.items():
        if len(src.samples) == 0:
            raise DatasetError(f"{source or name}: split '{split}' is empty")

    root.mkdir(parents=True, exist_ok=True)
    with StagedFiles(root) as staged:
        splits: dict[str, dict[str, Any]] = {}
        for split, src in raw.splits.items():
            _write_split(split, src, staged.stage(f"{split}.beton"), raw, opts)
            splits[split] = {"count": len(src.samples), "file": f"{split}.beton"}

        mean, std, stats_from, mean_images = _statistics(raw, opts, seed)
        for split, (image, count) in mean_images.items():
            np.save(staged.stage(f"{split}_mean_image", ".npy"), image.astype(np.float32))
            splits[split].update(mean_image_file=f"{split}_mean_image.npy", mean_image_count=count)
        for alias, split in raw.aliases.items():
            splits[alias] = dict(splits[split])

        return staged.commit(_manifest(raw, splits, source, opts, mean, std, {"stats_from": stats_from}))


def _ffcv_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ffcv")
    except PackageNotFoundError:
        return "unknown"
