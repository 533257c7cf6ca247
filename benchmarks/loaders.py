"""FFCV Loader vs torchvision-style DataLoader vs device-resident data: training images/s on the same data, one run.

    .venv/bin/python benchmarks/loaders.py [--small 20000] [--large 1500] [--workers 2] [--epochs 2] [--min-seconds 8]
                                           [--json]

Writes a CIFAR-style set (32x32, the CIFAR pickle layout read by torchvision) and an ImageNet-style
JPEG folder (about 500x375 images, as ImageNet's) into a temporary folder, prepares both with
`pipelines.prepare_dataset`, then times full training epochs (paper augmentation, batch 256 / 64)
through `build_loader(loader="ffcv")` and `build_loader(loader="torch")` with the same number of
workers (FFCV: numba threads; torch: DataLoader processes). The first FFCV epoch, which pays the
numba compile, is reported separately and left out of the rate. `tv-ref` is the obvious
alternative: torchvision's own datasets (CIFAR10 pickles, ImageFolder JPEGs) with PIL transforms in
a DataLoader, as torchvision's reference training scripts load data. On the 32x32 set, `device` is
`build_loader(loader="device")`, the whole split as one uint8 tensor on the device (here the CPU) and
every batch a gather plus batched torch ops (airbench's approach; ImageNet-size data refuse it); its
first epoch includes reading the split into memory. Ratios are printed against FFCV; `--json` prints
one JSON line of rows instead of the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, benchmarks/ is sys.path[0]: keep its modules (e.g. benchmarks/logging.py)
# from shadowing the standard library; import the project from the repository root instead
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from pipelines import build_loader, prepare_dataset  # noqa: E402


def write_cifar_like(parent: Path, n: int, rng: np.random.Generator) -> None:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    per = n // 5
    for name, count in [(f"data_batch_{b}", per) for b in range(1, 6)] + [("test_batch", max(per // 5, 1))]:
        entry = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, count).tolist()}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=4))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))


def write_imagenet_like(parent: Path, n: int, rng: np.random.Generator) -> None:
    from PIL import Image

    for split, count in (("train", n), ("val", max(n // 10, 2))):
        for k in range(count):
            cls = f"n{k % 10:08d}"
            (parent / split / cls).mkdir(parents=True, exist_ok=True)
            h, w = (375, 500) if k % 2 else (500, 375)
            yy, xx = np.mgrid[0:h, 0:w]
            base = np.stack([yy * 255 // h, xx * 255 // w, np.full_like(yy, 25 * (k % 10))], -1)
            noise = rng.integers(0, 40, size=(h, w, 3))
            Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)).save(parent / split / cls / f"{k}.JPEG", quality=90)


def torchvision_reference_loader(raw: Path, kind: str, batch_size: int, workers: int):
    """The obvious alternative: torchvision datasets + PIL transforms in a DataLoader, as its reference scripts do."""
    import torch
    import torchvision
    from torchvision import transforms as T

    normalize = T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    if kind == "cifar":
        class CIFAR10(torchvision.datasets.CIFAR10):  # minus the official md5s: the batches are written here
            def _check_integrity(self) -> bool:
                return True

            def _load_meta(self) -> None:
                self.classes = [str(i) for i in range(10)]

        augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
        dataset = CIFAR10(str(raw), train=True, transform=augment)
    else:
        augment = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
        dataset = torchvision.datasets.ImageFolder(str(raw / "train"), transform=augment)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=workers, persistent_workers=workers > 0)


def time_epochs(make_loader, epochs: int, min_seconds: float) -> tuple[float, float]:
    """(seconds to build the loader and finish its first epoch, images/s over the later epochs).

    Times at least `epochs` whole epochs and at least `min_seconds`: a 32x32 epoch through FFCV
    takes a fraction of a second, too short to measure alone.
    """
    start = time.perf_counter()
    loader = make_loader()
    for _ in loader:
        pass
    first = time.perf_counter() - start
    start, images, done = time.perf_counter(), 0, 0
    while done < epochs or time.perf_counter() - start < min_seconds:
        for x, _ in loader:
            images += len(x)
        done += 1
    return first, images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20000, help="CIFAR-style training images")
    parser.add_argument("--large", type=int, default=1500, help="ImageNet-style training JPEGs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the first (at least)")
    parser.add_argument("--min-seconds", type=float, default=8.0, help="time each loader at least this long")
    parser.add_argument("--json", action="store_true", help="one JSON line of rows instead of the table")
    args = parser.parse_args()
    say = (lambda *_: None) if args.json else print
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="resnetctl-bench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        write_cifar_like(tmp / "cifar-raw", args.small + 1000, rng)
        prepare_dataset("cifar10", tmp / "cifar", source=tmp / "cifar-raw", val_size=1000, num_workers=args.workers)
        write_imagenet_like(tmp / "imagenet-raw", args.large, rng)
        prepare_dataset("imagenet", tmp / "imagenet", source=tmp / "imagenet-raw", num_workers=args.workers)
        say(f"data written and prepared in {time.perf_counter() - t:.0f} s")
        say(f"{'data':<28}{'loader':<8}{'first epoch s':>14}{'images/s':>12}")
        for label, kind, root, raw, batch in (
            ("32x32 pad+crop+flip, b256", "cifar", tmp / "cifar", tmp / "cifar-raw", 256),
            ("JPEG scale-aug 224, b64", "imagenet", tmp / "imagenet", tmp / "imagenet-raw", 64),
        ):
            # resnetctl's paths over the prepared .beton files (device: 32x32 data only)
            ours = ("ffcv", "torch", "device") if kind == "cifar" else ("ffcv", "torch")
            makers = {
                **{name: lambda root=root, batch=batch, name=name: build_loader(
                    root, "train", batch_size=batch, train=True, loader=name, num_workers=args.workers)
                   for name in ours},
                # the obvious alternative over the raw files
                "tv-ref": lambda raw=raw, kind=kind, batch=batch: torchvision_reference_loader(
                    raw, kind, batch, args.workers),
            }
            rates = {}
            for name, make in makers.items():
                first, rates[name] = time_epochs(make, args.epochs, args.min_seconds)
                say(f"{label:<28}{name:<8}{first:>14.1f}{rates[name]:>12.0f}")
                rows.append({"data": label, "loader": name, "first_epoch_s": first, "images_per_s": rates[name]})
            for name in rates:
                if name != "ffcv":
                    say(f"{label:<28}{name + '/ffcv':<12}{rates[name] / rates['ffcv']:>22.2f}x")
    if args.json:
        print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
