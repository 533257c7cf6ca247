"""One worker's share of a run: the paper's SGD recipe over sharded loaders, one epoch at a time.

`Trainer` holds the model, optimiser, schedule and loaders and knows nothing of Ray or MLflow:
the orchestrator's Ray entry calls `run_epoch` and checkpoints `state_dict()`, and
`benchmarks/overhead.py` times the same loop against a bare PyTorch one. Its construction reads
as the steps it takes (model, optimiser, loaders, steps per epoch), as FFCV's ImageNet example does.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import models
import pipelines
from pipelines.augment import multiscale_views
from training import metrics as m
from training.checkpoint import rng_state, set_rng_state
from training.config import TrainConfig
from training.distributed import all_reduce
from training.numerics import set_deterministic
from training.schedule import PresetSchedule

LAYER_RESPONSE_IMAGES = 512  # test images the Fig. 7 responses are measured on
TEN_CROP_CENTRE = 4  # pipelines.augment.ten_crop's order: four corners, the centre, then the five mirrored
MEASURE_SIDE = 224  # multi-scale data (640 squares) is measured on the 224 centre view it was resized from
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def class_scores(net: nn.Module, images: torch.Tensor, eval_protocol: str, *,
                 probabilities: bool = False) -> torch.Tensor:
    """Scores of one evaluation batch: crops' softmax averaged (10-crop), scales' too (multi-scale), else logits
    (their softmax with `probabilities`, so that every protocol gives probabilities an ensemble can average)."""
    if images.dim() == 5:  # (batch, crops, C, H, W)
        b, c = images.shape[:2]
        return F.softmax(net(images.flatten(0, 1)).float(), 1).view(b, c, -1).mean(1)
    if eval_protocol == "multiscale":  # fully convolutional: each scale, mirrored
        return torch.stack([F.softmax(net(view).float(), 1) for view in multiscale_views(images)]).mean(0)
    logits = net(images).float()
    return F.softmax(logits, 1) if probabilities else logits


def build_network(cfg: TrainConfig, arch: str, variant: str, num_classes: int, *, seed: int, device: torch.device,
                  channels_last: bool) -> nn.Module:
    """The network on its device, seeded so every rank starts from identical weights."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    net = models.build_from_name(arch, variant=variant, num_classes=num_classes,
                                 stride_in_1x1=cfg.stride_in_1x1, zero_init_residual=cfg.zero_init_residual)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net.to(device)


def loader_options(cfg: TrainConfig, *, batch_size: int, rank: int, world_size: int, seed: int,
                   device: torch.device, channels_last: bool) -> dict[str, Any]:
    """What every loader of a worker shares, training and evaluation alike (and evaluation cells re-testing
    a trained network with its own config: whatever its training loaders did to the images, theirs do too)."""
    return {"rank": rank, "world_size": world_size, "seed": seed, "loader": cfg.loader, "batch_size": batch_size,
            "num_workers": cfg.num_workers, "device": str(device), "channels_last": channels_last,
            # every split is normalised with the statistics of the split the network trains on
            "normalization": cfg.normalization, "stats_split": cfg.train_split}


def held_out_splits(cfg: TrainConfig, splits: set[str]) -> list[str]:
    """The evaluation splits among `splits`: val and test, but not val when it is part of the training split;
    holdout (held out of the training images) when the plateau rule reads it."""
    wanted = ("val", "test", "holdout") if cfg.plateau_split == "holdout" else ("val", "test")
    return [split for split in wanted if split in splits and not (split == "val" and cfg.train_split == "trainval")]


def build_eval_loaders(cfg: TrainConfig, dataset_path: str, splits: set[str], *, protocol: str,
                       **options: Any) -> dict[str, Any]:
    """This worker's shard of each evaluation split (val, test) among `splits`, seen through `protocol`."""
    common = loader_options(cfg, **options)
    return {split: pipelines.build_loader(dataset_path, split, train=False, eval_protocol=protocol, **common)
            for split in held_out_splits(cfg, splits)}


