"""Training masks: classical masks refined with keypoints, Dice/IoU, outlines (known answers)."""

import numpy as np
import pytest
from scipy import ndimage

from boneage.data import KEYPOINT_NAMES, hand_phantom
from boneage.errors import InvalidInputError
from boneage.preprocess.masks import classical_hand_mask
from boneage.segmentation import (
    FINGER_CHAINS,
    dice_score,
    iou_score,
    keypoint_radius,
    keypoints_inside,
    mask_outline,
    overlay_mask,
    refine_with_keypoints,
    training_masks,
)
from boneage.segmentation.training_masks import SEGMENTS


def phantom01(age_months=120.0, size=128, seed=0):
    return hand_phantom(age_months, "F", size, np.random.default_rng(seed)).astype(np.float32) / 255.0


def test_finger_chains_run_from_the_wrist_to_each_tip():
    assert len(FINGER_CHAINS) == 5 and len(SEGMENTS) == 20
    for chain in FINGER_CHAINS:
        names = [KEYPOINT_NAMES[i] for i in chain]
        assert names[0] == "wrist" and [n[-1] for n in names[1:]] == ["1", "2", "3", "4"]
        assert len({n[:-1] for n in names[1:]}) == 1  # one finger per chain


def test_dice_and_iou_known_answers():
    a = np.zeros((10, 10), dtype=bool)
    b = np.zeros((10, 10), dtype=bool)
    a[:, :4] = True  # 40 px
    b[:, 2:6] = True  # 40 px, 20 shared
    assert dice_score(a, b) == pytest.approx(0.5)
    assert iou_score(a, b) == pytest.approx(20 / 60)
    empty = np.zeros((4, 4), dtype=bool)
    assert dice_score(empty, empty) == 1.0 and iou_score(empty, empty) == 1.0
    assert dice_score(a, np.zeros_like(a)) == 0.0
    with pytest.raises(InvalidInputError):
        dice_score(a, empty)


def test_keypoints_inside_and_radius():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:, :5] = True
    inside = keypoints_inside(mask, np.array([[[2.5, 3.7], [4.99, 9.99], [5.0, 3.0], [-1.0, 5.0]]]))
    np.testing.assert_array_equal(inside, [[True, True, False, False]])
    hand = np.zeros((21, 2))
    for k, chain in enumerate(FINGER_CHAINS[1:]):
        hand[chain[1]] = [0.0, 40.0 + 10.0 * k]  # bases at 40, 50, 60, 70 px from the wrist: median 55
    assert keypoint_radius(hand, (500, 500)) == pytest.approx(0.08 * 55)
    assert keypoint_radius(np.zeros((37, 2)), (400, 300)) == pytest.approx(0.015 * 300)
    assert keypoint_radius(np.zeros((21, 2)), (10, 10)) == 1.0  # never below one pixel


def test_refine_adds_a_capsule_to_a_point_outside_and_nothing_far_away():
    mask = np.zeros((60, 40), dtype=bool)
    mask[30:60, 10:30] = True  # a "palm" running off the bottom edge
    hand = np.tile([20.5, 45.5], (21, 1))  # every keypoint in the palm ...
    hand[12] = [20.5, 10.5]  # ... but the middle finger tip, 20 px above it
    hand[11] = [20.5, 31.5]
    refined, changed = refine_with_keypoints(mask, hand, radius=2.0)
    assert changed
    assert keypoints_inside(refined, hand).all()
    assert refined[mask].all()  # nothing removed
    added = refined & ~mask
    assert added[10:30, 20].all()  # the segment from middle_finger3 up to the tip
    assert not added[:, :17].any() and not added[:, 24:].any()  # only within the radius of it
    assert ndimage.label(refined)[1] == 1
    unchanged, changed = refine_with_keypoints(refined, hand)
    assert not changed and np.array_equal(unchanged, refined)


def test_refine_keeps_the_piece_holding_most_keypoints():
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:15, 5:15] = True
    # Not a 21-point hand: discs only. A point off the image is drawn at the nearest border pixel.
    points = np.array([[10.0, 10.0], [10.0, -3.0], [10.5, 1.5]])
    refined, changed = refine_with_keypoints(mask, points, radius=1.5)
    assert changed and refined[0, 10] and refined[1, 10]  # the two discs merge: 2 points beat 1
    assert not refined[mask].any()
    assert not keypoints_inside(refined, points)[1]  # still off the image: never "covered"
    tie, _ = refine_with_keypoints(mask, points[:2], radius=1.5)  # 1 point each: the larger piece wins
    np.testing.assert_array_equal(tie, mask)


def test_training_masks_put_a_keypoint_outside_the_classical_mask_inside():
    image = phantom01()
    classical = classical_hand_mask(image)
    rows, cols = np.nonzero(classical)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(rows), size=21, replace=False)
    hand = np.stack([cols[pick] + 0.5, rows[pick] + 0.5], axis=1)
    top = rows.argmin()
    hand[11] = [cols[top] + 0.5, rows[top] + 0.5]  # middle_finger3: the highest pixel of the hand
    hand[12] = [cols[top] + 0.5, rows[top] - 6.5]  # middle_finger4: 7 px above, in the background
    assert not keypoints_inside(classical, hand[12:13])[0]
    black = np.zeros((64, 64), dtype=np.uint8)  # no hand at all: an empty mask, no keypoints
    result = training_masks([image, (image * 255).astype(np.uint8), black], [hand, None, None])
    refined = result.masks[0]
    assert keypoints_inside(refined, hand).all()
    assert refined[classical].all() and refined.sum() < classical.sum() * 1.05
    np.testing.assert_array_equal(result.masks[1], result.classical[1])
    assert result.refined == [True, False, False]
    report = result.report()
    assert report["n_images"] == 3 and report["n_with_keypoints"] == 1 and report["n_refined"] == 1
    assert report["n_empty"] == 1
    assert report["before"] == {"keypoint_coverage": round(20 / 21, 4), "all_keypoints_inside": 0.0}
    assert report["after"] == {"keypoint_coverage": 1.0, "all_keypoints_inside": 1.0}
    with pytest.raises(InvalidInputError):
        training_masks([image], [hand, hand])


def test_mask_outline_and_overlay():
    mask = np.zeros((9, 9), dtype=bool)
    mask[2:7, 2:7] = True
    ring = mask.copy()
    ring[3:6, 3:6] = False
    np.testing.assert_array_equal(mask_outline(mask), ring)
    edge = np.zeros((6, 6), dtype=bool)
    edge[3:, :] = True  # runs off the bottom, left and right: only its top row is an edge
    expected = np.zeros_like(edge)
    expected[3, :] = True
    np.testing.assert_array_equal(mask_outline(edge), expected)
    rgb = overlay_mask(np.full((9, 9), 0.5), mask, points=[[4.5, 4.5], [0.5, 0.5]], thickness=1)
    assert rgb.shape == (9, 9, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[2, 4]) == (60, 230, 60)  # the outline
    assert tuple(rgb[4, 4]) == (0, 200, 255) and tuple(rgb[0, 0]) == (255, 30, 30)  # inside / outside points
    assert tuple(rgb[8, 8]) == (128, 128, 128)
