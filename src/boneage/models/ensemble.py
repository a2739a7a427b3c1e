"""Ensembles: the mean of several models' bone ages, with their spread as the model's uncertainty.

An ensemble is a registered model like any other (``create_model('ensemble', members=[spec, ...])``),
saved as one safetensors file. Members are usually trained separately with different seeds on the same
split and combined with :func:`combine_models` (``boneage ensemble``); they must share preprocessing.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InvalidInputError
from ._registry import create_model, register_model
from .base import BoneAgeModel, Capabilities, ModelOutput

__all__ = ["Ensemble", "combine_models"]


class Ensemble(BoneAgeModel):
    """Members run on the same input; the bone age is their mean, ``member_months`` their own ages. The
    evidence is the members': ROIs and attention maps of the first member that has them, Grad-CAM over
    all members with ``cam_layers``."""

    def __init__(self, members: list[dict]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(create_model(m["name"], **m.get("kwargs", {})) for m in members)

    @property
    def capabilities(self) -> Capabilities:
        kinds = [kind for member in self.members for kind in member.capabilities.evidence]
        return Capabilities(
            evidence=tuple(dict.fromkeys(k for k in ("rois", "attention", "gradcam") if k in kinds)),
            needs_keypoints=any(m.capabilities.needs_keypoints for m in self.members), ensemble=True,
            partial_loss=any(m.capabilities.partial_loss for m in self.members),
            predicts_sex=all(m.capabilities.predicts_sex for m in self.members),
        )

    def forward(self, images: torch.Tensor, male: torch.Tensor, keypoints=None) -> ModelOutput:
        outputs = [member(images, male, keypoints) for member in self.members]
        stacked = torch.stack([o.bone_age_months.float() for o in outputs], dim=1)
        with_rois = next((o for o in outputs if o.rois is not None), None)
        with_attention = next((o for o in outputs if o.attention_maps is not None), None)
        sexes = [o.sex_probability for o in outputs if o.sex_probability is not None]
        return ModelOutput(
            bone_age_months=stacked.mean(dim=1), member_months=stacked, members=outputs,
            sex_probability=torch.stack(sexes).mean(dim=0) if len(sexes) == len(outputs) else None,
            rois=None if with_rois is None else with_rois.rois,
            roi_scores=None if with_rois is None else with_rois.roi_scores,
            attention_maps=None if with_attention is None else with_attention.attention_maps,
        )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The members' last feature maps concatenated along channels (at the first member's grid)."""
        maps = [member.forward_features(images) for member in self.members]
        size = maps[0].shape[-2:]
        return torch.cat([m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear") for m in maps], 1)

    def compute_loss(self, outputs: ModelOutput, batch: dict) -> dict:
        losses = [m.compute_loss(o, batch)["loss"] for m, o in zip(self.members, outputs.members)]
        loss = torch.stack(losses).mean()
        return {"loss": loss}

    def init_from_labels(self, months: torch.Tensor) -> None:
        for member in self.members:
            member.init_from_labels(months)

    def cam_layers(self) -> list[nn.Module]:
        return [layer for member in self.members for layer in member.cam_layers()]

    def attention_names(self) -> list[str]:
        return next((m.attention_names() for m in self.members if m.attention_names()), [])

    def keypoint_box_size(self, image_hw: tuple[int, int]) -> float | None:
        return next((size for m in self.members if (size := m.keypoint_box_size(image_hw)) is not None), None)


@register_model
def ensemble(members: list[dict] | None = None, size: int = 2, member: str = "global_resnet18", **member_kwargs) -> Ensemble:
    """Mean of member models (uncertainty = their SD); members=[{name, kwargs}] or size x member."""
    if members is None:
        members = [{"name": member, "kwargs": dict(member_kwargs)} for _ in range(size)]
    elif member_kwargs:
        raise TypeError(f"unexpected arguments {sorted(member_kwargs)} with explicit members")
    return Ensemble(members)


def combine_models(loaded_models: list) -> tuple[Ensemble, dict]:
    """An :class:`Ensemble` from loaded models (``LoadedModel``) that share preprocessing, plus its config."""
    if len(loaded_models) < 2:
        raise InvalidInputError("an ensemble needs at least two models")
    first = loaded_models[0]
    for other in loaded_models[1:]:
        if other.preprocess != first.preprocess:  # as configs (a setting a config leaves out is its default)
            raise InvalidInputError(f"{other.source}: preprocessing differs from {first.source}; members must match")
        if other.config.get("labels") != first.config.get("labels"):
            raise InvalidInputError(f"{other.source}: label range differs from {first.source}; members must match")
    specs = [m.config["model"] for m in loaded_models]
    model = create_model("ensemble", members=specs)
    for target, source in zip(model.members, loaded_models):
        target.load_state_dict(source.model.state_dict())
    model.eval()
    config = {
        "name": f"ensemble-{len(specs)}x{first.name}",
        "model": model.boneage_spec,
        "preprocess": first.config["preprocess"],
        "labels": first.config.get("labels"),
        "inputs": first.config.get("inputs"),
        "inference": first.config.get("inference", {}),
        "members": [{"source": m.source, "name": m.name, "version": m.version,
                     "validation": m.config.get("metrics", {}).get("validation", {}).get("mae_months"),
                     "training": m.config.get("training")} for m in loaded_models],
    }
    return model, config
