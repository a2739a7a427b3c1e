"""``boneage models [--json]``: the registered models and the models shipped in the package."""

from __future__ import annotations

import json

NAME = "models"
HELP = "list the registered models and the shipped models (default, rus-chn, localize)"


def arguments(p) -> None:
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    from ..errors import BoneAgeError
    from ..models import SHIPPED_MODELS, list_models, load_model, model_description, shipped_model_path

    names = list_models()
    if args.json:
        print(json.dumps([{"name": n, "description": model_description(n)} for n in names], indent=2))
        return 0
    print("registered models (boneage train --model NAME):")
    column = max(len(n) for n in names) + 2
    for name in names:
        print(f"  {name:<{column}}{model_description(name)}")
    print("shipped models (--model NAME in predict, evaluate, report, serve, dicom-node):")
    for name in SHIPPED_MODELS:
        try:
            loaded = load_model(name)
            print(f"  {name:<{column}}{loaded.name} {loaded.version}, validation MAE {loaded.validation_mae} months "
                  f"({shipped_model_path(name)})")
        except BoneAgeError as err:
            print(f"  {name:<{column}}not installed ({err})")
    return 0
