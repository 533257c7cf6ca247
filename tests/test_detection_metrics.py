"""Detection metrics against cases small enough to work out by hand: VOC's AP in both devkit forms (true and
false positives, duplicates, `difficult` boxes, the IoU threshold) and COCO's mAP through pycocotools."""

from __future__ import annotations

import numpy as np
import pytest

from training.detection_metrics import (
    Detection,
    GroundTruth,
    class_pr,
    coco_map,
    detection_scores,
    iou,
    voc_ap,
    voc_map,
)

# Two images. Class 1: A (image 1), B (image 1, difficult), C (image 2); class 2: D (image 2).
TRUTHS = {
    1: GroundTruth(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([1, 1]), np.array([False, True])),
    2: GroundTruth(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), np.array([1, 2]), np.array([False, False])),
}
DETECTIONS = [
    Detection(1, 1, 0.9, (0, 0, 10, 10)),  # A exactly: true positive
    Detection(1, 1, 0.8, (0, 0, 10, 10)),  # A again: a duplicate is a false positive
    Detection(1, 1, 0.7, (20, 20, 30, 30)),  # B is difficult: neither true nor false
    Detection(2, 1, 0.6, (5, 0, 15, 10)),  # C at IoU 50/150 = 1/3 <= 0.5: false positive
    Detection(2, 1, 0.5, (0, 0, 10, 12)),  # C at IoU 100/120 = 0.83: true positive
    Detection(1, 2, 0.4, (50, 50, 60, 60)),  # D's box, but in the wrong image: false positive
]


def test_iou_of_known_boxes():
    assert iou(np.array([0, 0, 10, 10.0]), np.array([[5, 0, 15, 10.0], [0, 0, 10, 12.0], [20, 20, 30, 30.0]])) \
        == pytest.approx([1 / 3, 100 / 120, 0.0])


def test_precision_recall_of_class_1_by_hand():
    recall, precision, positives = class_pr(DETECTIONS, TRUTHS, 1)
    assert positives == 2  # the difficult box does not count
    # after each detection by falling score: TP, FP (duplicate), ignored (difficult), FP, TP
    assert recall.tolist() == [0.5, 0.5, 0.5, 0.5, 1.0]
    assert precision.tolist() == pytest.approx([1.0, 0.5, 0.5, 1 / 3, 0.5])


def test_voc07_eleven_point_ap_by_hand():
    recall, precision, _ = class_pr(DETECTIONS, TRUTHS, 1)
    # recall >= 0, 0.1, ..., 0.5: best precision 1 (6 points); 0.6 ... 1.0: only recall 1, precision 0.5 (5 points)
    assert voc_ap(recall, precision, eleven_point=True) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)


def test_voc_area_ap_by_hand():
    recall, precision, _ = class_pr(DETECTIONS, TRUTHS, 1)
    # the precision envelope is 1 up to recall 0.5, then 0.5 up to recall 1: 0.5 * 1 + 0.5 * 0.5
    assert voc_ap(recall, precision, eleven_point=False) == pytest.approx(0.75)


def test_map_averages_the_classes_with_ground_truth_in_percent():
    eleven, per_class = voc_map(DETECTIONS, TRUTHS, 20, eleven_point=True)
    assert set(per_class) == {1, 2}  # classes 3-20 have no ground truth and are left out
    assert per_class[2] == 0.0  # D was never found
    assert eleven == pytest.approx(100 * (8.5 / 11) / 2)
    area, _ = voc_map(DETECTIONS, TRUTHS, 20, eleven_point=False)
    assert area == pytest.approx(100 * 0.75 / 2)


def test_an_iou_of_exactly_one_half_is_not_a_match():
    truths = {1: GroundTruth(np.array([[0, 0, 10, 10.0]]), np.array([1]), np.array([False]))}
    at_half = [Detection(1, 1, 0.9, (0, 0, 10, 20))]  # IoU 100 / 200
    just_over = [Detection(1, 1, 0.9, (0, 0, 10, 19.9))]
    assert voc_map(at_half, truths, 1, eleven_point=False)[0] == 0.0
    assert voc_map(just_over, truths, 1, eleven_point=False)[0] == pytest.approx(100.0)


def _coco_split():
    return {"images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 100}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 10, 50, 50], "area": 2500.0,
                             "iscrowd": 0}],
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}


def test_coco_map_of_a_perfect_and_of_a_loose_detection():
    split = _coco_split()
    perfect = [Detection(7, 2, 0.9, (10, 10, 60, 60))]  # label 2 is category 18
    assert coco_map(split, perfect, [7]) == pytest.approx((100.0, 100.0))
    # IoU 50x31 / 50x50 = 0.62: a match at thresholds 0.50, 0.55, 0.60 and none of the 7 above, so 3/10 of
    # the mAP@[.5:.95] and all of mAP@.5
    loose = [Detection(7, 2, 0.9, (10, 10, 60, 41))]
    assert coco_map(split, loose, [7]) == pytest.approx((30.0, 100.0))
    assert coco_map(split, [], [7]) == (0.0, 0.0)


def test_detection_scores_names_the_metrics_of_each_dataset():
    voc = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
           "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "difficult": 0}]}
    scores = detection_scores(("voc07", "voc"), voc, [Detection(1, 1, 0.9, (0, 0, 10, 10))], [1, 2])
    assert scores == {"test_images": 2.0, "test_map_voc07": 100.0, "test_map_voc": 100.0}
    coco = detection_scores(("coco",), _coco_split(), [Detection(7, 2, 0.9, (10, 10, 60, 60))], [7])
    assert coco == pytest.approx({"test_images": 1.0, "test_coco_map": 100.0, "test_coco_map50": 100.0})
