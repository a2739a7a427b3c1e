"""What the ablation benchmarks share: train a run or reuse the finished one, and mean ± SD over seeds."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def finished_config(out: Path) -> dict | None:
    """The exported model's config of a finished run under ``out``, or None."""
    config_path = Path(out) / "model" / "config.json"
    return json.loads(config_path.read_text()) if config_path.exists() else None


def train_or_reuse(out: Path, make_config, label: str) -> dict:
    """Reuse the finished run under ``out``, or train ``make_config()`` (a TrainConfig writing there; an
    interrupted one is resumed from its ``last.pt``); returns the exported model's config."""
    from boneage.training import train

    config = finished_config(out)
    if config is not None:
        print(f"reusing {out}", flush=True)
        return config
    started = time.time()
    resume = (Path(out) / "last.pt").exists()  # an interrupted run continues from its last epoch
    if resume:
        print(f"resuming {out}", flush=True)
    train(make_config(), resume=resume, command=" ".join(sys.argv))
    print(f"{label}: {time.time() - started:.0f} s", flush=True)
    return finished_config(out)


def spread(values: list[float]) -> str:
    """``'m'`` for one value, ``'mean ± SD'`` (sample SD) for several."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
