"""Preprocessing: the settings that travel with a model (:mod:`.config`), pure array transforms
(:mod:`.transforms`), classical hand masks and the clean-up with a mask (:mod:`.masks`), the steps composed
into a model's preprocessing (:mod:`.pipeline`) and training augmentation (:mod:`.augment`)."""

from .augment import AugmentConfig, augment_batch, transform_points
from .config import PreprocessConfig
from .pipeline import (
    Compose,
    Prepared,
    build_preprocessing,
    preprocess_image,
    preprocessing_steps,
)
from .transforms import (
    check_usable,
    chroma,
    normalize_intensity,
    resize_image,
    to_grayscale,
    to_model_input,
    working_image,
)

__all__ = [
    "AugmentConfig",
    "Compose",
    "PreprocessConfig",
    "Prepared",
    "augment_batch",
    "build_preprocessing",
    "check_usable",
    "chroma",
    "normalize_intensity",
    "preprocess_image",
    "preprocessing_steps",
    "resize_image",
    "to_grayscale",
    "to_model_input",
    "transform_points",
    "working_image",
]
