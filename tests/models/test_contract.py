"""Every registered model keeps the model contract (boneage.models.base): typed outputs that match the
capabilities it declares, a uniform feature surface, and the evidence it promises (in the manner of timm's
tests over every registered model)."""

import numpy as np
import pytest
import torch

from boneage.explain import explain_image
from boneage.models import (
    EVIDENCE_KINDS,
    BoneAgeModel,
    Capabilities,
    ModelOutput,
    create_model,
    list_models,
)
from boneage.preprocess import PreprocessConfig

SIZE = 64


def _build(name: str):
    torch.manual_seed(0)
    if name == "ensemble":  # members of two families: the ensemble offers the union of their evidence
        members = [{"name": "global_resnet18", "kwargs": {"width": 0.25}}, {"name": "alanet18", "kwargs": {"width": 0.25}}]
        return create_model(name, members=members)
    return create_model(name, width=0.25)


@pytest.mark.parametrize("name", list_models())
def test_outputs_match_the_declared_capabilities(name):
    model = _build(name).eval()
    caps = model.capabilities
    assert isinstance(model, BoneAgeModel) and isinstance(caps, Capabilities)
    assert set(caps.evidence) <= set(EVIDENCE_KINDS) and len(set(caps.evidence)) == len(caps.evidence)
    with torch.no_grad():
        out = model(torch.randn(2, 1, SIZE, SIZE), torch.tensor([0.0, 1.0]))
        features = model.forward_features(torch.randn(2, 1, SIZE, SIZE))
    assert isinstance(out, ModelOutput) and out.bone_age_months.shape == (2,)
    assert features.ndim == 4 and features.shape[0] == 2  # (N, F, h, w): the last feature map
    assert (out.rois is not None) == ("rois" in caps.evidence)
    # ROIs around keypoints have a box size; a per-bone model places each bone's box by its own geometry
    assert (model.keypoint_box_size((SIZE, SIZE)) is not None) == (out.rois is not None and not caps.per_bone)
    assert (out.bones is not None) == caps.per_bone
    if out.rois is not None:
        assert out.rois.shape[:2] == out.roi_scores.shape and out.rois.shape[2] == 4
    assert (out.attention_maps is not None) == ("attention" in caps.evidence)
    if out.attention_maps is not None:
        assert len(out.attention_maps) == len(model.attention_names()) > 0
    assert bool(model.cam_layers()) == ("gradcam" in caps.evidence)
    assert (out.member_months is not None) == caps.ensemble
    if caps.ensemble:
        torch.testing.assert_close(out.member_months.mean(dim=1), out.bone_age_months)
    assert caps.needs_keypoints == ("rois" in caps.evidence)  # ROIs are learnt from keypoints


@pytest.mark.parametrize("name", list_models())
def test_the_first_evidence_kind_is_what_explain_draws(name):
    model = _build(name).eval()
    loaded = type("Loaded", (), {"model": model, "preprocess": PreprocessConfig(image_size=(SIZE, SIZE))})()
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    evidence = explain_image(loaded, image, 1.0)
    assert evidence is not None and evidence.kind == model.capabilities.evidence[0]
    assert evidence.overlay.dtype == np.uint8 and evidence.overlay.shape[2] == 3


def test_a_model_without_evidence_gets_none():
    class Bare(BoneAgeModel):
        pass

    loaded = type("Loaded", (), {"model": Bare(), "preprocess": PreprocessConfig(image_size=(SIZE, SIZE))})()
    assert explain_image(loaded, np.zeros((SIZE, SIZE), np.uint8), 0.0) is None


def test_capabilities_refuse_unknown_evidence():
    with pytest.raises(ValueError, match="evidence"):
        Capabilities(evidence=("saliency",))


def test_the_registry_only_builds_boneage_models():
    from boneage.models import _registry

    @_registry.register_model
    def _not_a_boneage_model(**kwargs):
        return torch.nn.Linear(1, 1)

    try:
        with pytest.raises(TypeError, match="not a BoneAgeModel"):
            create_model("_not_a_boneage_model")
    finally:
        del _registry._MODELS["_not_a_boneage_model"]
