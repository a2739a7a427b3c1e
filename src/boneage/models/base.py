"""The contract every registered bone age model keeps, so that inference, explanation and training ask
the model instead of probing its attributes (in the manner of timm's uniform model surface).

A model is a :class:`BoneAgeModel`:

* ``forward(images, male, keypoints=None) -> ModelOutput``: ``images`` ``(N, C, H, W)`` standardised,
  ``male`` ``(N,)`` 0/1 (NaN: unknown, for a model that ``predicts_sex``); ``keypoints`` (training only, for
  models that ``needs_keypoints``) per image ``(K, 2)`` centres in input pixels;
* ``forward_features(images)``: the last feature map (what Grad-CAM and feature probes look at);
* ``compute_loss(outputs, batch) -> {'loss': ..., <named parts>}`` with ``batch['bone_age_months']``;
* ``init_from_labels(months)``: start the head at the training labels' prior (optional);
* ``capabilities``: what it offers (:class:`Capabilities`);
* ``cam_layers()``: the modules whose output Grad-CAM weighs (empty when it offers no Grad-CAM);
* ``attention_names()``: the names of its attention maps, in the order of ``ModelOutput.attention_maps``;
* ``keypoint_box_size(image_hw)``: the keypoint box its ROIs are trained on (None without ROIs, and for a
  per-bone model, whose boxes follow each bone's own geometry).

``tests/models/test_contract.py`` checks every registered model against this.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
from torch.utils import _pytree

__all__ = ["EVIDENCE_KINDS", "BoneAgeModel", "Capabilities", "ModelOutput"]

EVIDENCE_KINDS = ("rois", "attention", "gradcam", "localize")  # what a model can show a reader (boneage.explain draws it)


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a model offers and needs.

    ``evidence``: the kinds of visual evidence it can give, most telling first (``'rois'``: the anatomical
    regions it pooled, ``'attention'``: its attention maps, ``'gradcam'``: Grad-CAM on ``cam_layers()``,
    ``'localize'``: a localize-then-regress model's heat map, thresholded mask and crop);
    ``needs_keypoints``: it trains on hand keypoints; ``ensemble``: it averages member models (its
    output has ``member_months``, whose spread is an uncertainty); ``per_bone``: its output has per-bone
    results (``ModelOutput.bones``); ``output_map``: its bone age is a monotone map of a raw output
    (``bones['raw_months']``) fitted on the training images after training (:meth:`BoneAgeModel.fit_output_map`,
    called by the trainer before export); ``partial_loss``: some parameters get no gradient from its loss
    (distributed training must look for unused parameters); ``predicts_sex``: it predicts the sex from the
    image (``ModelOutput.sex_probability``) and accepts an unknown sex (NaN in ``male``), whose bone age it
    then gives for the sex it predicts (the two sexes' bone ages weighted by its probability).
    """

    evidence: tuple[str, ...] = ()
    needs_keypoints: bool = False
    ensemble: bool = False
    per_bone: bool = False
    output_map: bool = False
    partial_loss: bool = False
    predicts_sex: bool = False

    def __post_init__(self):
        unknown = [kind for kind in self.evidence if kind not in EVIDENCE_KINDS]
        if unknown:
            raise ValueError(f"unknown evidence kinds {unknown}; choose from {EVIDENCE_KINDS}")


@dataclasses.dataclass
class ModelOutput:
    """What a model's forward pass gives.

    ``bone_age_months`` ``(N,)`` always; ``member_months`` ``(N, M)`` for an ensemble; ``rois`` ``(N, R, 4)``
    boxes in input pixels and ``roi_scores`` ``(N, R)`` for a model with anatomical ROIs;
    ``attention_maps``: per attention module ``(N, h, w)``; ``bones``: per-bone results (stage, score,
    age) of a fine-grained model; ``sex_probability`` ``(N,)`` the probability that the image is a boy's, from a
    model that ``predicts_sex``. ``extras`` holds what the model's own ``compute_loss`` needs (its head's
    raw outputs under ``'head'``, ALA-Net's per-ROI predictions) and ``losses`` losses computed inside the
    forward pass (an RPN's); ``members`` an ensemble's members' own outputs.
    """

    bone_age_months: torch.Tensor
    member_months: torch.Tensor | None = None
    rois: torch.Tensor | None = None
    roi_scores: torch.Tensor | None = None
    attention_maps: list[torch.Tensor] | None = None
    bones: dict[str, torch.Tensor] | None = None
    sex_probability: torch.Tensor | None = None
    extras: dict = dataclasses.field(default_factory=dict)
    losses: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    members: list[ModelOutput] | None = None


# Distributed training (DDP) flattens outputs with pytree to route their gradients.
_pytree.register_dataclass(ModelOutput)


class BoneAgeModel(nn.Module):
    """Base class of every registered bone age model (see the module docstring for the contract)."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def forward(self, images: torch.Tensor, male: torch.Tensor,
                keypoints: list[torch.Tensor] | None = None) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, images: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_loss(self, outputs: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def init_from_labels(self, months: torch.Tensor) -> None:
        """Start the output layers at the prior of the training labels (a no-op unless overridden)."""

    def fit_output_map(self, raw_months, months, male) -> None:
        """Fit the map from the raw output to the bone age on the training images (models with ``output_map``)."""
        raise NotImplementedError(f"{type(self).__name__} has no output map")

    def cam_layers(self) -> list[nn.Module]:
        return []

    def attention_names(self) -> list[str]:
        return []

    def keypoint_box_size(self, image_hw: tuple[int, int]) -> float | None:
        """Side of the box around a keypoint that its ROIs are trained on (None without ROIs)."""
        return None
