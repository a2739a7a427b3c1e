"""Running a loaded model on images: the one path used by predict, evaluate, validation and the api.

``predict_images`` takes preprocessed ``[0, 1]`` images (or uint8 0-255) and sexes and returns bone
ages in months. :class:`Predictor` holds a loaded model with its whole preprocessing, built from the
model's own stored config (:func:`boneage.segmentation.model_preprocessing`: hand clean-up and the
hand check included), so inference cannot drift from training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .errors import InvalidInputError
from .io import RadiographImage, read_image
from .models import BoneAgeModel, LoadedModel, load_model
from .preprocess import Prepared, PreprocessConfig, to_model_input
from .segmentation import model_preprocessing
from .utils import autocast, evaluating

__all__ = ["RUNTIMES", "TTA_MODES", "Predictions", "Predictor", "Results", "input_batches", "predict_bones", "predict_images",
           "predict_rois", "run_model"]

TTA_MODES = (None, "none", "hflip")
RUNTIMES = ("torch", "onnx")  # PyTorch eager, or the model exported to ONNX and run by onnxruntime


def input_batches(images, males, preprocess: PreprocessConfig, batch_size: int, device: torch.device):
    """``(N, H, W)`` images (uint8 0-255 or [0, 1]) and sexes -> ``(x, male)`` model-input batches."""
    images = torch.as_tensor(images)
    males = torch.as_tensor(np.asarray(males, dtype=np.float32))
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        x = chunk.float() / 255.0 if chunk.dtype == torch.uint8 else chunk.float()
        yield to_model_input(x.unsqueeze(1), preprocess).to(device), males[start : start + batch_size].to(device)


@dataclasses.dataclass
class Predictions:
    """One pass of a model over images: ``months`` ``(N,)``; ``sd`` ``(N,)`` the SD across an ensemble's
    members (None for a single model); ``bones`` a per-bone model's ``ModelOutput.bones`` as arrays
    concatenated over the images, from the image as it is (not its mirror image), else None;
    ``sex_probability`` ``(N,)`` the probability of a boy from a model that predicts the sex (averaged over the
    views), else None."""

    months: np.ndarray
    sd: np.ndarray | None = None
    bones: dict[str, np.ndarray] | None = None
    sex_probability: np.ndarray | None = None


@torch.inference_mode()
def run_model(model: BoneAgeModel, images, males, preprocess: PreprocessConfig, *, batch_size: int = 256,
              device: str | torch.device = "cpu", precision: str = "fp32", channels_last: bool = True,
              tta: str | None = None) -> Predictions:
    """The model on ``(N, H, W)`` images (uint8 0-255 or float [0, 1]) and ``males`` (N,) 0/1 -> :class:`Predictions`.
    ``tta='hflip'`` averages each image with its mirror image (members are averaged over views before their
    SD is taken)."""
    if tta not in TTA_MODES:
        raise InvalidInputError(f"test-time augmentation {tta!r} unknown; choose from {TTA_MODES}")
    device = torch.device(device)
    out, spread, bones, sexes = [], [], {}, []
    with evaluating(model):
        for x, male in input_batches(images, males, preprocess, batch_size, device):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            views = [x, torch.flip(x, dims=[3])] if tta == "hflip" else [x]
            months, members, sex = 0.0, None, None
            for v, view in enumerate(views):
                with autocast(device, precision):
                    outputs = model(view, male)
                months = months + outputs.bone_age_months.float().cpu() / len(views)
                if outputs.sex_probability is not None:
                    sex = (0.0 if sex is None else sex) + outputs.sex_probability.float().cpu() / len(views)
                if outputs.member_months is not None:
                    members = (0.0 if members is None else members) + outputs.member_months.float().cpu() / len(views)
                if v == 0 and outputs.bones is not None:
                    for key, value in outputs.bones.items():
                        bones.setdefault(key, []).append(value.float().cpu() if value.is_floating_point() else value.cpu())
            out.append(months)
            if members is not None:
                spread.append(members.std(dim=1, unbiased=False))
            if sex is not None:
                sexes.append(sex)
    return Predictions(months=torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32),
                       sd=torch.cat(spread).numpy() if spread and len(spread) == len(out) else None,
                       bones={key: torch.cat(values).numpy() for key, values in bones.items()} or None,
                       sex_probability=torch.cat(sexes).numpy() if sexes and len(sexes) == len(out) else None)


def predict_images(model: BoneAgeModel, images: np.ndarray | torch.Tensor, males, preprocess: PreprocessConfig, *,
                   with_sd: bool = False, **options):
    """Bone age in months for ``(N, H, W)`` images (uint8 0-255 or float [0, 1]) and ``males`` (N,) 0/1
    (:func:`run_model`, whose keyword ``options`` it takes). With ``with_sd`` returns ``(months, sd)`` where
    ``sd`` is the model's own uncertainty (the SD across an ensemble's members) or None for a single model."""
    result = run_model(model, images, males, preprocess, **options)
    return (result.months, result.sd) if with_sd else result.months


@torch.inference_mode()
def predict_rois(model: BoneAgeModel, images, males, preprocess: PreprocessConfig, *, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The anatomical ROIs a model looks at: ``(N, R, 4)`` boxes in model-input pixels and their
    ``(N, R)`` objectness scores. Raises InvalidInputError for a model without ROIs."""
    if "rois" not in model.capabilities.evidence:
        raise InvalidInputError("this model has no anatomical ROIs (only ALA-Net models with a region proposal network do)")
    boxes, scores = [], []
    with evaluating(model):
        for x, male in input_batches(images, males, preprocess, batch_size, torch.device(device)):
            outputs = model(x, male)
            boxes.append(outputs.rois.float().cpu())
            scores.append(outputs.roi_scores.float().cpu())
    return torch.cat(boxes).numpy(), torch.cat(scores).numpy()


