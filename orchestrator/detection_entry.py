"""What one Ray Train worker runs for a detection cell: `training.DetectionTrainer`, checkpointed, tracked.

The detection twin of `train_entry.train_loop_per_worker`, chosen by the Tune trial for cells of kind
`detection`: it loads the backbone's ImageNet weights from the model registry (not when resuming: the
checkpoint holds the detector), restores from `ray.train.get_checkpoint()`, reports metrics plus a
checkpoint each epoch, and has rank 0 alone write to MLflow: per-epoch losses and mAP, then the curves,
compute used and the detector, registered as `<dataset>-faster-rcnn-<backbone>`, and `finished`.
"""

from __future__ import annotations

import tempfile
from typing import Any

from orchestrator import conventions as cv
from orchestrator.detection_cells import DetectionCell


def _restored_state():
    import ray.train

    from training.checkpoint import load_checkpoint

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return load_checkpoint(folder)


def detection_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: config holds `cell` (DetectionCell.to_dict()), `tracking_uri`, `run_id`."""
    import ray.train
    import ray.train.torch
    import torch

    from training.detection import DetectionTrainer
    from training.detection_config import SCRATCH

    cell = DetectionCell.from_dict(config["cell"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.get("threads_per_worker") or 1)))
    state = _restored_state()
    backbone = None
    if state is None and cell.train.init != SCRATCH:
        from orchestrator.detection_tracking import load_backbone_state

        backbone = load_backbone_state(config["tracking_uri"], cell.train.init)
    trainer = DetectionTrainer(cell.train, arch=cell.arch, dataset=cell.dataset, dataset_path=cell.dataset_path,
                               seed=cell.seed, run_key=cell.cell_id, rank=rank, world_size=world_size,
                               device=ray.train.torch.get_device(), backbone_state=backbone,
                               wrap_model=ray.train.torch.prepare_model if world_size > 1 else None)
    if state is not None:
        trainer.load_state_dict(state)
    logger = None
    if rank == 0 and config.get("run_id"):
        from orchestrator.tracking import CellRunLogger

        logger = CellRunLogger(config["tracking_uri"], config["run_id"])
    while not trainer.done:
        _train_and_report_epoch(trainer, logger)
    if logger is not None:
        finalize_detection_run(cell, trainer, logger)


def _train_and_report_epoch(trainer, logger) -> None:
    """One epoch (and, when due, the test split's mAP): log (rank 0), checkpoint (rank 0), report to Ray Train."""
    import ray.train

    from training.checkpoint import save_checkpoint

    metrics = trainer.run_epoch()
    if logger is not None:
        logger.log_epoch(trainer.epoch, metrics)
    with tempfile.TemporaryDirectory(prefix="resnetctl-ckpt-") as folder:
        saved = None
        if trainer.rank == 0:
            save_checkpoint(folder, trainer.state_dict())
            saved = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({**metrics, "epoch": trainer.epoch, "epoch_time_s": trainer.last_epoch_s}, checkpoint=saved)


def finalize_detection_run(cell: DetectionCell, trainer, logger) -> None:
    """Rank 0, after the last epoch: curves, parameters, compute used, the registered detector; then `finished`."""
    from mlflow.tracking import MlflowClient

    count = sum(p.numel() for p in trainer.net.parameters())
    MlflowClient(logger.uri).log_param(logger.run_id, cv.PARAM_NUM_PARAMS, str(count))  # the same on a rerun
    logger.log_curves(trainer.curves)
    worker_hours = trainer.elapsed_s * trainer.world_size / 3600.0
    logger.log_final({cv.M_WORKER_HOURS: worker_hours, cv.M_GPU_HOURS: worker_hours * cell.resources.gpus})  # held
    trainer.net.eval()
    logger.log_model(trainer.net.to("cpu"), dataset=cell.dataset, arch=cell.detector)
    logger.mark_finished()
