"""Hand clean-up as one step of a model's preprocessing, and the model's whole preprocessing built from
its stored config.

:class:`HandCleanup` is the step between the working resolution and the final resize
(:mod:`boneage.preprocess.pipeline`): it runs the U-Net once on the current image, checks that there is
a hand radiograph (when asked: inference checks, building a training set does not, since a hand's image the
check refuses still teaches the model): first the hand-radiograph recogniser (:mod:`.recogniser`: is this a
radiograph of a hand at all, or a chest, a CT slice, a photograph...?), then the segmenter's mask checks
(:meth:`HandSegmenter.check_prepared`), and masks and crops as the config
says (:func:`~boneage.preprocess.masks.clean_up_hand`), recording the crop so that evidence can be
mapped back onto the radiograph. For a model that uses no mask it only checks.

:func:`model_preprocessing` composes it: ``model_preprocessing(config, check_hand=True)(pixels, source)``
is the one path from decoded pixels to a model's input, used by inference, evaluation and training.
"""

from __future__ import annotations

import dataclasses

from ..errors import ModelLoadError
from ..preprocess import Compose, Prepared, PreprocessConfig, build_preprocessing
from ..preprocess.masks import clean_up_hand
from .recogniser import HandRecogniser, cached_recogniser
from .segmenter import HandSegmenter, cached_segmenter

__all__ = ["HandCleanup", "model_preprocessing", "model_segmenter"]


class HandCleanup:
    """Check that the image is a hand radiograph (``check``: the recogniser, then the segmenter's mask
    checks), find the hand, mask and crop it as ``config`` says (see the module docstring)."""

    def __init__(self, segmenter: HandSegmenter, config: PreprocessConfig, *, check: bool,
                 recogniser: HandRecogniser | None = None):
        self.segmenter, self.config, self.check, self.recogniser = segmenter, config, bool(check), recogniser

    def __call__(self, state: Prepared) -> Prepared:
        segmenter, config = self.segmenter, self.config
        evidence = None
        if self.check and self.recogniser is not None:  # first: what is this image at all?
            evidence = self.recogniser.check(state.image, state.chroma, state.source)
        image = segmenter.prepare(state.image, state.source)
        probabilities = segmenter.prepared_probabilities(image)
        if self.check:
            evidence = {**(evidence or {}), **segmenter.check_prepared(
                image, state.source, probabilities, allow_inverted=config.fix_inversion)}
        if not config.uses_segmenter:
            return dataclasses.replace(state, hand=evidence)
        mask = segmenter.mask_from_probabilities(probabilities, state.image.shape, state.source)
        cleaned, box = clean_up_hand(state.image, mask, config.hand, config.crop_margin, config.contrast,
                                     config.percentiles)
        return dataclasses.replace(state.cropped(cleaned, box), mask=mask, hand=evidence)

    def __repr__(self) -> str:
        return f"HandCleanup(hand={self.config.hand!r}, contrast={self.config.contrast!r}, check={self.check})"


def model_segmenter(config: PreprocessConfig, *, record_version: bool = False) -> HandSegmenter:
    """The segmenter ``config`` names (cached). A model trained with one segmenter version is refused
    another (its inputs would differ from the ones it learnt from), with a one-line ModelLoadError;
    ``record_version`` (training) writes the version into ``config`` when it holds none yet."""
    segmenter = cached_segmenter(config.segmenter)
    found = segmenter.info.get("version")
    if config.segmenter_version is None and record_version:
        config.segmenter_version = found
    if config.segmenter_version is not None and found != config.segmenter_version:
        raise ModelLoadError(
            f"this model was trained with hand segmenter version {config.segmenter_version}, but "
            f"{segmenter.info.get('source', config.segmenter)} is version {found}; install the segmenter it was trained with"
        )
    return segmenter


def model_preprocessing(config: PreprocessConfig, *, check_hand: bool = True, runtime: str = "torch") -> Compose:
    """A model's whole preprocessing from its stored config: the steps of
    :func:`~boneage.preprocess.build_preprocessing` with :class:`HandCleanup` where a mask is used, or,
    with ``check_hand``, where the shipped recogniser and segmenter check that it is a hand radiograph.
    ``runtime='onnx'`` runs the segmenter's U-Net in onnxruntime."""
    recogniser = cached_recogniser("default") if check_hand else None
    segmenter = model_segmenter(config) if config.uses_segmenter else cached_segmenter("default") if check_hand else None
    if segmenter is not None and runtime == "onnx":
        segmenter = segmenter.with_onnxruntime()
    step = None if segmenter is None else HandCleanup(segmenter, config, check=check_hand, recogniser=recogniser)
    return build_preprocessing(config, step)
