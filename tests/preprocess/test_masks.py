import json

import numpy as np
import pytest
from scipy import ndimage
from tests.conftest import SHARED_DATA

from boneage.data import hand_phantom
from boneage.errors import UnusableImageError
from boneage.preprocess.masks import (
    NoHandFoundError,
    apply_mask,
    check_hand_found,
    classical_hand_mask,
    crop_to_mask,
    fill_holes,
    fix_inversion,
    is_inverted,
    keep_largest_component,
    keypoint_coverage,
    otsu_thresholds,
    postprocess_mask,
    smooth_mask,
)


def disk_mask(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def phantom01(age_months=120.0, sex="F", size=128, seed=0):
    return hand_phantom(age_months, sex, size, np.random.default_rng(seed)).astype(np.float32) / 255.0


def test_keep_largest_component_keeps_the_bigger_blob():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:6, 2:8] = True  # 24 px
    mask[10:18, 10:18] = True  # 64 px
    expected = np.zeros_like(mask)
    expected[10:18, 10:18] = True
    np.testing.assert_array_equal(keep_largest_component(mask), expected)
    assert not keep_largest_component(np.zeros((5, 5), dtype=bool)).any()


def test_keep_largest_component_connectivity():
    mask = np.zeros((20, 20), dtype=bool)
    mask[0:3, 0:3] = True  # two 9-px squares touching at a corner...
    mask[3:6, 3:6] = True
    mask[10:14, 10:14] = True  # ...and a 16-px square
    corner_joined = mask.copy()
    corner_joined[10:14, 10:14] = False
    np.testing.assert_array_equal(keep_largest_component(mask, connectivity=2), corner_joined)
    np.testing.assert_array_equal(keep_largest_component(mask, connectivity=1), mask & ~corner_joined)


def test_fill_holes_fills_a_ring_but_not_a_notch_open_to_the_border():
    ring = disk_mask((30, 30), (15, 15), 10) & ~disk_mask((30, 30), (15, 15), 5)
    np.testing.assert_array_equal(fill_holes(ring), disk_mask((30, 30), (15, 15), 10))
    notch = np.zeros((20, 20), dtype=bool)
    notch[5:15, 0:15] = True
    notch[8:12, 0:10] = False  # a slot reaching the left border: background, not a hole
    np.testing.assert_array_equal(fill_holes(notch), notch)


def test_smooth_mask_removes_a_spur_and_keeps_a_disk():
    disk = disk_mask((64, 64), (32, 28), 12)
    spurred = disk.copy()
    spurred[32, 28:62] = True  # a 1-px line sticking out of the disk
    np.testing.assert_array_equal(smooth_mask(spurred, 2), disk)
    np.testing.assert_array_equal(smooth_mask(spurred, 0), spurred)
    # A shape running off the image (a forearm) is not eaten from the border.
    half = disk_mask((64, 64), (63, 32), 12)
    np.testing.assert_array_equal(smooth_mask(half, 2), half)


def test_postprocess_mask_largest_filled_smoothed_or_empty():
    big = disk_mask((64, 64), (30, 30), 15)
    mask = big & ~disk_mask((64, 64), (30, 30), 4)  # a hole...
    mask[2:5, 55:60] = True  # ...a small blob...
    mask[30, 30:60] = True  # ...and a spur
    expected = big.copy()
    expected[30, 30:60] = True
    np.testing.assert_array_equal(postprocess_mask(mask), expected)
    np.testing.assert_array_equal(postprocess_mask(mask, smooth_radius=2), big)
    tiny = np.zeros((64, 64), dtype=bool)
    tiny[:5, :5] = True  # 25 px = 0.6% of the image
    assert not postprocess_mask(tiny, min_fraction=0.02).any()
    np.testing.assert_array_equal(postprocess_mask(tiny, min_fraction=0.005), tiny)


@pytest.mark.parametrize("age_months", [12.0, 120.0, 216.0])
def test_is_inverted_on_a_phantom_and_its_inversion(age_months):
    image = phantom01(age_months)
    assert not is_inverted(image)
    assert is_inverted(1.0 - image)
    fixed, was_inverted = fix_inversion(1.0 - image)
    assert was_inverted
    np.testing.assert_allclose(fixed, image, atol=1e-6)
    unchanged, was_inverted = fix_inversion(image)
    assert not was_inverted
    np.testing.assert_array_equal(unchanged, image)


