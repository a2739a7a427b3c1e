"""Preprocessing as pure functions; their settings (:class:`PreprocessConfig`) travel with the model."""

from .augment import AugmentConfig, augment_batch, transform_points
from .transforms import (
    PreprocessConfig,
    check_usable,
    normalize_intensity,
    preprocess_image,
    resize_image,
    to_grayscale,
    to_model_input,
    working_image,
)

__all__ = [
    "AugmentConfig",
    "PreprocessConfig",
    "augment_batch",
    "transform_points",
    "check_usable",
    "normalize_intensity",
    "preprocess_image",
    "resize_image",
    "to_grayscale",
    "to_model_input",
    "working_image",
]
