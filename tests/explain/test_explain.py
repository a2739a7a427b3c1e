"""Visual evidence: Grad-CAM for ResNets, ROIs for ALA-Net, mapped back onto the radiograph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from boneage.data import hand_phantom
from boneage.explain import display_image, explain_image, gradcam, save_evidence
from boneage.inference import Predictor, predict_rois
from boneage.preprocess import PreprocessConfig
from tests.conftest import export_tiny_model


@pytest.fixture(scope="module")
def phantom():
    return hand_phantom(120, "M", 64, np.random.default_rng(0))


def test_input_boxes_map_back_through_the_resize_policies():
    from boneage.preprocess import Prepared
    from boneage.preprocess.pipeline import Resize

    box = np.array([[16.0, 8.0], [32.0, 24.0]])
    start = Prepared.from_pixels(np.zeros((200, 100), np.float32))
    # stretch: a 64 x 64 input of a 200 (H) x 100 (W) image
    assert Resize((64, 64), "stretch")(start).input_to_original(box).tolist() == [[25.0, 25.0], [50.0, 75.0]]
    # pad: the 200 x 100 image filled the central 64 x 32 of the input (16 px border left and right)
    padded = Resize((64, 64), "pad")(start)
    assert padded.input_to_original(box).tolist() == [[0.0, 25.0], [50.0, 75.0]]
    np.testing.assert_allclose(padded.original_to_input(padded.input_to_original(box)), box)


def test_gradcam_highlights_what_changes_the_prediction(tiny_model_dir, phantom):
    loaded = Predictor(tiny_model_dir).loaded
    heat = gradcam(loaded.model, phantom, 1.0, loaded.preprocess)
    assert heat.shape == (64, 64) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    # the map is a rectified gradient-weighted sum: not constant over the image
    assert heat.std() > 0.01


def test_gradcam_of_a_constant_feature_map_is_flat():
    """Closed form: a model whose output ignores the image gives a zero (flat) map."""
    from boneage.models import create_model

    model = create_model("global_resnet18", width=0.25)
    with torch.no_grad():
        for p in model.backbone.layer4.parameters():
            p.zero_()
    heat = gradcam(model, np.zeros((32, 32), np.uint8), 0.0, PreprocessConfig(image_size=(32, 32)))
    assert np.allclose(heat, 0.0)


def test_gradcam_evidence_is_drawn_on_the_display_image(tiny_model_dir, phantom, tmp_path):
    loaded = Predictor(tiny_model_dir).loaded
    display = display_image(np.kron(phantom, np.ones((5, 4), np.uint8)))  # a 320 x 256 "original"
    evidence = explain_image(loaded, phantom, 1.0, display=display)
    assert evidence.kind == "gradcam" and evidence.overlay.shape == (320, 256, 3) and evidence.overlay.dtype == np.uint8
    assert not np.array_equal(evidence.overlay[..., 0], evidence.overlay[..., 2])  # coloured where it looked
    path = save_evidence(evidence, tmp_path / "e.png")
    assert path.exists() and not list(tmp_path.glob(".*tmp"))


def test_roi_evidence_draws_the_17_rois(tiny_alanet_dir, phantom):
    loaded = Predictor(tiny_alanet_dir).loaded
    rois, scores = predict_rois(loaded.model, phantom[None], [1.0], loaded.preprocess)
    evidence = explain_image(loaded, phantom, 1.0, display=np.kron(phantom, np.ones((2, 2), np.uint8)))
    assert evidence.kind == "rois" and evidence.rois.shape == (17, 4)
    # a 64 px input shown on a 128 px display, which is enlarged to 256 px for legibility: x 4
    assert evidence.overlay.shape == (256, 256, 3)
    assert np.allclose(evidence.rois, rois[0] * 4, atol=1e-3)
    assert "rois" in evidence.to_dict() and len(evidence.to_dict()["roi_scores"]) == 17
    # the boxes are drawn in colour on the grey radiograph, along the first box's top edge
    x1, y1, x2, _ = (int(round(v)) for v in evidence.rois[0])
    edge = evidence.overlay[min(y1, 255), x1 : x2 + 1]
    assert (edge == np.array([255, 196, 0], np.uint8)).all(axis=1).any()


def test_models_without_rois_refuse_predict_rois(tiny_model_dir, phantom):
    from boneage.errors import InvalidInputError

    loaded = Predictor(tiny_model_dir).loaded
    with pytest.raises(InvalidInputError, match="no anatomical ROIs"):
        predict_rois(loaded.model, phantom[None], [1.0], loaded.preprocess)


@pytest.fixture(scope="module")
def tiny_attention_dir(tmp_path_factory):
    """An exported (untrained) small residual attention network: six attention modules."""
    return export_tiny_model(tmp_path_factory.mktemp("tiny_attention"), "tiny-attention-test", "residual_attention", width=0.125)


def test_attention_evidence_has_one_panel_per_module(tiny_attention_dir, phantom, tmp_path):
    loaded = Predictor(tiny_attention_dir).loaded
    evidence = explain_image(loaded, phantom, 1.0)
    names = ["Att1_1", "Att2_1", "Att2_2", "Att3_1", "Att3_2", "Att3_3"]
    assert evidence.kind == "attention" and evidence.panels == names
    assert evidence.to_dict()["panels"] == names and all(n in evidence.label for n in names)
    # six panels of the 64 px input enlarged to 256 px, 3 columns x 2 rows with 4 px gaps
    assert evidence.overlay.shape == (2 * 256 + 4, 3 * 256 + 8, 3) and evidence.overlay.dtype == np.uint8
    assert len(evidence.attention_maps) == 6
    for heat in evidence.attention_maps:
        assert heat.shape == (64, 64) and heat.min() >= 0 and heat.max() <= 1
    panels = [evidence.overlay[r * 260 : r * 260 + 256, c * 260 : c * 260 + 256] for r in range(2) for c in range(3)]
    assert all(not np.array_equal(p[..., 0], p[..., 2]) for p in panels)  # each panel is coloured
    assert (evidence.overlay[256:260] == 0).all()  # the gap between the rows
    assert save_evidence(evidence, tmp_path / "a.png").exists()


def test_attention_evidence_on_a_large_display_and_in_an_ensemble(tiny_attention_dir, tiny_model_dir, phantom):
    from types import SimpleNamespace

    from boneage.models import combine_models

    attention, resnet = Predictor(tiny_attention_dir).loaded, Predictor(tiny_model_dir).loaded
    model, _ = combine_models([attention, resnet])  # attention takes precedence over Grad-CAM
    loaded = SimpleNamespace(model=model, preprocess=attention.preprocess)
    display = display_image(np.kron(phantom, np.ones((16, 12), np.uint8)))  # 1024 x 768: panels 512 x 384
    evidence = explain_image(loaded, phantom, 0.0, display=display)
    assert evidence.kind == "attention" and len(evidence.panels) == 6
    assert evidence.overlay.shape == (2 * 512 + 4, 3 * 384 + 8, 3)


def test_evidence_of_a_hand_cropping_model_is_mapped_back_onto_the_whole_radiograph(tiny_model_dir, phantom):
    """The crop to the hand is undone: the heat map lies on the crop's part of the radiograph, nothing outside."""
    from boneage.preprocess import Prepared
    from boneage.preprocess.pipeline import Resize

    loaded = Predictor(tiny_model_dir, check_hand=False).loaded
    radiograph = np.kron(phantom, np.ones((5, 4), np.uint8))  # 320 x 256
    start = Prepared.from_pixels(radiograph.astype(np.float32) / 255.0)
    crop = start.cropped(start.image[80:240, 64:192], (80, 240, 64, 192))  # the middle half of each side
    prepared = Resize((64, 64))(crop)
    evidence = explain_image(loaded, prepared, 1.0, display=display_image(radiograph))
    assert evidence.kind == "gradcam" and evidence.overlay.shape == (320, 256, 3)
    grey = display_image(radiograph)
    outside = np.ones((320, 256), bool)
    outside[80:240, 64:192] = False
    assert (evidence.overlay[outside] == grey[outside][:, None]).all()  # untouched outside the crop
    inside = evidence.overlay[80:240, 64:192]
    assert not np.array_equal(inside[..., 0], inside[..., 2])  # coloured inside it


