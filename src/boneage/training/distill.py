"""Knowledge distillation: a student trained on a teacher's soft targets as well as the labels (``boneage train
--teacher MODEL [--distill-weight A]``), to put an ensemble's accuracy into one fast network.

The teacher (any boneage model, e.g. the shipped ensemble) sees the same augmented batch as the student, in
evaluation mode and without gradients. Its soft targets: for an ordinal teacher, the probability of each
"older than k months" threshold (an ensemble's averaged over its members); its bone age for any teacher.
The student's loss is ``(1 - A) * its own loss on the labels + A * the distillation loss``: binary
cross-entropy of its ordinal logits to the teacher's threshold probabilities when both are ordinal over the
same months, else the L1 distance of the bone ages in units of 40 months (a typical label SD).
The teacher must have been trained on the same inputs (its stored preprocessing equal to the recipe's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..models import LoadedModel, ModelOutput
from ..preprocess import PreprocessConfig

__all__ = ["check_teacher", "distillation_loss", "teacher_targets"]

MONTHS_SCALE = 40.0
# preprocessing settings that change the input a model sees
INPUT_SETTINGS = ("image_size", "resize", "normalization", "percentiles", "mean", "std", "hand", "crop_margin",
                  "fix_inversion", "contrast")


def check_teacher(teacher: LoadedModel, preprocess: PreprocessConfig) -> None:
    """A one-line InvalidInputError when the teacher was trained on other inputs than the recipe's."""
    theirs, ours = teacher.preprocess.to_dict(), preprocess.to_dict()
    differ = [f"{key} {theirs[key]!r} (the recipe: {ours[key]!r})" for key in INPUT_SETTINGS if theirs[key] != ours[key]]
    if differ:
        raise InvalidInputError(f"--teacher {teacher.source}: trained on other inputs: {'; '.join(differ)}; "
                                "train the student with the teacher's preprocessing")


def _ordinal_probabilities(outputs: ModelOutput) -> torch.Tensor | None:
    """The threshold probabilities of an ordinal model (an ensemble's averaged over members), else None."""
    if outputs.members:
        found = [_ordinal_probabilities(member) for member in outputs.members]
        if any(p is None for p in found) or len({p.shape for p in found}) != 1:
            return None
        return torch.stack(found).mean(dim=0)
    head = outputs.extras.get("head") or {}
    return torch.sigmoid(head["logits"].float()) if "logits" in head else None


@torch.no_grad()
def teacher_targets(teacher, x: torch.Tensor, male: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """The teacher's soft targets for a batch: ``months`` ``(N,)`` and ``probabilities`` ``(N, K)`` (None for a
    teacher without an ordinal head)."""
    outputs = teacher(x, male)
    return {"months": outputs.bone_age_months.float(), "probabilities": _ordinal_probabilities(outputs)}


def distillation_loss(outputs: ModelOutput, targets: dict) -> torch.Tensor:
    """The student's distance to the teacher's targets (see the module docstring)."""
    head = outputs.extras.get("head") or {}
    probabilities = targets.get("probabilities")
    if "logits" in head and probabilities is not None and head["logits"].shape == probabilities.shape:
        return F.binary_cross_entropy_with_logits(head["logits"].float(), probabilities)
    return F.l1_loss(outputs.bone_age_months.float(), targets["months"]) / MONTHS_SCALE
