"""Raw datasets as in-memory or on-disk sources, each split a sequence of (HxWx3 uint8 image, label).

The readers use the libraries' own dataset classes (scikit-learn's digits, torchvision's
ImageFolder; CIFAR's pickles through `pipelines.safe_pickle`, which never runs code from a file)
and turn every way the input can be wrong into one `DatasetError` that names the path and the
problem, before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.catalog import DATASETS
from pipelines.manifest import DatasetError
from pipelines.safe_pickle import CifarPickleError, read_cifar_split

# torchvision's ImageFolder extensions (IMG_EXTENSIONS), matched case-insensitively
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class SplitSource:
    """One split: an indexable of (image, label) plus what the manifest needs to know about it."""

    samples: Sequence[tuple[Any, int]]
    paths: list[str] | None = None  # per-sample source files (ImageNet), for error messages


@dataclass
class RawDataset:
    name: str
    classes: list[str]
    image_size: int  # the network's input side: 32 for CIFAR/digits, 224 for ImageNet
    splits: dict[str, SplitSource]
    source_checksum: str
    split_seed: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    # the splits a cell may train on (each gets its own per-pixel mean image), and splits that are another
    # split's file under a second name (CIFAR prepared with no val: trainval is train)
    train_splits: tuple[str, ...] = ("train",)
    aliases: dict[str, str] = field(default_factory=dict)


class ArraySamples(Sequence):
    """(HxWx3 uint8, int) pairs over two aligned arrays, optionally through an index subset."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None):
        self.images = images
        self.labels = labels
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        j = int(self.indices[i])
        return np.ascontiguousarray(self.images[j]), int(self.labels[j])


def seeded_holdout(n: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split range(n) into (kept, held out) with a seeded permutation; both sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[holdout:]), np.sort(perm[:holdout])


def _sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# --------------------------------------------------------------------------- digits


def load_digits_source(seed: int = 0, *, val_fraction: float = 0.1, test_fraction: float = 0.2) -> RawDataset:
    """scikit-learn's bundled 8x8 handwritten digits, upscaled to 32x32 RGB: real data, no download."""
    import cv2
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = (bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    big = np.stack([cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR) for img in small])
    images = np.repeat(big[..., None], 3, axis=3)
    labels = bunch.target.astype(np.int64)
    n = len(images)
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    digest = hashlib.sha256(np.ascontiguousarray(bunch.images).tobytes()).hexdigest()
    return RawDataset(
        name="digits",
        classes=[str(c) for c in bunch.target_names],
        image_size=32,
        splits={
            "train": SplitSource(ArraySamples(images, labels, np.sort(train))),
            "val": SplitSource(ArraySamples(images, labels, np.sort(val))),
            "test": SplitSource(ArraySamples(images, labels, np.sort(test))),
        },
        source_checksum="sha256:" + digest,
        split_seed=seed,
        notes={"source": "sklearn.datasets.load_digits (8x8 upscaled to 32x32 RGB)"},
    )


# --------------------------------------------------------------------------- CIFAR


def _cifar_class(name: str):
    """torchvision's class: the layout (folder, file names, meta key) and where the official archive is.

    It is never instantiated: it would unpickle the batches with the stock unpickler, which runs whatever
    a planted file asks for. `pipelines.safe_pickle` reads them; re-packed or test-written batches in the
    exact layout load (we check structure ourselves and record our own checksum).
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR10 if name == "cifar10" else CIFAR100


def _download_cifar(base, source: Path) -> None:
    """torchvision's download of the official archive, checked against its md5 before it is extracted."""
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    folder = source / base.base_folder
    if not all(check_integrity(str(folder / f), md5) for f, md5 in base.train_list + base.test_list):
        download_and_extract_archive(base.url, str(source), filename=base.filename, md5=base.tgz_md5)


