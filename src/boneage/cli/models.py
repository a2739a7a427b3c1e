"""``boneage models [--json]``: the registered models and the default model."""

from __future__ import annotations

import json

NAME = "models"
HELP = "list the registered models and the default model"


def arguments(p) -> None:
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    from ..errors import BoneAgeError
    from ..models import default_model_path, list_models, load_model, model_description

    names = list_models()
    if args.json:
        print(json.dumps([{"name": n, "description": model_description(n)} for n in names], indent=2))
        return 0
    print("registered models (boneage train --model NAME):")
    column = max(len(n) for n in names) + 2
    for name in names:
        print(f"  {name:<{column}}{model_description(name)}")
    try:
        loaded = load_model(None)
        print(f"default model: {loaded.name} {loaded.version}, validation MAE {loaded.validation_mae} months "
              f"({default_model_path()})")
    except BoneAgeError as err:
        print(f"default model: none ({err})")
    return 0
