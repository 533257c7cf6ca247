"""What resnetctl costs over a bare PyTorch loop: per-epoch time, and the fixed cost per cell.

(a) a bare loop: the same model, loader, optimiser and evaluation, in this process;
(b) one single-worker resnetctl cell through Ray Tune + MLflow (SQLite), on a local Ray: it trains
inside its Tune trial (`tune_runner.train_in_trial`; cells of several workers add Ray Train).
Per-epoch time of (b) is measured inside the trial from one epoch's start to the next
(so it includes MLflow logging, the checkpoint and Tune's report). The fixed cost is
the time from asking Tune to run the cell to its first optimiser step, and from the last
step to Tune returning, broken down by phase. `--json` prints one JSON line instead of the table
(`start_to_first_step_s`, `last_step_to_done_s`, `epoch_ratio` = resnetctl / bare loop, ...).

    python benchmarks/overhead.py [--arch resnet20-A] [--epochs 3] [--loader torch] [--data DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# a Ray worker with 1 CPU runs with OMP_NUM_THREADS=1 (all BLAS/OpenMP pools single-threaded):
# give the bare loop the same, or it competes with idle spinning pool threads
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def make_cell(args, data: str):
    from models import parse_arch
    from orchestrator.cells import Cell, Resources, TrainConfig

    depth, _, shortcut = parse_arch(args.arch, variant="cifar")
    cfg = TrainConfig(batch_size=args.batch_size, lr=0.1, epochs=args.epochs, loader=args.loader, num_workers=0,
                      eval_protocol="full")
    return Cell(grid="overhead", arch=args.arch, depth=depth, shortcut=shortcut, variant="cifar", dataset="digits",
                dataset_path=data, seed=0, train=cfg, resources=Resources(workers_per_cell=1))


def bare_loop(cell) -> list[float]:
    """The plainest correct loop over the same data and model: train, then evaluate val and test."""
    import torch
    import torch.nn.functional as F

    import models
    import pipelines

    torch.set_num_threads(1)  # what one resnetctl worker with cpus_per_worker=1 uses
    torch.manual_seed(0)
    cfg = cell.train
    net = models.build_from_name(cell.arch, variant="cifar", num_classes=10)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    common = dict(batch_size=cfg.batch_size, loader=cfg.loader, num_workers=0, seed=0)
    train = pipelines.build_loader(cell.dataset_path, "train", train=True, **common)
    evals = [pipelines.build_loader(cell.dataset_path, s, train=False, eval_protocol="full", **common)
             for s in ("val", "test")]
    times = []
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        net.train()
        for images, labels in train:
            loss = F.cross_entropy(net(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            for loader in evals:
                wrong = sum((net(images).argmax(1) != labels).sum().item() for images, labels in loader)
                assert wrong >= 0
        times.append(time.perf_counter() - start)
    return times


class Collect:
    """Keeps every epoch's result of the one trial (Tune keeps only the last)."""

    def __new__(cls):
        from ray.tune import Callback

        class _Collect(Callback):
            def __init__(self):
                self.results = []

            def on_trial_result(self, iteration, trials, trial, result, **info):
                self.results.append(dict(result))

        return _Collect()


