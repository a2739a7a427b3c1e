"""Visual evidence a reader can check: where the model looked.

Every model family adds its own evidence behind one call, :func:`explain_image`:

* ALA-Net (any model with a region proposal network, or an ensemble holding one): the 17 anatomical
  ROIs it pooled, drawn as boxes on the radiograph;
* residual attention networks (any model whose outputs hold ``attention_maps``, or an ensemble whose
  first such member does): the soft mask of every attention module (its channel mean, normalised),
  laid over the radiograph, one named panel per module (Att1_1, Att2_1, ...) tiled into one image;
* ResNet models and ensembles of them: Grad-CAM on the last residual block (Selvaraju et al.): the
  feature maps weighted by the mean gradient of the predicted bone age, rectified, upsampled and laid
  over the radiograph as a heat map (ensembles average their members' maps).

The evidence is computed on the model input (what the network saw) and drawn on a display copy of
the radiograph at its own aspect ratio, mapped back through the preprocessing's resize policy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .preprocess import PreprocessConfig, to_model_input

__all__ = ["Evidence", "attention_maps", "attention_model", "display_image", "explain_image", "gradcam",
           "save_evidence"]

ROI_COLOUR = (255, 196, 0)
DISPLAY_MAX_SIDE = 1024
PANEL_MAX_SIDE = 512  # attention panels: long side of each, so that six tile into a legible image
PANEL_GAP = 4


@dataclasses.dataclass
class Evidence:
    """What :func:`explain_image` found: ``overlay`` ``(H, W, 3)`` uint8 on the display image."""

    kind: str  # "rois", "attention" or "gradcam"
    label: str  # one line for a reader
    overlay: np.ndarray
    rois: np.ndarray | None = None  # (17, 4) boxes in overlay pixels
    roi_scores: np.ndarray | None = None
    heatmap: np.ndarray | None = None  # (h, w) in [0, 1] at the model input's size
    panels: list[str] | None = None  # attention: the module of each panel, in order
    attention_maps: list[np.ndarray] | None = None  # attention: (h, w) in [0, 1] at the input's size

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "label": self.label}
        if self.rois is not None:
            data["rois"] = [[round(float(v), 1) for v in box] for box in self.rois]
            data["roi_scores"] = [round(float(s), 3) for s in self.roi_scores]
        if self.panels is not None:
            data["panels"] = list(self.panels)
        return data


def display_image(pixels: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """The radiograph as grayscale uint8 for display: windowed at the 0.5/99.5 percentiles, long side
    at most ``max_side`` pixels, aspect ratio kept."""
    from PIL import Image

    from .preprocess import normalize_intensity, to_grayscale

    gray = to_grayscale(pixels)
    image = np.round(normalize_intensity(gray, "percentile", (0.5, 99.5)) * 255.0).astype(np.uint8)
    scale = max_side / max(image.shape)
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    return image


def _input_tensor(image: np.ndarray, preprocess: PreprocessConfig) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(image))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return to_model_input(x[None, None], preprocess)


def _backbones(model: torch.nn.Module) -> list[torch.nn.Module]:
    members = list(getattr(model, "members", [model]))
    return [m for m in members if hasattr(getattr(m, "backbone", None), "layer4")]


def gradcam(model: torch.nn.Module, image: np.ndarray, male: float, preprocess: PreprocessConfig) -> np.ndarray:
    """Grad-CAM of the predicted bone age on the last residual block -> ``(H, W)`` in [0, 1] at the
    input's size. Raises InvalidInputError for a model without a ResNet backbone."""
    members = _backbones(model)
    if not members:
        raise InvalidInputError("Grad-CAM needs a model with a ResNet backbone")
    x = _input_tensor(image, preprocess)
    sex = torch.tensor([float(male)])
    total = torch.zeros(x.shape[-2:])
    for member in members:
        was_training = member.training
        member.eval()
        captured: dict[str, torch.Tensor] = {}

        def keep(_module, _inputs, output):
            output.retain_grad()
            captured["maps"] = output

        handle = member.backbone.layer4.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                months = member(x.float(), sex)["bone_age_months"].sum()
                months.backward()
        finally:
            handle.remove()
            member.zero_grad(set_to_none=True)
            member.train(was_training)
        maps = captured["maps"].detach().float()
        weights = captured["maps"].grad.float().mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * maps).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        total += cam / cam.max().clamp_min(1e-12)
    total /= total.max().clamp_min(1e-12)
    return total.numpy()


