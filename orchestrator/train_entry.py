"""What one Ray Train worker runs for a cell: the `training.Trainer`, checkpointed into Ray, tracked in MLflow.

This is Ray's "[1] the worker code" (the Tune trial in `tune_runner.py` is "[2] the function that
launches the run"): it restores from `ray.train.get_checkpoint()`, reports metrics plus a checkpoint
each epoch, and has rank 0 alone write to MLflow, ending with the run's model and `finished` tag.
`run_cell` is that one epoch loop; a single-worker cell runs it inside its Tune trial instead
(`tune_runner.train_in_trial`: Tune's report and checkpoints, no Train controller or worker group).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from orchestrator import conventions as cv
from orchestrator.cells import Cell


def trainer_for_cell(cell: Cell, **kwargs):
    """The `training.Trainer` of a cell (kwargs: rank, world_size, device, wrap_model)."""
    from training.trainer import Trainer

    return Trainer(cell.train, arch=cell.arch, variant=cell.variant, dataset_path=cell.dataset_path,
                   seed=cell.seed, run_key=cell.cell_id, **kwargs)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (multi-worker cells): config holds `cell` (Cell.to_dict()), `tracking_uri`, `run_id`."""
    worker_started_at = time.time()
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    world_size = context.get_world_size()

    def report(metrics: dict[str, Any], folder: str | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)

    run_cell(config, rank=context.get_world_rank(), world_size=world_size, device=ray.train.torch.get_device(),
             wrap_model=ray.train.torch.prepare_model if world_size > 1 else None,
             checkpoint=ray.train.get_checkpoint(), report=report, worker_started_at=worker_started_at)


def run_cell(config: dict[str, Any], *, rank: int, world_size: int, device, wrap_model, checkpoint, report,
             worker_started_at: float) -> None:
    """The one epoch loop of a cell, the same for a Ray Train worker and a single-worker Tune trial.

    `checkpoint` is the Ray checkpoint to resume from (or None); `report(metrics, folder)` hands each epoch's
    metrics and (rank 0) its checkpoint folder to whichever Ray runs the cell.
    """
    import torch

    from training.checkpoint import load_checkpoint

    cell = Cell.from_dict(config["cell"])
    torch.set_num_threads(max(1, int(config.get("threads_per_worker") or 1)))
    trainer = trainer_for_cell(cell, rank=rank, world_size=world_size, device=device, wrap_model=wrap_model)
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(load_checkpoint(folder))

    logger = None
    if rank == 0 and config.get("run_id"):
        from orchestrator.tracking import CellRunLogger
        from training.numerics import numerics_facts

        logger = CellRunLogger(config["tracking_uri"], config["run_id"])
        logger.log_numerics(numerics_facts(trainer.device))
        logger.start_system_metrics()
    # wall-clock marks of the fixed cost, for benchmarks/overhead.py (not logged to MLflow)
    marks = {"trial_started_at": config.get("trial_started_at"), "fit_started_at": config.get("fit_started_at"),
             "worker_started_at": worker_started_at, "trainer_ready_at": time.time()}
    try:
        while not trainer.done:
            _train_and_report_epoch(trainer, logger, marks, report)
        final = trainer.final_test()  # every rank: the shards' errors are summed (empty when the epochs used it)
        if logger is not None:
            finalize_run(cell, trainer, logger, final)
    finally:
        if logger is not None:
            logger.stop_system_metrics()


def _train_and_report_epoch(trainer, logger, marks: dict[str, Any], report) -> None:
    """One epoch: train and evaluate, log (rank 0), checkpoint (rank 0) and report to Ray."""
    from training.checkpoint import save_checkpoint

    epoch_start = time.perf_counter()
    metrics = trainer.run_epoch()
    if logger is not None:
        logger.log_epoch(trainer.epoch, metrics)
    with tempfile.TemporaryDirectory(prefix="resnetctl-ckpt-") as folder:
        if trainer.rank == 0:
            save_checkpoint(folder, trainer.state_dict())
        timing = {"epoch": trainer.epoch, "epoch_time_s": trainer.last_epoch_s,
                  "epoch_wall_s": time.perf_counter() - epoch_start,  # + logging and checkpointing
                  "first_step_at": trainer.first_step_at, "last_step_at": trainer.last_step_at, **marks}
        report({**metrics, **timing}, folder if trainer.rank == 0 else None)


def finalize_run(cell: Cell, trainer, logger, final: dict[str, float] | None = None) -> None:
    """Rank 0, after the last epoch: the final test, layer responses, curves, compute used, model; then `finished`."""
    import models

    net = trainer.net.module if hasattr(trainer.net, "module") else trainer.net
    logger.log_model_size(num_params=models.count_parameters(net),
                          mult_adds=models.count_multiply_adds(net, models.INPUT_SIZES[cell.variant]))
    logger.log_layer_responses(trainer.layer_responses())
    logger.log_curves(trainer.curves)
    worker_hours = trainer.elapsed_s * trainer.world_size / 3600.0
    # GPU-hours held, as a budget pays them: a quarter of a GPU (packed cells) for an hour is a quarter GPU-hour
    logger.log_final({**(final or {}), cv.M_WORKER_HOURS: worker_hours,
                      cv.M_GPU_HOURS: worker_hours * cell.resources.gpus,
                      cv.M_PLATEAU_DROPS: trainer.schedule.plateau_drops})
    trainer.net.eval()
    logger.log_model(trainer.net.to("cpu"), dataset=cell.dataset, arch=cell.arch)
    logger.mark_finished()
