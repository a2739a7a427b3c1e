"""Residual attention network for bone age (Wu et al., "Residual attention based network for hand bone
age assessment"), built on Wang et al.'s Residual Attention Network.

* Pre-activation bottleneck residual units (BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1; a 1x1 projection
  shortcut when the shape changes).
* An attention module has a trunk branch T (``t = 2`` residual units) and a soft-mask branch M:
  ``down_steps`` times max pooling (3x3, stride 2) with ``r = 1`` residual unit each (two at the
  bottom), a residual-unit skip connection at every level but the lowest, bilinear up-sampling back to
  each level's size (any size, odd ones included), then BN-ReLU-1x1 conv twice and a sigmoid. The
  output is the attention residual learning ``H = T(x) * (1 + M(x))``, between ``p = 1`` residual units
  before and after.
* Network: a 7x7 stride-2 stem (BN-ReLU), then per stage a stride-2 residual unit followed by
  ``stages[i]`` attention modules whose masks go down 3, 2 and 1 times; BN-ReLU, global average
  pooling, a fully connected layer, the sex features concatenated before the last fully connected
  layer (the head's), and an L1 regression head as in the paper (``head='ordinal'`` also works).

Channels follow Attention-56 (stem 64, stages 256-512-1024 with bottlenecks of a quarter of that),
scaled by ``width``; the default 0.5 suits 100 px inputs on a CPU. Sizes at 100 px: stem 50, stages
25, 13 and 7 px. The paper's network has six modules (Att1_1, Att2_1-2, Att3_1-3: ``stages=(1, 2, 3)``);
its Table 2 ablations drop Att3_2/Att3_3 (``stages=(1, 2, 1)``) and the sex input (``sex=False``).

Each module keeps its last mask (``last_mask``, detached ``(N, C, h, w)``); the network returns the
channel means as ``attention_maps`` for visual evidence (:mod:`boneage.explain`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from .base import BoneAgeModel, Capabilities, ModelOutput
from .heads import create_head

__all__ = ["AttentionModule", "ResidualAttentionNet", "ResidualUnit"]

# Attention-56: stem channels, then each stage's output channels (bottleneck = a quarter).
STEM_CHANNELS = 64
STAGE_CHANNELS = (256, 512, 1024)
MASK_DOWN_STEPS = (3, 2, 1)


class ResidualUnit(nn.Module):
    """Pre-activation bottleneck residual unit (He et al., identity mappings)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        inner = max(1, out_channels // 4)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, out_channels, 1, bias=False)
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


def _units(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualUnit(channels, channels) for _ in range(count)))


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class _MaskLevel(nn.Module):
    """One level of the soft-mask hourglass: max pool, residual units, and (above the bottom) a skip
    connection added to the up-sampled output of the level below, then residual units."""

    def __init__(self, channels: int, depth: int, units: int):
        super().__init__()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.down = _units(channels, units if depth > 1 else 2 * units)
        if depth > 1:
            self.skip = ResidualUnit(channels, channels)
            self.inner = _MaskLevel(channels, depth - 1, units)
            self.up = _units(channels, units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(self.pool(x))
        if hasattr(self, "inner"):
            y = self.up(_upsample(self.inner(y), y.shape[-2:]) + self.skip(y))
        return y


class AttentionModule(nn.Module):
    """``post(T(h) * (1 + M(h)))`` with ``h = pre(x)``: trunk T, soft mask M in (0, 1), same shape as x.

    ``use_mask = False`` makes M exactly 0 (the module is then its trunk alone: ``attend(h) == T(h)``).
    """

    def __init__(self, channels: int, down_steps: int, pre_units: int = 1, trunk_units: int = 2, mask_units: int = 1):
        super().__init__()
        if down_steps < 1:
            raise ValueError(f"down_steps must be at least 1, got {down_steps}")
        self.down_steps = int(down_steps)
        self.use_mask = True
        self.pre = _units(channels, pre_units)
        self.trunk = _units(channels, trunk_units)
        self.mask_levels = _MaskLevel(channels, self.down_steps, mask_units)
        self.mask_out = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1),
        )
        self.post = _units(channels, pre_units)
        self.last_mask: torch.Tensor | None = None

    def mask(self, h: torch.Tensor) -> torch.Tensor:
        """The soft mask M(h) in (0, 1) at h's size; exactly zero with ``use_mask = False``."""
        if not self.use_mask:
            return torch.zeros_like(h)
        return torch.sigmoid(self.mask_out(_upsample(self.mask_levels(h), h.shape[-2:])))

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        """Attention residual learning ``T(h) * (1 + M(h))``; keeps M in ``last_mask``."""
        mask = self.mask(h)
        self.last_mask = mask.detach()
        return self.trunk(h) * (1.0 + mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.attend(self.pre(x)))


