"""One worker's share of a run: the paper's SGD recipe over sharded loaders, one epoch at a time.

`Trainer` holds the model, optimiser, schedule and loaders and knows nothing of Ray or MLflow:
the orchestrator's Ray entry calls `run_epoch` and checkpoints `state_dict()`, and
`benchmarks/overhead.py` times the same loop against a bare PyTorch one. Its construction reads
as the steps it takes (model, optimiser, loaders, steps per epoch), as FFCV's ImageNet example does.
What only reads the network (the held-out errors, the final test, Fig. 7) is its `tester`
(`training.tester`); the run's counters and curves, shared with detection, are `training.progress`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import models
import pipelines
from training import metrics as m
from training.config import TrainConfig
from training.distributed import all_reduce
from training.loaders import build_train_loader, epoch_batches
from training.numerics import set_deterministic
from training.progress import RunProgress
from training.schedule import PresetSchedule
from training.tester import LAYER_RESPONSE_IMAGES, Tester

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def worker_device(device: torch.device | str) -> torch.device:
    """`device` with its index: a Tune trial's plain "cuda" is the current device (Ray's CUDA_VISIBLE_DEVICES
    leaves it the trial's own GPU), which `torch.cuda.set_device` and the checkpoint's RNG state need named."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def claim_device(device: torch.device | str) -> torch.device:
    """This worker's device (`worker_device`), on a GPU made this thread's before any loader: FFCV's thread
    follows it instead of making a CUDA context on GPU 0 (pipelines.ffcv_threads). Training crops have one
    shape, so cuDNN's search pays."""
    device = worker_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    return device


class Trainer(RunProgress):
    """Model, sharded loaders, SGD and the preset schedule for one worker of one run.

    `run_key` names the run in its checkpoints (the orchestrator passes the cell id), so a
    checkpoint of another run is refused instead of silently loaded. Its evaluation side is `tester`.
    """

    def __init__(self, cfg: TrainConfig, *, arch: str, variant: str, dataset_path: str, seed: int,
                 run_key: str | None = None, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", wrap_model: Callable[[nn.Module], nn.Module] | None = None):
        self.cfg, self.arch, self.variant, self.seed, self.run_key = cfg, arch, variant, seed, run_key
        self.dataset_path = dataset_path
        self.rank, self.world_size = rank, world_size
        self.device = claim_device(device)
        self.on_gpu = self.device.type == "cuda"
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
        options = {"batch_size": self.per_worker_batch, "rank": rank, "world_size": world_size, "seed": seed,
                   "device": self.device, "channels_last": self.channels_last}
        self.train_loader = build_train_loader(cfg, dataset_path, **options)
        self.tester = Tester(cfg, self.net, dataset_path, set(manifest["splits"]), num_classes=self.num_classes,
                             to_device=self._to_device, autocast=self._autocast,
                             fallback_loader=self.train_loader, **options)
        self.eval_loaders = self.tester.loaders
        self.steps_per_epoch, self.total_iterations = schedule_length(cfg, self.train_loader, self.device)
        self.num_epochs = math.ceil(self.total_iterations / self.steps_per_epoch)

        self._start_progress()
        self.first_step_at: float | None = None  # wall clock of this process's first and last step,
        self.last_step_at: float | None = None  # for the fixed-cost figures of benchmarks/overhead.py

    def _build_optimizer(self) -> torch.optim.SGD:
        cfg = self.cfg
        return torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)

    # -- state (the run's counters and curves: `RunProgress`) -------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(), **self._progress_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_run_key(state)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):  # a run without fp16 (a CPU one, say) saved the empty state of a disabled scaler
            self.scaler.load_state_dict(state["scaler"])
        self._load_progress(state)
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

    # -- testing: `Tester`; final_test's time counts in the run's worker-hours -------------------
    def evaluate(self, loader, protocol: str | None = None) -> tuple[float, float]:
        return self.tester.evaluate(loader, protocol)

    def final_test(self) -> dict[str, float]:
        start = time.perf_counter()
        results = self.tester.final_test()
        self.elapsed_s += time.perf_counter() - start
        return results

    def layer_responses(self, max_images: int = LAYER_RESPONSE_IMAGES) -> list[float]:
        return self.tester.layer_responses(max_images)

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch, evaluate val and test, advance the schedule; the epoch's `training.metrics`."""
        start = time.perf_counter()
        metrics = {**self.train_epoch(), **self.tester.epoch_errors()}
        self.epoch += 1
        plateau_key = m.split_errors(self.cfg.plateau_split)[0]
        if plateau_key in metrics:
            self.schedule.observe_val_err(metrics[plateau_key])
        return self._end_epoch(metrics, start)