def predict_bones(model: BoneAgeModel, images, males, preprocess: PreprocessConfig, *, batch_size: int = 64,
                  device: str | torch.device = "cpu", precision: str = "fp32") -> dict[str, np.ndarray]:
    """The per-bone results of a fine-grained model (``ModelOutput.bones``: boxes in model-input pixels,
    stages, scores, totals, the raw age), each concatenated over the images. InvalidInputError for a model
    without per-bone results."""
    if not model.capabilities.per_bone:
        raise InvalidInputError("this model gives no per-bone results (only the RUS-CHN pipeline, --model rus-chn, does)")
    return run_model(model, images, males, preprocess, batch_size=batch_size, device=device, precision=precision).bones


class Predictor:
    """A loaded model plus its whole preprocessing; prepares radiographs and predicts bone ages.

    Every image is checked for a hand before it is assessed (``check_hand=False`` skips it): the
    segmenter the model's preprocessing names does it, or the shipped one for a model that uses no mask.
    ``runtime='onnx'`` runs the model's forward pass and the hand segmenter's U-Net with onnxruntime (exported
    once and cached: :func:`boneage.models.onnx_model.onnx_session_model`); an ``.onnx`` model file always runs
    that way.
    """

    def __init__(self, model: LoadedModel | str | Path | None = None, *, threads: int | None = None,
                 check_hand: bool = True, runtime: str = "torch"):
        if threads:
            torch.set_num_threads(threads)
        if runtime not in RUNTIMES:
            raise InvalidInputError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model)
        if runtime == "onnx":  # the same model, config and preprocessing; its forward run by onnxruntime
            from .models.onnx_model import onnx_session_model

            self.loaded = dataclasses.replace(self.loaded, model=onnx_session_model(self.loaded, threads))
        self.runtime = "onnx" if type(self.loaded.model).__name__ == "OnnxModel" else "torch"
        self.preprocess = self.loaded.preprocess
        self.tta = self.loaded.tta
        self.check_hand = bool(check_hand)
        self.pipeline = model_preprocessing(self.preprocess.at_inference(), check_hand=check_hand, runtime=self.runtime)

    @property
    def model(self) -> BoneAgeModel:
        return self.loaded.model

    def prepare(self, image: RadiographImage | str | Path, source: str | None = None) -> Prepared:
        """Read (when given a path) and preprocess one radiograph -> :class:`~boneage.preprocess.Prepared`
        (its ``image`` is the model input); raises a one-line BoneAgeError for an unusable image."""
        if not isinstance(image, RadiographImage):
            source = source or str(image)
            image = read_image(image)
        return self.pipeline(image.pixels, source or image.meta.path or "image")

    @property
    def predicts_sex(self) -> bool:
        """Whether the model predicts the sex (and so takes radiographs of unknown sex)."""
        return self.loaded.model.capabilities.predicts_sex

    def predict(self, prepared: list[Prepared], sexes: list[str | None], batch_size: int = 64):
        """Prepared radiographs and their sexes -> ``(months, sd)`` (``sd`` None for a single model)."""
        results = self.run(prepared, sexes, batch_size)
        return results.months, results.sd

    def run(self, prepared: list[Prepared], sexes: list[str | None], batch_size: int = 64) -> Results:
        """One pass of the model over prepared radiographs -> :class:`Results`: :meth:`predict`'s numbers, a
        per-bone model's :meth:`predict_bones` results and a sex-predicting model's probabilities. A sex of
        None is unknown (only a model that :attr:`predicts_sex` takes it)."""
        if any(s is None for s in sexes) and not self.predicts_sex:
            raise InvalidInputError("this model needs the sex of every radiograph (it does not predict the sex)")
        images = np.stack([p.to_uint8() for p in prepared])  # quantised as the training cache stores them
        result = run_model(self.loaded.model, images, _males(sexes), self.preprocess, batch_size=batch_size, tta=self.tta)
        bones = None if result.bones is None else [_bone_results(state, result.bones, k) for k, state in enumerate(prepared)]
        return Results(result.months, result.sd, bones, result.sex_probability)

    def predict_arrays(self, images: np.ndarray, sexes: list[str], batch_size: int = 64, with_sd: bool = False):
        """Images (uint8 0-255 or float [0, 1]) and sexes -> months (and the model's SD with ``with_sd``)."""
        return predict_images(self.loaded.model, images, _males(sexes), self.preprocess, batch_size=batch_size,
                              with_sd=with_sd, tta=self.tta)

    def predict_bones(self, prepared: list[Prepared], sexes: list[str], batch_size: int = 64) -> list[dict] | None:
        """The per-bone results of a per-bone model (the RUS-CHN pipeline) for prepared radiographs, one dict
        per image; None for a model without them.

        Each dict: ``bones``, the 13 RUS-CHN bones in :data:`boneage.data.rus_chn.BONES` order, each with its
        ``name``, ``box`` ``[x0, y0, x1, y1]`` in the decoded image's pixels (to 0.1 px), ``stage`` (0-based),
        ``score`` (that stage's RUS-CHN score for the sex), ``stage_probability`` and ``box_score``;
        ``rus_chn_score`` (the integer total), ``rus_chn_age_months`` (the RUS-CHN bone age of that total),
        ``rus_chn_expected_score`` (the probability-weighted total) and ``rus_chn_raw_months`` (its age). The
        boxes are where the model found the bones in the image as it is (not in its mirror image)."""
        return self.run(prepared, sexes, batch_size).bones


