"""Hand segmentation: training masks, a U-Net hand segmenter, its training and saving, the hand clean-up
step of a model's preprocessing, and mask rendering.

Where this sits in the pipeline: beside ``models``, above ``preprocess``, ``data`` and ``artifacts``. It is
not a bone age model, so it is not in the model registry (the registry, ``boneage models`` and the tests
that run every registered model are about bone age); it has its own artefact format
(``boneage-segmenter``), so a segmenter folder can never be loaded as a bone age model or the other way
round. A model that wants masked or cropped inputs says so in its
:class:`~boneage.preprocess.PreprocessConfig` (``hand``, ``contrast``, ``segmenter``);
:func:`model_preprocessing` turns that config into the model's whole preprocessing with the
:class:`HandCleanup` step, and :meth:`HandSegmenter.check_prepared` is the one "no hand found" refusal.

* :mod:`.training_masks`: classical masks refined with the 21 hand keypoints (the training
  targets), Dice and IoU.
* :mod:`.segmenter`: :class:`HandSegmenter` (a small MONAI U-Net at a fixed input size plus the
  mask post-processing and the hand check), :func:`export_segmenter` / :func:`load_segmenter`.
* :mod:`.recogniser`: :class:`HandRecogniser`, is this a hand radiograph at all (a small CNN classifier with
  an out-of-distribution distance on its features); :mod:`.recognition_data` and
  :mod:`.recognition_training`: what it learns from and how (``boneage train-recogniser``).
* :mod:`.cleanup`: :class:`HandCleanup` and :func:`model_preprocessing`.
* :mod:`.training`: :func:`train_segmenter` (the ``boneage train-segmenter`` command).
* :mod:`.render`: mask outlines over an image (``boneage segment --overlay``, the contact sheet).
"""

from .cleanup import HandCleanup, model_preprocessing, model_segmenter
from .recogniser import HandRecogniser, NotAHandError, cached_recogniser, load_recogniser
from .render import mask_outline, overlay_mask, segment_file
from .segmenter import (
    SEGMENTER_FORMAT,
    HandSegmenter,
    SegmenterSettings,
    cached_segmenter,
    default_segmenter_path,
    export_segmenter,
    load_segmenter,
)
from .training_masks import (
    FINGER_CHAINS,
    TrainingMasks,
    dice_score,
    iou_score,
    keypoint_radius,
    keypoints_inside,
    refine_with_keypoints,
    training_masks,
)

__all__ = [
    "FINGER_CHAINS",
    "SEGMENTER_FORMAT",
    "HandCleanup",
    "HandRecogniser",
    "HandSegmenter",
    "NotAHandError",
    "SegmenterSettings",
    "TrainingMasks",
    "cached_recogniser",
    "cached_segmenter",
    "default_segmenter_path",
    "dice_score",
    "export_segmenter",
    "iou_score",
    "keypoint_radius",
    "keypoints_inside",
    "load_recogniser",
    "load_segmenter",
    "mask_outline",
    "model_preprocessing",
    "model_segmenter",
    "overlay_mask",
    "refine_with_keypoints",
    "segment_file",
    "train_segmenter",
    "training_masks",
]


def __getattr__(name):  # the trainer pulls in more (augmentation, datasets); load it only when asked
    if name == "train_segmenter":
        from .training import train_segmenter

        return train_segmenter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
