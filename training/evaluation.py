"""Re-testing trained networks: class probabilities over a split, their errors, and an ensemble's average.

An evaluation cell (paper Table 4: fully-convolutional multi-scale testing of Table 3's models; Table 5:
an ensemble of several) runs a trained network once over the test split in a protocol's view. This module
is that computation, apart from where the networks come from and where the numbers go (the orchestrator
loads them from the MLflow registry and logs the result): knows nothing of Ray or MLflow.

An ensemble averages its members' softmax probabilities image by image (Sec. 3.4 and Table 5: "we
combine six models of different depth"); one network is an ensemble of one. Every member's loader
visits the split in the same, unshuffled order, so the members' probabilities line up row by row; only
their running sum is kept, so an ensemble costs one member's memory (N x classes floats).

`class_scores`, one batch seen through a protocol, is also what a training run's own tests score
(`training.tester`): a network is tested the same way during its training and after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.augment import multiscale_views


@dataclass(frozen=True)
class EvalResult:
    """Top-1 and top-5 error (%) of the (averaged) prediction, over `images` images; each member's own errors."""

    top1: float
    top5: float
    images: int
    members: tuple[tuple[float, float], ...]


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


@torch.no_grad()
def predict(net: nn.Module, loader, *, protocol: str, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (images x classes, float32, on the CPU) of every image the loader yields, and the labels."""
    net.eval()
    device = torch.device(device)
    probabilities, labels = [], []
    for images, targets in loader:
        scores = class_scores(net, images.to(device, non_blocking=True), protocol, probabilities=True)
        probabilities.append(scores.float().cpu())
        labels.append(targets.cpu().clone())  # the loader may reuse its buffers
    if not labels:
        raise ValueError("the evaluation split gave no image")
    return torch.cat(probabilities), torch.cat(labels)


def top_errors(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 and top-5 error (%) of class probabilities (or any scores) against the labels."""
    k = min(5, probabilities.shape[1])
    hits = probabilities.topk(k, dim=1).indices == labels.unsqueeze(1)
    count = max(labels.numel(), 1)
    return 100.0 * (~hits[:, 0]).sum().item() / count, 100.0 * (~hits.any(1)).sum().item() / count


def averaged(predictions: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> EvalResult:
    """The errors of the members' averaged probabilities (one member: its own), members taken one at a time.

    ValueError when the members disagree on the images' labels: they did not see the same split in the
    same order, and averaging them would mix different images.
    """
    total: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    own: list[tuple[float, float]] = []
    for probabilities, member_labels in predictions:
        if total is None:
            total, labels = probabilities.clone(), member_labels
        elif not torch.equal(labels, member_labels) or total.shape != probabilities.shape:
            raise ValueError(f"ensemble member {len(own) + 1} saw other images than member 1 (labels differ)")
        else:
            total += probabilities
        own.append(top_errors(probabilities, member_labels))
    if total is None:
        raise ValueError("an evaluation needs at least one network")
    top1, top5 = top_errors(total / len(own), labels)
    return EvalResult(top1, top5, int(labels.numel()), tuple(own))
