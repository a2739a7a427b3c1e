"""The four-stage fine-grained RUS-CHN pipeline (after Precise-BAA) as one registered model, ``rus_chn``.

1. **Hand segmentation** is the model's preprocessing (``--hand mask``: boneage's U-Net, largest
   component, holes filled), as for every boneage model.
2. **Detection**: a registered keypoint detector (:mod:`.detector`) finds 17 hand keypoints; the 13 RUS
   boxes follow from them (:mod:`.geometry`).
3. **Per-ROI maturity**: every box is cropped from the model input with ROIAlign (``roi_size`` pixels,
   each crop standardised on its own) and a DenseNet with self-attention across the 13 bones gives each
   bone's stage probabilities (:mod:`.stages`).
4. **Score and age**: the stage probabilities weigh the RUS-CHN scores of the child's sex; their sum,
   the expected total score, gives the raw RUS-CHN bone age through the 50th-centile curve. The model's
   ``bone_age_months`` is that raw age through a monotone map fitted on the training images after
   training (:meth:`RusChnPipeline.fit_output_map`): a Greulich & Pyle equivalent, since the RSNA
   labels are G&P readings.

**Weak training** (no stage labels): the loss is the smooth L1 error of the raw RUS-CHN age against the
RSNA bone age (differentiable through the expected scores and the curve), plus ``prior_weight`` times
the cross-entropy of each bone's stage probabilities to a prior centred on the stage that bone has when
all 13 bones are advanced together to the total the curve gives for the label's age and sex
(:func:`boneage.data.rus_chn.typical_stage_fraction`; Gaussian over stages, SD ``prior_sd`` stages).
Given per-bone stage labels (``boneage train --stage-labels CSV``), their cross-entropy with class
weights (inverse frequency in the batch) is added. With keypoints (``--keypoints``) and a detector that
is training, the detector's loss is added and the crops of annotated images come from their annotated
keypoints; a frozen detector (``--freeze detector``) gives every crop.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...data.rus_chn import BONES, SEXES, _tables, score_range, score_table, typical_stage_fraction
from ..base import BoneAgeModel, Capabilities, ModelOutput
from ..detection import roi_align
from .detector import create_detector
from .geometry import _K, BONE_GEOMETRY, bone_boxes
from .stages import StageClassifier

__all__ = ["RusChnPipeline", "isotonic_fit"]

MAP_KNOTS = 64
PRIOR_MONTHS = 241  # the prior table covers 0-240 months


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit of ``y`` ordered by ``x`` (pool adjacent violators); returns the fitted
    values in the order of ``x`` sorted."""
    order = np.argsort(x, kind="stable")
    values, weights, sizes = [], [], []
    for v in np.asarray(y, dtype=np.float64)[order]:
        values.append(v)
        weights.append(1.0)
        sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            values[-2] = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            weights[-2], sizes[-2] = w, sizes[-2] + sizes[-1]
            del values[-1], weights[-1], sizes[-1]
    return np.repeat(values, sizes)


