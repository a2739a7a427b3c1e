"""Ensembles: the mean of several models' bone ages, with their spread as the model's uncertainty.

An ensemble is a registered model like any other (``create_model('ensemble', members=[spec, ...])``),
saved as one safetensors file. Members are usually trained separately with different seeds on the same
split and combined with :func:`combine_models` (``boneage ensemble``); they must share preprocessing.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import InvalidInputError
from ._registry import create_model, register_model

__all__ = ["Ensemble", "combine_models"]


class Ensemble(nn.Module):
    def __init__(self, members: list[dict]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(create_model(m["name"], **m.get("kwargs", {})) for m in members)

    def forward(self, images: torch.Tensor, male: torch.Tensor) -> dict:
        outputs = [member(images, male) for member in self.members]
        stacked = torch.stack([o["bone_age_months"].float() for o in outputs], dim=1)
        return {"bone_age_months": stacked.mean(dim=1), "member_months": stacked,
                "bone_age_sd_months": stacked.std(dim=1, unbiased=False), "members": outputs}

    def compute_loss(self, outputs: dict, batch: dict) -> dict:
        losses = [m.compute_loss(o, batch)["loss"] for m, o in zip(self.members, outputs["members"])]
        loss = torch.stack(losses).mean()
        return {"loss": loss}

    def init_from_labels(self, months: torch.Tensor) -> None:
        for member in self.members:
            member.init_from_labels(months)


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
        if other.config["preprocess"] != first.config["preprocess"]:
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
