"""Trained models combined into one ensemble model (the job behind ``boneage ensemble``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data import apply_split, load_rsna, load_split
from ..errors import InvalidInputError
from ..evaluation.evaluate import evaluate_samples
from ..inference import Predictor
from ..models import combine_models, export_model, load_model, write_model_config
from ..utils import atomic_write

__all__ = ["build_ensemble"]


def _member_split(model_paths: list, split_file) -> tuple[Path | None, dict | None]:
    """The split to evaluate on (``split_file``, else the members' own); members trained on different
    splits are refused, since an ensemble's validation MAE would then include training images."""
    folders = [Path(m) if Path(m).is_dir() else Path(m).parent for m in model_paths]
    splits = [folder / "split.json" for folder in folders if (folder / "split.json").exists()]
    if len({json.dumps(load_split(f)["val"]) for f in splits}) > 1:
        raise InvalidInputError("the members were trained on different train/validation splits; "
                                "an ensemble's validation MAE would include training images")
    path = Path(split_file) if split_file else next(iter(splits), None)
    return path, (load_split(path) if path is not None else None)


def build_ensemble(model_paths: list, out_dir, *, images=None, labels=None, split_file=None) -> dict:
    """Combine trained models (same preprocessing and labels) into an ensemble exported to ``out_dir``
    (float16), with the members' split; given ``images`` and ``labels``, the exported model itself is
    measured on that split's validation images. Returns ``{'model_dir', 'validation', 'member_mae_months'}``."""
    members = [load_model(path) for path in model_paths]
    model, config = combine_models(members)
    config["version"] = "+".join(sorted({m.version for m in members}))[:120]
    config["training"] = members[0].config.get("training")
    split_path, split = _member_split(model_paths, split_file)
    samples = None
    if images and labels:  # read the data before anything is written
        samples = load_rsna(images, labels)
        if split is not None:
            _, samples = apply_split(samples, split)
    out = export_model(out_dir, model, config, dtype=torch.float16)
    if split_path is not None:
        atomic_write(out / "split.json", split_path.read_bytes())
    summary = {"model_dir": str(out), "member_mae_months": [m.validation_mae for m in members]}
    if samples is not None:
        result = evaluate_samples(Predictor(load_model(out), check_hand=False), samples)  # the exported float16 model
        config["metrics"] = {"validation": result.metrics, "measured_on": "exported float16 weights",
                             "split": "validation split of the members" if split is not None else "all images"}
        write_model_config(out, config)
        summary["validation"] = result.metrics
    return summary
