"""Visual evidence a reader can check: where the model looked.

Every model offers the kinds of evidence its :class:`~boneage.models.Capabilities` name, most telling
first, and :func:`explain_image` draws the first one:

* ``'rois'`` (ALA-Net, or an ensemble holding one): the anatomical ROIs it pooled, drawn as boxes; a
  per-bone model (the RUS-CHN pipeline) draws its 13 bones' boxes, each labelled with a short name and
  the stage it was given (``R 9``, ``MC1 6``, ``PP3 8``, ``MP5 7``, ``DP1 6``);
* ``'attention'`` (residual attention networks): the soft mask of every attention module (its channel
  mean, normalised) laid over the radiograph, one named panel per module (Att1_1, Att2_1, ...) tiled;
* ``'gradcam'`` (ResNets and ensembles of them): Grad-CAM on the model's ``cam_layers()`` (Selvaraju et
  al.): the feature maps weighted by the mean gradient of the predicted bone age, rectified, upsampled
  and laid over the radiograph as a heat map (an ensemble's members' maps are averaged);
* ``'localize'`` (localize-then-regress): three panels, the Grad-CAM of the age group the localizer
  predicted, the mask it thresholds at gamma with the crop box, and the crop itself, taken from the
  radiograph as shown (the full-resolution image, reduced to at most DISPLAY_MAX_SIDE).

The evidence is computed on the model input (what the network saw) and drawn on the radiograph at its
own aspect ratio: through the geometry of the preprocessing (:class:`~boneage.preprocess.Prepared`:
its crop to the hand and its resize) when the input comes with it, else assuming the input shows the
whole image by the config's resize policy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import Prepared, PreprocessConfig, to_model_input
from .utils import atomic_write, evaluating

__all__ = ["Evidence", "attention_maps", "display_image", "explain_image", "gradcam", "localization", "save_evidence"]

ROI_COLOUR = (255, 196, 0)
# the RUS-CHN bones (boneage.data.rus_chn.BONES) as short labels: radius, ulna, metacarpals, proximal,
# middle and distal phalanges of rays 1, 3 and 5
BONE_LABELS = {"Radius": "R", "Ulna": "U", "MCPFirst": "MC1", "MCPThird": "MC3", "MCPFifth": "MC5", "PIPFirst": "PP1",
               "PIPThird": "PP3", "PIPFifth": "PP5", "MIPThird": "MP3", "MIPFifth": "MP5", "DIPFirst": "DP1",
               "DIPThird": "DP3", "DIPFifth": "DP5"}
DISPLAY_MAX_SIDE = 1024
MIN_CANVAS_SIDE = 256  # a smaller picture (a 100 px model input) is enlarged so that boxes and labels are legible
PANEL_MAX_SIDE = 512  # attention panels: long side of each, so that six tile into a legible image
PANEL_GAP = 4


@dataclasses.dataclass
class Evidence:
    """What :func:`explain_image` found: ``overlay`` ``(H, W, 3)`` uint8 on the display image."""

    kind: str  # "rois", "attention" or "gradcam"
    label: str  # one line for a reader
    overlay: np.ndarray
    rois: np.ndarray | None = None  # (R, 4) boxes in overlay pixels
    roi_labels: list[str] | None = None  # per-bone models: each box's short bone name and stage ("MC1 6")
    roi_scores: np.ndarray | None = None
    heatmap: np.ndarray | None = None  # (h, w) in [0, 1] at the model input's size
    panels: list[str] | None = None  # attention: the module of each panel, in order
    attention_maps: list[np.ndarray] | None = None  # attention: (h, w) in [0, 1] at the input's size

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "label": self.label}
        if self.rois is not None:
            data["rois"] = [[round(float(v), 1) for v in box] for box in self.rois]
            data["roi_scores"] = [round(float(s), 3) for s in self.roi_scores]
        if self.roi_labels is not None:
            data["roi_labels"] = list(self.roi_labels)
        if self.panels is not None:
            data["panels"] = list(self.panels)
        return data


def display_image(pixels: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """The radiograph as grayscale uint8 for display: windowed at the 0.5/99.5 percentiles, long side
    at most ``max_side`` pixels, aspect ratio kept.

    An image of one value has nothing to window: it is shown at its own grey level within the range of
    its type (uint8 as stored, other integers over their bit depth, e.g. uint16 over 0-65535; floats, as
    DICOM values after their LUTs, over the smallest of 0-1, 0-255, 0-4095 (12 bits) and 0-65535 that
    holds them), so an all-white image shows white, not black."""
    from PIL import Image

    from .preprocess import normalize_intensity, to_grayscale

    gray = to_grayscale(pixels)
    finite = gray[np.isfinite(gray)]
    if finite.size and float(finite.max()) > float(finite.min()):
        image = np.round(normalize_intensity(gray, "percentile", (0.5, 99.5)) * 255.0).astype(np.uint8)
    else:
        value = float(finite[0]) if finite.size else 0.0
        dtype = np.asarray(pixels).dtype
        if np.issubdtype(dtype, np.integer):
            full = float(np.iinfo(dtype).max)
        else:
            full = next(top for top in (1.0, 255.0, 4095.0, 65535.0) if value <= top or top == 65535.0)
        image = np.full(gray.shape, round(255.0 * min(max(value / full, 0.0), 1.0)), dtype=np.uint8)
    scale = max_side / max(image.shape)
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    return image


def _input_tensor(image: np.ndarray, preprocess: PreprocessConfig) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(image))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return to_model_input(x[None, None], preprocess)


def gradcam(model, image: np.ndarray, male: float, preprocess: PreprocessConfig) -> np.ndarray:
    """Grad-CAM of the predicted bone age on the model's ``cam_layers()`` -> ``(H, W)`` in [0, 1] at the
    input's size (each layer's map normalised, then their mean). Raises InvalidInputError for a model
    that offers no Grad-CAM."""
    from .errors import InvalidInputError

    layers = model.cam_layers()
    if not layers:
        raise InvalidInputError("Grad-CAM needs a model with a convolutional backbone (cam_layers)")
    x = _input_tensor(image, preprocess)
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured.append(output)

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        with evaluating(model), torch.enable_grad():
            model(x.float(), torch.tensor([float(male)])).bone_age_months.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    total = torch.zeros(x.shape[-2:])
    for maps in captured:
        weights = maps.grad.float().mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * maps.detach().float()).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        total += cam / cam.max().clamp_min(1e-12)
    total /= total.max().clamp_min(1e-12)
    return total.numpy()


def attention_maps(model, image: np.ndarray, male: float, preprocess: PreprocessConfig) -> list[tuple[str, np.ndarray]]:
    """The soft masks of a model's attention modules for one image: ``[(name, map)]`` with each map
    bilinearly upsampled to the input's size and normalised to [0, 1] (a constant mask gives zeros).
    Raises InvalidInputError for a model without attention maps."""
    from .errors import InvalidInputError

    if "attention" not in model.capabilities.evidence:
        raise InvalidInputError("attention maps need a model with attention modules (a residual attention network)")
    x = _input_tensor(image, preprocess)
    with evaluating(model), torch.inference_mode():
        maps = model(x.float(), torch.tensor([float(male)])).attention_maps
    names = model.attention_names()
    found = []
    for k, mask in enumerate(maps):
        mask = F.interpolate(mask[:1, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        low, high = mask.min(), mask.max()
        mask = (mask - low) / (high - low) if float(high - low) > 1e-12 else torch.zeros_like(mask)
        found.append((names[k] if k < len(names) else f"Att{k + 1}", mask.clamp(0, 1).numpy()))
    return found


# ------------------------------------------------------------------------------------------ drawing
@dataclasses.dataclass
class _Canvas:
    """The picture evidence is drawn on, with the mapping from model-input pixels to its pixels."""

    base: np.ndarray  # (H, W, 3) uint8
    to_canvas: Callable[[np.ndarray], np.ndarray]  # (..., 2) input (x, y) -> canvas (x, y)
    to_input: Callable[[np.ndarray], np.ndarray]  # the inverse

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """``(R, 4)`` boxes ``(x0, y0, x1, y1)`` in input pixels -> canvas pixels."""
        corners = self.to_canvas(np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2))
        return corners.reshape(-1, 4)

    def heat(self, heatmap: np.ndarray) -> np.ndarray:
        """An input-sized heat map resampled onto the canvas (0 where the canvas shows no input)."""
        from scipy import ndimage

        height, width = self.base.shape[:2]
        yy, xx = np.mgrid[0:height, 0:width]
        uv = self.to_input(np.stack([xx + 0.5, yy + 0.5], axis=-1))
        coords = np.stack([uv[..., 1] - 0.5, uv[..., 0] - 0.5])
        return ndimage.map_coordinates(np.asarray(heatmap, dtype=np.float32), coords, order=1, mode="constant", cval=0.0)


def _rgb(picture: np.ndarray) -> tuple[np.ndarray, int]:
    """A uint8 RGB copy, enlarged by a whole factor (returned) when it is smaller than MIN_CANVAS_SIDE."""
    from PIL import Image

    base = np.asarray(picture)
    if base.dtype != np.uint8:
        base = np.round(np.clip(base, 0, 1) * 255).astype(np.uint8)
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=2)
    factor = 1
    if min(base.shape[:2]) < MIN_CANVAS_SIDE:
        factor = int(np.ceil(MIN_CANVAS_SIDE / min(base.shape[:2])))
        base = np.asarray(Image.fromarray(base).resize((base.shape[1] * factor, base.shape[0] * factor),
                                                       Image.Resampling.NEAREST))
    return base, factor


def _whole_image(input_hw, policy: str, display_hw) -> Prepared:
    """The geometry of an input that shows the whole ``display_hw`` image by ``policy`` (no crop)."""
    from .preprocess.pipeline import Resize

    start = Prepared(image=np.zeros(display_hw, np.float32), source="", original_hw=tuple(display_hw),
                     region=(0.0, float(display_hw[0]), 0.0, float(display_hw[1])))
    return dataclasses.replace(Resize(tuple(input_hw), policy)(start), image=np.zeros(input_hw, np.float32))


def _canvas(image: np.ndarray, prepared: Prepared | None, preprocess: PreprocessConfig, display) -> _Canvas:
    if display is None:
        base, factor = _rgb(image)
        return _Canvas(base, lambda xy: np.asarray(xy) * factor, lambda xy: np.asarray(xy) / factor)
    base, factor = _rgb(display)
    display_hw = np.asarray(display).shape[:2]
    geometry = prepared if prepared is not None and prepared.content is not None else \
        _whole_image(image.shape, preprocess.resize, display_hw)
    scale = np.array([display_hw[1] / geometry.original_hw[1], display_hw[0] / geometry.original_hw[0]]) * factor
    return _Canvas(base, lambda xy: geometry.input_to_original(xy) * scale,
                   lambda xy: geometry.original_to_input(np.asarray(xy) / scale))


def _heat_overlay(canvas: _Canvas, heatmap: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """An input-sized [0, 1] heat map laid over the canvas (inferno, up to 45 % opaque)."""
    from matplotlib import colormaps

    base = canvas.base if base is None else base
    shown = np.clip(canvas.heat(heatmap), 0, 1)
    if shown.shape != base.shape[:2]:
        from PIL import Image

        shown = np.asarray(Image.fromarray(shown.astype(np.float32), mode="F").resize(
            (base.shape[1], base.shape[0]), Image.Resampling.BILINEAR), dtype=np.float32).clip(0, 1)
    colours = colormaps["inferno"](shown)[..., :3] * 255.0
    alpha = 0.45 * shown[..., None]
    return np.round(base * (1 - alpha) + colours * alpha).astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _panel(base: np.ndarray, name: str, font) -> np.ndarray:
    """A copy of ``base`` with ``name`` on a black tag in its top-left corner."""
    from PIL import Image, ImageDraw

    panel = Image.fromarray(base)
    draw = ImageDraw.Draw(panel)
    _, _, right, bottom = draw.textbbox((4, 3), name, font=font)
    draw.rectangle([0, 0, right + 4, bottom + 3], fill=(0, 0, 0))
    draw.text((4, 3), name, fill=(255, 255, 255), font=font)
    return np.asarray(panel)


def _tile(panels: list[np.ndarray], columns: int) -> np.ndarray:
    """Equal-sized RGB panels in a grid of ``columns`` on black, PANEL_GAP apart."""
    from PIL import Image

    height, width = panels[0].shape[:2]
    rows = int(np.ceil(len(panels) / columns))
    mosaic = Image.new("RGB", (columns * width + (columns - 1) * PANEL_GAP, rows * height + (rows - 1) * PANEL_GAP))
    for k, panel in enumerate(panels):
        row, column = divmod(k, columns)
        mosaic.paste(Image.fromarray(panel), (column * (width + PANEL_GAP), row * (height + PANEL_GAP)))
    return np.asarray(mosaic)


def _panel_base(canvas: _Canvas) -> np.ndarray:
    """The canvas reduced to at most PANEL_MAX_SIDE px (for a mosaic of panels)."""
    from PIL import Image

    base = canvas.base
    scale = PANEL_MAX_SIDE / max(base.shape[:2])
    if scale < 1:
        size = (max(1, round(base.shape[1] * scale)), max(1, round(base.shape[0] * scale)))
        base = np.asarray(Image.fromarray(base).resize(size, Image.Resampling.LANCZOS))
    return base


def _attention_mosaic(canvas: _Canvas, maps: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """One panel per module (its mask over the canvas, its name in the corner), tiled in a grid of
    ``ceil(sqrt(n))`` columns on black; panels are at most PANEL_MAX_SIDE px."""
    base = _panel_base(canvas)
    font = _font(max(10, min(base.shape[:2]) // 16))
    panels = [_panel(_heat_overlay(canvas, heatmap, base), name, font) for name, heatmap in maps]
    return _tile(panels, int(np.ceil(np.sqrt(len(maps)))))


def _roi_evidence(model, image, male, preprocess, canvas: _Canvas) -> Evidence:
    from PIL import Image, ImageDraw

    from .inference import predict_rois

    rois, scores = predict_rois(model, image[None], [male], preprocess)
    boxes = canvas.boxes(rois[0])
    picture = Image.fromarray(canvas.base.copy())
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(canvas.base.shape[:2]) / 300))
    for k, box in enumerate(boxes):
        draw.rectangle([float(v) for v in box], outline=ROI_COLOUR, width=width)
        draw.text((float(box[0]) + width + 1, float(box[1]) + width), str(k + 1), fill=ROI_COLOUR)
    return Evidence("rois", f"the {len(boxes)} anatomical regions of interest the model pooled (ALA-Net)",
                    np.asarray(picture), rois=boxes, roi_scores=scores[0])


def _bone_evidence(model, image, male, preprocess, canvas: _Canvas, bones: dict | None = None,
                   geometry: Prepared | None = None) -> Evidence:
    """A per-bone model's 13 bones: each box on the radiograph with its short name and stage on a dark tag.
    ``bones``: the bones already found for this image (one image's :meth:`~boneage.inference.Predictor.predict_bones`,
    boxes in the decoded image's pixels, mapped back through ``geometry``), else the model is run for them."""
    from PIL import Image, ImageDraw

    from .data.rus_chn import BONES
    from .inference import predict_bones

    if bones is not None and geometry is not None:
        listed = bones["bones"]
        corners = geometry.original_to_input(np.array([b["box"] for b in listed], dtype=np.float64).reshape(-1, 2, 2))
        found = {"boxes": corners.reshape(1, -1, 4), "stage": np.array([[b["stage"] for b in listed]]),
                 "box_scores": np.array([[b["box_score"] for b in listed]])}
    else:
        found = predict_bones(model, image[None], [male], preprocess)
    boxes = canvas.boxes(found["boxes"][0])
    labels = [f"{BONE_LABELS.get(name, name)} {int(stage)}" for name, stage in zip(BONES, found["stage"][0])]
    picture = Image.fromarray(canvas.base.copy())
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(canvas.base.shape[:2]) / 300))
    font = _font(max(10, round(max(canvas.base.shape[:2]) / 48)))
    for box, label in zip(boxes, labels):
        draw.rectangle([float(v) for v in box], outline=ROI_COLOUR, width=width)
        left, top, right, bottom = draw.textbbox((float(box[0]), float(box[1])), label, font=font)
        shift = bottom - top + 2 * width  # the tag sits just above its box, or inside it at the picture's top
        shift = shift if top - shift >= 0 else -width
        draw.rectangle([left - 1, top - shift - 1, right + 1, bottom - shift + 1], fill=(0, 0, 0))
        draw.text((float(box[0]), float(box[1]) - shift), label, fill=ROI_COLOUR, font=font)
    return Evidence("rois", "RUS-CHN bones and stages: the 13 bones found, each with its maturity stage (0-based)",
                    np.asarray(picture), rois=boxes, roi_scores=found["box_scores"][0], roi_labels=labels)


