"""Running a loaded model on images: the one path used by predict, evaluate and validation.

``predict_images`` takes preprocessed ``[0, 1]`` images (or uint8 0-255) and sexes and returns bone
ages in months. ``Predictor`` adds file reading and preprocessing from the model's own config, so
inference cannot drift from training.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import torch

from .errors import BoneAgeError, InvalidInputError, UnusableImageError
from .io import RadiographImage, normalize_sex, read_image
from .models import LoadedModel, load_model
from .preprocess import PreprocessConfig, preprocess_image, to_model_input

__all__ = ["Predictor", "Prediction", "predict_images", "predict_rois", "roi_model", "format_months", "normalize_sex", "TTA_MODES"]

TTA_MODES = (None, "none", "hflip")


def format_months(months: float) -> str:
    """``125.4`` -> ``'10 y 5 m'`` (whole months, rounded)."""
    total = int(round(float(months)))
    sign = "-" if total < 0 else ""
    total = abs(total)
    return f"{sign}{total // 12} y {total % 12} m"


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module):
    """The model in eval mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _input_batches(images, males, preprocess: PreprocessConfig, batch_size: int, device: torch.device):
    """``(N, H, W)`` images (uint8 0-255 or [0, 1]) and sexes -> ``(x, male)`` model-input batches."""
    images = torch.as_tensor(images)
    males = torch.as_tensor(np.asarray(males, dtype=np.float32))
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        x = chunk.float() / 255.0 if chunk.dtype == torch.uint8 else chunk.float()
        yield to_model_input(x.unsqueeze(1), preprocess).to(device), males[start : start + batch_size].to(device)


@torch.inference_mode()
def predict_images(
    model: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    males,
    preprocess: PreprocessConfig,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = True,
    with_sd: bool = False,
    tta: str | None = None,
):
    """Bone age in months for ``(N, H, W)`` images (uint8 0-255 or float [0, 1]) and ``males`` (N,) 0/1.

    With ``with_sd`` returns ``(months, sd)`` where ``sd`` is the model's own uncertainty (the SD across
    an ensemble's members) or None for a single model. ``tta='hflip'`` averages each image with its
    mirror image (test-time augmentation; members are averaged over views before their SD is taken).
    """
    if tta not in TTA_MODES:
        raise InvalidInputError(f"test-time augmentation {tta!r} unknown; choose from {TTA_MODES}")
    device = torch.device(device)
    out, spread = [], []
    with _evaluating(model):
        for x, male in _input_batches(images, males, preprocess, batch_size, device):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            views = [x, torch.flip(x, dims=[3])] if tta == "hflip" else [x]
            months, members = 0.0, None
            for view in views:
                with _autocast(device, precision):
                    outputs = model(view, male)
                months = months + outputs["bone_age_months"].float().cpu() / len(views)
                if "member_months" in outputs:
                    members = (0.0 if members is None else members) + outputs["member_months"].float().cpu() / len(views)
            out.append(months)
            if members is not None:
                spread.append(members.std(dim=1, unbiased=False))
    months = torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)
    if not with_sd:
        return months
    return months, (torch.cat(spread).numpy() if spread and len(spread) == len(out) else None)


def roi_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """The module that proposes anatomical ROIs: the model itself (ALA-Net), an ensemble's first member
    that does, or None."""
    if getattr(model, "uses_rpn", False):
        return model
    for member in getattr(model, "members", []):
        if getattr(member, "uses_rpn", False):
            return member
    return None


