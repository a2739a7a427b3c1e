"""Stage 3 of the RUS-CHN pipeline: each bone's maturity stage from its ROI crop.

A small DenseNet (the paper: DenseNet without its softmax) encodes every ROI crop; a learned embedding of
the bone's identity is added; scaled dot-product self-attention across the 13 ROI features (Q, K and V
from the features, a 13 x 13 attention map multiplied with the features) lets each bone's stage see the
others; one linear layer per bone gives its stage logits, padded to the most stages of any bone and
masked where a bone has fewer.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BoneSelfAttention", "ROIEncoder", "StageClassifier"]


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.norm, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], dim=1)


class ROIEncoder(nn.Module):
    """A DenseNet for small crops: a stem, ``len(layers)`` dense blocks (growth ``growth``) joined by
    transitions that halve the resolution and the width, then BN-ReLU and global average pooling."""

    def __init__(self, growth: int = 16, layers: tuple[int, ...] = (3, 4, 4), stem: int = 32):
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(1, stem, 3, stride=2, padding=1, bias=False)]  # crops are upsampled: halve first
        channels = stem
        for b, count in enumerate(layers):
            for _ in range(count):
                modules.append(_DenseLayer(channels, growth))
                channels += growth
            if b < len(layers) - 1:
                out = channels // 2
                modules += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, out, 1, bias=False),
                            nn.AvgPool2d(2)]
                channels = out
        modules += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*modules)
        self.out_features = channels

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(crops)


class BoneSelfAttention(nn.Module):
    """Scaled dot-product self-attention across bones: ``(N, B, D)`` -> ``(N, B, D)`` and the ``(N, B, B)``
    attention map. ``A = softmax(Q K^T / sqrt(D))``, output ``LayerNorm(x + A V W_o)``. Without position
    information it is permutation-equivariant: the bones' identity comes from the embedding added before."""

    def __init__(self, dim: int):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out, self.norm = nn.Linear(dim, dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self.query(x), self.key(x), self.value(x)
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(x.shape[-1]), dim=-1)
        return self.norm(x + self.out(attention @ v)), attention


class StageClassifier(nn.Module):
    """ROI crops ``(N, B, 1, h, w)`` and sex ``(N,)`` -> stage logits ``(N, B, S)`` (``-inf`` where a bone has
    no such stage, from ``valid`` ``(B, S)``) and the attention map ``(N, B, B)``."""

    def __init__(self, valid: torch.Tensor, dim: int = 128, attention: bool = True, **encoder):
        super().__init__()
        bones, stages = valid.shape
        self.encoder = ROIEncoder(**encoder)
        self.project = nn.Linear(self.encoder.out_features, dim)
        self.bone_embedding = nn.Parameter(torch.zeros(bones, dim))
        self.sex_embedding = nn.Linear(1, dim)
        self.attention = BoneSelfAttention(dim) if attention else None
        self.heads = nn.Parameter(torch.randn(bones, dim, stages) * (1.0 / math.sqrt(dim)))
        self.bias = nn.Parameter(torch.zeros(bones, stages))
        self.register_buffer("valid", valid.bool(), persistent=False)

    def forward(self, crops: torch.Tensor, male: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, b = crops.shape[:2]
        features = self.project(self.encoder(crops.flatten(0, 1)).float()).view(n, b, -1)
        features = features + self.bone_embedding + self.sex_embedding(male.float().view(n, 1, 1))
        attention = None
        if self.attention is not None:
            features, attention = self.attention(features)
        logits = torch.einsum("nbd,bds->nbs", features, self.heads) + self.bias
        return logits.masked_fill(~self.valid, float("-inf")), attention
