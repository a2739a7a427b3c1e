"""Output heads and their losses.

Ordinal regression (ALA-Net, Eq. 1): the label range ``[min, max]`` months is cut into ``K - 1``
thresholds ``min + k`` (k = 0 .. K-2, K - 1 = max - min). Output ``k`` is the probability that the bone
age exceeds threshold k; the loss is binary cross-entropy averaged over the ranks; the prediction is
``min + sum_k sigmoid(logit_k)``. Targets are ``clamp(y - min - k, 0, 1)``: 0/1 for whole months and
a soft value for a fractional label (RSNA test labels are means of six ratings), which makes
``decode(encode(y)) == y`` exact on the whole range.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["HEADS", "OrdinalHead", "RegressionHead", "create_head", "ordinal_encode", "ordinal_decode"]

HEADS = ("ordinal", "l1", "mse")  # the heads create_head builds


def ordinal_encode(months: torch.Tensor, label_min: float, num_thresholds: int) -> torch.Tensor:
    """``(N,)`` months -> ``(N, K-1)`` targets in [0, 1]."""
    ranks = torch.arange(num_thresholds, device=months.device, dtype=torch.float32)
    return (months.float().unsqueeze(1) - label_min - ranks).clamp(0.0, 1.0)


def ordinal_decode(probabilities: torch.Tensor, label_min: float) -> torch.Tensor:
    """``(N, K-1)`` probabilities -> ``(N,)`` months (the expected value under the ordinal model)."""
    return label_min + probabilities.float().sum(dim=1)


class OrdinalHead(nn.Module):
    """K-1 sigmoid outputs over whole months, BCE averaged over ranks."""

    kind = "ordinal"

    def __init__(self, in_features: int, label_range: tuple[float, float] = (0.0, 228.0)):
        super().__init__()
        self.label_min, self.label_max = float(label_range[0]), float(label_range[1])
        self.num_thresholds = int(round(self.label_max - self.label_min))
        if self.num_thresholds < 1:
            raise ValueError(f"label_range must span at least one month, got {label_range}")
        self.fc = nn.Linear(in_features, self.num_thresholds)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.fc(features).float()
        return {"logits": logits, "bone_age_months": ordinal_decode(torch.sigmoid(logits), self.label_min)}

    def loss(self, outputs: dict[str, torch.Tensor], months: torch.Tensor) -> torch.Tensor:
        months = months.clamp(self.label_min, self.label_max)
        targets = ordinal_encode(months, self.label_min, self.num_thresholds)
        return F.binary_cross_entropy_with_logits(outputs["logits"], targets)

    @torch.no_grad()
    def init_from_labels(self, months: torch.Tensor) -> None:
        """Set the biases to the log-odds of the training labels, so training starts at the prior."""
        targets = ordinal_encode(months.clamp(self.label_min, self.label_max), self.label_min, self.num_thresholds)
        p = targets.mean(0).clamp(1e-3, 1 - 1e-3)
        self.fc.bias.copy_(torch.log(p / (1 - p)))
        self.fc.weight.mul_(0.1)


class RegressionHead(nn.Module):
    """One output scaled to months (``mean + sd * z``); L1 or MSE loss."""

    kind = "regression"

    def __init__(self, in_features: int, loss: str = "l1", label_mean: float = 120.0, label_std: float = 40.0,
                 label_range: tuple[float, float] = (0.0, 228.0)):
        super().__init__()
        if loss not in ("l1", "mse"):
            raise ValueError(f"regression loss must be 'l1' or 'mse', got {loss!r}")
        self.loss_kind = loss
        self.label_min, self.label_max = float(label_range[0]), float(label_range[1])
        self.register_buffer("label_mean", torch.tensor(float(label_mean)))
        self.register_buffer("label_std", torch.tensor(float(label_std)))
        self.fc = nn.Linear(in_features, 1)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.fc(features).float().squeeze(1)
        return {"z": z, "bone_age_months": self.label_mean + self.label_std * z}

    def loss(self, outputs: dict[str, torch.Tensor], months: torch.Tensor) -> torch.Tensor:
        target = (months.float() - self.label_mean) / self.label_std
        if self.loss_kind == "l1":
            return F.l1_loss(outputs["z"], target)
        return F.mse_loss(outputs["z"], target)

    @torch.no_grad()
    def init_from_labels(self, months: torch.Tensor) -> None:
        self.label_mean.fill_(float(months.float().mean()))
        self.label_std.fill_(float(months.float().std().clamp_min(1.0)))


def create_head(head: str, in_features: int, label_range: tuple[float, float]) -> nn.Module:
    """``'ordinal'``, ``'l1'`` or ``'mse'``."""
    if head == "ordinal":
        return OrdinalHead(in_features, label_range)
    if head in ("l1", "mse"):
        return RegressionHead(in_features, loss=head, label_range=label_range)
    raise ValueError(f"head must be one of {', '.join(HEADS)}; got {head!r}")
