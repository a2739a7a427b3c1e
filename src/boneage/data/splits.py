"""Seeded train/validation splits, saved with each run so that a result can be reproduced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..utils import atomic_write
from .datasets import Sample

__all__ = ["split_samples", "save_split", "load_split", "apply_split"]


def split_samples(samples: list[Sample], val_fraction: float = 0.1, seed: int = 0) -> dict[str, list[str]]:
    """Split sample ids into ``train``/``val``, stratified by sex and bone-age decile.

    The same ``(ids, val_fraction, seed)`` always gives the same split, independent of row order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if len(samples) < 2:
        raise DatasetError("at least two samples are needed for a train/validation split")
    rng = np.random.default_rng(seed)
    ordered = sorted(samples, key=lambda s: s.id)
    ages = np.array([s.bone_age_months for s in ordered])
    edges = np.quantile(ages, np.linspace(0, 1, 11)[1:-1])
    strata: dict[tuple, list[str]] = {}
    for sample, age in zip(ordered, ages):
        strata.setdefault((sample.sex, int(np.searchsorted(edges, age))), []).append(sample.id)
    val: list[str] = []
    for key in sorted(strata):
        ids = strata[key]
        rng.shuffle(ids)
        val.extend(ids[: int(round(len(ids) * val_fraction))])
    val_set = set(val)
    if not val_set or len(val_set) == len(ordered):
        # Tiny data: fall back to an unstratified split with at least one sample on each side.
        ids = [s.id for s in ordered]
        rng.shuffle(ids)
        k = min(len(ids) - 1, max(1, int(round(len(ids) * val_fraction))))
        val_set = set(ids[:k])
    return {
        "seed": seed,
        "val_fraction": val_fraction,
        "train": [s.id for s in ordered if s.id not in val_set],
        "val": [s.id for s in ordered if s.id in val_set],
    }


def save_split(split: dict, path: str | Path) -> None:
    """Write atomically: other processes (DDP ranks) may read it at any moment."""
    atomic_write(path, json.dumps(split, indent=1))


def load_split(path: str | Path) -> dict:
    try:
        split = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read split file ({err})") from None
    if not isinstance(split, dict) or not {"train", "val"} <= split.keys():
        raise DatasetError(f"{path}: split file must hold 'train' and 'val' id lists")
    overlap = set(split["train"]) & set(split["val"])
    if overlap:
        raise DatasetError(f"{path}: {len(overlap)} ids are in both train and val (e.g. {sorted(overlap)[0]})")
    return split


def apply_split(samples: list[Sample], split: dict) -> tuple[list[Sample], list[Sample]]:
    by_id = {s.id: s for s in samples}
    missing = [i for i in split["train"] + split["val"] if i not in by_id]
    if missing:
        raise DatasetError(f"split names {len(missing)} ids not in the data (e.g. {missing[0]})")
    return [by_id[i] for i in split["train"]], [by_id[i] for i in split["val"]]
