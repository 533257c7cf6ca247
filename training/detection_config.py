"""The detection training config: every field a detection grid's `train:` section (or axis) may set, declared once.

As `training.config.TrainConfig` is for classification: each field's type, bounds and description live
here only; the detection grid spec derives its overrides and axes from this model, `resnetctl fields
detection` prints it, and the detection trainer reads the resolved values. The paper's settings are
the dataset presets (`orchestrator.detection_presets`); defaults here are what no preset sets.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pipelines.catalog import Normalization
from training.config import MAX_COUNT, Milestone

Arrangement = Literal["c4", "fpn"]
ARRANGEMENTS: tuple[str, ...] = get_args(Arrangement)
RoIOp = Literal["pool", "align"]
SCRATCH = "scratch"
# a registered model version: models:/<name>/<version> (`resnetctl` registers ImageNet nets as imagenet-<arch>)
INIT_PATTERN = re.compile(r"^(scratch|models:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}/[1-9][0-9]{0,8})$")


def _init_source(value: str) -> str:
    if not INIT_PATTERN.match(value):
        raise ValueError(f"{value!r} is neither scratch nor a registered model version, models:/<name>/<version> "
                         "(e.g. models:/imagenet-resnet101-B/1)")
    return value


InitSource = Annotated[str, AfterValidator(_init_source)]
SplitName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class DetectionConfig(BaseModel):
    """Everything a detection cell trains with, resolved from its dataset preset plus the grid's overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    init: InitSource = Field(SCRATCH, description=(
        "the backbone's starting weights: a registered ImageNet model, models:/<name>/<version> (the paper: "
        "its ImageNet ResNet), or scratch (random init; not the paper)"))
    train_splits: tuple[SplitName, ...] = Field(min_length=1, max_length=16, description=(
        "prepared splits trained on, as one set (VOC's 07+12: [2007_trainval, 2012_trainval])"))
    test_split: SplitName = Field(description="prepared split the mAP is measured on (VOC 2007 test: 2007_test)")
    batch_size: int = Field(ge=1, le=4096, description=(
        "images per optimiser step, summed over the cell's workers (each worker takes batch_size / workers)"))
    lr: float = Field(gt=0, le=10, description="base learning rate of SGD")
    momentum: float = Field(0.9, ge=0, le=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="L2 weight decay on the trained parameters")
    iterations: int = Field(ge=1, le=MAX_COUNT, description=(
        "schedule length in optimiser steps; giving it keeps the preset's milestones at the same fractions"))
    lr_milestones: tuple[Milestone, ...] = Field((), max_length=100, description=(
        "multiply the rate by lr_gamma at these iterations"))
    lr_gamma: float = Field(0.1, gt=0, le=1, description="factor applied at each milestone")
    min_size: int = Field(600, ge=16, le=4096, description="shorter image side after resizing (the paper: 600)")
    max_size: int = Field(1000, ge=16, le=8192, description="cap on the longer side after resizing (Fast R-CNN: 1000)")
    hflip: bool = Field(True, description="flip half the training images left-right (Fast R-CNN's augmentation)")
    arrangement: Arrangement = Field("c4", description=(
        "c4: conv1-conv4 shared at stride 16, RoI pooling, conv5 per region (the paper); fpn: torchvision's "
        "feature pyramid (a departure)"))
    roi_op: RoIOp = Field("pool", description="c4: RoI max pooling (Fast R-CNN, the paper) or RoIAlign")
    roi_size: int = Field(14, ge=1, le=64, description="c4: side of the pooled RoI before conv5 (its stride 2 halves it)")
    trainable_layers: int = Field(3, ge=0, le=5, description=(
        "backbone stages trained, from the top (layer4, layer3, layer2, layer1, conv1); 3 freezes conv1 and conv2_x"))
    freeze_bn: bool | None = Field(None, description=(
        "fix BN statistics and scales (the paper); null: fixed when init is a trained model, trained from scratch"))
    normalization: Normalization = Field("pixel_mean", description=(
        "input normalisation, as the backbone was trained: pixel_mean subtracts the ImageNet mean (0-255) and "
        "divides by nothing; channel also divides by the ImageNet std"))
    stride_in_1x1: bool = Field(True, description=(
        "bottlenecks: stride in the first 1x1 (the paper) or the 3x3; must match the backbone's training"))
    rpn_proposals_train: int = Field(2000, ge=1, le=100_000, description="RPN proposals per image after NMS, training")
    rpn_proposals_test: int = Field(300, ge=1, le=100_000, description="RPN proposals per image at test time (paper: 300)")
    rois_per_image: int = Field(128, ge=1, le=4096, description="RoIs sampled per image for the head's loss")
    nms_thresh: float = Field(0.3, gt=0, le=1, description="per-class NMS IoU of the final detections")
    eval_every: int = Field(0, ge=0, le=MAX_COUNT, description=(
        "also measure the mAP every this many epochs (0: only after the last iteration)"))
    max_eval_images: int | None = Field(None, ge=1, le=MAX_COUNT, description=(
        "score only the test split's first images, for smoke tests"))
    max_train_batches: int | None = Field(None, ge=1, le=MAX_COUNT, description=(
        "cap on training batches per epoch (an epoch is one pass over the worker's shard), for smoke tests"))
    num_workers: int = Field(1, ge=0, le=256, description="data-loading processes per worker")

    @property
    def frozen_bn(self) -> bool:
        return self.freeze_bn if self.freeze_bn is not None else self.init != SCRATCH
