import numpy as np
import pytest
import torch

from boneage.errors import InvalidInputError
from boneage.inference import predict_images
from boneage.io import normalize_sex
from boneage.models import create_model
from boneage.preprocess import PreprocessConfig
from boneage.utils import format_months


@pytest.mark.parametrize("months,text", [(0, "0 y 0 m"), (125.4, "10 y 5 m"), (11.6, "1 y 0 m"), (228, "19 y 0 m")])
def test_format_months(months, text):
    assert format_months(months) == text


@pytest.mark.parametrize("value,sex", [("M", "M"), ("f", "F"), ("Male", "M"), (" female ", "F")])
def test_normalize_sex(value, sex):
    assert normalize_sex(value) == sex


@pytest.mark.parametrize("value", ["X", "", None, "1", "true"])
def test_normalize_sex_rejects(value):
    with pytest.raises(InvalidInputError, match="sex must be M or F"):
        normalize_sex(value)


def test_hflip_tta_is_the_mean_of_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = create_model("global_resnet18", width=0.25).eval()
    config = PreprocessConfig(image_size=(32, 32))
    images = np.random.default_rng(0).integers(0, 255, size=(3, 32, 32), dtype=np.uint8)
    males = [1.0, 0.0, 1.0]
    plain = predict_images(model, images, males, config)
    mirrored = predict_images(model, images[:, :, ::-1].copy(), males, config)
    tta = predict_images(model, images, males, config, tta="hflip")
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, atol=1e-4)
    assert not np.allclose(plain, mirrored)  # the check above is not trivially true
    with pytest.raises(InvalidInputError, match="test-time augmentation"):
        predict_images(model, images, males, config, tta="rot90")


def test_ensemble_sd_is_taken_after_averaging_views():
    torch.manual_seed(0)
    ensemble = create_model("ensemble", size=2, width=0.25).eval()
    config = PreprocessConfig(image_size=(32, 32))
    images = np.random.default_rng(1).integers(0, 255, size=(2, 32, 32), dtype=np.uint8)
    males = [1.0, 0.0]
    views = [images, images[:, :, ::-1].copy()]
    per_member = np.mean([[predict_images(m, v, males, config) for m in ensemble.members] for v in views], axis=0)
    months, sd = predict_images(ensemble, images, males, config, tta="hflip", with_sd=True)
    np.testing.assert_allclose(months, per_member.mean(0), atol=1e-4)
    np.testing.assert_allclose(sd, per_member.std(0), atol=1e-4)
