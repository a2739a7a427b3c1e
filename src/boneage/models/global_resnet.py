"""The global baseline of ALA-Net: ResNet features + sex features -> MLP -> ordinal or regression head.

The backbone is MONAI's 2D ResNet built from scratch (no pretrained weights can be fetched here), with
a stride-2 7x7 stem and max pooling as in torchvision's ResNet, one input channel, and an optional
width factor (0.5 halves every stage: ~4x fewer FLOPs, which suits 100-128 px inputs on a CPU).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from .base import BoneAgeModel, Capabilities, ModelOutput
from .heads import create_head

__all__ = ["GlobalResNet", "build_resnet_backbone", "resnet_features"]

_DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50"}


def build_resnet_backbone(depth: int, width: float = 1.0, in_channels: int = 1, max_pool: bool = True) -> tuple[nn.Module, int]:
    """MONAI 2D ResNet without its classifier; returns ``(module, feature_channels)``.

    ``max_pool=False`` drops the stem's max pooling: feature maps twice as fine in each direction
    (16x instead of 32x downsampling), for small inputs where the bones are only a few pixels wide.
    """
    from monai.networks.nets import resnet as monai_resnet  # here, not at import: MONAI takes a second to import

    if depth not in _DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
    if not 0.05 <= width <= 8:
        raise ValueError(f"width must be between 0.05 and 8, got {width}")
    net = getattr(monai_resnet, _DEPTHS[depth])(
        spatial_dims=2, n_input_channels=in_channels, conv1_t_stride=2, widen_factor=width, feed_forward=False,
        no_max_pool=not max_pool,
    )
    last = net.layer4[-1]
    channels = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
    return net, channels


def resnet_features(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A :func:`build_resnet_backbone` module's last feature map ``(N, F, H/32, W/32)`` (``H/16`` without max pooling)."""
    x = backbone.act(backbone.bn1(backbone.conv1(images)))
    if not backbone.no_max_pool:
        x = backbone.maxpool(x)
    return backbone.layer4(backbone.layer3(backbone.layer2(backbone.layer1(x))))


class GlobalResNet(BoneAgeModel):
    """ResNet global features + sex features, decoded by an ordinal or an L1/MSE regression head."""

    def __init__(self, depth: int = 18, width: float = 1.0, head: str = "ordinal",
                 label_range: tuple[float, float] = (0.0, 228.0), sex_features: int = 32,
                 hidden: int = 256, dropout: float = 0.2, in_channels: int = 1, max_pool: bool = True,
                 sex_head: bool = False, sex_weight: float = 0.1):
        super().__init__()
        # sex_head: a logistic classifier of the sex from the pooled image features (as Deeplasia predicts it),
        # trained with sex_weight x its cross-entropy beside the bone age; the sex input stays as it is
        self.backbone, self.num_features = build_resnet_backbone(depth, width, in_channels, max_pool)
        self.sex_fc = nn.Sequential(nn.Linear(1, sex_features), nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(
            nn.Linear(self.num_features + sex_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.head = create_head(head, hidden, tuple(label_range))
        self.sex_classifier = nn.Linear(self.num_features, 1) if sex_head else None
        self.sex_weight = float(sex_weight)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> the 4th block's feature map ``(N, F, H/32, W/32)`` (``H/16`` without max pooling)."""
        return resnet_features(self.backbone, images)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(evidence=("gradcam",), predicts_sex=self.sex_classifier is not None)

    def forward(self, images: torch.Tensor, male: torch.Tensor, keypoints=None) -> ModelOutput:
        pooled = self.forward_features(images).mean(dim=(2, 3))
        male = male.view(-1).to(pooled.dtype)
        unknown = torch.isnan(male)
        if self.sex_classifier is None:
            if not torch.compiler.is_exporting() and bool(unknown.any()):
                raise ValueError("this model needs the sex of every image (it has no sex head)")
            head = self._head(pooled, male)
            return ModelOutput(bone_age_months=head["bone_age_months"], extras={"head": head})
        sex_logit = self.sex_classifier(pooled).float().view(-1)
        probability = torch.sigmoid(sex_logit)
        head = self._head(pooled, torch.where(unknown, torch.ones_like(male), male))
        # the unknown sex: both sexes' bone ages, weighted by the predicted probability (computed for every image,
        # without a branch on the data, so that the model exports to ONNX as it runs)
        as_girl = self._head(pooled, torch.zeros_like(male))["bone_age_months"]
        months = torch.where(unknown, probability * head["bone_age_months"] + (1 - probability) * as_girl,
                             head["bone_age_months"])
        return ModelOutput(bone_age_months=months, sex_probability=probability, extras={"head": head, "sex_logit": sex_logit})

    def _head(self, pooled: torch.Tensor, male: torch.Tensor) -> dict[str, torch.Tensor]:
        sex = self.sex_fc(male.view(-1, 1).to(pooled.dtype))
        return self.head(self.mlp(torch.cat([pooled, sex], dim=1)))

    def compute_loss(self, outputs: ModelOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = self.head.loss(outputs.extras["head"], batch["bone_age_months"])
        parts = {self.head.kind: loss.detach()}
        if "sex_logit" in outputs.extras and "male" in batch:
            sex_loss = F.binary_cross_entropy_with_logits(outputs.extras["sex_logit"], batch["male"].float())
            loss = loss + self.sex_weight * sex_loss
            parts["sex"] = sex_loss.detach()
        return {"loss": loss, **parts}

    def init_from_labels(self, months: torch.Tensor) -> None:
        self.head.init_from_labels(months)

    def cam_layers(self) -> list[nn.Module]:
        return [self.backbone.layer4]


@register_model
def global_resnet18(**kwargs) -> GlobalResNet:
    """ResNet-18 global features + sex (ALA-Net's global baseline); head=ordinal|l1|mse, width=1.0."""
    return GlobalResNet(depth=18, **kwargs)


@register_model
def global_resnet34(**kwargs) -> GlobalResNet:
    """ResNet-34 global features + sex (ALA-Net's global baseline); head=ordinal|l1|mse, width=1.0."""
    return GlobalResNet(depth=34, **kwargs)


@register_model
def global_resnet50(**kwargs) -> GlobalResNet:
    """ResNet-50 global features + sex (ALA-Net's paper backbone); head=ordinal|l1|mse, width=1.0."""
    return GlobalResNet(depth=50, **kwargs)