class RusChnPipeline(BoneAgeModel):
    def __init__(self, *, detector: str = "heatmap", detector_options: dict | None = None, roi_size: int = 32,
                 attention: bool = True, prior_weight: float = 0.1, prior_sd: float = 1.5):
        super().__init__()
        self.detector = create_detector(detector, **(detector_options or {}))
        self.roi_size, self.prior_weight, self.prior_sd = int(roi_size), float(prior_weight), float(prior_sd)
        tables = [score_table(sex) for sex in ("F", "M")]  # index 0: girls, 1: boys (the `male` flag)
        valid = torch.from_numpy(tables[0][1])
        self.stages = StageClassifier(valid, attention=attention)
        self.register_buffer("scores", torch.tensor(np.stack([t[0] for t in tables]), dtype=torch.float32), persistent=False)
        self.register_buffer("valid", valid, persistent=False)
        coefficients = [_tables()["score_to_bone_age_years_polynomial_coeffs_c0_to_c10"][SEXES[s]] for s in ("F", "M")]
        self.register_buffer("coefficients", torch.tensor(coefficients, dtype=torch.float64), persistent=False)
        self.register_buffer("score_limits", torch.tensor([score_range(s) for s in ("F", "M")], dtype=torch.float64),
                             persistent=False)
        ages = np.arange(PRIOR_MONTHS) / 12.0
        fractions = np.stack([typical_stage_fraction(ages, s) for s in ("F", "M")])
        self.register_buffer("prior_fraction", torch.tensor(fractions, dtype=torch.float32), persistent=False)
        # the G&P-equivalent map, per sex: knots (raw months -> months); identity until fitted
        identity = torch.linspace(0.0, 240.0, MAP_KNOTS)
        self.register_buffer("map_x", identity.repeat(2, 1).clone())
        self.register_buffer("map_y", identity.repeat(2, 1).clone())

    # ---------------------------------------------------------------------------------------- contract
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(evidence=("rois",), needs_keypoints=True, per_bone=True, output_map=True,
                            partial_loss=True)

    def forward_features(self, images: torch.Tensor):
        return self.detector._backbone(F.adaptive_avg_pool2d(images.float(), self.detector.work_size), None)[-1]

    def curve_years(self, total: torch.Tensor, male: torch.Tensor) -> torch.Tensor:
        """The 50th-centile RUS-CHN bone age (years) of a total score, per sample's sex (float64 inside)."""
        sex = male.long().clamp(0, 1)
        limits = self.score_limits[sex]
        x = torch.minimum(torch.maximum(total.double(), limits[:, 0]), limits[:, 1])
        coefficients = self.coefficients[sex]
        powers = x[:, None] ** torch.arange(coefficients.shape[1], device=x.device, dtype=x.dtype)
        return (coefficients * powers).sum(-1).float()

    def output_map(self, raw_months: torch.Tensor, male: torch.Tensor) -> torch.Tensor:
        """The fitted monotone map (piecewise linear, flat outside its knots) of the raw RUS-CHN age."""
        sex = male.long().clamp(0, 1)
        xs, ys = self.map_x[sex], self.map_y[sex]
        raw = raw_months.float()[:, None].clamp(xs[:, :1], xs[:, -1:])
        upper = torch.searchsorted(xs.contiguous(), raw.contiguous()).clamp(1, xs.shape[1] - 1)
        x0, x1 = xs.gather(1, upper - 1), xs.gather(1, upper)
        y0, y1 = ys.gather(1, upper - 1), ys.gather(1, upper)
        t = ((raw - x0) / (x1 - x0).clamp(min=1e-6)).clamp(0, 1)
        return (y0 + t * (y1 - y0))[:, 0]

    def forward(self, images: torch.Tensor, male: torch.Tensor, keypoints: list[torch.Tensor] | None = None) -> ModelOutput:
        detected = self.detector(images)
        points = detected["points"]
        gt_points, gt_valid = self._annotated(keypoints, points)
        crop_points = points.detach()
        if self.training and self.detector.training and bool(gt_valid.any()):
            crop_points = torch.where(gt_valid[:, None, None], gt_points, crop_points)  # teacher forcing
        boxes = bone_boxes(crop_points.float())
        crops = roi_align(images.float(), list(boxes), (self.roi_size, self.roi_size), spatial_scale=1.0,
                          sampling_ratio=2).view(images.shape[0], len(BONES), 1, self.roi_size, self.roi_size)
        crops = (crops - crops.mean((2, 3, 4), keepdim=True)) / crops.std((2, 3, 4), keepdim=True).clamp(min=1e-3)
        logits, attention = self.stages(crops, male)
        probs = logits.float().softmax(-1)
        table = self.scores[male.long().clamp(0, 1)]  # (N, 13, S)
        expected = (probs * table).sum(-1)
        raw_months = 12.0 * self.curve_years(expected.sum(-1), male)
        stage = probs.argmax(-1)
        score = table.gather(-1, stage[..., None])[..., 0]
        total = score.sum(-1)
        box_scores = _box_confidence(detected["confidence"])
        bones = {"boxes": boxes, "box_scores": box_scores, "stage": stage, "stage_probability": probs.max(-1).values,
                 "score": score, "expected_score": expected, "total_score": total,
                 "rus_chn_years": self.curve_years(total, male), "expected_total_score": expected.sum(-1),
                 "raw_months": raw_months}
        extras = {"logits": logits, "detected": detected, "gt_points": gt_points, "gt_valid": gt_valid,
                  "male": male, "bone_attention": attention, "image_hw": images.shape[-2:]}
        return ModelOutput(bone_age_months=self.output_map(raw_months, male), rois=boxes, roi_scores=box_scores,
                           bones=bones, extras=extras)

    @staticmethod
    def _annotated(keypoints, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The annotated keypoints of each image (its first hand) and which images have them."""
        gt = torch.zeros_like(points, dtype=torch.float32)
        valid = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
        for i, p in enumerate(keypoints or []):
            if p is not None and p.shape[0] >= points.shape[1]:
                gt[i] = p[: points.shape[1]].to(gt)
                valid[i] = True
        return gt, valid

    # ----------------------------------------------------------------------------------------- training
    def compute_loss(self, outputs: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        extras = outputs.extras
        months = batch["bone_age_months"].float()
        male = extras["male"]
        parts = {"age": F.smooth_l1_loss(outputs.bones["raw_months"] / 12.0, months / 12.0, beta=0.5)}
        log_probs = extras["logits"].float().log_softmax(-1).masked_fill(~self.valid, 0.0)
        if self.prior_weight > 0:
            parts["prior"] = self.prior_weight * -(self._prior(months, male) * log_probs).sum(-1).mean()
        labels = batch.get("stage_labels")
        if labels is not None and bool((labels >= 0).any()):
            parts["stage"] = _weighted_stage_ce(extras["logits"].float(), labels)
        if self.detector.training and any(p.requires_grad for p in self.detector.parameters()):
            parts["detector"] = self.detector.loss(extras["detected"], extras["gt_points"], extras["gt_valid"],
                                                   tuple(extras["image_hw"]))
        parts["loss"] = sum(parts.values())
        return parts

    def _prior(self, months: torch.Tensor, male: torch.Tensor) -> torch.Tensor:
        index = months.round().long().clamp(0, PRIOR_MONTHS - 1)
        fraction = self.prior_fraction[male.long().clamp(0, 1), index]  # (N,)
        counts = self.valid.sum(-1).float()  # (13,)
        centre = fraction[:, None] * (counts - 1)  # (N, 13)
        stages = torch.arange(self.valid.shape[1], device=months.device, dtype=torch.float32)
        logits = -((stages - centre[..., None]) ** 2) / (2 * self.prior_sd**2)
        return logits.masked_fill(~self.valid, float("-inf")).softmax(-1)

    @torch.no_grad()
    def fit_output_map(self, raw_months: np.ndarray, months: np.ndarray, male: np.ndarray) -> None:
        """Fit the G&P-equivalent map per sex: isotonic regression of the labels on the raw RUS-CHN ages,
        kept at :data:`MAP_KNOTS` quantiles of the raw ages."""
        raw_months, months, male = (np.asarray(a, dtype=np.float64) for a in (raw_months, months, male))
        for sex in (0, 1):
            pick = male.round() == sex
            if pick.sum() < 10:
                continue
            order = np.argsort(raw_months[pick], kind="stable")
            xs = raw_months[pick][order]
            fitted = isotonic_fit(raw_months[pick], months[pick])
            knots = np.quantile(xs, np.linspace(0, 1, MAP_KNOTS))
            knots = knots + np.arange(MAP_KNOTS) * 1e-4  # strictly increasing
            values = np.maximum.accumulate(np.interp(knots, xs, fitted))
            self.map_x[sex] = torch.as_tensor(knots, dtype=self.map_x.dtype)
            self.map_y[sex] = torch.as_tensor(values, dtype=self.map_y.dtype)


def _box_confidence(confidence: torch.Tensor) -> torch.Tensor:
    """Per bone, the detector's confidence: the least confident of the keypoints that place its box."""
    forearm = [_K["forefinger1"], _K["middle_finger1"], _K["pinky_finger1"], _K["middle_finger2"]]
    columns = []
    for bone in BONES:
        used = forearm if bone not in BONE_GEOMETRY else sorted({_K[n] for n in BONE_GEOMETRY[bone][:3]} | {
            _K["forefinger1"], _K["pinky_finger1"]})
        columns.append(confidence[:, used].min(-1).values)
    return torch.stack(columns, dim=-1)


def _weighted_stage_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled bones, each stage weighted by its inverse frequency in the batch."""
    known = labels >= 0
    target = labels[known]
    flat = logits[known]
    counts = torch.bincount(target, minlength=flat.shape[-1]).float()
    weights = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * (counts > 0).sum()), torch.zeros_like(counts))
    return F.cross_entropy(flat.masked_fill(torch.isinf(flat), -1e4), target, weight=weights)


def rus_chn_factory(head: str = "stages", width: float = 1.0, label_range=(0.0, 228.0), max_pool: bool = False,
                    **kwargs) -> RusChnPipeline:
    """The pipeline from a training recipe's model keywords. ``width``, ``label_range`` and ``max_pool``, which
    every recipe passes, do not apply to it (its range is the RUS-CHN curve's) and are accepted and unused."""
    if head != "stages":
        raise ValueError(f"the RUS-CHN pipeline's head is its stage classifiers ('stages'), not {head!r}")
    return RusChnPipeline(**kwargs)