def _attention_evidence(model, image, male, preprocess, canvas: _Canvas) -> Evidence:
    maps = attention_maps(model, image, male, preprocess)
    names = [name for name, _ in maps]
    return Evidence("attention", f"residual attention: the soft masks of its {len(maps)} attention modules "
                    f"({', '.join(names)}), each normalised, bright where the module amplifies the features",
                    _attention_mosaic(canvas, maps), panels=names, attention_maps=[m for _, m in maps])


def _gradcam_evidence(model, image, male, preprocess, canvas: _Canvas) -> Evidence:
    heatmap = gradcam(model, image, male, preprocess)
    return Evidence("gradcam", "Grad-CAM: where the features that raise the bone age estimate lie",
                    _heat_overlay(canvas, heatmap), heatmap=heatmap)


def localization(model, image: np.ndarray, male: float, preprocess: PreprocessConfig) -> dict[str, np.ndarray]:
    """A localize-then-regress model's steps for one model input: ``heat`` ``(H, W)`` its Grad-CAM in [0, 1]
    at the input's size, ``mask`` ``(H, W)`` bool (heat >= gamma), ``mask_box`` and ``crop_box`` ``(4,)``
    ``(x0, y0, x1, y1)`` in input pixels, ``age_group`` (the class it explains). InvalidInputError for a
    model that does not localize."""
    from .errors import InvalidInputError
    from .models.localize import upsample_maps

    if "localize" not in model.capabilities.evidence:
        raise InvalidInputError("this model does not localize before it regresses (--model localize does)")
    x = _input_tensor(image, preprocess)
    with evaluating(model), torch.inference_mode():
        found = model.localize(x.float())
    height, width = x.shape[-2:]
    heat = upsample_maps(found["heat"], (height, width))[0]
    scale = np.array([width, height, width, height], dtype=np.float64)
    return {"heat": heat.clamp(0, 1).numpy(), "mask": (heat >= model.gamma).numpy(),
            "mask_box": found["mask_box"][0].double().numpy() * scale, "crop_box": found["crop_box"][0].double().numpy() * scale,
            "age_group": int(found["age_group"][0])}


