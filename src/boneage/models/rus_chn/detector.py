"""Stage 2 of the RUS-CHN pipeline: registered keypoint detectors whose 17 hand keypoints place the 13 boxes.

Why keypoints rather than a box detector: there is exactly one of each bone per hand, our annotations are
hand keypoints (568 RSNA images) rather than RUS boxes, and the boxes follow from the keypoints by a fixed
geometry (:mod:`.geometry`). A heat-map regressor that finds each keypoint once cannot miss a bone or find
it twice, needs no anchors, IoU thresholds or NMS, and trains on a few hundred images on a CPU - where the
paper's cascade R-CNN on a recursive feature pyramid is trained on 2,129 annotated cases on GPUs.

The paper's ideas are kept as options of the same detector, measured in ``benchmarks/results/rus_chn.md``:

* ``sac=True``: switchable atrous convolution in the backbone (:class:`SwitchableAtrousConv`);
* ``recursive=2``: a recursive feature pyramid: the pyramid's outputs are fed back into the backbone's
  stages and the backbone runs again (DetectoRS's RFP, two steps). The second pass has stages of its own
  (untied weights): with shared BatchNorm layers the two passes' different statistics mix in the running
  averages, and the detector trained well and failed in evaluation;
* ``cascade=N``: N refinement stages after the heat map, each looking at features around the current
  estimate in a window half as large as the one before and predicting an offset (the cascade's
  progressively stricter stages, for keypoints);
* ``head='regression'``: a direct coordinate regressor instead of heat maps (a baseline).

Register a new detector with :func:`register_detector`; :func:`create_detector` builds one by name.
"""

from __future__ import annotations

import copy
import difflib
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...data.keypoints import ROI_KEYPOINTS
from ...errors import InvalidInputError
from ..detection import roi_align

__all__ = ["KeypointDetector", "SwitchableAtrousConv", "create_detector", "list_detectors", "register_detector",
           "soft_argmax"]

NUM_KEYPOINTS = len(ROI_KEYPOINTS)
_DETECTORS: dict[str, Callable[..., nn.Module]] = {}