def build_loaders(cfg: TrainConfig, dataset_path: str, splits: set[str], **options: Any):
    """This worker's shard of the training split, and of each evaluation split in the per-epoch protocol.

    options: batch_size, rank, world_size, seed, device, channels_last (see `loader_options`).
    """
    train = pipelines.build_loader(dataset_path, cfg.train_split, train=True, lighting=cfg.lighting,
                                   **loader_options(cfg, **options))
    return train, build_eval_loaders(cfg, dataset_path, splits, protocol=cfg.epoch_protocol, **options)


def schedule_length(cfg: TrainConfig, train_loader, device: torch.device) -> tuple[int, int]:
    """Steps per epoch (the same on every rank: DDP ranks must step together) and in the whole run."""
    steps = len(train_loader)
    if cfg.max_train_batches is not None:
        steps = min(steps, cfg.max_train_batches)
    steps = int(all_reduce([steps], device, op="min")[0])
    if steps < 1:
        raise ValueError(f"the train split gives this worker no batch (batch_size {cfg.batch_size} over the workers)")
    total = cfg.iterations if cfg.iterations is not None else (cfg.epochs or 1) * steps
    return steps, int(total)


@torch.no_grad()
def evaluate(net: nn.Module, loader, *, eval_protocol: str, num_classes: int, device: torch.device, to_device,
             autocast) -> tuple[float, float]:
    """Top-1 and top-5 error (%) of `net` over a loader's batches, summed over every rank's shard."""
    top1 = top5 = count = 0.0
    k = min(5, num_classes)
    for batch in loader:
        images, labels = to_device(*batch)
        with autocast():
            scores = class_scores(net, images, eval_protocol)
        hits = scores.topk(k, dim=1).indices == labels.unsqueeze(1)
        top1 += (~hits[:, 0]).sum().item()
        top5 += (~hits.any(1)).sum().item()
        count += labels.numel()
    top1, top5, count = all_reduce([top1, top5, count], device)
    return 100.0 * top1 / max(count, 1), 100.0 * top5 / max(count, 1)