def attention_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """The module whose outputs hold ``attention_maps``: the model itself (a residual attention network,
    which names its modules in ``attention_names``), an ensemble's first member that does, or None."""
    if getattr(model, "attention_names", None):
        return model
    for member in getattr(model, "members", []):
        if getattr(member, "attention_names", None):
            return member
    return None


def attention_maps(model: torch.nn.Module, image: np.ndarray, male: float,
                   preprocess: PreprocessConfig) -> list[tuple[str, np.ndarray]]:
    """The soft masks of a residual attention network's modules for one image: ``[(name, map)]`` with
    each map the channel mean of the module's mask, bilinearly upsampled to the input's size and
    normalised to [0, 1] (a constant mask gives zeros). Raises InvalidInputError for other models."""
    module = attention_model(model)
    if module is None:
        raise InvalidInputError("attention maps need a residual attention network")
    x = _input_tensor(image, preprocess)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            maps = module(x.float(), torch.tensor([float(male)]))["attention_maps"]
    finally:
        module.train(was_training)
    names = list(getattr(module, "attention_names", []))
    found = []
    for k, mask in enumerate(maps):
        mask = F.interpolate(mask[:1, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        low, high = mask.min(), mask.max()
        mask = (mask - low) / (high - low) if float(high - low) > 1e-12 else torch.zeros_like(mask)
        found.append((names[k] if k < len(names) else f"Att{k + 1}", mask.clamp(0, 1).numpy()))
    return found


def _to_display(boxes: np.ndarray, input_hw, display_hw, resize: str) -> np.ndarray:
    """Boxes in model-input pixels -> display pixels (inverse of the preprocessing's resize)."""
    in_h, in_w = input_hw
    d_h, d_w = display_hw
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if resize == "stretch":
        return boxes * np.array([d_w / in_w, d_h / in_h, d_w / in_w, d_h / in_h])
    scale = min(in_h / d_h, in_w / d_w)
    new_h, new_w = max(1, round(d_h * scale)), max(1, round(d_w * scale))
    top, left = (in_h - new_h) // 2, (in_w - new_w) // 2
    shift = np.array([left, top, left, top])
    return (boxes - shift) * np.array([d_w / new_w, d_h / new_h, d_w / new_w, d_h / new_h])


def _heatmap_to_display(heatmap: np.ndarray, display_hw, resize: str) -> np.ndarray:
    """The input-sized heat map resampled onto the display image (with ``pad``, only the part of the
    input frame that the image fills)."""
    from PIL import Image

    in_h, in_w = heatmap.shape
    if resize != "stretch":
        scale = min(in_h / display_hw[0], in_w / display_hw[1])
        new_h, new_w = max(1, round(display_hw[0] * scale)), max(1, round(display_hw[1] * scale))
        top, left = (in_h - new_h) // 2, (in_w - new_w) // 2
        heatmap = heatmap[top : top + new_h, left : left + new_w]
    image = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F")
    return np.asarray(image.resize((display_hw[1], display_hw[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def _display_rgb(display: np.ndarray | None, image: np.ndarray) -> np.ndarray:
    base = np.asarray(display if display is not None else image)
    if base.dtype != np.uint8:
        base = np.round(np.clip(base, 0, 1) * 255).astype(np.uint8)
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=2)
    if min(base.shape[:2]) < 256:  # the 100 px model input: enlarge so boxes and labels are legible
        from PIL import Image

        factor = int(np.ceil(256 / min(base.shape[:2])))
        base = np.asarray(Image.fromarray(base).resize((base.shape[1] * factor, base.shape[0] * factor),
                                                       Image.Resampling.NEAREST))
    return base


def _heat_overlay(base: np.ndarray, heatmap: np.ndarray, resize: str) -> np.ndarray:
    """An input-sized [0, 1] heat map laid over the RGB display image (inferno, up to 45 % opaque)."""
    from matplotlib import colormaps

    shown = _heatmap_to_display(heatmap, base.shape[:2], resize)
    colours = colormaps["inferno"](np.clip(shown, 0, 1))[..., :3] * 255.0
    alpha = 0.45 * np.clip(shown, 0, 1)[..., None]
    return np.round(base * (1 - alpha) + colours * alpha).astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _attention_mosaic(base: np.ndarray, maps: list[tuple[str, np.ndarray]], resize: str) -> np.ndarray:
    """One panel per module (its mask over the display image, its name in the corner), tiled in a grid
    of ``ceil(sqrt(n))`` columns on black."""
    from PIL import Image, ImageDraw

    scale = PANEL_MAX_SIDE / max(base.shape[:2])
    if scale < 1:
        size = (max(1, round(base.shape[1] * scale)), max(1, round(base.shape[0] * scale)))
        base = np.asarray(Image.fromarray(base).resize(size, Image.Resampling.LANCZOS))
    height, width = base.shape[:2]
    columns = int(np.ceil(np.sqrt(len(maps))))
    rows = int(np.ceil(len(maps) / columns))
    canvas = Image.new("RGB", (columns * width + (columns - 1) * PANEL_GAP, rows * height + (rows - 1) * PANEL_GAP))
    font = _font(max(10, min(height, width) // 16))
    for k, (name, heatmap) in enumerate(maps):
        panel = Image.fromarray(_heat_overlay(base, heatmap, resize))
        draw = ImageDraw.Draw(panel)
        _, _, right, bottom = draw.textbbox((4, 3), name, font=font)
        draw.rectangle([0, 0, right + 4, bottom + 3], fill=(0, 0, 0))
        draw.text((4, 3), name, fill=(255, 255, 255), font=font)
        row, column = divmod(k, columns)
        canvas.paste(panel, (column * (width + PANEL_GAP), row * (height + PANEL_GAP)))
    return np.asarray(canvas)


def explain_image(loaded, image: np.ndarray, male: float, display: np.ndarray | None = None) -> Evidence | None:
    """The evidence of ``loaded`` (a :class:`~boneage.models.LoadedModel`) for one preprocessed image
    (``(H, W)`` uint8 or [0, 1], as :meth:`Predictor.prepare_radiograph` returns), drawn on ``display``
    (the radiograph as grayscale or RGB uint8 at its own aspect ratio; default, and always for a model
    whose preprocessing crops to the hand: the model input).
    None for a model that offers no evidence of any kind."""
    from PIL import Image, ImageDraw

    from .inference import predict_rois, roi_model

    preprocess = loaded.preprocess
    image = np.asarray(image)
    if preprocess.hand in ("crop", "crop_mask"):
        display = None  # the input is a crop of the radiograph: draw on what the model saw, where it lines up
    base = _display_rgb(display, image)
    display_hw = base.shape[:2]
    resize = preprocess.resize if display is not None else "stretch"
    if roi_model(loaded.model) is not None:
        rois, scores = predict_rois(loaded.model, image[None], [male], preprocess)
        boxes = _to_display(rois[0], image.shape, display_hw, resize)
        canvas = Image.fromarray(base.copy())
        draw = ImageDraw.Draw(canvas)
        width = max(1, round(max(display_hw) / 300))
        for k, box in enumerate(boxes):
            draw.rectangle([float(v) for v in box], outline=ROI_COLOUR, width=width)
            draw.text((float(box[0]) + width + 1, float(box[1]) + width), str(k + 1), fill=ROI_COLOUR)
        return Evidence("rois", f"the {len(boxes)} anatomical regions of interest the model pooled (ALA-Net)",
                        np.asarray(canvas), rois=boxes, roi_scores=scores[0])
    if attention_model(loaded.model) is not None:
        maps = attention_maps(loaded.model, image, male, preprocess)
        names = [name for name, _ in maps]
        return Evidence("attention", f"residual attention: the soft masks of its {len(maps)} attention modules "
                        f"({', '.join(names)}), each normalised, bright where the module amplifies the features",
                        _attention_mosaic(base, maps, resize), panels=names, attention_maps=[m for _, m in maps])
    if not _backbones(loaded.model):
        return None
    heatmap = gradcam(loaded.model, image, male, preprocess)
    overlay = _heat_overlay(base, heatmap, resize)
    return Evidence("gradcam", "Grad-CAM: where the features that raise the bone age estimate lie", overlay,
                    heatmap=heatmap)


def save_evidence(evidence: Evidence, path: str | Path) -> Path:
    """Write the overlay as PNG atomically (a temporary file renamed into place)."""
    from PIL import Image

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        Image.fromarray(evidence.overlay).save(tmp, format="PNG")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
