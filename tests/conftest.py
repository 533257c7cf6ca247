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
