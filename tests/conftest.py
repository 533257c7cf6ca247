"""Suite-wide settings (no telemetry, no usage stats, quiet Ray, non-interactive plotting) and shared fixtures."""

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# the suite must never pick up a developer's cluster or tracking server by accident
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)


_TINY_GRID = """\
name: {name}
dataset:
  name: digits
  path: {data}
grid:
  depth: [8]
  shortcut: [A]
  seed: {seeds}
train:
  epochs: {epochs}
  batch_size: 64
  max_train_batches: {batches}
  loader: torch
  num_workers: 0
  eval_protocol: full
resources:
  workers_per_cell: 1
  cpus_per_worker: 1
  max_concurrent_cells: 1
"""


@pytest.fixture(scope="session")
def tiny_digits_grid():
    """Writes a grid of resnet8-A cells on prepared digits (torch loader, 1 worker x 1 CPU); returns its path.

    19 batches is the whole digits train split: an epoch takes a few seconds, so a fault test's
    kill lands inside one.
    """
    def write(path, *, name: str, data, seeds=(0,), epochs: int = 3, batches: int = 19):
        path.write_text(_TINY_GRID.format(name=name, data=data, seeds=list(seeds), epochs=epochs, batches=batches))
        return path

    return write


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory):
    """A prepared ImageNet-style folder: 2 classes, 3 train and 2 val JPEGs each (val labels 0, 0, 1, 1)."""
    import numpy as np
    from PIL import Image

    from pipelines import prepare_dataset

    sizes = [(300, 260), (260, 340), (320, 300)]  # (height, width) before the 256 max-side resize
    base = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 2)):
        for c, cls in enumerate(("n01440764", "n01443537")):
            (base / "raw" / split / cls).mkdir(parents=True)
            for k in range(per_class):
                h, w = sizes[k]
                # smooth colour ramps (JPEG-friendly) with a class-dependent tint
                yy, xx = np.mgrid[0:h, 0:w]
                pixels = np.stack([(yy * 255 // h), (xx * 255 // w), np.full_like(yy, 60 + 120 * c)], -1)
                pixels = (pixels + rng.integers(0, 8, size=pixels.shape)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(base / "raw" / split / cls / f"{cls}_{k}.JPEG", quality=92)
    root = base / "prepared"
    prepare_dataset("imagenet", root, source=base / "raw", num_workers=1)
    return root
