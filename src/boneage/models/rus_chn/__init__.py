"""The four-stage fine-grained RUS-CHN pipeline (:mod:`.model`): a keypoint detector (:mod:`.detector`), the
13 RUS boxes from its keypoints (:mod:`.geometry`), per-bone stages with self-attention (:mod:`.stages`),
and the RUS-CHN score and bone age."""

from .._registry import register_model
from .detector import KeypointDetector, SwitchableAtrousConv, create_detector, list_detectors, register_detector
from .geometry import bone_boxes, hand_width
from .model import RusChnPipeline, isotonic_fit, rus_chn_factory
from .stages import BoneSelfAttention, ROIEncoder, StageClassifier

__all__ = ["BoneSelfAttention", "KeypointDetector", "ROIEncoder", "RusChnPipeline", "StageClassifier",
           "SwitchableAtrousConv", "bone_boxes", "create_detector", "hand_width", "isotonic_fit", "list_detectors",
           "register_detector"]


@register_model
def rus_chn(**kwargs) -> RusChnPipeline:
    """Four-stage RUS-CHN pipeline: 13 bones, a stage and score each, total score -> bone age (G&P-equivalent)."""
    kwargs.setdefault("head", "stages")
    return rus_chn_factory(**kwargs)


rus_chn.defaults = {"head": "stages"}
