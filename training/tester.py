"""The testing side of one worker of a run: held-out errors each epoch, the final protocol once, Fig. 7.

`Trainer` steps the optimiser; `Tester` only reads the network, through the same batch placement
(`to_device`, `autocast`: the training's memory layout and precision). Its errors are summed over
every rank's shard, so all ranks call `epoch_errors` and `final_test` together. It knows nothing
of Ray or MLflow, like the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import models
from pipelines.augment import multiscale_views
from training import metrics as m
from training.config import TrainConfig
from training.distributed import all_reduce
from training.evaluation import class_scores
from training.loaders import build_eval_loaders, epoch_batches

LAYER_RESPONSE_IMAGES = 512  # test images the Fig. 7 responses are measured on
TEN_CROP_CENTRE = 4  # pipelines.augment.ten_crop's order: four corners, the centre, then the five mirrored
MEASURE_SIDE = 224  # multi-scale data (640 squares) is measured on the 224 centre view it was resized from


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


class Tester:
    """A worker's network on the held-out splits: per-epoch errors, the final test, the layer responses.

    `options` are the worker's loader options (`training.loaders.loader_options`); `fallback_loader`
    (the training split's) gives the layer responses their images where no split is held out.
    """

    def __init__(self, cfg: TrainConfig, net: nn.Module, dataset_path: str, splits: set[str], *, num_classes: int,
                 to_device: Callable, autocast: Callable, fallback_loader, **options: Any):
        self.cfg, self.net, self.dataset_path, self.num_classes = cfg, net, dataset_path, num_classes
        self.to_device, self.autocast, self.fallback_loader = to_device, autocast, fallback_loader
        self.options, self.device = options, options["device"]
        self.loaders = build_eval_loaders(cfg, dataset_path, splits, protocol=cfg.epoch_protocol, **options)
        if cfg.lr_on_plateau and cfg.plateau_split not in self.loaders:
            raise ValueError(f"lr_on_plateau reads the {cfg.plateau_split} error, and the data (training on "
                             f"{cfg.train_split}) holds no such split apart from the training images")

    def evaluate(self, loader, protocol: str | None = None) -> tuple[float, float]:
        """Top-1 and top-5 error (%) over the split, summed over every rank's shard (default: the per-epoch view)."""
        self.net.eval()
        return evaluate(self.net, loader, eval_protocol=protocol or self.cfg.epoch_protocol,
                        num_classes=self.num_classes, device=self.device, to_device=self.to_device,
                        autocast=self.autocast)

    def epoch_errors(self) -> dict[str, float]:
        """Each held-out split's errors in the per-epoch view, under `metrics.split_errors`' keys."""
        errors: dict[str, float] = {}
        for split, loader in self.loaders.items():
            errors.update(zip(m.split_errors(split), self.evaluate(loader), strict=True))
        return errors

    def final_test(self) -> dict[str, float]:
        """After the last epoch, every rank together: `eval_protocol` once on each evaluation split.

        Only where the epochs validated with a cheaper view (`epoch_eval_protocol`); otherwise the
        last epoch's errors are the final ones and this returns nothing. Keys: `metrics.final_errors`.
        """
        protocol = self.cfg.eval_protocol
        if self.cfg.epoch_protocol == protocol:
            return {}
        loaders = build_eval_loaders(self.cfg, self.dataset_path, set(self.loaders), protocol=protocol, **self.options)
        results: dict[str, float] = {}
        for split, loader in loaders.items():
            results.update(zip(m.final_errors(split), self.evaluate(loader, protocol), strict=True))
        return results

    def layer_responses(self, max_images: int = LAYER_RESPONSE_IMAGES) -> list[float]:
        """Fig. 7: std of each 3x3 conv's BN output (before the add/ReLU) on test images, measured in chunks
        (models.layer_responses), on 10-crop data's centre crop and multi-scale data's 224 centre view."""
        loader = self.loaders.get("test") or self.loaders.get("val") or self.fallback_loader
        side = MEASURE_SIDE if self.cfg.epoch_protocol == "multiscale" else None
        return models.layer_responses(self.net, first_images(loader, max_images, self.device, side=side))
