"""MLflow logging cost: resnetctl's one `log_batch` per epoch vs one `mlflow.log_metric` per value.

Both write the same per-epoch metrics (conventions.EPOCH_METRICS) for the same number of
epochs into a fresh SQLite store; the ratio is what batching saves per epoch of a cell.

    python benchmarks/mlflow_logging.py [--epochs 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def per_metric_calls(uri: str, experiment: str, epochs: int, metrics: list[str]) -> float:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run():
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            for i, key in enumerate(metrics):
                mlflow.log_metric(key, 1.0 / (epoch + i), step=epoch)
        return time.perf_counter() - start


def resnetctl_batches(uri: str, experiment: str, epochs: int, metrics: list[str]) -> float:
    from orchestrator import tracking
    from orchestrator.cells import Cell, TrainConfig

    experiment_id = tracking.ensure_experiment(uri, experiment)
    cell = Cell(grid=experiment, arch="resnet20-A", depth=20, shortcut="A", variant="cifar", dataset="digits",
                dataset_path="/data", seed=0, train=TrainConfig(batch_size=64, lr=0.1, epochs=epochs))
    run_id = tracking.open_cell_run(uri, experiment_id, cell)
    logger = tracking.CellRunLogger(uri, run_id)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        logger.log_epoch(epoch, {key: 1.0 / (epoch + i) for i, key in enumerate(metrics)})
    return time.perf_counter() - start


def main() -> None:
    from orchestrator import conventions as cv

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    metrics = list(cv.EPOCH_METRICS)
    with tempfile.TemporaryDirectory(prefix="resnetctl-logging-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        from orchestrator import tracking

        tracking.ensure_experiment(uri, "warm-up")  # schema creation is not part of either timing
        ours = resnetctl_batches(uri, "batched", args.epochs, metrics)
        theirs = per_metric_calls(uri, "per-metric", args.epochs, metrics)
    n = args.epochs * len(metrics)
    print(f"{args.epochs} epochs x {len(metrics)} metrics = {n} values into SQLite")
    print(f"log_batch per epoch (resnetctl)  : {ours:7.2f} s  ({1000 * ours / args.epochs:6.1f} ms/epoch)")
    print(f"log_metric per value             : {theirs:7.2f} s  ({1000 * theirs / args.epochs:6.1f} ms/epoch)")
    print(f"speed-up per-metric / batched    : {theirs / ours:7.1f} x")


if __name__ == "__main__":
    main()
