"""``boneage evaluate --images DIR --labels CSV [--model PATH] [--degrade SPEC ...] [--json]``: accuracy on a labelled
collection, and on degraded copies of it."""

from __future__ import annotations

import json
import sys

from . import _args
from ._common import EXIT_USAGE, MODEL_HELP

NAME = "evaluate"
HELP = "accuracy of a model on a labelled RSNA-layout collection"


def arguments(p) -> None:
    p.add_argument("--images", required=True, help="folder of <id>.png images")
    p.add_argument("--labels", required=True, help="CSV with id,boneage,male (extra columns ignored)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--plot", type=_args.output_file, default=None, metavar="PNG", help="write a scatter + Bland-Altman plot")
    p.add_argument("--predictions", type=_args.output_file, default=None, metavar="CSV", help="write per-image predictions")
    p.add_argument("--batch-size", type=_args.positive_int, default=128)
    p.add_argument("--threads", type=_args.positive_int, default=None)
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="run the model with PyTorch, or exported to ONNX with onnxruntime")
    p.add_argument("--degrade", action="append", type=_args.degradation, default=[], metavar="KIND[:PARAM...]",
                   help="also measure degraded copies of the images (repeatable): resample:N[:FILTER], blur:SIGMA, "
                        "noise:SD, gamma:G, contrast:C, jpeg:Q, rotate:DEG, collimate:F, marker")
    p.add_argument("--hand-check", action="store_true",
                   help="skip (and list) images the no-hand check refuses, as predict does; default: assess every image")


def run(args) -> int:
    from ..evaluation import format_metrics_table
    from ..evaluation.evaluate import evaluate_collection, format_degradation_table

    result, metrics = evaluate_collection(args.images, args.labels, args.model, batch_size=args.batch_size,
                                          threads=args.threads, check_hand=args.hand_check,
                                          predictions_csv=args.predictions, plot=args.plot,
                                          progress=not args.json and sys.stderr.isatty(), degradations=args.degrade,
                                          runtime=args.runtime)
    for item in result.skipped:
        print(f"boneage evaluate: warning: skipped {item['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps({**metrics, "skipped": result.skipped}, indent=2))
    else:
        print(f"model: {metrics['model']['name']} ({metrics['model']['source']})")
        print(format_metrics_table(metrics))
        if metrics.get("degradations"):
            print("\nthe same images, degraded:")
            print(format_degradation_table(metrics["degradations"]))
        if result.skipped:
            print(f"skipped {len(result.skipped)} unreadable image(s)")
    return EXIT_USAGE if result.skipped else 0  # metrics printed, but not every image was evaluated
