"""Datasets (RSNA layout, CSV manifests), seeded splits, and synthetic hand phantoms."""

from .datasets import (
    Sample,
    load_images,
    load_manifest,
    load_rsna,
    parse_sex,
    samples_summary,
)
from .keypoints import (
    KEYPOINT_NAMES,
    ROI_KEYPOINTS,
    HandKeypoints,
    OssificationBoxes,
    load_hand_keypoints,
    load_ossification_boxes,
    to_input_coordinates,
)
from .phantom import hand_phantom, phantom_dataset, write_phantom_dataset
from .splits import apply_split, load_split, save_split, split_samples

__all__ = [
    "KEYPOINT_NAMES",
    "ROI_KEYPOINTS",
    "HandKeypoints",
    "OssificationBoxes",
    "load_hand_keypoints",
    "load_ossification_boxes",
    "to_input_coordinates",
    "Sample",
    "apply_split",
    "hand_phantom",
    "load_images",
    "load_manifest",
    "load_rsna",
    "load_split",
    "parse_sex",
    "phantom_dataset",
    "samples_summary",
    "save_split",
    "split_samples",
    "write_phantom_dataset",
]