@torch.inference_mode()
def predict_rois(model: torch.nn.Module, images, males, preprocess: PreprocessConfig, *, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The anatomical ROIs a model looks at: ``(N, 17, 4)`` boxes in model-input pixels and their
    ``(N, 17)`` objectness scores. Raises InvalidInputError for a model without ROIs."""
    module = roi_model(model)
    if module is None:
        raise InvalidInputError("this model has no anatomical ROIs (only ALA-Net models with a region proposal network do)")
    boxes, scores = [], []
    with _evaluating(module):
        for x, male in _input_batches(images, males, preprocess, batch_size, torch.device(device)):
            outputs = module(x, male)
            boxes.append(outputs["rois"].float().cpu())
            scores.append(outputs["roi_scores"].float().cpu())
    return torch.cat(boxes).numpy(), torch.cat(scores).numpy()


@dataclasses.dataclass
class Prediction:
    file: str
    sex: str | None = None
    bone_age_months: float | None = None
    error: str | None = None
    sex_source: str | None = None  # "argument" or "dicom"
    bone_age_sd_months: float | None = None  # the model's own uncertainty, when it has one

    @property
    def bone_age_text(self) -> str | None:
        return None if self.bone_age_months is None else format_months(self.bone_age_months)

    def to_dict(self) -> dict:
        data = {"file": self.file, "sex": self.sex}
        if self.error is None:
            data["bone_age_months"] = round(float(self.bone_age_months), 2)
            data["bone_age"] = self.bone_age_text
            data["sex_source"] = self.sex_source
            if self.bone_age_sd_months is not None:
                data["bone_age_sd_months"] = round(float(self.bone_age_sd_months), 2)
        else:
            data["bone_age_months"] = None
            data["error"] = self.error
        return data


class Predictor:
    """A loaded model plus its preprocessing; reads files and predicts bone ages.

    Every image is checked for a hand before it is assessed (:meth:`HandSegmenter.check_hand
    <boneage.segmentation.HandSegmenter.check_hand>` of the shipped segmenter; ``check_hand=False``
    skips it). A model whose preprocessing masks or crops the hand gets its mask from the
    segmenter named in its config, which refuses a handless image by itself.
    """

    def __init__(self, model: LoadedModel | str | Path | None = None, *, threads: int | None = None,
                 check_hand: bool = True):
        from .segmentation import cached_segmenter, hand_masker

        if threads:
            torch.set_num_threads(threads)
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model)
        self.preprocess = self.loaded.preprocess
        self.tta = self.loaded.tta
        self.hand_mask = hand_masker(self.preprocess, check=check_hand)
        self.hand_checker = cached_segmenter("default") if check_hand and self.hand_mask is None else None

    def prepare(self, path: str | Path, sex: str | None = None) -> tuple[np.ndarray, str, str]:
        """Read and preprocess one file -> ``(uint8 image, sex, sex_source)``; raises BoneAgeError."""
        return self.prepare_radiograph(read_image(path), sex, source=str(path))

    def prepare_radiograph(self, image: RadiographImage, sex: str | None = None, *, source: str = "image"):
        """Preprocess an image already read -> ``(uint8 image, sex, sex_source)``; raises BoneAgeError.

        ``sex`` given wins; otherwise the DICOM's PatientSex is used. The image is quantised to 8 bits
        exactly as the training cache stores it, so a model sees at inference what it saw in training.
        """
        if sex is not None:
            sex, sex_source = normalize_sex(sex), "argument"
        elif image.meta.sex in ("M", "F"):
            sex, sex_source = image.meta.sex, "dicom"
        else:
            raise InvalidInputError(f"{source}: sex unknown; pass --sex M or --sex F (the file does not say)")
        image01 = preprocess_image(image.pixels, self.preprocess, source=source, hand_mask=self.hand_mask)
        if self.hand_checker is not None:
            self._check_hand(image.pixels, source)
        return np.round(image01 * 255.0).astype(np.uint8), sex, sex_source

    def _check_hand(self, pixels: np.ndarray, source: str) -> None:
        """Refuse an image that shows no hand, or shows it inverted to a model that does not undo
        inversion (either would give a number that means nothing). The check runs on the segmenter's
        own input (its size and normalisation), whatever the model's input size."""
        from .preprocess.masks import NoHandFoundError, fix_inversion, is_inverted

        image01 = self.hand_checker.prepare(pixels, source)
        if self.preprocess.fix_inversion:
            image01, _ = fix_inversion(image01)

        def evidence(image):
            try:
                return self.hand_checker.check_prepared(image, source), None
            except NoHandFoundError as err:
                return None, err

        found, error = evidence(image01)
        if self.preprocess.fix_inversion or not is_inverted(image01):
            if error is not None:
                raise error
            return
        # A bright background: inverted if the inverted image shows a hand more clearly.
        flipped, _ = evidence(1.0 - image01)
        if flipped is None or (found is not None and found["contrast"] >= flipped["contrast"]):
            if error is not None:
                raise error
            return
        raise UnusableImageError(
            f"{source}: the image looks inverted (white background, dark bones), which this model was not "
            "trained on; invert it back, or use a model trained with --fix-inversion"
        )

    def predict_arrays(self, images: np.ndarray, sexes: list[str], batch_size: int = 64, with_sd: bool = False):
        """Images (uint8 0-255 or float [0, 1]) and sexes -> months (and the model's SD with ``with_sd``)."""
        males = [1.0 if s == "M" else 0.0 for s in sexes]
        return predict_images(self.loaded.model, images, males, self.preprocess, batch_size=batch_size,
                              with_sd=with_sd, tta=self.tta)

    def predict_files(self, paths: list[str | Path], sex: str | None = None, batch_size: int = 64) -> list[Prediction]:
        """Predict every file, ``batch_size`` at a time (memory stays bounded for any number of files);
        a file that cannot be used gets a Prediction with ``error`` set."""
        results: list[Prediction] = []
        for start in range(0, len(paths), batch_size):
            chunk: list[Prediction] = []
            ready: list[tuple[Prediction, np.ndarray]] = []
            for path in paths[start : start + batch_size]:
                try:
                    image, file_sex, source = self.prepare(path, sex)
                except BoneAgeError as err:
                    chunk.append(Prediction(file=str(path), error=str(err)))
                    continue
                chunk.append(Prediction(file=str(path), sex=file_sex, sex_source=source))
                ready.append((chunk[-1], image))
            if ready:
                months, sd = self.predict_arrays(
                    np.stack([image for _, image in ready]), [p.sex for p, _ in ready], batch_size, with_sd=True
                )
                for k, (prediction, _) in enumerate(ready):
                    prediction.bone_age_months = float(months[k])
                    prediction.bone_age_sd_months = None if sd is None else float(sd[k])
            results.extend(chunk)
        return results
