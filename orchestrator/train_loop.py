"""What one Ray Train worker runs for a cell: the paper's SGD recipe, checkpointed every epoch.

`CellTrainer` holds the model, loaders, optimiser and schedule for one worker and knows
nothing of Ray, so `benchmarks/overhead.py` can time it against a bare PyTorch loop.
`train_loop_per_worker` is the thin Ray Train wrapper (as in Ray's examples): it restores
from `ray.train.get_checkpoint()`, reports metrics plus a checkpoint each epoch, and has
rank 0 alone write to MLflow.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from orchestrator import conventions as cv
from orchestrator.cells import Cell, TrainConfig

CHECKPOINT_FILE = "state.pt"
LAYER_RESPONSE_IMAGES = 512  # test images the Fig. 7 responses are measured on


class PresetSchedule:
    """The preset's learning rate: step milestones (in iterations or epochs), warm-up, plateau.

    Milestones are in the unit the schedule is given in (`iterations` or `epochs`). The
    ResNet-110 warm-up trains at `warmup_lr` until the running training error drops below
    `warmup_until_train_err` or `warmup_iterations` pass. On plateau (ImageNet) the rate is
    divided by 1/`lr_gamma` when the validation error has not improved for `plateau_patience`.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.by_iterations = cfg.iterations is not None
        self.plateau_drops = 0
        self.best_val = math.inf
        self.bad_epochs = 0
        self.warmup_done = cfg.warmup_lr is None

    def lr(self, iteration: int, epoch: int) -> float:
        if not self.warmup_done:
            if iteration < self.cfg.warmup_iterations:
                return float(self.cfg.warmup_lr)
            self.warmup_done = True
        position = iteration if self.by_iterations else epoch
        passed = sum(1 for m in self.cfg.lr_milestones if position >= m)
        return self.cfg.lr * self.cfg.lr_gamma ** (passed + self.plateau_drops)

    def observe_train_err(self, running_err: float) -> None:
        limit = self.cfg.warmup_until_train_err
        if not self.warmup_done and limit is not None and running_err < limit:
            self.warmup_done = True

    def observe_val_err(self, val_err: float) -> None:
        if not self.cfg.lr_on_plateau:
            return
        if val_err < self.best_val - 1e-9:
            self.best_val, self.bad_epochs = val_err, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.cfg.plateau_patience:
            self.plateau_drops += 1
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_drops": self.plateau_drops, "best_val": self.best_val,
                "bad_epochs": self.bad_epochs, "warmup_done": self.warmup_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_drops = state["plateau_drops"]
        self.best_val = state["best_val"]
        self.bad_epochs = state["bad_epochs"]
        self.warmup_done = state["warmup_done"]


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _all_reduce_min(value: int, device: torch.device) -> int:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | Path, state: dict[str, Any]) -> Path:
    """Write `state.pt` via a temporary file and an atomic rename: a torn write never looks complete."""
    path = Path(folder) / CHECKPOINT_FILE
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint is incomplete (no {CHECKPOINT_FILE})")
    return torch.load(path, map_location="cpu", weights_only=False)