def load_cifar_source(name: str, source: Path, *, download: bool, seed: int, val_size: int = 5000) -> RawDataset:
    """The `cifar-10-batches-py` / `cifar-100-python` pickles via torchvision; the paper's seeded 45k/5k split.

    Besides train (45k) and val (5k) it offers trainval, every training image: the paper chose its
    schedule on 45k/5k and trained Table 6's models on all 50k. With val_size 0 there is no val and
    trainval is train under a second name.
    """
    base = _cifar_class(name)
    if download:
        source.mkdir(parents=True, exist_ok=True)
        try:
            _download_cifar(base, source)
        except Exception as exc:  # network errors come in many types
            raise DatasetError(f"{source}: downloading {name} failed ({exc})") from exc
    if not source.is_dir():
        raise DatasetError(f"{source}: source folder does not exist")
    folder = source / base.base_folder
    if not folder.is_dir():
        raise DatasetError(
            f"{source}: not a {name} source: expected the folder '{base.base_folder}' inside it "
            f"(the python-pickle layout); use --download where a network is available"
        )
    files = [f for f, _ in base.train_list + base.test_list] + [base.meta["filename"]]
    for fname in files:
        if not (folder / fname).is_file():
            raise DatasetError(f"{folder / fname}: missing file of the {name} pickle layout")
    parts = {}
    for train in (True, False):
        batches = [f for f, _ in (base.train_list if train else base.test_list)]
        try:
            data, targets, classes = read_cifar_split(folder, batches, base.meta["filename"], base.meta["key"])
        except CifarPickleError as exc:
            raise DatasetError(f"{exc.path}: unreadable {name} pickle ({exc})") from None
        except OSError as exc:
            raise DatasetError(f"{folder}: unreadable {name} pickle ({exc.strerror or exc})") from None
        if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (32, 32, 3) or len(data) != len(targets):
            raise DatasetError(f"{folder}: {name} batches hold {data.shape} {data.dtype}, expected N x 3072 uint8")
        parts[train] = (data, targets, classes)
    train_x, train_y, classes = parts[True]
    test_x, test_y, _ = parts[False]
    for labels, split in ((train_y, "train"), (test_y, "test")):
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DatasetError(f"{folder}: {split} labels outside 0..{len(classes) - 1}")
    if val_size < 0 or len(train_x) <= val_size:
        raise DatasetError(f"{folder}: {len(train_x)} training images, need more than the {val_size} held out for val")
    kept, held = seeded_holdout(len(train_x), val_size, seed)
    splits = {"train": SplitSource(ArraySamples(train_x, train_y, kept))}
    if val_size:
        splits["val"] = SplitSource(ArraySamples(train_x, train_y, held))
        splits["trainval"] = SplitSource(ArraySamples(train_x, train_y))
    splits["test"] = SplitSource(ArraySamples(test_x, test_y))
    return RawDataset(
        name=name,
        classes=classes,
        image_size=32,
        splits=splits,
        source_checksum=_sha256_files([folder / f for f in files]),
        split_seed=seed,
        notes={"val_from": "train", "val_size": val_size},
        train_splits=("train", "trainval") if val_size else ("train",),
        aliases={} if val_size else {"trainval": "train"},
    )


# --------------------------------------------------------------------------- ImageNet-style folder


def shrink_to_shorter_side(image: np.ndarray, shorter_side: int | None) -> np.ndarray:
    """`image` resized (area filter) so that its shorter side is `shorter_side`; never enlarged.

    FFCV's own `max_resolution` caps the longer side: 256 would store a 4:3 photo at 256x192, and the
    paper's scale augmentation (shorter side 256..480) would then upsample every training image.
    """
    import cv2

    height, width = image.shape[:2]
    shorter = min(height, width)
    if shorter_side is None or shorter <= shorter_side:
        return image
    size = (shorter_side, max(1, round(width * shorter_side / height))) if height <= width else \
        (max(1, round(height * shorter_side / width)), shorter_side)
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


class DecodedFolder(Sequence):
    """ImageFolder samples decoded to HxWx3 uint8 RGB with PIL, shrunk to `shorter_side`; a bad file raises DatasetError."""

    def __init__(self, samples: list[tuple[str, int]], shorter_side: int | None = None):
        self.samples = samples
        self.shorter_side = shorter_side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            raise DatasetError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
        return shrink_to_shorter_side(rgb, self.shorter_side), int(label)


