"""One worker's share of a detection run: Faster R-CNN on our ResNet, the paper's SGD recipe, mAP on the test split.

`DetectionTrainer` is `Trainer`'s counterpart for Tables 7-8 and, like it, knows nothing of Ray or
MLflow: the orchestrator's Ray entry passes the backbone's ImageNet weights in (or none: scratch),
calls `run_epoch` until `done` and checkpoints `state_dict()`. An epoch is one pass over the worker's
shard of the training splits (capped by `max_train_batches` and the iteration budget); the rate is
`lr`, multiplied by `lr_gamma` at each milestone (in iterations). The test split is scored every
`eval_every` epochs and always after the last iteration: each rank detects on its shard of the test
images, rank 0 gathers the detections and computes the dataset's metrics (`training.detection_metrics`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines import detection_catalog
from pipelines.detection_data import build_detection_loader
from pipelines.detection_prepare import detection_manifest, load_split
from pipelines.prepare import IMAGENET_MEAN, IMAGENET_STD
from training import metrics as m
from training.detection_config import DetectionConfig
from training.detection_metrics import Detection, detection_scores
from training.distributed import all_reduce, gather_to_first
from training.progress import RunProgress

LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")  # torchvision's names


def detector_settings(cfg: DetectionConfig):
    """The `models.detection.DetectorSettings` a config describes."""
    from models.detection import DetectorSettings

    return DetectorSettings(
        arrangement=cfg.arrangement, roi_op=cfg.roi_op, roi_size=cfg.roi_size, min_size=cfg.min_size,
        max_size=cfg.max_size, image_mean=tuple(IMAGENET_MEAN),
        image_std=tuple(IMAGENET_STD) if cfg.normalization == "channel" else (1.0, 1.0, 1.0),
        trainable_layers=cfg.trainable_layers, freeze_bn=cfg.frozen_bn, rpn_post_nms_train=cfg.rpn_proposals_train,
        rpn_post_nms_test=cfg.rpn_proposals_test, rois_per_image=cfg.rois_per_image, nms_thresh=cfg.nms_thresh)


def build_detection_network(cfg: DetectionConfig, arch: str, num_classes: int, *, seed: int, device: torch.device,
                            backbone_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The detector on its device, seeded so every rank starts from identical weights."""
    from models.detection import build_detector

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    net = build_detector(arch, num_classes, detector_settings(cfg), stride_in_1x1=cfg.stride_in_1x1,
                         backbone_state=backbone_state)
    return net.to(device)


def step_lr(cfg: DetectionConfig, iteration: int) -> float:
    """The rate at an iteration: lr times lr_gamma for each milestone passed."""
    return cfg.lr * cfg.lr_gamma ** sum(1 for milestone in cfg.lr_milestones if iteration >= milestone)


@torch.no_grad()
def detect(net: nn.Module, loader, device: torch.device) -> tuple[list[Detection], list[int]]:
    """This worker's detections on its shard of a loader (boxes in the images' own pixels), and the images seen."""
    net.eval()
    found, seen = [], []
    for images, targets in loader:
        outputs = net([image.to(device) for image in images])
        for output, target in zip(outputs, targets, strict=True):
            image_id = int(target["image_id"])
            seen.append(image_id)
            for box, label, score in zip(output["boxes"].tolist(), output["labels"].tolist(),
                                         output["scores"].tolist(), strict=True):
                found.append(Detection(image_id, int(label), float(score), tuple(box)))
    return found, seen


