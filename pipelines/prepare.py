"""Raw dataset -> one FFCV `.beton` per split plus `manifest.json`, all or nothing.

Every file is first written under a temporary name in the target folder and renamed into place
only when all splits have been written and checked, the manifest last: a failed or interrupted
`prepare` never leaves a `.beton` that later looks whole.
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
from pipelines.sources import RawDataset, SplitSource, load_source

MANIFEST_VERSION = 1
# ImageNet statistics (0-255), used where computing them over the training set is too costly
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
WRITER_DEFAULTS: dict[str, Any] = {
    "num_workers": 2,
    "chunksize": 100,
    "page_size": None,  # None: 2 MiB for 32x32 data, 8 MiB (FFCV default) otherwise
    # ImageNet only (32x32 sets are stored raw): FFCV's ImageNet example uses 256-512 and quality 90
    "max_resolution": 256,
    "jpeg_quality": 90,
    "write_mode": "jpg",
    "compress_probability": 0.5,
    "progress": False,  # FFCV's tqdm bars on stderr
    "val_size": 5000,  # CIFAR: images held out of the training batches for validation (the paper's 45k/5k)
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
        image = RGBImageField(
            write_mode=opts["write_mode"],
            max_resolution=opts["max_resolution"],
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


def _channel_stats(source: SplitSource) -> tuple[list[float], list[float], np.ndarray | None]:
    """Per-channel mean/std (0-255) and the per-pixel mean image of an in-memory split."""
    samples = source.samples
    images = samples.images[samples.indices] if hasattr(samples, "images") else None
    if images is None:
        return list(IMAGENET_MEAN), list(IMAGENET_STD), None
    pixels = images.reshape(-1, 3).astype(np.float64)
    return pixels.mean(0).tolist(), pixels.std(0).tolist(), images.astype(np.float64).mean(0).astype(np.float32)


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
    return opts


def _manifest(raw, splits: dict[str, dict[str, Any]], source, opts: dict[str, Any], mean: list[float],
              std: list[float], extra: dict[str, Any]) -> dict[str, Any]:
    """What `manifest.json` records: the splits, the normalisation statistics, where the data came from."""
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
        "stats_from": "train split" if "mean_image_file" in extra else "standard ImageNet constants",
        "source": str(Path(source).resolve()) if source is not None else None,
        "source_checksum": raw.source_checksum,
        "split_seed": raw.split_seed,
        "writer": {
            "image_field": "raw" if raw.image_size <= 64 else opts["write_mode"],
            **{k: opts[k] for k in ("max_resolution", "jpeg_quality") if raw.image_size > 64},
            "page_size": opts["page_size"],
            "ffcv": _ffcv_version(),
        },
        "notes": raw.notes,
        **extra,
    }


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

    writer_options: num_workers, chunksize, page_size, progress, val_size (CIFAR), and for ImageNet max_resolution,
    jpeg_quality, write_mode ("jpg" | "raw" | "smart" | "proportion"), compress_probability.
    An unreadable image fails the whole prepare (nothing is skipped silently).
    """
    opts = _writer_options(root, writer_options)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder")

    raw = load_source(name, source, download=download, seed=seed, val_size=int(opts["val_size"]))
    opts["page_size"] = int(opts["page_size"] or (1 << 21 if raw.image_size <= 64 else 1 << 23))
    for split, src in raw.splits.items():
        if len(src.samples) == 0:
            raise DatasetError(f"{source or name}: split '{split}' is empty")

    root.mkdir(parents=True, exist_ok=True)
    tag = f".tmp-{os.getpid()}-{time.monotonic_ns()}"
    pending: list[tuple[Path, Path]] = []  # (temporary, final)
    try:
        splits: dict[str, dict[str, Any]] = {}
        for split, src in raw.splits.items():
            final = root / f"{split}.beton"
            tmp = root / f".{split}.beton{tag}"
            pending.append((tmp, final))
            _write_split(split, src, tmp, raw, opts)
            splits[split] = {"count": len(src.samples), "file": final.name}

        mean, std, mean_image = _channel_stats(raw.splits["train"])
        extra: dict[str, Any] = {}
        if mean_image is not None:
            final = root / "mean_image.npy"
            tmp = root / f".mean_image{tag}.npy"
            pending.append((tmp, final))
            np.save(tmp, mean_image)
            extra["mean_image_file"] = final.name

        manifest = _manifest(raw, splits, source, opts, mean, std, extra)
        tmp = root / f".{MANIFEST_NAME}{tag}"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        pending.append((tmp, root / MANIFEST_NAME))
        for tmp_path, final_path in pending:
            os.replace(tmp_path, final_path)
        pending.clear()
        return manifest
    finally:
        for tmp_path, _ in pending:
            tmp_path.unlink(missing_ok=True)


def _ffcv_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ffcv")
    except PackageNotFoundError:
        return "unknown"
