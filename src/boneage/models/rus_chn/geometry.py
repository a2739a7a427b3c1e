"""The 13 RUS-CHN regions of interest from 17 hand keypoints: a documented approximation.

Each RUS bone is scored on its epiphysis, which sits at a joint on the side of its own bone. From the
17 ROI keypoints of :data:`boneage.data.ROI_KEYPOINTS` (wrist; thumb CMC, MCP, IP and tip; MCP, PIP and
DIP of the four fingers) a box is placed per bone:

* **phalanges and metacarpals**: a square centred :data:`SHIFT` of its side away from the joint along
  the bone's axis, distal for a phalanx base (1st/3rd/5th proximal phalanx at the MCP joint, 3rd/5th
  middle phalanx at the PIP joint, 1st/3rd/5th distal phalanx at the DIP/IP joint), proximal for the
  3rd/5th metacarpal head (at the MCP joint) and distal of the thumb's CMC joint for the 1st
  metacarpal's base. The axis runs from the joint to the next keypoint towards the tip (for the distal
  phalanges of the 3rd and 5th fingers, whose tips are not among the 17, from the PIP to the DIP joint);
* **radius and ulna**: their distal epiphyses placed in the frame of the MCP row (origin: the middle
  finger's MCP joint; across: from the little finger's to the index finger's MCP joint, length ``W``;
  along: perpendicular, pointing away from the fingers), at the median position of the Koitka et al.
  radius and ulna boxes (329 RSNA images; ``scripts/rus_chn_geometry.py`` measures them).

Sizes are fractions of ``W``, the median widths of the Koitka joint boxes (MCP, PIP, DIP; the thumb's
MCP and IP apart) and of their radius and ulna boxes.

The Koitka boxes and the keypoints were drawn on different images by different readers, and ``W`` is not
quite the same length in the two: the middle finger's PIP and DIP lie 0.91 times as far from the MCP row
along the finger, and 0.86 times as far across it, in units of the keypoints' ``W`` as in units of the
boxes' (568 and 327 hands; ``scripts/rus_chn_geometry.py`` prints the comparison). Koitka's positions and
sizes are converted to the keypoints' frame by these factors (:data:`KOITKA_TO_KEYPOINTS`).

Boxes are axis-aligned in image pixels: for a hand that is turned by much, they are looser than the
epiphysis. ``boneage.evaluation.rus_chn`` draws them on a contact sheet for a reader to judge
(``docs/rus-chn-boxes.png``).
"""

from __future__ import annotations

import torch

from ...data.keypoints import ROI_KEYPOINTS
from ...data.rus_chn import BONES

__all__ = ["BONE_GEOMETRY", "FOREARM", "JOINT_SIZE", "KOITKA_TO_KEYPOINTS", "SHIFT", "bone_boxes", "hand_width"]

_K = {name: i for i, name in enumerate(ROI_KEYPOINTS)}

# Median box sizes of Koitka et al.'s joint boxes as a fraction of W (index-to-little MCP distance).
JOINT_SIZE = {"mcp": 0.295, "pip": 0.252, "dip": 0.223, "thumb_mcp": 0.305, "thumb_ip": 0.268}
SHIFT = 0.25  # box centre = joint + SHIFT * side along the bone, towards the bone's own epiphysis
# bone -> (joint, axis from, axis to, +1 distal / -1 proximal of the joint, size)
BONE_GEOMETRY = {
    "MCPFirst": ("thumb1", "thumb1", "thumb2", +1, "thumb_mcp"),
    "MCPThird": ("middle_finger1", "middle_finger1", "middle_finger2", -1, "mcp"),
    "MCPFifth": ("pinky_finger1", "pinky_finger1", "pinky_finger2", -1, "mcp"),
    "PIPFirst": ("thumb2", "thumb2", "thumb3", +1, "thumb_mcp"),
    "PIPThird": ("middle_finger1", "middle_finger1", "middle_finger2", +1, "mcp"),
    "PIPFifth": ("pinky_finger1", "pinky_finger1", "pinky_finger2", +1, "mcp"),
    "MIPThird": ("middle_finger2", "middle_finger2", "middle_finger3", +1, "pip"),
    "MIPFifth": ("pinky_finger2", "pinky_finger2", "pinky_finger3", +1, "pip"),
    "DIPFirst": ("thumb3", "thumb3", "thumb4", +1, "thumb_ip"),
    "DIPThird": ("middle_finger3", "middle_finger2", "middle_finger3", +1, "dip"),
    "DIPFifth": ("pinky_finger3", "pinky_finger2", "pinky_finger3", +1, "dip"),
}
# Radius and ulna in the MCP row's frame: centre (across, along) and size (width, height), fractions of W.
FOREARM = {"Radius": ((-0.378, 1.487), (0.538, 0.401)), "Ulna": ((-0.755, 1.414), (0.332, 0.336))}
# Koitka's frame -> the keypoints' frame: (across, along); sizes scale with the along factor.
KOITKA_TO_KEYPOINTS = (0.86, 0.91)


def hand_width(points: torch.Tensor) -> torch.Tensor:
    """``(..., 17, 2)`` keypoints -> ``(...,)`` W, the distance between the index and little fingers' MCP joints."""
    return (points[..., _K["forefinger1"], :] - points[..., _K["pinky_finger1"], :]).norm(dim=-1).clamp(min=1e-3)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-6)


def bone_boxes(points: torch.Tensor) -> torch.Tensor:
    """``(..., 17, 2)`` (x, y) keypoints in pixels -> ``(..., 13, 4)`` boxes ``(x1, y1, x2, y2)`` in
    :data:`~boneage.data.rus_chn.BONES` order."""
    width = hand_width(points)[..., None]
    middle = points[..., _K["middle_finger1"], :]
    across = _unit(points[..., _K["forefinger1"], :] - points[..., _K["pinky_finger1"], :])
    along = torch.stack([-across[..., 1], across[..., 0]], dim=-1)
    towards_fingers = ((points[..., _K["middle_finger2"], :] - middle) * along).sum(-1, keepdim=True)
    along = torch.where(towards_fingers > 0, -along, along)  # pointing away from the fingers
    boxes = []
    across_factor, along_factor = KOITKA_TO_KEYPOINTS
    for bone in BONES:
        if bone in FOREARM:
            (a, b), (w, h) = FOREARM[bone]
            centre = middle + width * (across_factor * a * across + along_factor * b * along)
            half = 0.5 * along_factor * width * points.new_tensor([w, h])
        else:
            joint, start, end, side, size = BONE_GEOMETRY[bone]
            axis = _unit(points[..., _K[end], :] - points[..., _K[start], :])
            side_length = along_factor * width * JOINT_SIZE[size]
            centre = points[..., _K[joint], :] + side * SHIFT * side_length * axis
            half = 0.5 * side_length.expand(*side_length.shape[:-1], 2)
        boxes.append(torch.cat([centre - half, centre + half], dim=-1))
    return torch.stack(boxes, dim=-2)