def resnetctl_cell(cell, work: Path, *, ray_defaults: bool = False) -> dict:
    from orchestrator import tracking, tune_runner

    t0 = time.time()
    if ray_defaults:  # what Ray gives without resnetctl's settings: dashboard, 2 s health checks, ...
        import ray

        ray.init(num_cpus=os.cpu_count(), log_to_driver=False)
    else:
        tune_runner.init_ray(num_cpus=os.cpu_count(), log_to_driver=False)
    ray_up = time.time()
    uri = tracking.resolve_tracking_uri(None, cwd=work)
    experiment_id = tracking.ensure_experiment(uri, "overhead")
    collect = Collect()
    asked = time.time()
    outcomes = tune_runner.run_cells([cell], grid_name="overhead", tracking_uri=uri, experiment_id=experiment_id,
                                     storage_path=work / "results", callbacks=[collect])
    returned = time.time()
    import ray

    ray.shutdown()
    assert outcomes[0].status == "finished", outcomes[0].error
    first, last = collect.results[0], collect.results[-1]
    return {
        "ray_init_s": ray_up - t0,
        "epoch_wall_s": [r["epoch_wall_s"] for r in collect.results],
        "epoch_compute_s": [r["epoch_time_s"] for r in collect.results],
        "phases": {
            "Tune: ask -> trial function running": first["trial_started_at"] - asked,
            "trial: its config (a TorchTrainer too, multi-worker)": first["fit_started_at"] - first["trial_started_at"],
            "Train controller + worker group (multi-worker only)": first["worker_started_at"] - first["fit_started_at"],
            "imports, model, loaders, MLflow run": first["trainer_ready_at"] - first["worker_started_at"],
            "first step": first["first_step_at"] - first["trainer_ready_at"],
        },
        "start_to_first_step_s": first["first_step_at"] - asked,
        "last_step_to_finished_s": returned - last["last_step_at"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet20-A")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--loader", default="torch", choices=["torch", "ffcv"])
    parser.add_argument("--ray-defaults", action="store_true",
                        help="start Ray with its defaults (dashboard on, default Train/Tune intervals) to compare")
    parser.add_argument("--data", default=None, help="prepared digits folder (default: prepare one in a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON line of the figures instead of the table")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="resnetctl-overhead-") as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            import pipelines

            data = str(work / "digits")
            pipelines.prepare_dataset("digits", data, num_workers=1)
        cell = make_cell(args, str(Path(data).resolve()))
        bare = bare_loop(cell)
        ours = resnetctl_cell(cell, work, ray_defaults=args.ray_defaults)

    # the first epoch carries one-off warm-up in both; compare the steady epochs
    steady = slice(1, None) if args.epochs > 1 else slice(None)
    bare_epoch = statistics.median(bare[steady])
    ours_epoch = statistics.median(ours["epoch_wall_s"][steady])
    if args.json:
        print(json.dumps({"arch": args.arch, "epochs": args.epochs, "loader": args.loader, "cpus": os.cpu_count(),
                          "start_to_first_step_s": round(ours["start_to_first_step_s"], 3),
                          "last_step_to_done_s": round(ours["last_step_to_finished_s"], 3),
                          "epoch_ratio": round(ours_epoch / bare_epoch, 4), "bare_epoch_s": round(bare_epoch, 3),
                          "resnetctl_epoch_s": round(ours_epoch, 3), "ray_init_s": round(ours["ray_init_s"], 3),
                          "phases_s": {k: round(v, 3) for k, v in ours["phases"].items()}}))
        return
    print(f"{args.arch} on digits, batch {args.batch_size}, {args.epochs} epochs, loader {args.loader}, "
          f"1 worker x 1 thread, {os.cpu_count()} CPUs, Ray {'defaults' if args.ray_defaults else 'as resnetctl sets it'}")
    print(f"per-epoch time  bare PyTorch   : {bare_epoch:7.2f} s   (epochs: {', '.join(f'{t:.2f}' for t in bare)})")
    print(f"per-epoch time  resnetctl cell : {ours_epoch:7.2f} s   "
          f"(epochs: {', '.join(f'{t:.2f}' for t in ours['epoch_wall_s'])}; "
          f"compute only: {', '.join(f'{t:.2f}' for t in ours['epoch_compute_s'])})")
    print(f"per-epoch ratio resnetctl/bare : {ours_epoch / bare_epoch:7.3f}   (target <= 1.10)")
    print(f"ray.init (once per submit)     : {ours['ray_init_s']:7.2f} s")
    print(f"fixed cost: start -> first step: {ours['start_to_first_step_s']:7.2f} s")
    for phase, seconds in ours["phases"].items():
        print(f"    {phase:<50} {seconds:6.2f} s")
    print(f"fixed cost: last step -> done  : {ours['last_step_to_finished_s']:7.2f} s   "
          "(layer responses, model logging + registration, teardown)")


if __name__ == "__main__":
    main()
