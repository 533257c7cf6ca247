"""The detection datasets (paper Appendix A, Tables 7-8), beside the classification ones in `catalog.py`.

Kept apart from `catalog.DatasetName` on purpose: every classification code path (presets, loaders,
the `train:` fields, Tables 2-6) keys on that Literal, and none of them can train a detector. A grid
with `task: detection` names one of these instead. Like `catalog`, this module imports nothing heavy.

Prepared detection data is a folder of split files in COCO's JSON format (images, annotations,
categories) plus `manifest.json`; the images stay where the official layout put them (the manifest
names the folder). Split names say where a split came from: VOC's `<year>_<set>` (`2007_trainval`,
`2012_val`, ...) and COCO's own folder names (`train2014`, `val2017`, ...).
"""

from __future__ import annotations

from typing import Literal, get_args

DetectionDatasetName = Literal["voc2007", "voc2012", "coco"]
DETECTION_DATASETS: tuple[str, ...] = get_args(DetectionDatasetName)
DETECTION_TASK = "detection"  # the manifest's `task` and the grid's `task:` value

# PASCAL VOC's 20 classes in the devkit's order; label i + 1 (0 is the detector's background)
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_SETS: tuple[str, ...] = ("train", "val", "trainval", "test")  # ImageSets/Main/<set>.txt
# The VOCdevkit year a VOC dataset needs; other years found beside it are prepared too (07+12, 07++12).
VOC_YEAR: dict[str, str] = {"voc2007": "2007", "voc2012": "2012"}
NUM_DETECTION_CLASSES: dict[str, int] = {"voc2007": 20, "voc2012": 20, "coco": 80}

# How a detection run is scored on its test split (all mAP in percent):
# voc07: VOC mAP@0.5 with the VOC2007 devkit's 11-point interpolated AP (Table 7, VOC 07 test);
# voc: VOC mAP@0.5 with the area under the interpolated precision-recall curve (VOC2010+ devkit, Table 7's
# VOC 12 column); coco: pycocotools' mAP@[.5:.95] and mAP@.5 (Table 8).
DetectionMetric = Literal["voc07", "voc", "coco"]
METRICS_OF: dict[str, tuple[str, ...]] = {"voc2007": ("voc07", "voc"), "voc2012": ("voc07", "voc"), "coco": ("coco",)}
# their MLflow keys (orchestrator.conventions re-exports them), logged for the test split, in percent
MAP_VOC07 = "test_map_voc07"  # VOC mAP@0.5, 11-point interpolated AP (VOC2007 devkit; Table 7, VOC 07 test)
MAP_VOC = "test_map_voc"  # VOC mAP@0.5, area under the precision envelope (VOC2010+ devkit; Table 7, VOC 12)
MAP_COCO = "test_coco_map"  # COCO mAP@[.5:.95] (Table 8)
MAP_COCO50 = "test_coco_map50"  # COCO mAP@.5 (Table 8)
TEST_IMAGES = "test_images"  # images the mAP was measured on
METRIC_KEYS: dict[str, tuple[str, ...]] = {"voc07": (MAP_VOC07,), "voc": (MAP_VOC,), "coco": (MAP_COCO, MAP_COCO50)}

assert set(VOC_YEAR) | {"coco"} == set(DETECTION_DATASETS) == set(NUM_DETECTION_CLASSES) == set(METRICS_OF)
