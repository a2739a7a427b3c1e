"""The RUS-CHN box geometry's constants are what the Koitka ossification boxes measure (scripts/rus_chn_geometry.py)."""

import pytest

from boneage.data import load_hand_keypoints, load_ossification_boxes
from boneage.evaluation.rus_chn import code_geometry, measure_box_geometry, measure_keypoint_geometry, summarise
from tests.conftest import SHARED_DATA, require_shared

pytestmark = pytest.mark.realdata

BOXES = SHARED_DATA / "annotations" / "ossification-boxes" / "annotations"
KEYPOINTS = SHARED_DATA / "annotations" / "hand-keypoints-21"


@pytest.fixture(scope="module")
def box_values():
    return measure_box_geometry(load_ossification_boxes(require_shared(BOXES)))


def test_measured_on_the_complete_koitka_images(box_values):
    assert int(box_values["n_images"]) == 327
    assert len(box_values["radius_t"]) == 327


def test_code_constants_equal_the_measurement(box_values):
    code = code_geometry()
    assert set(code) >= {"radius_t", "radius_p", "radius_w", "radius_h", "ulna_t", "ulna_p", "ulna_w", "ulna_h",
                         "mcp_size", "pip_size", "dip_size", "thumb_mcp_size", "thumb_ip_size"}
    for key, constant in code.items():
        assert constant == pytest.approx(summarise(box_values[key])["median"], abs=0.005), key


def test_keypoints_place_the_middle_finger_joints_where_koitka_boxes_are(box_values):
    """The two frames agree within ~15%, and the conversion factors in the code are the measured ratios."""
    from boneage.models.rus_chn.geometry import KOITKA_TO_KEYPOINTS

    keypoint_values = measure_keypoint_geometry(load_hand_keypoints(require_shared(KEYPOINTS)))
    assert len(keypoint_values["pip3_p"]) == 568
    ratios = {key: summarise(keypoint_values[key])["median"] / summarise(box_values[key])["median"]
              for key in ("pip3_t", "dip3_t", "pip3_p", "dip3_p")}
    assert all(0.8 < r < 1.15 for r in ratios.values()), ratios
    across, along = KOITKA_TO_KEYPOINTS
    assert across == pytest.approx((ratios["pip3_t"] + ratios["dip3_t"]) / 2, abs=0.01)
    assert along == pytest.approx((ratios["pip3_p"] + ratios["dip3_p"]) / 2, abs=0.01)