def _crop_panel(canvas: _Canvas, box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The region ``box`` (canvas pixels) of the canvas's radiograph, black beyond it, fitted into ``size`` (h, w)
    at its own aspect ratio, centred on black."""
    from PIL import Image

    x0, y0, x1, y1 = (int(round(v)) for v in box)
    region = Image.fromarray(canvas.base).crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))  # PIL pads with black
    scale = min(size[0] / region.height, size[1] / region.width)
    width, height = max(1, round(region.width * scale)), max(1, round(region.height * scale))
    region = region.resize((width, height), Image.Resampling.LANCZOS)
    panel = Image.new("RGB", (size[1], size[0]))
    panel.paste(region, ((size[1] - width) // 2, (size[0] - height) // 2))
    return np.asarray(panel)


def _localize_evidence(model, image, male, preprocess, canvas: _Canvas) -> Evidence:
    """Three panels on the radiograph: the localizer's Grad-CAM, the mask it thresholds at gamma with the crop
    box, and the crop itself taken from the radiograph at the resolution it is shown."""
    from PIL import Image, ImageDraw

    found = localization(model, image, male, preprocess)
    base = _panel_base(canvas)
    reduce = base.shape[0] / canvas.base.shape[0]
    font = _font(max(10, min(base.shape[:2]) // 16))
    crop = canvas.boxes(found["crop_box"][None])[0]
    masked = Image.fromarray(_heat_overlay(canvas, found["mask"].astype(np.float32), base))
    draw = ImageDraw.Draw(masked)
    draw.rectangle([float(v) * reduce for v in crop], outline=ROI_COLOUR, width=max(1, round(max(base.shape[:2]) / 200)))
    gamma = model.gamma
    panels = [_panel(_heat_overlay(canvas, found["heat"], base), f"Grad-CAM, age group {found['age_group'] + 1}", font),
              _panel(np.asarray(masked), f"mask (>= {gamma:g}) and crop", font),
              _panel(_crop_panel(canvas, crop, base.shape[:2]), "crop", font)]
    return Evidence("localize", f"localize-then-regress: Grad-CAM of the predicted age group, its mask at gamma {gamma:g} "
                    "and the region the bone age was read from, cropped from the radiograph",
                    _tile(panels, len(panels)), rois=crop[None], roi_scores=np.ones(1), roi_labels=["crop"],
                    heatmap=found["heat"], panels=["Grad-CAM", "mask", "crop"])


_DRAW = {"rois": _roi_evidence, "attention": _attention_evidence, "gradcam": _gradcam_evidence,
         "localize": _localize_evidence}


def explain_image(loaded, prepared: Prepared | np.ndarray, male: float, display: np.ndarray | None = None,
                  bones: dict | None = None) -> Evidence | None:
    """The evidence of ``loaded`` (a :class:`~boneage.models.LoadedModel`) for one preprocessed image, drawn
    on ``display`` (the radiograph as grayscale or RGB uint8, e.g. :func:`display_image` of its pixels;
    default: the model input, enlarged). ``prepared`` is the :class:`~boneage.preprocess.Prepared` the
    predictor made (its crop and resize place the evidence on the radiograph), or a bare model input
    (``(H, W)`` uint8 or [0, 1]) taken to show the whole radiograph. ``bones``: a per-bone model's results for
    this image when they are at hand (one image's :meth:`~boneage.inference.Predictor.predict_bones`, with a
    ``prepared``), drawn as they are instead of running the model again. None for a model that offers no
    evidence of any kind."""
    model = loaded.model
    kinds = model.capabilities.evidence
    if not kinds:
        return None
    geometry = prepared if isinstance(prepared, Prepared) else None
    image = geometry.to_uint8() if geometry is not None else np.asarray(prepared)
    canvas = _canvas(image, geometry, loaded.preprocess, display)
    if model.capabilities.per_bone:
        return _bone_evidence(model, image, male, loaded.preprocess, canvas, bones, geometry)
    return _DRAW[kinds[0]](model, image, male, loaded.preprocess, canvas)


def save_evidence(evidence: Evidence, path: str | Path) -> Path:
    """Write the overlay as PNG atomically (a temporary file renamed into place)."""
    from PIL import Image

    return atomic_write(path, lambda stream: Image.fromarray(evidence.overlay).save(stream, format="PNG"))
