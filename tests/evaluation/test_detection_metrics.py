"""AP of ROIs on hand-computed cases, and the ossification-box hit rate."""

import numpy as np
import pytest

from boneage.evaluation import average_precision, detection_metrics, ossification_hits

GT = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)]


def test_perfect_detections_have_ap_one():
    assert average_precision([(GT[0], np.array([0.9, 0.8]))], GT) == pytest.approx(1.0)


def test_half_recall_gives_about_half():
    # one hit (rank 1) and one miss: precision 1 up to recall 0.5, then nothing: 51 of 101 points
    miss = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float)
    assert average_precision([(miss, np.array([0.9, 0.8]))], GT) == pytest.approx(51 / 101)
    # the miss ranked first: precision 0.5 at recall 0.5
    assert average_precision([(miss, np.array([0.8, 0.9]))], GT) == pytest.approx(0.5 * 51 / 101)


def test_a_gt_box_is_matched_once():
    double = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    assert average_precision([(double, np.array([0.9, 0.8]))], GT) == pytest.approx(51 / 101)


def test_iou_thresholds_average_into_ap():
    shifted = np.array([[0, 0, 10, 10], [21, 21, 31, 31]], float)  # IoU 81/119 = 0.68 with its gt
    m = detection_metrics([(shifted, np.array([0.9, 0.8]))], GT)
    # thresholds 0.50-0.65 (4 of 10): AP 1; 0.70-0.95 (6): one of two found, AP 51/101
    assert m["ap"] == pytest.approx(100 * (4 + 6 * 51 / 101) / 10, abs=0.01)
    assert m["ap50"] == 100.0 and m["ap75"] == pytest.approx(100 * 51 / 101, abs=0.01) and m["recall50"] == 100.0


def test_ossification_hits_count_boxes_containing_a_roi_centre():
    rois = [np.array([[0, 0, 4, 4], [10, 10, 14, 14]], float)]  # centres (2, 2) and (12, 12)
    boxes = [np.array([[0, 0, 5, 5], [11, 11, 20, 20], [30, 30, 40, 40]], float)]
    hits = ossification_hits(rois, boxes, [("DIP", "DIP", "Radius")])
    assert hits["by_class"] == {"DIP": 100.0, "Radius": 0.0} and hits["all"] == pytest.approx(200 / 3, abs=0.01)
