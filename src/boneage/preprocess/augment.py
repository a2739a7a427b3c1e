"""Batched, seeded data augmentation on ``(N, 1, H, W)`` tensors in [0, 1].

Geometry (flip, rotation, isotropic scaling, translation) is one affine warp per image through
``affine_grid``/``grid_sample``; intensity (contrast, brightness, gamma) is applied after it, then what
differs between acquisitions (off by default): resampling down and up again with another filter (aliasing
included), blur, noise and JPEG compression, the degradations ``boneage evaluate --degrade`` measures. All
randomness comes from the ``torch.Generator`` passed in, never from the global RNG, so a run is
repeatable from its seed (an option left at 0 draws nothing, so older recipes draw as they did).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ..utils import DictConfig

__all__ = ["AugmentConfig", "acquisition_augment", "affine_theta", "augment_batch", "transform_points"]


@dataclasses.dataclass
class AugmentConfig(DictConfig):
    hflip: float = 0.5  # probability of a horizontal flip
    rotation_deg: float = 20.0  # uniform in [-r, r]
    scale: tuple[float, float] = (0.85, 1.15)  # isotropic zoom range
    translate: float = 0.08  # fraction of the image size, uniform in [-t, t] per axis
    contrast: float = 0.2  # contrast factor uniform in [1-c, 1+c]
    brightness: float = 0.1  # additive shift uniform in [-b, b]
    gamma: float = 0.2  # log-uniform gamma in [1/(1+g), 1+g]
    # acquisition (0 = off): probability of a down-and-up resampling (to 35-90 % of the size, nearest, bilinear or
    # area down, bilinear up); the largest SD of a Gaussian blur (px, uniform from 0); the largest SD of Gaussian
    # noise (uniform from 0); probability of JPEG compression at a quality uniform in 15-80
    resample: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg: float = 0.0

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(hflip=0.0, rotation_deg=0.0, scale=(1.0, 1.0), translate=0.0, contrast=0.0, brightness=0.0, gamma=0.0)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def affine_theta(angle, scale, tx, ty, flip, size: tuple[int, int]) -> torch.Tensor:
    """``(N, 2, 3)`` matrices for ``affine_grid``: rotation by ``angle`` (radians) and zoom by ``scale``
    about the centre *in pixel space*, a horizontal flip where ``flip`` is -1, and a shift ``(tx, ty)``
    in grid units. In the grid's normalised coordinates the off-diagonal terms scale with the aspect
    ratio; without that, non-square images would be sheared instead of rotated."""
    aspect = size[0] / size[1]  # H / W
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack(
        [torch.stack([cos * flip, -sin * aspect, tx], 1), torch.stack([sin * flip / aspect, cos, ty], 1)], 1
    )


def transform_points(points: torch.Tensor, theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Where ``(N, K, 2)`` pixel coordinates (x, y) of the input images land after the warp ``theta``.

    ``affine_grid`` maps *output* to *input* normalised coordinates (``in = A @ out + t``); a point of
    the input therefore moves to ``A^-1 @ (in - t)``. Pixel coordinates are continuous (0 at the left
    edge of the first pixel, ``W`` at the right edge of the last), matching ``align_corners=False``.
    """
    height, width = size
    scale = torch.tensor([width / 2.0, height / 2.0], dtype=theta.dtype, device=theta.device)
    normalised = points.to(theta.dtype) / scale - 1.0
    matrix, shift = theta[:, :, :2], theta[:, :, 2]
    moved = torch.linalg.solve(matrix, (normalised - shift[:, None, :]).transpose(1, 2)).transpose(1, 2)
    return (moved + 1.0) * scale


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator,
                  return_theta: bool = False):
    """Return an augmented copy of ``images`` (float, ``(N, C, H, W)``, values in [0, 1]).

    With ``return_theta`` also the ``(N, 2, 3)`` warp, for :func:`transform_points` (the random draws
    are the same either way)."""
    n = images.shape[0]
    angle = _uniform(n, -config.rotation_deg, config.rotation_deg, generator) * (math.pi / 180)
    scale = _uniform(n, config.scale[0], config.scale[1], generator)
    tx = _uniform(n, -config.translate, config.translate, generator) * 2  # grid units span [-1, 1]
    ty = _uniform(n, -config.translate, config.translate, generator) * 2
    flip = torch.where(torch.rand(n, generator=generator) < config.hflip, -1.0, 1.0)
    theta = affine_theta(angle, scale, tx, ty, flip, images.shape[-2:]).to(images.dtype)
    identity = bool((angle == 0).all() and (scale == 1).all() and (tx == 0).all() and (ty == 0).all() and (flip == 1).all())
    out = images
    if not identity:
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if config.gamma > 0:
        log_g = _uniform(n, -math.log1p(config.gamma), math.log1p(config.gamma), generator)
        out = out.clamp(0, 1).pow(torch.exp(log_g).view(n, 1, 1, 1).to(out.dtype))
    if config.contrast > 0 or config.brightness > 0:
        c = _uniform(n, 1 - config.contrast, 1 + config.contrast, generator).view(n, 1, 1, 1).to(out.dtype)
        b = _uniform(n, -config.brightness, config.brightness, generator).view(n, 1, 1, 1).to(out.dtype)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * c + mean + b).clamp(0, 1)
    out = acquisition_augment(out, config, generator)
    return (out, theta) if return_theta else out


