"""``boneage segment IMAGE... -o DIR [--segmenter PATH] [--overlay]``: hand masks of radiographs."""

from __future__ import annotations

import sys
from pathlib import Path

from . import _args
from ._common import (
    EXIT_USAGE,
    empty_folder_error,
    expand_inputs,
    set_threads,
    unique_name,
)

NAME = "segment"
HELP = "hand masks of radiographs: one <stem>_mask.png (255 = hand) per image"


def arguments(p) -> None:
    p.add_argument("files", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, TIFF, DICOM) or folders")
    p.add_argument("-o", "--output", required=True, type=_args.output_dir, metavar="DIR",
                   help="folder for the masks (created if missing)")
    p.add_argument("--segmenter", default=None, metavar="PATH",
                   help="segmenter folder or its model.safetensors (default: the shipped segmenter)")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png: the mask outline over the image")
    p.add_argument("--threads", type=_args.positive_int, default=None, help="CPU threads")


def run(args) -> int:
    from ..errors import BoneAgeError, ImageReadError
    from ..segmentation import load_segmenter, segment_file

    set_threads(args.threads)
    segmenter = load_segmenter(args.segmenter)
    failed, used = 0, set()
    for file in expand_inputs(args.files):
        try:
            folder_error = empty_folder_error(file)
            if folder_error:
                raise ImageReadError(folder_error)
            written = segment_file(segmenter, file, Path(args.output), unique_name(Path(file).stem, "", used),
                                   overlay=args.overlay)
        except BoneAgeError as err:
            print(f"boneage segment: error: {err}", file=sys.stderr)
            failed += 1
            continue
        print("\t".join([file, str(written["mask"]), f"{written['fraction']:.1%} of the image",
                         *([str(written["overlay"])] if "overlay" in written else [])]))
    return EXIT_USAGE if failed else 0