@dataclasses.dataclass
class Results:
    """:meth:`Predictor.run` over prepared radiographs: ``months`` ``(N,)``; ``sd`` ``(N,)`` across an ensemble's
    members (else None); ``bones`` one dict per image from a per-bone model (else None); ``sex_probability``
    ``(N,)`` the probability of a boy from a model that predicts the sex (else None)."""

    months: np.ndarray
    sd: np.ndarray | None = None
    bones: list[dict] | None = None
    sex_probability: np.ndarray | None = None


def _males(sexes: list[str | None]) -> list[float]:
    """1 for M, 0 for F, NaN for an unknown sex."""
    return [float("nan") if s is None else 1.0 if s == "M" else 0.0 for s in sexes]


def _bone_results(state: Prepared, found: dict[str, np.ndarray], k: int) -> dict:
    """Image ``k``'s per-bone results (see :meth:`Predictor.predict_bones`), boxes mapped to its decoded pixels."""
    from .data.rus_chn import BONES

    boxes = state.input_to_original(np.asarray(found["boxes"][k], dtype=np.float64).reshape(-1, 2, 2)).reshape(-1, 4)
    bones = [{"name": name, "box": [round(float(v), 1) for v in boxes[i]], "stage": int(found["stage"][k, i]),
              "score": int(round(float(found["score"][k, i]))),
              "stage_probability": round(float(found["stage_probability"][k, i]), 4),
              "box_score": round(float(found["box_scores"][k, i]), 4)} for i, name in enumerate(BONES)]
    return {"bones": bones, "rus_chn_score": int(round(float(found["total_score"][k]))),
            "rus_chn_age_months": float(found["rus_chn_years"][k]) * 12.0,
            "rus_chn_expected_score": float(found["expected_total_score"][k]),
            "rus_chn_raw_months": float(found["raw_months"][k])}