class ResidualAttentionNet(BoneAgeModel):
    """Stem, three stages of attention modules, global pooling, sex before the last FC, L1 (or ordinal) head."""

    def __init__(self, stages: tuple[int, ...] = (1, 2, 3), width: float = 0.5, head: str = "l1",
                 label_range: tuple[float, float] = (0.0, 228.0), sex: bool = True, sex_features: int = 32,
                 hidden: int = 256, dropout: float = 0.2, in_channels: int = 1, max_pool: bool = False):
        super().__init__()
        stages = tuple(int(n) for n in stages)
        if len(stages) != len(STAGE_CHANNELS) or min(stages) < 0:
            raise ValueError(f"stages must be {len(STAGE_CHANNELS)} module counts >= 0, got {stages}")
        if not 0.05 <= width <= 8:
            raise ValueError(f"width must be between 0.05 and 8, got {width}")

        def scale(channels: int) -> int:
            return max(4, round(channels * width))

        stem = scale(STEM_CHANNELS)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        self.max_pool = nn.MaxPool2d(3, stride=2, padding=1) if max_pool else None
        blocks, names, previous = [], [], stem
        for index, (count, channels, down_steps) in enumerate(zip(stages, STAGE_CHANNELS, MASK_DOWN_STEPS), start=1):
            channels = scale(channels)
            layers = [ResidualUnit(previous, channels, stride=2)]
            for k in range(1, count + 1):
                layers.append(AttentionModule(channels, down_steps))
                names.append(f"Att{index}_{k}")
            blocks.append(nn.Sequential(*layers))
            previous = channels
        self.stages = nn.Sequential(*blocks)
        self._attention_names = names
        self.num_features = previous
        self.final = nn.Sequential(nn.BatchNorm2d(previous), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(nn.Linear(previous, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.uses_sex = bool(sex)
        self.sex_fc = nn.Sequential(nn.Linear(1, sex_features), nn.ReLU(inplace=True)) if self.uses_sex else None
        self.head = create_head(head, hidden + (sex_features if self.uses_sex else 0), tuple(label_range))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    capabilities = Capabilities(evidence=("attention",))

    def attention_names(self) -> list[str]:
        return list(self._attention_names)

    def attention_modules(self) -> list[AttentionModule]:
        """The attention modules in order (Att1_1, Att2_1, ...; names from ``attention_names()``)."""
        return [m for m in self.stages.modules() if isinstance(m, AttentionModule)]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> the last stage's feature map ``(N, F, H/16, W/16)`` (``H/32`` with max pooling)."""
        x = self.stem(images)
        if self.max_pool is not None:
            x = self.max_pool(x)
        return self.final(self.stages(x))

    def forward(self, images: torch.Tensor, male: torch.Tensor, keypoints=None) -> ModelOutput:
        """The bone age and ``attention_maps``: per module the channel mean of its soft mask, ``(N, h, w)``
        at that module's resolution."""
        pooled = self.forward_features(images).mean(dim=(2, 3))
        features = self.fc(pooled)
        if self.sex_fc is not None:
            features = torch.cat([features, self.sex_fc(male.view(-1, 1).to(features.dtype))], dim=1)
        head = self.head(features)
        return ModelOutput(bone_age_months=head["bone_age_months"], extras={"head": head},
                           attention_maps=[m.last_mask.mean(dim=1) for m in self.attention_modules()])

    def compute_loss(self, outputs: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        loss = self.head.loss(outputs.extras["head"], batch["bone_age_months"])
        return {"loss": loss, self.head.kind: loss.detach()}

    def init_from_labels(self, months: torch.Tensor) -> None:
        self.head.init_from_labels(months)


@register_model
def residual_attention(**kwargs) -> ResidualAttentionNet:
    """Residual attention network (Wu et al.): six attention modules (1-2-3) + sex before the last FC; L1."""
    return ResidualAttentionNet(**kwargs)


@register_model
def residual_attention_no_att3_23(**kwargs) -> ResidualAttentionNet:
    """Residual attention ablation: stages 1-2-1, without Att3_2/Att3_3 (Wu et al., Table 2)."""
    return ResidualAttentionNet(**{"stages": (1, 2, 1), **kwargs})


@register_model
def residual_attention_nosex(**kwargs) -> ResidualAttentionNet:
    """Residual attention ablation: the six-module network without the sex input (Wu et al., Table 2)."""
    return ResidualAttentionNet(**{"sex": False, **kwargs})
