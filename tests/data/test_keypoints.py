"""Hand keypoints (COCO) and ossification boxes (Pascal VOC): parsing, ROI choice, coordinates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.conftest import SHARED_DATA, require_shared

from boneage.data import (
    KEYPOINT_NAMES,
    ROI_KEYPOINTS,
    load_hand_keypoints,
    load_ossification_boxes,
    to_input_coordinates,
)
from boneage.errors import DatasetError


def _coco(path, hands):
    images = [{"id": str(i), "width": 200, "height": 100, "file_name": f"{i}.png"} for i in range(len(hands))]
    annotations = []
    for i, (left, right) in enumerate(hands):
        annotations.append({"image_id": str(i), "lefthand_valid": left is not None, "righthand_valid": right is not None,
                            "lefthand_kpts": left or [0] * 63, "righthand_kpts": right or [0] * 63})
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"keypoints": list(KEYPOINT_NAMES)}]}))
    return path


def _hand(x0=0.0):
    return [v for k in range(21) for v in (x0 + 2.0 * k, 50.0, 2)]


def test_seventeen_rois_leave_out_the_finger_tips_only():
    assert len(ROI_KEYPOINTS) == 17
    assert set(KEYPOINT_NAMES) - set(ROI_KEYPOINTS) == {"forefinger4", "middle_finger4", "ring_finger4", "pinky_finger4"}
    assert "thumb4" in ROI_KEYPOINTS and "wrist" in ROI_KEYPOINTS


def test_coco_keypoints_are_normalised_and_both_hands_kept(tmp_path):
    hidden = _hand()
    hidden[2] = 0  # one invisible point: the hand is not used
    found = load_hand_keypoints(_coco(tmp_path / "k.json", [(_hand(), None), (_hand(), _hand(100.0)), (hidden, None)]))
    assert sorted(found) == ["0", "1"]
    assert found["0"].points.shape == (1, 21, 2) and found["1"].points.shape == (2, 21, 2)
    assert found["0"].points[0, 3].tolist() == pytest.approx([6.0 / 200, 0.5])
    rois = found["1"].roi_points()
    assert rois.shape == (34, 2)
    # the ROI points are the 21 minus the finger tips, in order: the 6th ROI is forefinger1 (index 5)
    assert rois[5, 0] == pytest.approx(2.0 * 5 / 200)
    assert rois[8, 0] == pytest.approx(2.0 * 9 / 200)  # forefinger4 (8) skipped: 9th ROI is middle_finger1


def test_bad_keypoint_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a COCO"):
        load_hand_keypoints(tmp_path / "bad.json")
    with pytest.raises(DatasetError, match="no keypoint JSON"):
        load_hand_keypoints(tmp_path / "missing.json")


def test_input_coordinates_follow_the_resize_policy():
    points = np.array([[0.5, 0.5], [0.0, 1.0]])
    assert to_input_coordinates(points, (200, 100), (64, 64), "stretch").tolist() == [[32.0, 32.0], [0.0, 64.0]]
    # pad: a 200 x 100 (H x W) image fills 64 x 32 centred in 64 x 64, i.e. 16 px of border left and right
    assert to_input_coordinates(points, (200, 100), (64, 64), "pad").tolist() == [[32.0, 32.0], [16.0, 64.0]]


def test_ossification_boxes_from_voc(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "77.xml").write_text(
        "<annotation><size><width>200</width><height>100</height></size>"
        "<object><name>DIP</name><bndbox><xmin>20</xmin><ymin>10</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object>"
        "</annotation>")
    found = load_ossification_boxes(tmp_path)
    assert found["77"].labels == ("DIP",) and found["77"].boxes.tolist() == [pytest.approx([0.1, 0.1, 0.2, 0.3])]


def test_real_annotations_load():
    require_shared(SHARED_DATA / "annotations")
    keypoints = load_hand_keypoints(SHARED_DATA / "annotations" / "hand-keypoints-21")
    assert len(keypoints) == 568
    assert all(0 <= k.points.min() and k.points.max() <= 1 for k in keypoints.values())
    boxes = load_ossification_boxes(SHARED_DATA / "annotations" / "ossification-boxes" / "annotations")
    labels = {label for b in boxes.values() for label in b.labels}
    assert len(boxes) == 329 and labels == {"DIP", "PIP", "MCP", "Radius", "Ulna", "Wrist"}
