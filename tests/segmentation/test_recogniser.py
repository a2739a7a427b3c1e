"""The hand-radiograph recogniser: closed-form pieces on tiny inputs, the artefact, the synthetic negatives,
and the shipped recogniser on real negatives (pydicom-data, when installed; ../shared/data/non-hand) and real
hands, through predict and the DICOM node's path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from boneage.data import hand_phantom
from boneage.errors import ModelLoadError
from boneage.segmentation.recogniser import (
    HandRecogniser,
    NotAHandError,
    RecogniserSettings,
    export_recogniser,
    load_recogniser,
)
from boneage.segmentation.recognition_data import (
    CLASSES,
    HELD_OUT_KINDS,
    KIND_CLASS,
    REAL_KINDS,
    SYNTHETIC_KINDS,
    chroma,
    recogniser_input,
    synthetic_image,
)
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def shipped():
    try:
        return load_recogniser(None)
    except ModelLoadError as err:
        pytest.skip(f"no shipped recogniser ({err})")


def test_every_kind_has_a_class_and_held_out_kinds_exist():
    assert set(REAL_KINDS) | set(SYNTHETIC_KINDS) <= set(KIND_CLASS)
    assert all(0 < KIND_CLASS[k] < len(CLASSES) for k in KIND_CLASS) and CLASSES[0] == "hand radiograph"
    assert set(HELD_OUT_KINDS) <= set(REAL_KINDS) | set(SYNTHETIC_KINDS)


@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_synthetic_negatives_are_images_in_range(kind):
    hand = hand_phantom(100, "F", 96, np.random.default_rng(0)).astype(np.float32) / 255
    image = synthetic_image(kind, np.random.default_rng(1), 96, hand)
    assert image.shape[:2] == (96, 96) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
    x = recogniser_input(image if image.ndim == 2 else image.mean(axis=2), chroma(image), (64, 64))
    assert x.shape == (2, 64, 64) and (x[1].max() > 0) == (image.ndim == 3 and kind != "noise")


def test_chroma_is_zero_for_gray_and_the_spread_of_rgb():
    assert chroma(np.zeros((4, 4), np.uint8)) is None
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (100, 100, 100)
    np.testing.assert_allclose(chroma(rgb), [[1, 0], [0, 0]])


def test_mahalanobis_distance_in_closed_form():
    recogniser = HandRecogniser(RecogniserSettings(channels=(4, 8)))
    torch.manual_seed(0)
    features = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0, 0, 0, 0]]).repeat(5000, 1)
    features[:, 1:] += torch.randn(10000, 7) * 0.5
    recogniser.fit_hand_statistics(features, shrinkage=0.0)
    assert torch.allclose(recogniser.hand_mean, torch.zeros(8), atol=0.01)
    # along the first axis the SD is 1: a point at 3 is 3 SDs away
    probe = torch.tensor([[3.0, 0, 0, 0, 0, 0, 0, 0]])
    assert float(recogniser.distance(probe)) == pytest.approx(3.0, rel=0.02)


def _decided(looks_like: int, distance_limit: float = float("inf")) -> HandRecogniser:
    """A recogniser whose classifier always answers ``looks_like``."""
    recogniser = HandRecogniser(RecogniserSettings(channels=(4, 8), max_distance=distance_limit)).eval()
    with torch.no_grad():
        recogniser.classifier[1].weight.zero_()
        recogniser.classifier[1].bias.fill_(-10.0)
        recogniser.classifier[1].bias[looks_like] = 10.0
    return recogniser


def test_a_refusal_is_one_line_naming_what_it_saw():
    image = np.random.default_rng(0).random((80, 60)).astype(np.float32)
    with pytest.raises(NotAHandError) as err:
        _decided(CLASSES.index("CT slice")).check(image, source="scan.dcm")
    message = str(err.value)
    assert message.startswith("scan.dcm: not a hand radiograph (it looks like a CT slice") and "\n" not in message
    evidence = _decided(0).check(image)
    assert evidence["p_hand"] > 0.99
    with pytest.raises(NotAHandError, match="unlike every hand radiograph"):
        _decided(0, distance_limit=-1.0).check(image)


def test_artefact_round_trip(tmp_path):
    recogniser = _decided(CLASSES.index("document"), distance_limit=12.5)
    export_recogniser(tmp_path / "r", recogniser, {"version": "t1"})
    loaded = load_recogniser(tmp_path / "r")
    x = recogniser.prepare(np.random.default_rng(0).random((50, 50)).astype(np.float32))[None]
    np.testing.assert_allclose(loaded.scores(x)["probabilities"], recogniser.scores(x)["probabilities"], atol=1e-6)
    assert loaded.settings.max_distance == 12.5 and loaded.info["version"] == "t1"
    with pytest.raises(ModelLoadError, match="not a boneage hand recogniser config"):
        load_recogniser(_model_dir(tmp_path))  # a bone age model is not a recogniser


def _model_dir(tmp_path):
    from tests.conftest import export_tiny_model

    return export_tiny_model(tmp_path / "m", "tiny", "global_resnet18", width=0.25)


# ------------------------------------------------------------------------------- the shipped recogniser
@pytest.mark.parametrize("kind", [k for k in HELD_OUT_KINDS if k in SYNTHETIC_KINDS]
                         + ["shapes", "noise", "document", "limb_phantom", "hand_jigsaw"])
def test_the_shipped_recogniser_refuses_synthetic_negatives(shipped, kind):
    rng = np.random.default_rng(2024)  # not the training seed
    hand = hand_phantom(100, "F", 256, rng).astype(np.float32) / 255
    refused = 0
    for _ in range(20):
        try:
            shipped.check_pixels(synthetic_image(kind, rng, 256, hand))
        except NotAHandError:
            refused += 1
    assert refused >= 18, f"{kind}: {refused} of 20 refused"


def test_the_shipped_recogniser_accepts_hand_phantoms(shipped):
    rng = np.random.default_rng(7)
    accepted = 0
    for k in range(20):
        try:
            shipped.check_pixels(hand_phantom(rng.uniform(12, 216), "MF"[k % 2], [96, 256, 512][k % 3], rng))
            accepted += 1
        except NotAHandError:
            pass
    assert accepted >= 19


def test_pydicom_data_negatives_are_refused(shipped):
    pytest.importorskip("data_store", reason="the pydicom-data package is not installed (pip install -e '.[test]')")
    from boneage.segmentation.recognition_data import pydicom_negatives

    found = pydicom_negatives()
    assert len(found) >= 8
    accepted = []
    for item in found:
        try:
            shipped.check_pixels(item.pixels, item.source)
            accepted.append(item.source)
        except NotAHandError:
            pass
    assert not accepted, accepted


@pytest.mark.realdata
def test_real_negatives_refused_and_real_hands_accepted(shipped):
    from boneage.io import read_image
    from boneage.segmentation.recognition_data import load_non_hand

    if not (SHARED_DATA / "non-hand").exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    negatives = load_non_hand(SHARED_DATA / "non-hand", max_side=512)
    trained = [n.source for n in negatives if n.kind not in HELD_OUT_KINDS and _accepts(shipped, n.pixels)]
    held_out = [n for n in negatives if n.kind in HELD_OUT_KINDS]
    missed = [n.source for n in held_out if _accepts(shipped, n.pixels)]
    assert not trained, trained  # every kind it was trained on, refused
    assert len(missed) <= 0.05 * len(held_out), missed  # kinds never seen: at least 95% refused
    hands = sorted((SHARED_DATA / "rsna-100px" / "images").glob("*.png"))[::40]
    hands += sorted((SHARED_DATA / "dha-landmarks" / "images").glob("*.png"))[::3]
    refused = [p.name for p in hands if not _accepts(shipped, read_image(p).pixels)]
    assert len(hands) > 300 and len(refused) <= 2, refused


def _accepts(recogniser, pixels) -> bool:
    try:
        recogniser.check_pixels(pixels)
        return True
    except NotAHandError:
        return False


def test_predict_refuses_a_chest_radiograph_in_one_line(capsys, shipped, tiny_model_dir):
    pytest.importorskip("data_store", reason="the pydicom-data package is not installed (pip install -e '.[test]')")
    from pydicom.data import get_testdata_file

    from boneage.cli import main

    chest = get_testdata_file("RG1_UNCR.dcm", download=False)
    code = main(["predict", chest, "--sex", "M", "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a hand radiograph" in err and "chest radiograph" in err
