"""``boneage ensemble MODEL... --out-dir DIR [--images DIR --labels CSV] [--split-file PATH]``: trained models
combined into one ensemble model (:func:`boneage.training.build_ensemble`)."""

from __future__ import annotations

NAME = "ensemble"
HELP = "combine trained models (same preprocessing) into one ensemble model"


def arguments(p) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="exported model folders or checkpoints")
    p.add_argument("--out-dir", required=True, help="folder for the ensemble's model.safetensors + config.json")
    p.add_argument("--images", help="evaluate on this RSNA image folder ...")
    p.add_argument("--labels", help="... with these labels, restricted to the members' validation split")
    p.add_argument("--split-file", help="split.json to evaluate on (default: the first member's)")


def run(args) -> int:
    from ..training import build_ensemble

    summary = build_ensemble(args.models, args.out_dir, images=args.images, labels=args.labels,
                             split_file=args.split_file)
    if "validation" in summary:
        metrics = summary["validation"]
        members = ", ".join(str(m) for m in summary["member_mae_months"])
        print(f"ensemble of {len(args.models)}: MAE {metrics['mae_months']:.2f} months on {metrics['n']} "
              f"images (members: {members})")
    print(f"wrote {summary['model_dir']}")
    return 0
