"""Detection metrics of Tables 7-8: PASCAL VOC's mAP@0.5 (both devkit forms) and COCO's mAP via pycocotools.

VOC (the devkit's `VOCevaldet` / py-faster-rcnn's `voc_eval`, re-implemented here in a few lines):
per class, detections of all test images are sorted by score; each is a true positive when its best
IoU with a ground-truth box of that class in its image exceeds 0.5 and that box is neither
`difficult` nor already matched, a false positive when the IoU is at most 0.5 or the box was matched
before, and neither when the box is `difficult`. Recall counts the non-difficult boxes. AP is then
either the VOC2007 devkit's 11-point interpolation (mean of the best precision at recall >= 0, 0.1,
..., 1) or, from VOC2010 on, the area under the monotone precision envelope. mAP is the mean AP over
the classes that have ground truth in the test set (all 20 on VOC's). Boxes are continuous
coordinates (`pipelines.detection_sources`), so IoU needs no "+1".

COCO: pycocotools' `COCOeval` on the prepared split file (COCO's own format), bbox IoU, its
mAP@[.5:.95] (stats[0]) and mAP@.5 (stats[1]). All results are in percent, as the paper prints them.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.detection_catalog import MAP_COCO, MAP_COCO50, MAP_VOC, MAP_VOC07, TEST_IMAGES

VOC_IOU = 0.5

DETECTION_METRICS = (MAP_VOC07, MAP_VOC, MAP_COCO, MAP_COCO50)


@dataclass(frozen=True)
class Detection:
    image_id: int
    label: int  # 1..C
    score: float
    box: tuple[float, float, float, float]  # x0 y0 x1 y1


@dataclass(frozen=True)
class GroundTruth:
    boxes: np.ndarray  # (N, 4) x0 y0 x1 y1
    labels: np.ndarray  # (N,)
    difficult: np.ndarray  # (N,) bool


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each of `boxes` (x0 y0 x1 y1, continuous coordinates)."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def voc_ap(recall: np.ndarray, precision: np.ndarray, *, eleven_point: bool) -> float:
    """AP from a precision-recall curve: VOC2007's 11-point form or the area under the precision envelope."""
    if eleven_point:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.arange(0.0, 1.1, 0.1)]))  # the devkit's thresholds, verbatim
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the envelope: best precision at this recall or beyond
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def class_pr(detections: Iterable[Detection], truths: Mapping[int, GroundTruth], label: int,
             iou_threshold: float = VOC_IOU) -> tuple[np.ndarray, np.ndarray, int]:
    """Recall and precision after each detection of class `label` (by falling score), and its positives."""
    boxes = {i: (t.boxes[t.labels == label], t.difficult[t.labels == label]) for i, t in truths.items()}
    positives = int(sum((~difficult).sum() for _, difficult in boxes.values()))
    ranked = sorted((d for d in detections if d.label == label), key=lambda d: -d.score)
    matched = {i: np.zeros(len(b), bool) for i, (b, _) in boxes.items()}
    tp, fp = np.zeros(len(ranked)), np.zeros(len(ranked))
    for k, det in enumerate(ranked):
        gt, difficult = boxes.get(det.image_id, (np.zeros((0, 4)), np.zeros(0, bool)))
        overlaps = iou(np.asarray(det.box, np.float64), gt) if len(gt) else np.zeros(0)
        best = int(overlaps.argmax()) if len(overlaps) else -1
        if best < 0 or overlaps[best] <= iou_threshold:
            fp[k] = 1
        elif not difficult[best]:
            fp[k], tp[k] = (1, 0) if matched[det.image_id][best] else (0, 1)
            matched[det.image_id][best] = True
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(positives, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision, positives


def voc_map(detections: list[Detection], truths: Mapping[int, GroundTruth], num_classes: int, *,
            eleven_point: bool) -> tuple[float, dict[int, float]]:
    """VOC mAP@0.5 in percent and each class's AP (classes without ground truth left out of both)."""
    per_class: dict[int, float] = {}
    for label in range(1, num_classes + 1):
        recall, precision, positives = class_pr(detections, truths, label)
        if positives:
            per_class[label] = 100.0 * voc_ap(recall, precision, eleven_point=eleven_point)
    return (float(np.mean(list(per_class.values()))) if per_class else 0.0), per_class


def voc_truths(split: dict[str, Any], image_ids: Iterable[int] | None = None) -> dict[int, GroundTruth]:
    """Ground truth of a prepared VOC split file (continuous x0 y0 x1 y1 boxes), for the images scored."""
    wanted = set(image_ids) if image_ids is not None else {image["id"] for image in split["images"]}
    by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in wanted}
    for ann in split["annotations"]:
        if ann["image_id"] in by_image:
            by_image[ann["image_id"]].append(ann)
    labels = {c["id"]: i + 1 for i, c in enumerate(split["categories"])}
    return {i: GroundTruth(np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                                    np.float64).reshape(-1, 4),
                           np.array([labels[a["category_id"]] for a in anns], np.int64),
                           np.array([bool(a.get("difficult")) for a in anns], bool))
            for i, anns in by_image.items()}


def coco_map(split: dict[str, Any], detections: list[Detection], image_ids: Iterable[int]) -> tuple[float, float]:
    """COCO mAP@[.5:.95] and mAP@.5 in percent (pycocotools) over the images scored."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return 0.0, 0.0  # loadRes refuses an empty result list; no detection scores 0
    categories = [c["id"] for c in split["categories"]]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        truth = COCO()
        truth.dataset = {k: split[k] for k in ("images", "annotations", "categories")}
        truth.createIndex()
        results = truth.loadRes([{"image_id": d.image_id, "category_id": categories[d.label - 1], "score": d.score,
                                  "bbox": [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]]}
                                 for d in detections])
        evaluation = COCOeval(truth, results, "bbox")
        evaluation.params.imgIds = sorted(set(image_ids))
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    mean, at_50 = evaluation.stats[0], evaluation.stats[1]
    return 100.0 * max(float(mean), 0.0), 100.0 * max(float(at_50), 0.0)  # -1 means "no ground truth": 0


def detection_scores(metrics: Iterable[str], split: dict[str, Any], detections: list[Detection],
                     image_ids: list[int]) -> dict[str, float]:
    """The test split's metrics (`pipelines.detection_catalog.METRICS_OF`: voc07, voc, coco) as MLflow keys."""
    scores: dict[str, float] = {TEST_IMAGES: float(len(set(image_ids)))}
    truths = voc_truths(split, image_ids) if {"voc07", "voc"} & set(metrics) else {}
    num_classes = len(split["categories"])
    for metric in metrics:
        if metric == "voc07":
            scores[MAP_VOC07] = voc_map(detections, truths, num_classes, eleven_point=True)[0]
        elif metric == "voc":
            scores[MAP_VOC] = voc_map(detections, truths, num_classes, eleven_point=False)[0]
        elif metric == "coco":
            scores[MAP_COCO], scores[MAP_COCO50] = coco_map(split, detections, image_ids)
    return scores