def register_detector(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _DETECTORS:
        raise ValueError(f"detector {fn.__name__!r} is registered twice")
    _DETECTORS[fn.__name__] = fn
    return fn


def list_detectors() -> list[str]:
    return sorted(_DETECTORS)


def create_detector(name: str, **kwargs) -> nn.Module:
    """Build a registered detector; an unknown name raises an error listing the valid ones."""
    if name not in _DETECTORS:
        close = difflib.get_close_matches(name, list(_DETECTORS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidInputError(f"unknown detector {name!r}.{hint} Available detectors: {', '.join(list_detectors())}")
    return _DETECTORS[name](**kwargs)


class SwitchableAtrousConv(nn.Module):
    """``S(x) * Conv(x, w, 1) + (1 - S(x)) * Conv(x, w + dw, r)`` with the switch ``S`` a 5x5 average
    pool and a 1x1 convolution (Qiao et al., DetectoRS). ``dw`` starts at zero and ``S`` at one, so the
    layer starts as the plain convolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 3):
        super().__init__()
        self.stride, self.dilation = stride, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.weight_delta = nn.Parameter(torch.zeros_like(self.weight))
        self.switch = nn.Conv2d(in_channels, 1, 1, stride=stride)
        nn.init.zeros_(self.switch.weight)
        nn.init.ones_(self.switch.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.switch(F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False))
        small = F.conv2d(x, self.weight, stride=self.stride, padding=1)
        large = F.conv2d(x, self.weight + self.weight_delta, stride=self.stride, padding=self.dilation,
                         dilation=self.dilation)
        return s * small + (1 - s) * large


def _conv(cin: int, cout: int, stride: int, sac: bool) -> nn.Module:
    if sac:
        return SwitchableAtrousConv(cin, cout, stride)
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class _Block(nn.Module):
    """A residual block (two 3x3 convolutions), stride 2 when it changes width."""

    def __init__(self, cin: int, cout: int, stride: int, sac: bool):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, cout, stride, sac), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv(cout, cout, 1, sac), nn.BatchNorm2d(cout)
        self.skip = nn.Identity() if (cin == cout and stride == 1) else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


def soft_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K, h, w)`` heat-map logits -> ``(N, K, 2)`` expected (x, y) in heat-map cells (cell centres at
    0.5, 1.5, ...) and the spatial softmax ``(N, K, h, w)``."""
    n, k, h, w = logits.shape
    prob = logits.float().flatten(2).softmax(-1).view(n, k, h, w)
    xs = torch.arange(w, device=logits.device, dtype=prob.dtype) + 0.5
    ys = torch.arange(h, device=logits.device, dtype=prob.dtype) + 0.5
    x = (prob.sum(2) * xs).sum(-1)
    y = (prob.sum(3) * ys).sum(-1)
    return torch.stack([x, y], dim=-1), prob


class KeypointDetector(nn.Module):
    """A small residual backbone with a feature pyramid, heat maps at 1/4 of its input and the options of
    the module docstring. Images are pooled to ``work_size`` first (the detector needs the hand's layout,
    not its finest detail). ``forward(images)`` -> ``{'points': (N, 17, 2) input pixels, 'confidence':
    (N, 17), 'logits': heat maps}``; :meth:`loss` compares them with annotated keypoints."""

    def __init__(self, *, head: str = "heatmap", sac: bool = False, recursive: int = 1, cascade: int = 0,
                 channels: tuple[int, ...] = (24, 48, 96, 160), work_size: int = 128, sigma: float = 1.0):
        super().__init__()
        if head not in ("heatmap", "regression"):
            raise ValueError(f"detector head must be 'heatmap' or 'regression', got {head!r}")
        if recursive not in (1, 2) or not 0 <= cascade <= 3:
            raise ValueError("recursive must be 1 or 2 and cascade 0-3")
        self.head_kind, self.recursive, self.work_size, self.sigma = head, recursive, work_size, sigma
        c1, c2, c3, c4 = channels
        self.stem = nn.Sequential(nn.Conv2d(1, c1, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True))
        self.stages = nn.ModuleList([_Block(c1, c1, 1, sac), _Block(c1, c2, 2, sac), _Block(c2, c3, 2, sac),
                                     _Block(c3, c4, 2, sac)])
        pyramid = 32
        self.lateral = nn.ModuleList([nn.Conv2d(c, pyramid, 1) for c in channels])
        self.smooth = nn.Sequential(nn.Conv2d(pyramid, pyramid, 3, padding=1, bias=False), nn.BatchNorm2d(pyramid),
                                    nn.ReLU(inplace=True))
        # RFP: each pyramid level fed back into the input of the backbone stage that made it
        self.feedback = nn.ModuleList([nn.Conv2d(pyramid, c, 1) for c in (c1, c1, c2, c3)]) if recursive > 1 else None
        self.stages_again = copy.deepcopy(self.stages) if recursive > 1 else None
        if head == "heatmap":
            self.heatmap = nn.Conv2d(pyramid, NUM_KEYPOINTS, 1)
        else:
            self.regressor = nn.Linear(c4, NUM_KEYPOINTS * 2)
        self.refiners = nn.ModuleList([nn.Sequential(nn.Flatten(), nn.Linear(pyramid * 5 * 5, 128), nn.ReLU(inplace=True),
                                                     nn.Linear(128, 2)) for _ in range(cascade)])
        for refiner in self.refiners:
            nn.init.zeros_(refiner[-1].weight)
            nn.init.zeros_(refiner[-1].bias)

    def _backbone(self, x: torch.Tensor, feedback: list[torch.Tensor] | None) -> list[torch.Tensor]:
        features, y = [], self.stem(x)
        for i, stage in enumerate(self.stages if feedback is None else self.stages_again):
            if feedback is not None:
                fb = self.feedback[i](feedback[i])
                y = y + F.interpolate(fb, size=y.shape[-2:], mode="nearest")
            y = stage(y)
            features.append(y)
        return features

    def _pyramid(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        top = self.lateral[-1](features[-1])
        levels = [top]
        for lateral, feature in zip(reversed(self.lateral[:-1]), reversed(features[:-1])):
            top = lateral(feature) + F.interpolate(top, size=feature.shape[-2:], mode="nearest")
            levels.insert(0, top)
        return levels

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        size = images.shape[-2:]
        x = F.adaptive_avg_pool2d(images.float(), self.work_size) if max(size) > self.work_size else images.float()
        features = self._backbone(x, None)
        levels = self._pyramid(features)
        if self.feedback is not None:
            features = self._backbone(x, levels)
            levels = self._pyramid(features)
        fine = self.smooth(levels[0])  # 1/2 of the working size
        scale = torch.tensor([size[1] / fine.shape[-1], size[0] / fine.shape[-2]], device=images.device)
        out = {}
        if self.head_kind == "heatmap":
            logits = self.heatmap(fine)
            cells, prob = soft_argmax(logits)
            points = cells * scale
            peak = F.max_pool2d(prob, 3, stride=1, padding=1).flatten(2).max(-1).values
            out.update(logits=logits, confidence=(peak * 9).clamp(max=1.0))  # the mass near the peak, ~[0, 1]
        else:
            pooled = features[-1].float().mean((2, 3))
            points = torch.sigmoid(self.regressor(pooled)).view(-1, NUM_KEYPOINTS, 2) * scale * fine.shape[-1]
            out["confidence"] = torch.ones(points.shape[:2], device=images.device)
        stages = [points]
        for k, refiner in enumerate(self.refiners):
            window = fine.shape[-1] / 4 / (2**k)  # in cells of the fine level
            stages.append(self._refine(refiner, fine, stages[-1] / scale, window) * scale)
        out["points"], out["stages"] = stages[-1], stages
        return out

    @staticmethod
    def _refine(refiner: nn.Module, fine: torch.Tensor, cells: torch.Tensor, window: float) -> torch.Tensor:
        n, k, _ = cells.shape
        centre = cells.detach()
        boxes = list(torch.cat([centre - window / 2, centre + window / 2], dim=-1))
        crops = roi_align(fine.float(), boxes, (5, 5), spatial_scale=1.0, sampling_ratio=2)
        offset = torch.tanh(refiner(crops)).view(n, k, 2) * (window / 2)
        return cells + offset

    def loss(self, outputs: dict, points: torch.Tensor, valid: torch.Tensor, image_hw) -> torch.Tensor:
        """Mean over annotated images (``valid``) of the keypoints' L1 error in units of 1/100 of the image
        size at every stage, plus the heat map's cross-entropy to a Gaussian of ``sigma`` cells around the
        annotation."""
        if not bool(valid.any()):
            return outputs["points"].sum() * 0.0
        size = torch.tensor([image_hw[1], image_hw[0]], device=points.device, dtype=torch.float32)
        target = points[valid].float()
        loss = sum(((stage[valid].float() - target).abs() / size * 100).mean() for stage in outputs["stages"])
        if "logits" in outputs:
            logits = outputs["logits"][valid].float()
            h, w = logits.shape[-2:]
            cells = target / size * torch.tensor([w, h], device=points.device)
            ys = torch.arange(h, device=points.device) + 0.5
            xs = torch.arange(w, device=points.device) + 0.5
            d2 = (xs.view(1, 1, 1, w) - cells[..., 0, None, None]) ** 2 + (ys.view(1, 1, h, 1) - cells[..., 1, None, None]) ** 2
            gauss = torch.exp(-d2 / (2 * self.sigma**2))
            gauss = gauss / gauss.flatten(2).sum(-1)[..., None, None].clamp(min=1e-8)
            loss = loss + -(gauss * logits.flatten(2).log_softmax(-1).view_as(logits)).sum((2, 3)).mean()
        return loss


@register_detector
def heatmap(**kwargs) -> KeypointDetector:
    """Heat-map keypoint detector (options: sac, recursive, cascade)."""
    return KeypointDetector(head="heatmap", **kwargs)


@register_detector
def regression(**kwargs) -> KeypointDetector:
    """Direct keypoint coordinate regression (a baseline)."""
    return KeypointDetector(head="regression", **kwargs)
