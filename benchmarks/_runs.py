"""What the ablation benchmarks share: train a run or reuse the finished one, mean ± SD over seeds, and images
prepared once for every model measured on them."""

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


class PreparedImages:
    """Labelled samples through a model's preprocessing, clean and degraded (``spec``, seeded per image), prepared
    once and shared by every model with that preprocessing; an image its preprocessing refuses is left out."""

    def __init__(self, samples):
        self.samples, self.sets = samples, {}

    def get(self, predictor, spec: str | None) -> list:
        """``[(sample, prepared)]`` for the samples that could be prepared."""
        from boneage.errors import BoneAgeError
        from boneage.evaluation.evaluate import prepare_sample
        from boneage.preprocess.degrade import parse_degradation

        key = (json.dumps(predictor.preprocess.to_dict(), sort_keys=True), spec)
        if key not in self.sets:
            degrade = None if spec is None else parse_degradation(spec)
            found = []
            for sample in self.samples:
                try:
                    found.append((sample, prepare_sample(predictor, sample, degrade)))
                except BoneAgeError:
                    continue
            self.sets[key] = found
        return self.sets[key]

    def run(self, predictor, spec: str | None = None, sexes_known: bool = True):
        """The model on the prepared set -> ``(Results, truth months, sexes)``."""
        pairs = self.get(predictor, spec)
        sexes = [s.sex for s, _ in pairs]
        results = predictor.run([p for _, p in pairs], sexes if sexes_known else [None] * len(pairs))
        return results, [s.bone_age_months for s, _ in pairs], sexes