class CellTrainer:
    """One worker's share of a cell: model, sharded loaders, SGD and the preset schedule."""

    def __init__(
        self,
        cell: Cell,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    ):
        import models
        import pipelines

        self.cell, self.cfg = cell, cell.train
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        torch.manual_seed(cell.seed)  # identical initial weights on every rank
        random.seed(cell.seed)
        np.random.seed(cell.seed)

        manifest = pipelines.load_manifest(cell.dataset_path)
        self.num_classes = int(manifest["num_classes"])
        self.splits = set(manifest["splits"])
        net = models.build_from_name(
            cell.arch, variant=cell.variant, num_classes=self.num_classes,
            stride_in_1x1=self.cfg.stride_in_1x1, zero_init_residual=self.cfg.zero_init_residual,
        )
        self.channels_last = self.cfg.channels_last and self.on_gpu
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net.to(self.device)
        self.model = wrap_model(self.net) if wrap_model is not None else self.net

        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum,
            weight_decay=self.cfg.weight_decay, nesterov=self.cfg.nesterov,
        )
        self.schedule = PresetSchedule(self.cfg)
        amp = self.cfg.amp if self.on_gpu else "off"
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

        per_worker_batch = max(1, self.cfg.batch_size // world_size)
        common = {"rank": rank, "world_size": world_size, "seed": cell.seed, "loader": self.cfg.loader,
                  "num_workers": self.cfg.num_workers, "device": str(self.device),
                  "channels_last": self.channels_last}
        self.train_loader = pipelines.build_loader(cell.dataset_path, "train", batch_size=per_worker_batch,
                                                   lighting=self.cfg.lighting,
                                                   train=True, **common)
        self.eval_loaders = {
            split: pipelines.build_loader(cell.dataset_path, split, batch_size=per_worker_batch, train=False,
                                          eval_protocol=self.cfg.eval_protocol, **common)
            for split in ("val", "test") if split in self.splits
        }
        steps = len(self.train_loader)
        if self.cfg.max_train_batches is not None:
            steps = min(steps, self.cfg.max_train_batches)
        self.steps_per_epoch = _all_reduce_min(steps, self.device)  # DDP ranks must step together
        if self.steps_per_epoch < 1:
            raise ValueError(f"{cell.dataset_path}: the train split gives no batch of {per_worker_batch} images")
        if self.cfg.iterations is not None:
            self.total_iterations = int(self.cfg.iterations)
        else:
            self.total_iterations = int(self.cfg.epochs or 1) * self.steps_per_epoch
        self.num_epochs = math.ceil(self.total_iterations / self.steps_per_epoch)

        self.epoch = 0  # epochs completed
        self.iteration = 0  # optimiser steps completed
        self.elapsed_s = 0.0  # wall time spent training and evaluating, summed over resumes
        self.last_epoch_s = 0.0
        self.curves: dict[str, list[float]] = {}
        self.first_step_at: float | None = None  # wall clock of this process's first and last step,
        self.last_step_at: float | None = None  # for the fixed-cost figures of benchmarks/overhead.py

    # -- state ------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.iteration >= self.total_iterations

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng_state(), "epoch": self.epoch, "iteration": self.iteration,
            "elapsed_s": self.elapsed_s, "curves": self.curves, "cell_id": self.cell.cell_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("cell_id") not in (None, self.cell.cell_id):
            raise ValueError(f"checkpoint belongs to cell {state['cell_id']}, not {self.cell.cell_id}")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        self.elapsed_s = float(state["elapsed_s"])
        self.curves = {k: list(v) for k, v in state["curves"].items()}
        if hasattr(self.train_loader, "set_epoch"):  # continue the shuffling sequence, not epoch 0's
            self.train_loader.set_epoch(self.epoch)

    # -- steps ------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _prepare(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def train_epoch(self) -> dict[str, float]:
        """One pass over this worker's shard (capped by `max_train_batches` and the iteration budget)."""
        self.model.train()
        loss_sum = wrong = seen = 0.0
        steps = min(self.steps_per_epoch, self.total_iterations - self.iteration)
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        for step, (images, labels) in enumerate(self.train_loader):
            if step >= steps:
                break
            images, labels = self._prepare(images, labels)
            lr = self.schedule.lr(self.iteration, self.epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with self._autocast():
                logits = self.model(images)
                loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.iteration += 1
            self.last_step_at = time.time()
            if self.first_step_at is None:
                self.first_step_at = self.last_step_at
            with torch.no_grad():
                n = labels.numel()
                batch_wrong = (logits.argmax(1) != labels).sum().item()
                loss_sum += loss.item() * n
                wrong += batch_wrong
                seen += n
            self.schedule.observe_train_err(100.0 * wrong / seen)
        seconds = time.perf_counter() - start
        loss_sum, wrong, seen = _all_reduce_sum([loss_sum, wrong, seen], self.device)
        return {
            cv.M_TRAIN_LOSS: loss_sum / max(seen, 1),
            cv.M_TRAIN_ERR: 100.0 * wrong / max(seen, 1),
            cv.M_LR: lr,
            cv.M_IMAGES_PER_S: seen / max(seconds, 1e-9),
        }

    @torch.no_grad()
    def evaluate(self, loader) -> tuple[float, float]:
        """Top-1 and top-5 error (%) over the split, summed over every rank's shard."""
        from pipelines.augment import multiscale_views

        self.model.eval()
        top1 = top5 = count = 0.0
        k = min(5, self.num_classes)
        for images, labels in loader:
            images, labels = self._prepare(images, labels)
            with self._autocast():
                if images.dim() == 5:  # (batch, crops, C, H, W): average the crops' softmax
                    b, c = images.shape[:2]
                    scores = F.softmax(self.net(images.flatten(0, 1)).float(), 1).view(b, c, -1).mean(1)
                elif self.cfg.eval_protocol == "multiscale":  # fully convolutional: each scale, mirrored
                    views = [F.softmax(self.net(view).float(), 1) for view in multiscale_views(images)]
                    scores = torch.stack(views).mean(0)
                else:
                    scores = self.net(images).float()
            ranked = scores.topk(k, dim=1).indices
            hits = ranked == labels.unsqueeze(1)
            top1 += (~hits[:, 0]).sum().item()
            top5 += (~hits.any(1)).sum().item()
            count += labels.numel()
        top1, top5, count = _all_reduce_sum([top1, top5, count], self.device)
        return 100.0 * top1 / max(count, 1), 100.0 * top5 / max(count, 1)

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch, evaluate val and test, advance the schedule; return the epoch's metrics."""
        start = time.perf_counter()
        metrics = self.train_epoch()
        for split, loader in self.eval_loaders.items():
            err, top5 = self.evaluate(loader)
            metrics[f"{split}_err"], metrics[f"{split}_top5_err"] = err, top5
        self.epoch += 1
        if cv.M_VAL_ERR in metrics:
            self.schedule.observe_val_err(metrics[cv.M_VAL_ERR])
        metrics[cv.M_ITERATION] = float(self.iteration)
        self.last_epoch_s = time.perf_counter() - start
        self.elapsed_s += self.last_epoch_s
        for key, value in metrics.items():
            self.curves.setdefault(key, []).append(value)
        self.curves.setdefault("epoch", []).append(self.epoch)
        return metrics

    def layer_responses(self, max_images: int = LAYER_RESPONSE_IMAGES) -> list[float]:
        """Fig. 7: std of each 3x3 conv's BN output (before the add/ReLU) on test images."""
        import models

        loader = self.eval_loaders.get("test") or self.eval_loaders.get("val") or self.train_loader
        batches, count = [], 0
        for images, _ in loader:
            if images.dim() == 5:
                images = images[:, 0]
            batches.append(images.to(self.device).clone())  # FFCV reuses its batch buffers
            count += images.shape[0]
            if count >= max_images:
                break
        return models.layer_responses(self.net, torch.cat(batches)[:max_images])


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: config holds `cell` (Cell.to_dict()), `tracking_uri`, `run_id`."""
    worker_started_at = time.time()
    import ray.train
    import ray.train.torch

    from orchestrator.cells import Cell
    from orchestrator.tracking import CellRunLogger

    cell = Cell.from_dict(config["cell"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.get("threads_per_worker") or 1)))
    trainer = CellTrainer(cell, rank=rank, world_size=world_size, device=ray.train.torch.get_device(),
                          wrap_model=ray.train.torch.prepare_model if world_size > 1 else None)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(load_checkpoint(folder))

    logger = None
    if rank == 0 and config.get("run_id"):
        logger = CellRunLogger(config["tracking_uri"], config["run_id"])
    # wall-clock marks of the fixed cost, for benchmarks/overhead.py (not logged to MLflow)
    marks = {"trial_started_at": config.get("trial_started_at"), "fit_started_at": config.get("fit_started_at"),
             "worker_started_at": worker_started_at, "trainer_ready_at": time.time()}

    epoch_start = time.perf_counter()
    while not trainer.done:
        metrics = trainer.run_epoch()
        if logger is not None:
            logger.log_epoch(trainer.epoch, metrics)
        with tempfile.TemporaryDirectory(prefix="resnetctl-ckpt-") as folder:
            saved = None
            if rank == 0:
                save_checkpoint(folder, trainer.state_dict())
                saved = ray.train.Checkpoint.from_directory(folder)
            timing = {"epoch": trainer.epoch, "epoch_time_s": trainer.last_epoch_s,
                      "epoch_wall_s": time.perf_counter() - epoch_start,  # + logging and checkpointing
                      "first_step_at": trainer.first_step_at, "last_step_at": trainer.last_step_at, **marks}
            ray.train.report({**metrics, **timing}, checkpoint=saved)
        epoch_start = time.perf_counter()

    if logger is not None:
        finalize_run(trainer, logger)


def finalize_run(trainer: CellTrainer, logger) -> None:
    """Rank 0, after the last epoch: layer responses, curves, compute used, model; then `finished`."""
    import models

    cell = trainer.cell
    net = trainer.net.module if hasattr(trainer.net, "module") else trainer.net
    logger.log_model_size(num_params=models.count_parameters(net),
                          mult_adds=models.count_multiply_adds(net, models.INPUT_SIZES[cell.variant]))
    logger.log_layer_responses(trainer.layer_responses())
    logger.log_curves(trainer.curves)
    worker_hours = trainer.elapsed_s * trainer.world_size / 3600.0
    logger.log_final({cv.M_WORKER_HOURS: worker_hours,
                      cv.M_GPU_HOURS: worker_hours if trainer.on_gpu else 0.0})
    trainer.net.eval()
    logger.log_model(trainer.net.to("cpu"), dataset=cell.dataset, arch=cell.arch)
    logger.mark_finished()