def worker_device(device: torch.device | str) -> torch.device:
    """`device` with its index: a Tune trial's plain "cuda" is the current device (Ray's CUDA_VISIBLE_DEVICES
    leaves it the trial's own GPU), which `torch.cuda.set_device` and the checkpoint's RNG state need named."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@contextmanager
def epoch_batches(loader):
    """`iter(loader)`, closed on the way out: a loop that breaks early (a truncated epoch, `max_train_batches`,
    the layer responses' few images) stops FFCV's loading thread and frees its pinned buffers then."""
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def first_images(loader, max_images: int, device: torch.device, *, side: int | None = None) -> torch.Tensor:
    """Up to `max_images` images from a loader, copied: the centre crop of 10-crop batches, and squares
    larger than `side` resized to it (multi-scale's 640 squares -> the 224 centre view).

    The loader's iterator is closed when this stops early, so FFCV's thread and buffers go with it.
    """
    batches, count = [], 0
    with epoch_batches(loader) as batches_of_loader:
        for images, _ in batches_of_loader:
            if images.dim() == 5:
                images = images[:, TEN_CROP_CENTRE]
            images = images.to(device)
            if side is not None and images.shape[-1] != side:
                images = next(multiscale_views(images, (side,)))
            batches.append(images.clone())  # FFCV reuses its batch buffers
            count += images.shape[0]
            if count >= max_images:
                break
    return torch.cat(batches)[:max_images]


class Trainer:
    """Model, sharded loaders, SGD and the preset schedule for one worker of one run.

    `run_key` names the run in its checkpoints (the orchestrator passes the cell id), so a
    checkpoint of another run is refused instead of silently loaded.
    """

    def __init__(self, cfg: TrainConfig, *, arch: str, variant: str, dataset_path: str, seed: int,
                 run_key: str | None = None, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", wrap_model: Callable[[nn.Module], nn.Module] | None = None):
        self.cfg, self.arch, self.variant, self.seed, self.run_key = cfg, arch, variant, seed, run_key
        self.dataset_path = dataset_path
        self.rank, self.world_size = rank, world_size
        self.device = worker_device(device)
        self.on_gpu = self.device.type == "cuda"
        if self.on_gpu:
            # this thread's device before any loader: FFCV's thread follows it instead of making a CUDA
            # context on GPU 0 (pipelines.ffcv_threads); training crops have one shape, so cuDNN's search pays
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        self.channels_last = cfg.channels_last and self.on_gpu
        manifest = pipelines.load_manifest(dataset_path)
        self.num_classes = int(manifest["num_classes"])
        set_deterministic(cfg.deterministic)  # before any kernel runs (cuBLAS reads its workspace setting once)

        self.net = build_network(cfg, arch, variant, self.num_classes, seed=seed, device=self.device,
                                 channels_last=self.channels_last)
        self.model = wrap_model(self.net) if wrap_model is not None else self.net  # DDP on several workers
        if cfg.compile:  # the training step only; evaluation and checkpoints use the plain `net`
            self.model = torch.compile(self.model)
        self.optimizer = self._build_optimizer()
        self.schedule = PresetSchedule(cfg)
        amp = cfg.amp if self.on_gpu else "off"
        self.autocast_dtype = AUTOCAST_DTYPES.get(amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.per_worker_batch = max(1, cfg.batch_size // world_size)
        self.train_loader, self.eval_loaders = build_loaders(
            cfg, dataset_path, set(manifest["splits"]), batch_size=self.per_worker_batch, rank=rank,
            world_size=world_size, seed=seed, device=self.device, channels_last=self.channels_last)
        if cfg.lr_on_plateau and cfg.plateau_split not in self.eval_loaders:
            raise ValueError(f"lr_on_plateau reads the {cfg.plateau_split} error, and the data (training on "
                             f"{cfg.train_split}) holds no such split apart from the training images")
        self.steps_per_epoch, self.total_iterations = schedule_length(cfg, self.train_loader, self.device)
        self.num_epochs = math.ceil(self.total_iterations / self.steps_per_epoch)

        self.epoch = 0  # epochs completed
        self.iteration = 0  # optimiser steps completed
        self.elapsed_s = 0.0  # wall time spent training and evaluating, summed over resumes
        self.last_epoch_s = 0.0
        self.curves: dict[str, list[float]] = {}
        self.first_step_at: float | None = None  # wall clock of this process's first and last step,
        self.last_step_at: float | None = None  # for the fixed-cost figures of benchmarks/overhead.py

    def _build_optimizer(self) -> torch.optim.SGD:
        cfg = self.cfg
        return torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)

    # -- state --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.iteration >= self.total_iterations

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.device), "epoch": self.epoch, "iteration": self.iteration,
            "elapsed_s": self.elapsed_s, "curves": self.curves, "cell_id": self.run_key,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("cell_id") not in (None, self.run_key):
            raise ValueError(f"checkpoint belongs to cell {state['cell_id']}, not {self.run_key}")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):  # a run without fp16 (a CPU one, say) saved the empty state of a disabled scaler
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.device)
        self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        self.elapsed_s = float(state["elapsed_s"])
        self.curves = {k: list(v) for k, v in state["curves"].items()}
        if hasattr(self.train_loader, "set_epoch"):  # continue the shuffling sequence, not epoch 0's
            self.train_loader.set_epoch(self.epoch)

    # -- steps --------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 5:  # 10 crops: one conversion of the batch's (B*10) images
            images = images.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, images.shape[:2])
        elif self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One SGD step at the schedule's rate; returns the rate, the loss and the logits."""
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
        self.first_step_at = self.first_step_at or self.last_step_at
        return lr, loss, logits

    def _watch_warmup(self, wrong: torch.Tensor, seen: int) -> None:
        """While the warm-up's error rule decides: count the batch on the device; check every few steps."""
        if self.schedule.watching_error and self.schedule.count_batch(wrong, seen):
            self._check_warmup()

    def _check_warmup(self) -> None:
        """Every rank at once: sum the counts since the last check over the ranks; the schedule decides.

        All ranks call this on the same steps (they step together), so the all-reduce pairs up and
        every rank ends the warm-up on the same iteration.
        """
        counts, steps = self.schedule.take_block()
        if steps and self.schedule.watching_error:
            wrong, seen = all_reduce(counts, self.device)
            self.schedule.observe_warmup(wrong, seen, steps, iteration=self.iteration)

    def train_epoch(self) -> dict[str, float]:
        """One pass over this worker's shard (capped by `max_train_batches` and the iteration budget)."""
        self.model.train()
        # the epoch's sums stay on the device (no host sync per step): the loss in float64, as the
        # Python floats of `loss.item() * n` were, so the totals are the same numbers; one sync at the end
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # [loss * images, misclassified]
        seen = 0
        steps = min(self.steps_per_epoch, self.total_iterations - self.iteration)
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        with epoch_batches(self.train_loader) as batches:  # a truncated epoch closes FFCV's thread and buffers
            for step, (images, labels) in enumerate(batches):
                if step >= steps:
                    break
                images, labels = self._to_device(images, labels)
                lr, loss, logits = self._step(images, labels)
                with torch.no_grad():
                    n = labels.numel()
                    batch_wrong = (logits.argmax(1) != labels).sum()
                    self._watch_warmup(batch_wrong, n)  # syncs only at the rule's checks, every few steps
                    sums[0] += loss.detach().double() * n
                    sums[1] += batch_wrong
                    seen += n
        self._check_warmup()  # the epoch's last counts join the window before a checkpoint is taken
        loss_sum, wrong = sums.tolist()  # the epoch's one sync
        seconds = time.perf_counter() - start
        loss_sum, wrong, seen = all_reduce([loss_sum, wrong, seen], self.device)
        return {m.TRAIN_LOSS: loss_sum / max(seen, 1), m.TRAIN_ERR: 100.0 * wrong / max(seen, 1),
                m.LR: lr, m.IMAGES_PER_S: seen / max(seconds, 1e-9)}

    def evaluate(self, loader, protocol: str | None = None) -> tuple[float, float]:
        """Top-1 and top-5 error (%) over the split, summed over every rank's shard (default: the per-epoch view)."""
        self.model.eval()
        return evaluate(self.net, loader, eval_protocol=protocol or self.cfg.epoch_protocol,
                        num_classes=self.num_classes, device=self.device, to_device=self._to_device,
                        autocast=self._autocast)

    def final_test(self) -> dict[str, float]:
        """After the last epoch, every rank together: `eval_protocol` once on each evaluation split.

        Only where the epochs validated with a cheaper view (`epoch_eval_protocol`); otherwise the
        last epoch's errors are the final ones and this returns nothing. Keys: `metrics.final_errors`.
        """
        protocol = self.cfg.eval_protocol
        if self.cfg.epoch_protocol == protocol:
            return {}
        start = time.perf_counter()
        loaders = build_eval_loaders(
            self.cfg, self.dataset_path, set(self.eval_loaders), protocol=protocol,
            batch_size=self.per_worker_batch, rank=self.rank, world_size=self.world_size, seed=self.seed,
            device=self.device, channels_last=self.channels_last)
        results: dict[str, float] = {}
        for split, loader in loaders.items():
            results.update(zip(m.final_errors(split), self.evaluate(loader, protocol), strict=True))
        self.elapsed_s += time.perf_counter() - start  # counted in the run's worker-hours
        return results

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch, evaluate val and test, advance the schedule; the epoch's `training.metrics`."""
        start = time.perf_counter()
        metrics = self.train_epoch()
        for split, loader in self.eval_loaders.items():
            top1_key, top5_key = m.split_errors(split)
            metrics[top1_key], metrics[top5_key] = self.evaluate(loader)
        self.epoch += 1
        plateau_key = m.split_errors(self.cfg.plateau_split)[0]
        if plateau_key in metrics:
            self.schedule.observe_val_err(metrics[plateau_key])
        metrics[m.ITERATION] = float(self.iteration)
        self.last_epoch_s = time.perf_counter() - start
        self.elapsed_s += self.last_epoch_s
        for key, value in metrics.items():
            self.curves.setdefault(key, []).append(value)
        self.curves.setdefault("epoch", []).append(self.epoch)
        return metrics

    def layer_responses(self, max_images: int = LAYER_RESPONSE_IMAGES) -> list[float]:
        """Fig. 7: std of each 3x3 conv's BN output (before the add/ReLU) on test images, measured in chunks
        (models.layer_responses), on 10-crop data's centre crop and multi-scale data's 224 centre view."""
        loader = self.eval_loaders.get("test") or self.eval_loaders.get("val") or self.train_loader
        side = MEASURE_SIDE if self.cfg.epoch_protocol == "multiscale" else None
        return models.layer_responses(self.net, first_images(loader, max_images, self.device, side=side))