def test_otsu_thresholds_separate_the_modes():
    two = np.repeat([0.2, 0.8], 500)
    (t,) = otsu_thresholds(two)
    assert 0.2 < t <= 0.8
    np.testing.assert_array_equal(two >= t, two == 0.8)
    three = np.repeat([0.1, 0.5, 0.9], [300, 500, 200])
    t1, t2 = otsu_thresholds(three, classes=3)
    assert 0.1 < t1 <= 0.5 < t2 <= 0.9
    flat = np.zeros(10, dtype=np.float32)
    assert not (flat >= otsu_thresholds(flat)[0]).any()  # constant: no foreground


def test_classical_hand_mask_covers_a_phantom_hand_and_drops_a_letter():
    clean = phantom01(120.0, "F", 128, seed=0)
    background = np.median(clean[:8, :8])
    hand = keep_largest_component(ndimage.gaussian_filter(clean, 1.0) > background + 0.125)  # soft tissue
    letter = np.zeros_like(hand)
    letter[6:20, 106:109] = True  # an "L" 3 px thick in the top right corner
    letter[17:20, 106:120] = True
    assert ndimage.distance_transform_edt(~hand)[letter].min() > 10  # well away from the hand
    image = clean.copy()
    image[letter] = 1.0
    mask = classical_hand_mask(image)
    assert mask[hand].mean() > 0.95
    assert not mask[letter].any()
    assert mask.sum() < 1.5 * hand.sum()  # the hand, not the whole image


def test_keypoint_coverage_counts_points_inside():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:, :5] = True
    points = np.array([[2.5, 3.7], [4.99, 9.99], [5.0, 3.0], [-1.0, 5.0]])  # in, in, out, off the image
    assert keypoint_coverage(mask, points) == 0.5


def test_crop_to_mask_bounds_and_apply_mask():
    image = np.arange(50 * 80, dtype=np.float32).reshape(50, 80)
    mask = np.zeros((50, 80), dtype=bool)
    mask[10:30, 20:60] = True  # 20 rows x 40 columns
    cropped, box = crop_to_mask(image, mask, margin=0.1)
    assert box == (8, 32, 16, 64)
    np.testing.assert_array_equal(cropped, image[8:32, 16:64])
    assert crop_to_mask(image, mask, margin=1.0)[1] == (0, 50, 0, 80)  # clipped to the image
    masked = apply_mask(image, mask, fill=-1.0)
    np.testing.assert_array_equal(masked[mask], image[mask])
    assert np.all(masked[~mask] == -1.0)


def test_check_hand_found_refuses_a_black_image():
    mask = classical_hand_mask(np.zeros((64, 64), dtype=np.float32))
    assert not mask.any()
    with pytest.raises(NoHandFoundError) as err:
        check_hand_found(mask, source="blank.png")
    assert isinstance(err.value, UnusableImageError)
    message = str(err.value)
    assert "\n" not in message and message.startswith("blank.png: no hand found")
    with pytest.raises(NoHandFoundError):
        crop_to_mask(np.zeros((64, 64)), mask)
    hand = np.zeros((64, 64), dtype=bool)
    hand[10:40, 10:40] = True
    check_hand_found(hand)  # 22% of the image: accepted


@pytest.mark.realdata
def test_classical_hand_mask_covers_annotated_keypoints_on_rsna_100px():
    from PIL import Image

    coco_path = SHARED_DATA / "annotations" / "hand-keypoints-21" / "all_coco.json"
    image_dir = SHARED_DATA / "rsna-100px" / "images"
    if not coco_path.exists() or not image_dir.exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (needs rsna-100px and annotations/hand-keypoints-21)")
    coco = json.loads(coco_path.read_text())
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    annotations = sorted(coco["annotations"], key=lambda ann: int(ann["image_id"]))[:50]
    coverages, areas = [], []
    for ann in annotations:
        keypoints = np.asarray(ann["lefthand_kpts"] if ann["lefthand_valid"] else ann["righthand_kpts"], float)
        keypoints = keypoints.reshape(-1, 3)
        width, height = sizes[ann["image_id"]]
        points = keypoints[keypoints[:, 2] > 0, :2] * [100.0 / width, 100.0 / height]
        pixels = Image.open(image_dir / f"{ann['image_id']}.png").convert("L")
        mask = classical_hand_mask(np.asarray(pixels, dtype=np.float32) / 255.0)
        coverages.append(keypoint_coverage(mask, points))
        areas.append(mask.mean())
    # Measured: mean coverage 0.987 and mean mask area 0.316 of the image on these 50 ids
    # (0.992 and 0.284 on all 568 annotated ids).
    assert np.mean(coverages) > 0.95
    assert np.mean(areas) < 0.5  # a mask of the whole image would cover every keypoint