RESAMPLE_MODES = ("nearest", "bilinear", "area")
JPEG_QUALITY = (15, 80)


def acquisition_augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """What differs between acquisitions, on ``(N, C, H, W)`` images in [0, 1]: resampling, blur, noise, JPEG
    (each only when its option is above 0; see :class:`AugmentConfig`)."""
    out = images
    if config.resample > 0:
        out = _resample(out, config.resample, generator)
    if config.blur > 0:
        out = _blur(out, _uniform(out.shape[0], 0.0, config.blur, generator), config.blur)
    if config.noise > 0:
        sd = _uniform(out.shape[0], 0.0, config.noise, generator).view(-1, 1, 1, 1).to(out.dtype)
        out = (out + sd * torch.randn(out.shape, generator=generator).to(out.dtype)).clamp(0, 1)
    if config.jpeg > 0:
        out = _jpeg(out, config.jpeg, generator)
    return out


def _resample(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    n, _, height, width = images.shape
    chosen = torch.rand(n, generator=generator) < probability
    factors = _uniform(n, 0.35, 0.9, generator)
    modes = torch.randint(0, len(RESAMPLE_MODES), (n,), generator=generator)
    out = images.clone()
    for k in torch.nonzero(chosen).flatten().tolist():
        size = (max(8, round(height * float(factors[k]))), max(8, round(width * float(factors[k]))))
        mode = RESAMPLE_MODES[int(modes[k])]
        small = F.interpolate(images[k : k + 1], size=size, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
        out[k] = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)[0]
    return out


def _blur(images: torch.Tensor, sigma: torch.Tensor, largest: float) -> torch.Tensor:
    """A separable Gaussian blur of SD ``sigma[k]`` (px) per image (below 0.1 px: none)."""
    n, channels, height, width = images.shape
    radius = max(1, math.ceil(3 * largest))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    safe = sigma.clamp_min(0.1).view(-1, 1)
    kernels = torch.exp(-(x**2) / (2 * safe**2))
    kernels = torch.where(sigma.view(-1, 1) < 0.1, (x == 0).float().expand_as(kernels), kernels)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0).to(images.dtype)
    flat = images.reshape(1, n * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernels.view(-1, 1, 1, 2 * radius + 1), groups=n * channels)
    flat = F.conv2d(flat, kernels.view(-1, 1, 2 * radius + 1, 1), groups=n * channels)
    return flat.view(n, channels, height, width)


def _jpeg(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    from .degrade import jpeg_roundtrip

    n = images.shape[0]
    chosen = torch.rand(n, generator=generator) < probability
    quality = torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, (n,), generator=generator)
    out = images.clone()
    for k in torch.nonzero(chosen).flatten().tolist():
        for c in range(images.shape[1]):
            decoded = jpeg_roundtrip(images[k, c].float().numpy(), int(quality[k]))
            out[k, c] = torch.from_numpy(decoded).to(images.dtype)
    return out