def load_imagenet_source(source: Path, shorter_side: int | None = None, *, holdout_size: int = 0,
                         seed: int = 0) -> RawDataset:
    """`train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` through torchvision's ImageFolder; val doubles as test.

    Images whose shorter side exceeds `shorter_side` are shrunk to it as they are read (None: kept as they are).
    `holdout_size` training images (a seeded choice) become a `holdout` split, taken out of `train`: a
    plateau rule can then decide on images that are neither trained on nor the test set (the paper used val).
    """
    from torchvision.datasets import ImageFolder

    if not source.is_dir():
        raise DatasetError(f"{source}: source folder does not exist")
    splits: dict[str, SplitSource] = {}
    classes: list[str] | None = None
    listed: list[Path] = []
    for split in ("train", "val"):
        if not (source / split).is_dir():
            raise DatasetError(f"{source}: not an ImageNet-style folder: '{split}/<class>/*.JPEG' is missing")
    for split in ("train", "val"):
        folder = source / split
        class_dirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not class_dirs:
            raise DatasetError(f"{folder}: no class folders (expected {split}/<wnid>/*.JPEG)")
        for cls in class_dirs:
            if not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in (folder / cls).iterdir() if f.is_file()):
                raise DatasetError(f"{folder / cls}: empty class (no image files)")
        if classes is None:
            classes = class_dirs
        elif class_dirs != classes:
            missing = sorted(set(classes) ^ set(class_dirs))
            raise DatasetError(f"{folder}: class folders differ from train/ ({', '.join(missing[:5])})")
        dataset = ImageFolder(str(folder), loader=str)  # list only; DecodedFolder decodes
        splits[split] = SplitSource(DecodedFolder(list(dataset.samples), shorter_side),
                                    paths=[p for p, _ in dataset.samples])
        listed.extend(Path(p) for p, _ in dataset.samples)
    assert classes is not None
    if holdout_size:
        splits["train"], splits["holdout"] = _hold_out(splits["train"], holdout_size, seed, shorter_side)
    digest = hashlib.sha256()
    for path in listed:  # names and sizes: cheap, and changes when files are added, removed or replaced
        digest.update(f"{path.relative_to(source)}:{path.stat().st_size}\n".encode())
    return RawDataset(
        name="imagenet",
        classes=classes,
        image_size=224,
        splits=splits,
        source_checksum="sha256-listing:" + digest.hexdigest(),
        notes={"test_split": "val", "test_note": "ImageNet's val set doubles as the test set",
               **({"holdout_from": "train", "holdout_size": holdout_size} if holdout_size else {})},
        split_seed=seed if holdout_size else None,
    )


def _hold_out(train: SplitSource, size: int, seed: int, shorter_side: int | None) -> tuple[SplitSource, SplitSource]:
    """(train without the held-out images, the held-out images), a seeded choice of `size` training images."""
    samples = train.samples.samples
    if not 0 < size < len(samples):
        raise DatasetError(f"holdout size {size}: must be between 1 and {len(samples) - 1} (the training images)")
    kept, held = seeded_holdout(len(samples), size, seed)
    parts = []
    for indices in (kept, held):
        chosen = [samples[int(i)] for i in indices]
        parts.append(SplitSource(DecodedFolder(chosen, shorter_side), paths=[p for p, _ in chosen]))
    return parts[0], parts[1]


def load_source(
    name: str, source: str | Path | None, *, download: bool, seed: int, val_size: int = 5000,
    shorter_side: int | None = None, holdout_size: int = 0,
) -> RawDataset:
    if name not in DATASETS:
        raise DatasetError(f"{name}: unknown dataset (choose from {', '.join(DATASETS)})")
    if holdout_size and name != "imagenet":
        raise DatasetError(f"{name}: --holdout-size is for ImageNet (CIFAR's val is already held out of train)")
    if name == "digits":
        return load_digits_source(seed)
    if source is None:
        raise DatasetError(f"{name}: needs a source folder (--source)")
    if name in ("cifar10", "cifar100"):
        return load_cifar_source(name, Path(source), download=download, seed=seed, val_size=val_size)
    if download:
        raise DatasetError(f"{source}: ImageNet cannot be downloaded; point --source at an ImageNet-style folder")
    return load_imagenet_source(Path(source), shorter_side, holdout_size=holdout_size, seed=seed)