def test_localize_evidence_shows_the_heat_map_the_mask_and_the_crop_from_the_radiograph(tmp_path, phantom):
    """Three panels on a 512 px radiograph of a 64 px model input: the crop panel is the radiograph's own region
    (its 512 px detail), at the box the model cropped, mapped from input to radiograph pixels."""
    from PIL import Image

    from boneage.explain import localization

    folder = export_tiny_model(tmp_path, "loc", "localize_regress", width=0.25, localizer_width=0.25, head="mse",
                               localizer_size=[64, 64], crop_size=[32, 32], gamma=0.3)
    loaded = Predictor(folder, check_hand=False).loaded
    radiograph = np.kron(phantom, np.ones((8, 8), np.uint8))  # 512 x 512
    radiograph = (radiograph.astype(np.int16) + np.random.default_rng(0).integers(-20, 20, (512, 512))).clip(0, 255)
    display = display_image(radiograph.astype(np.uint8))
    evidence = explain_image(loaded, phantom, 1.0, display=display)
    assert evidence.kind == "localize" and evidence.panels == ["Grad-CAM", "mask", "crop"]
    assert evidence.overlay.shape == (512, 3 * 512 + 8, 3) and "gamma 0.3" in evidence.label
    found = localization(loaded.model, phantom, 1.0, loaded.preprocess)
    assert found["heat"].shape == (64, 64) and found["mask"].dtype == bool
    np.testing.assert_allclose(found["mask"], found["heat"] >= 0.3)
    box = found["crop_box"] * 8  # model-input pixels -> radiograph pixels
    np.testing.assert_allclose(evidence.rois[0], box, atol=1e-6)
    assert evidence.to_dict()["roi_labels"] == ["crop"]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    region = Image.fromarray(np.repeat(display[..., None], 3, axis=2)).crop((x0, y0, x1, y1))
    expected = np.asarray(region.resize((512, 512), Image.Resampling.LANCZOS))
    crop_panel = evidence.overlay[:, 2 * (512 + 4):]
    np.testing.assert_array_equal(crop_panel[64:], expected[64:])  # below the panel's name tag
