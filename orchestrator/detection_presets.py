"""The paper's detection recipes (Appendix A), one per dataset: what a detection grid's `train:` overrides.

Appendix A: Faster R-CNN [32] with ResNet-101 "initialized by the ImageNet classification models, and
then fine-tuned on the object detection data", BN fixed. PASCAL VOC: "for the PASCAL VOC 2007 test
set, we use the 5k trainval images in VOC 2007 and 16k trainval images in VOC 2012 for training
('07+12'). For the PASCAL VOC 2012 test set, we use the 10k trainval+test images in VOC 2007 and 16k
trainval images in VOC 2012 ('07++12'). The hyper-parameters for training Faster R-CNN are the same as
in [32]": those of Faster R-CNN (Sec. 3.3 and 4 there): one image per mini-batch, shorter side 600
(longer at most 1000), lr 0.001 for 60k mini-batches then 0.0001 for 20k, momentum 0.9, weight decay
0.0005, horizontal flips. MS COCO: "We use the 80k images on the train set for training and the 40k
images on the val set for evaluation ... the RPN step has a mini-batch size of 8 images (i.e., 1 per
GPU) ... trained for 240k iterations with a learning rate of 0.001 and then for 80k iterations with
0.0001" (COCO 2014's train and val; set train_splits/test_split to train2017/val2017 for COCO 2017).

Departures, stated in the README: torchvision trains the RPN and the Fast R-CNN head jointly
(Faster R-CNN's "approximate joint training"), not the paper's alternating steps; VOC 2012's test
annotations are not public (its score comes from the evaluation server), so the voc2012 preset's
test split exists only where the user holds them.

This module imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

from pipelines.detection_catalog import DETECTION_DATASETS

_FASTER_RCNN: dict[str, Any] = {  # Faster R-CNN's [32] VOC recipe, which Appendix A reuses
    "batch_size": 1,
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "iterations": 80_000,
    "lr_milestones": (60_000,),
    "lr_gamma": 0.1,
    "min_size": 600,
    "max_size": 1000,
    "hflip": True,
    "arrangement": "c4",
    "roi_op": "pool",
    "rpn_proposals_test": 300,  # "generating 300 proposals"
}

DETECTION_PRESETS: dict[str, dict[str, Any]] = {
    "voc2007": {**_FASTER_RCNN, "train_splits": ("2007_trainval", "2012_trainval"), "test_split": "2007_test"},
    "voc2012": {**_FASTER_RCNN, "train_splits": ("2007_trainval", "2007_test", "2012_trainval"),
                "test_split": "2012_test"},
    "coco": {**_FASTER_RCNN, "batch_size": 8, "iterations": 320_000, "lr_milestones": (240_000,),
             "train_splits": ("train2014",), "test_split": "val2014"},
}
assert set(DETECTION_PRESETS) == set(DETECTION_DATASETS)


def detection_preset(dataset: str) -> dict[str, Any]:
    """The paper's recipe for detection dataset `dataset`, as DetectionConfig keyword arguments."""
    if dataset not in DETECTION_PRESETS:
        raise KeyError(f"dataset={dataset!r}: no detection preset (choose from {', '.join(DETECTION_DATASETS)})")
    return dict(DETECTION_PRESETS[dataset])