class DetectionTrainer(RunProgress):
    """Detector, sharded loaders, SGD and the step schedule for one worker of one detection run."""

    def __init__(self, cfg: DetectionConfig, *, arch: str, dataset: str, dataset_path: str, seed: int,
                 run_key: str | None = None, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                 wrap_model: Callable[[nn.Module], nn.Module] | None = None,
                 backbone_state: dict[str, torch.Tensor] | None = None):
        self.cfg, self.arch, self.dataset, self.dataset_path = cfg, arch, dataset, dataset_path
        self.seed, self.run_key, self.rank, self.world_size = seed, run_key, rank, world_size
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        self.num_classes = int(detection_manifest(dataset_path)["num_classes"])
        self.net = build_detection_network(cfg, arch, self.num_classes, seed=seed, device=self.device,
                                           backbone_state=backbone_state)
        self.model = wrap_model(self.net) if wrap_model is not None else self.net
        self.optimizer = torch.optim.SGD([p for p in self.net.parameters() if p.requires_grad], lr=cfg.lr,
                                         momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.per_worker_batch = max(1, cfg.batch_size // world_size)
        self.train_loader = build_detection_loader(
            dataset_path, cfg.train_splits, train=True, batch_size=self.per_worker_batch, seed=seed, rank=rank,
            world_size=world_size, num_workers=cfg.num_workers, hflip=cfg.hflip)
        steps = min(len(self.train_loader), cfg.max_train_batches or len(self.train_loader))
        self.steps_per_epoch = int(all_reduce([steps], self.device, op="min")[0])
        if self.steps_per_epoch < 1:
            raise ValueError(f"the training splits give this worker no batch of {self.per_worker_batch} images")
        self.total_iterations = cfg.iterations
        self._start_progress()

    # -- state (the run's counters and curves: `RunProgress`) -------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), **self._progress_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_run_key(state)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._load_progress(state)
        self.train_loader.set_epoch(self.epoch)

    # -- steps --------------------------------------------------------------------------
    def _step(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        lr = step_lr(self.cfg, self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses = self.model([image.to(self.device) for image in images],
                            [{k: v.to(self.device) for k, v in target.items()} for target in targets])
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the detection loss is {loss.item()} at iteration {self.iteration} "
                                     f"({ {k: round(v.item(), 3) for k, v in losses.items()} })")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return {m.LR: lr, m.TRAIN_LOSS: loss.item(), **{k: v.item() for k, v in losses.items()}}

    def train_epoch(self) -> dict[str, float]:
        """One pass over this worker's shard (capped by max_train_batches and the iteration budget)."""
        self.model.train()
        steps = min(self.steps_per_epoch, self.total_iterations - self.iteration)
        sums = dict.fromkeys((m.TRAIN_LOSS, *LOSS_KEYS), 0.0)
        seen, lr, start = 0, step_lr(self.cfg, self.iteration), time.perf_counter()
        for step, (images, targets) in enumerate(self.train_loader):
            if step >= steps:
                break
            values = self._step(images, targets)
            lr = values.pop(m.LR)
            for key in sums:
                sums[key] += values.get(key, 0.0)
            seen += len(images)
        seconds = time.perf_counter() - start
        *totals, seen = all_reduce([*sums.values(), seen], self.device)
        batches = max(steps * self.world_size, 1)
        return {**{k: v / batches for k, v in zip(sums, totals, strict=True)}, m.LR: lr,
                m.IMAGES_PER_S: seen / max(seconds, 1e-9)}

    def test(self) -> dict[str, float]:
        """The test split's metrics (rank 0; the other ranks return {}), every rank detecting on its shard."""
        cfg = self.cfg
        loader = build_detection_loader(self.dataset_path, [cfg.test_split], train=False,
                                        batch_size=self.per_worker_batch, seed=self.seed, rank=self.rank,
                                        world_size=self.world_size, num_workers=cfg.num_workers,
                                        max_images=cfg.max_eval_images)
        gathered = gather_to_first(detect(self.net, loader, self.device))
        if gathered is None:
            return {}
        detections = [d for found, _ in gathered for d in found]
        image_ids = [i for _, seen in gathered for i in seen]
        split = load_split(self.dataset_path, detection_manifest(self.dataset_path), cfg.test_split)
        return detection_scores(detection_catalog.METRICS_OF[self.dataset], split, detections, image_ids)

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch; score the test split every `eval_every` epochs and after the last iteration."""
        start = time.perf_counter()
        metrics = self.train_epoch()
        self.epoch += 1
        if self.done or (self.cfg.eval_every and self.epoch % self.cfg.eval_every == 0):
            metrics.update(self.test())
        return self._end_epoch(metrics, start)
