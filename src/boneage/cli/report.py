"""``boneage report IMAGE [--sex M|F] [--age 9y4m] [--height CM] [--model PATH] -o OUT.pdf|OUT.html [--json]``:
one radiograph assessed through :meth:`boneage.api.Assessor.assess` and its clinical report written."""

from __future__ import annotations

import json
import sys

from . import _args
from ._common import EXIT_USAGE, MODEL_HELP

NAME = "report"
HELP = "clinical report (PDF or HTML) of one radiograph: bone age, SDS, adult height"


def arguments(p) -> None:
    p.add_argument("image", metavar="IMAGE", help="radiograph (PNG, JPEG, TIFF, DICOM)")
    p.add_argument("-o", "--output", required=True, type=_args.report_file, metavar="OUT.pdf|OUT.html",
                   help="report file; the suffix chooses PDF or self-contained HTML")
    p.add_argument("--sex", type=_args.sex, help="M or F (default: read from DICOM PatientSex)")
    p.add_argument("--age", type=_args.age, default=None, metavar="AGE",
                   help="chronological age: 9y4m, 9y, 4m or months (default: DICOM birth and study dates, else PatientAge)")
    p.add_argument("--height", type=_args.height, default=None, metavar="CM",
                   help="height in cm, for the Bayley-Pinneau adult height prediction")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print the assessment as JSON instead of a summary line")
    p.add_argument("--threads", type=_args.positive_int, default=None, help="CPU threads for inference")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="run the model with PyTorch, or exported to ONNX with onnxruntime (no evidence overlay then)")


def run(args) -> int:
    from ..api import Assessor
    from ..clinical import write_report

    assessment = Assessor(args.model, threads=args.threads, runtime=args.runtime).assess(
        args.image, sex=args.sex, age=args.age, height_cm=args.height, reject=True)
    write_report(assessment, args.output)
    a = assessment
    if args.json:
        print(json.dumps(a.to_dict(), indent=2))
    elif a.status == "ok":
        reading = "SDS not computed" if a.sds is None else f"SDS {a.sds:+.2f} ({a.reading})"
        print(f"{args.image}\t{a.sex}\t{a.bone_age_months:.1f} months\t{a.bone_age_text}\t{reading}\t{args.output}")
    if a.status == "rejected":
        print(f"boneage report: error: {a.rejection} (image rejected; {args.output} says so)", file=sys.stderr)
        return EXIT_USAGE
    return 0
