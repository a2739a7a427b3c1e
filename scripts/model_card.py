"""Print a Markdown summary of a boneage model from its config.json (used for the README).

    python scripts/model_card.py [MODEL_DIR]     # default: the model shipped in the package
"""

import json
import sys

from boneage.evaluation import format_metrics_table
from boneage.models import load_model


def main() -> None:
    loaded = load_model(sys.argv[1] if len(sys.argv) > 1 else None)
    config = loaded.config
    metrics = config["metrics"]["validation"]
    training = config.get("training") or {}
    members = config.get("members") or []
    print(f"- **{loaded.name}** ({loaded.version}); test-time augmentation: {loaded.tta or 'none'}; "
          f"input {config['preprocess']['image_size'][0]}x{config['preprocess']['image_size'][1]} px "
          f"({config['preprocess']['resize']}, {config['preprocess']['normalization']} normalisation"
          + (f"; hand clean-up `{config['preprocess']['hand']}`, contrast over the "
             f"{config['preprocess'].get('contrast', 'image')}, segmenter {config['preprocess'].get('segmenter_version')}"
             if config["preprocess"].get("hand", "none") != "none" else "") + ").")
    split = training.get("split", {})
    print(f"- Validation split: {split.get('n_val')} of {split.get('n_val', 0) + split.get('n_train', 0)} images "
          f"(seed {split.get('seed')}, stratified by sex and age decile; `split.json` ships with the model).")
    if members:
        print("- Members: " + "; ".join(f"{m['name']} {m['version']} (alone: MAE {m['validation']})" for m in members))
        durations = [(m.get("training") or {}).get("duration_s", 0) for m in members]
        hardware = (members[0].get("training") or {}).get("hardware")
        print(f"- Training time: {max(durations) / 60:.0f} min wall clock with the {len(members)} members trained side by "
              f"side ({sum(durations) / 60:.0f} process-minutes), each on {hardware}.")
    else:
        print(f"- Training time: {training.get('duration_s', 0) / 60:.0f} min on {training.get('hardware')}.")
    print()
    print(format_metrics_table(metrics))
    print()
    print("```json")
    print(json.dumps({k: metrics[k] for k in ("n", "mae_months", "rmse_months", "median_ae_months", "p90_ae_months")}))
    print("```")


if __name__ == "__main__":
    main()
