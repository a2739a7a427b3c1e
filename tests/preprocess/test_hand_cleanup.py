"""Hand clean-up as a preprocessing step: closed-form results with a known mask (no segmenter)."""

import numpy as np
import pytest

from boneage.errors import InvalidInputError
from boneage.preprocess import (
    PreprocessConfig,
    build_preprocessing,
    preprocess_image,
    working_image,
)
from boneage.preprocess.masks import NoHandFoundError, clean_up_hand


def _image_and_mask():
    image = np.full((40, 60), 0.2, dtype=np.float32)
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 20:40] = True  # the "hand": 20 x 20 px
    image[10:30, 20:40] = np.linspace(0.4, 0.8, 400, dtype=np.float32).reshape(20, 20)
    image[2:6, 2:6] = 1.0  # a bright "marker" outside the hand
    return image, mask


def test_mask_blanks_everything_outside_the_hand():
    image, mask = _image_and_mask()
    out, box = clean_up_hand(image, mask, "mask")
    assert out.shape == image.shape and box == (0, 40, 0, 60)
    assert np.all(out[~mask] == 0) and np.array_equal(out[mask], image[mask])


def test_crop_keeps_the_hand_box_plus_margin():
    image, mask = _image_and_mask()
    out, box = clean_up_hand(image, mask, "crop", margin=0.1)  # 20 px box + 2 px each side
    assert out.shape == (24, 24) and box == (8, 32, 18, 42)
    np.testing.assert_array_equal(out, image[8:32, 18:42])
    both, _ = clean_up_hand(image, mask, "crop_mask", margin=0.1)
    assert both.shape == (24, 24) and both[0, 0] == 0 and both[2, 2] == image[10, 20]


def test_hand_contrast_stretches_the_hands_percentiles():
    image, mask = _image_and_mask()
    out, _ = clean_up_hand(image, mask, "mask", contrast="hand", percentiles=(0.0, 100.0))
    assert out[mask].min() == pytest.approx(0.0, abs=1e-6) and out[mask].max() == pytest.approx(1.0, abs=1e-6)
    unchanged, _ = clean_up_hand(image, mask, "none", contrast="image")
    assert unchanged is image or np.array_equal(unchanged, image)


def test_empty_mask_is_no_hand():
    image, _ = _image_and_mask()
    with pytest.raises(NoHandFoundError, match="no hand"):
        clean_up_hand(image, np.zeros_like(image, dtype=bool), "crop_mask")


def test_the_hand_step_is_composed_between_the_working_image_and_the_resize():
    image, mask = _image_and_mask()
    calls = []

    def hand_step(state):
        """A stand-in for segmentation.HandCleanup with a known mask."""
        calls.append((state.image.shape, state.source))
        cleaned, box = clean_up_hand(state.image, mask, "crop_mask", margin=0.0)
        return state.cropped(cleaned, box)

    config = PreprocessConfig(image_size=(20, 20), hand="crop_mask", crop_margin=0.0, normalization="minmax")
    prepared = build_preprocessing(config, hand_step)(image, "x.png")
    assert calls == [((40, 60), "x.png")]
    assert prepared.image.shape == (20, 20)
    # minmax over the whole image maps 0.2..1.0 -> 0..1, the crop is exactly the hand
    np.testing.assert_allclose(prepared.image, (image[10:30, 20:40] - 0.2) / 0.8, atol=1e-6)
    # the geometry maps the model input back onto the crop's place in the radiograph
    assert prepared.region == (10.0, 30.0, 20.0, 40.0) and prepared.content == (0, 0, 20, 20)
    np.testing.assert_allclose(prepared.input_to_original(np.array([[0.0, 0.0], [20.0, 20.0]])), [[20, 10], [40, 30]])
    np.testing.assert_array_equal(preprocess_image(image, config, "x.png", hand_step), prepared.image)


def test_preprocessing_needs_a_hand_step_when_configured():
    with pytest.raises(InvalidInputError, match="needs a hand segmenter"):
        preprocess_image(np.random.default_rng(0).random((50, 50)), PreprocessConfig(hand="mask"))
    with pytest.raises(InvalidInputError, match="needs a hand segmenter"):
        preprocess_image(np.random.default_rng(0).random((50, 50)), PreprocessConfig(contrast="hand"))


def test_fix_inversion_undoes_a_white_background():
    dark = np.zeros((64, 64), dtype=np.float32)
    dark[16:48, 20:44] = 0.8  # a bright "hand" on a dark background
    config = PreprocessConfig(image_size=(64, 64), fix_inversion=True, normalization="minmax")
    np.testing.assert_allclose(preprocess_image(1.0 - dark, config), preprocess_image(dark, config), atol=1e-6)
    plain = PreprocessConfig(image_size=(64, 64), normalization="minmax")
    np.testing.assert_allclose(preprocess_image(1.0 - dark, plain), 1.0 - dark / 0.8, atol=1e-6)


def test_config_round_trip_and_old_configs_mean_no_clean_up():
    config = PreprocessConfig(hand="crop", crop_margin=0.1, fix_inversion=True, contrast="hand", segmenter_version="v1")
    assert PreprocessConfig.from_dict(config.to_dict()) == config and config.uses_segmenter
    old = {"image_size": [100, 100], "resize": "stretch", "normalization": "percentile",
           "percentiles": [0.5, 99.5], "mean": 0.5, "std": 0.25}
    restored = PreprocessConfig.from_dict(old)
    assert restored.hand == "none" and not restored.fix_inversion and not restored.uses_segmenter
    for bad in ({"hand": "blur"}, {"contrast": "clahe2"}, {"crop_margin": -0.1}):
        with pytest.raises(InvalidInputError):
            PreprocessConfig(**bad)


def test_working_image_reduces_large_images_only():
    config = PreprocessConfig(image_size=(100, 100))
    small = np.zeros((300, 200), dtype=np.float32)
    assert working_image(small, config) is small
    assert working_image(np.zeros((2048, 1024), dtype=np.float32), config).shape == (512, 256)
