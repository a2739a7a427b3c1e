"""Measure the RUS-CHN box geometry from the Koitka et al. ossification boxes and print it beside the code's constants.

    python scripts/rus_chn_geometry.py [--boxes DIR] [--keypoints DIR]

The constants of ``src/boneage/models/rus_chn/geometry.py`` (``FOREARM``: radius and ulna centre and size;
``JOINT_SIZE``: the joint box sizes), measured on the 327 images of the 329 with DIP 4 / PIP 5 / MCP 5 /
radius / ulna boxes, in the frame of the MCP row (``boneage.evaluation.rus_chn``: MCP boxes sorted by x
descending, ``W`` = index-to-little MCP distance, ``t`` across towards the index finger, ``p`` along, away
from the middle finger's PIP box; positions and sizes in units of ``W``); medians with quartiles. Then
the cross-check on the 568 keypoint-annotated images: the middle finger's PIP and DIP keypoints in the
same frame built from keypoints, against Koitka's middle-finger PIP and DIP boxes (different images, so
the medians are compared). Needs ../shared/data; ``tests/realdata/test_rus_chn_geometry.py`` asserts the
code's constants equal this measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
BOXES = SHARED / "annotations" / "ossification-boxes" / "annotations"
KEYPOINTS = SHARED / "annotations" / "hand-keypoints-21"
CROSS_CHECK = ("pip3_t", "pip3_p", "dip3_t", "dip3_p")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def measure(boxes_dir: Path = BOXES, keypoints_dir: Path | None = KEYPOINTS) -> tuple[dict, dict | None]:
    """``(box values, keypoint values)`` of :func:`boneage.evaluation.rus_chn.measure_box_geometry` and
    :func:`~boneage.evaluation.rus_chn.measure_keypoint_geometry` (None without keypoints)."""
    from boneage.data import load_hand_keypoints, load_ossification_boxes
    from boneage.evaluation.rus_chn import measure_box_geometry, measure_keypoint_geometry

    box_values = measure_box_geometry(load_ossification_boxes(boxes_dir))
    keypoint_values = measure_keypoint_geometry(load_hand_keypoints(keypoints_dir)) if keypoints_dir else None
    return box_values, keypoint_values


def report(box_values: dict, keypoint_values: dict | None) -> str:
    """The two tables as text: the constants (code vs measured) and the keypoint cross-check."""
    from boneage.evaluation.rus_chn import geometry_comparison

    rows = geometry_comparison(box_values, keypoint_values)
    lines = [f"Koitka boxes: {int(box_values['n_images'])} complete images; units of W (index-to-little MCP distance).",
             "", "| quantity | code | measured median | q1 | q3 | n |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row["key"] in CROSS_CHECK or row["key"] == "W_px":
            continue
        lines.append(f"| {row['key']} | {_fmt(row['code'])} | {row['median']:.3f} | {row['q1']:.3f} | {row['q3']:.3f} | {row['n']} |")
    if keypoint_values is not None:
        lines += ["", f"Cross-check: middle finger's PIP/DIP, Koitka box centres vs keypoints "
                  f"({len(keypoint_values['pip3_t'])} hands)", "",
                  "| quantity | Koitka median [q1, q3] | keypoints median [q1, q3] | keypoints / Koitka |", "|---|---:|---:|---:|"]
        for row in rows:
            if row["key"] in CROSS_CHECK:
                k = row["keypoints"]
                lines.append(f"| {row['key']} | {row['median']:.3f} [{row['q1']:.3f}, {row['q3']:.3f}] | "
                             f"{k['median']:.3f} [{k['q1']:.3f}, {k['q3']:.3f}] | {k['median'] / row['median']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=Path, default=BOXES, help="folder of the Koitka Pascal VOC XML files")
    parser.add_argument("--keypoints", type=Path, default=KEYPOINTS, help="folder of the hand keypoint COCO JSON")
    args = parser.parse_args()
    if not args.boxes.exists():
        print(f"ossification boxes not found at {args.boxes}", file=sys.stderr)
        return 2
    keypoints = args.keypoints if args.keypoints.exists() else None
    print(report(*measure(args.boxes, keypoints)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
