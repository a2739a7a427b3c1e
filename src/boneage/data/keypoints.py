"""Anatomical annotations on RSNA ids: 21 hand keypoints (COCO JSON) and ossification boxes (Pascal VOC).

Both are stored on the original RSNA pixel grid with the original image size beside them. They are
loaded here as *normalised* coordinates (x / width, y / height in ``[0, 1]``), which survive any
resampling of the image that keeps its frame, such as the 100 x 100 squashing of ``rsna-100px``; a
model's input coordinates follow from the preprocessing (:func:`to_input_coordinates`).

ALA-Net's 17 anatomical ROIs are chosen from the 21 keypoints (:data:`ROI_KEYPOINTS`): the wrist, the
three thumb joints (CMC, MCP, IP) and the thumb tip, and the MCP, PIP and DIP joints of the four
fingers. The four finger tips are left out: no ossification centre lies there, while the epiphyses of
the distal phalanges sit at the DIP joints. The thumb's distal phalanx is so short that its tip box
still covers it, so the thumb tip stays (and makes the count 17, as in the paper).
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import DatasetError

__all__ = [
    "KEYPOINT_NAMES",
    "ROI_KEYPOINTS",
    "OSSIFICATION_CLASSES",
    "HandKeypoints",
    "OssificationBoxes",
    "load_hand_keypoints",
    "load_ossification_boxes",
    "to_input_coordinates",
]

KEYPOINT_NAMES = (
    "wrist",
    "thumb1", "thumb2", "thumb3", "thumb4",
    "forefinger1", "forefinger2", "forefinger3", "forefinger4",
    "middle_finger1", "middle_finger2", "middle_finger3", "middle_finger4",
    "ring_finger1", "ring_finger2", "ring_finger3", "ring_finger4",
    "pinky_finger1", "pinky_finger2", "pinky_finger3", "pinky_finger4",
)  # fmt: skip
# Finger tips (forefinger4 .. pinky_finger4) are dropped: 21 - 4 = 17 ROIs.
ROI_KEYPOINTS = tuple(name for name in KEYPOINT_NAMES if not (name.endswith("4") and not name.startswith("thumb")))
ROI_INDEX = tuple(KEYPOINT_NAMES.index(name) for name in ROI_KEYPOINTS)
OSSIFICATION_CLASSES = ("DIP", "PIP", "MCP", "Radius", "Ulna", "Wrist")


@dataclasses.dataclass
class HandKeypoints:
    """Keypoints of one image: ``points`` ``(H, 21, 2)`` normalised (x, y) per annotated hand."""

    id: str
    points: np.ndarray
    width: int
    height: int

    def roi_points(self) -> np.ndarray:
        """``(H * 17, 2)`` normalised centres of the 17 anatomical ROIs of every annotated hand."""
        return self.points[:, ROI_INDEX].reshape(-1, 2)


@dataclasses.dataclass
class OssificationBoxes:
    """Boxes of one image: ``boxes`` ``(B, 4)`` normalised (x1, y1, x2, y2) and their class names."""

    id: str
    boxes: np.ndarray
    labels: tuple[str, ...]
    width: int
    height: int


def _keypoint_files(path: Path) -> list[Path]:
    if path.is_dir():
        preferred = path / "all_coco.json"
        return [preferred] if preferred.exists() else sorted(path.glob("*.json"))
    return [path]


def load_hand_keypoints(path: str | Path) -> dict[str, HandKeypoints]:
    """COCO keypoint JSON (a file, or a folder holding ``all_coco.json`` or several splits) -> by id.

    Hands marked valid (``lefthand_valid``/``righthand_valid``) with all 21 points visible are kept;
    an image with two valid hands has both.
    """
    path = Path(path)
    files = _keypoint_files(path)
    if not files or not all(f.is_file() for f in files):
        raise DatasetError(f"{path}: no keypoint JSON found (expected a COCO file such as all_coco.json)")
    result: dict[str, HandKeypoints] = {}
    for file in files:
        try:
            data = json.loads(file.read_text())
            names = tuple(data["categories"][0]["keypoints"])
            images = {str(image["id"]): image for image in data["images"]}
            annotations = data["annotations"]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
            raise DatasetError(f"{file}: not a COCO keypoint file ({type(err).__name__}: {err})") from None
        if names != KEYPOINT_NAMES:
            raise DatasetError(f"{file}: expected the 21 hand keypoints {KEYPOINT_NAMES[:3]}..., got {names[:3]}...")
        for ann in annotations:
            image = images.get(str(ann.get("image_id")))
            if image is None:
                continue
            width, height = int(image["width"]), int(image["height"])
            hands = []
            for side in ("lefthand", "righthand"):
                kpts = ann.get(f"{side}_kpts")
                if not ann.get(f"{side}_valid") or not kpts or len(kpts) != 63:
                    continue
                arr = np.asarray(kpts, dtype=np.float64).reshape(21, 3)
                if (arr[:, 2] <= 0).any():
                    continue
                hands.append(arr[:, :2] / np.array([width, height]))
            if hands:
                image_id = str(image["id"])
                result[image_id] = HandKeypoints(image_id, np.stack(hands).astype(np.float32), width, height)
    if not result:
        raise DatasetError(f"{path}: no valid hand keypoints found")
    return result


def load_ossification_boxes(path: str | Path) -> dict[str, OssificationBoxes]:
    """Pascal VOC XML files under ``path`` (searched recursively) -> boxes by id (the file's stem).

    When the same id is annotated twice (expert and non-expert readers), the first file found in sorted
    path order is kept ("eval/expert" sorts before "eval/nonexpert").
    """
    path = Path(path)
    files = sorted(path.rglob("*.xml")) if path.is_dir() else [path]
    result: dict[str, OssificationBoxes] = {}
    for file in files:
        image_id = file.stem
        if image_id in result:
            continue
        try:
            root = ET.parse(file).getroot()
            width = int(float(root.findtext("size/width")))
            height = int(float(root.findtext("size/height")))
            boxes, labels = [], []
            for obj in root.iter("object"):
                box = obj.find("bndbox")
                coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
                boxes.append([coords[0] / width, coords[1] / height, coords[2] / width, coords[3] / height])
                labels.append(obj.findtext("name").strip())
        except (OSError, ET.ParseError, TypeError, ValueError, AttributeError, ZeroDivisionError) as err:
            raise DatasetError(f"{file}: not a Pascal VOC box file ({type(err).__name__})") from None
        result[image_id] = OssificationBoxes(
            image_id, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), tuple(labels), width, height
        )
    if not result:
        raise DatasetError(f"{path}: no Pascal VOC XML files found")
    return result


def to_input_coordinates(points: np.ndarray, image_hw: tuple[int, int], input_hw: tuple[int, int],
                         resize: str = "stretch") -> np.ndarray:
    """Normalised ``(..., 2)`` (x, y) -> pixel coordinates of the model input.

    ``image_hw`` is the size of the decoded image file, ``input_hw`` the preprocessing's output size;
    ``resize`` its policy (``stretch`` or ``pad``, as in :func:`boneage.preprocess.resize_image`).
    """
    points = np.asarray(points, dtype=np.float64)
    out_h, out_w = input_hw
    if resize == "stretch":
        return (points * np.array([out_w, out_h])).astype(np.float32)
    src_h, src_w = image_hw
    scale = min(out_h / src_h, out_w / src_w)
    new_h, new_w = max(1, round(src_h * scale)), max(1, round(src_w * scale))
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    return (points * np.array([new_w, new_h]) + np.array([left, top])).astype(np.float32)
