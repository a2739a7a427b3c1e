"""Evaluate a loaded model on a labelled collection (the job behind ``boneage evaluate``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..data import Sample
from ..errors import BoneAgeError, DatasetError
from ..inference import Predictor
from .metrics import compute_metrics

__all__ = ["EvaluationResult", "evaluate_samples"]


@dataclasses.dataclass
class EvaluationResult:
    metrics: dict
    samples: list[Sample]  # the samples that were evaluated, in order
    predicted_months: np.ndarray
    skipped: list[dict]  # {"id", "path", "error"} for images that could not be read


def evaluate_samples(predictor: Predictor, samples: list[Sample], *, batch_size: int = 64, progress: bool = False) -> EvaluationResult:
    """Predict every sample, ``batch_size`` images at a time; unreadable images are skipped and listed,
    never silently dropped."""
    used, skipped, predicted = [], [], []
    batches = range(0, len(samples), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="evaluating", unit="batch", leave=False)
    for start in batches:
        prepared, chunk = [], []
        for sample in samples[start : start + batch_size]:
            try:
                prepared.append(predictor.prepare(sample.path))
            except BoneAgeError as err:
                skipped.append({"id": sample.id, "path": sample.path, "error": str(err)})
                continue
            chunk.append(sample)
        if chunk:
            predicted.append(predictor.predict(prepared, [s.sex for s in chunk], batch_size=batch_size)[0])
            used.extend(chunk)
    if not used:
        first = skipped[0]["error"] if skipped else "no samples"
        raise DatasetError(f"no image could be evaluated ({len(skipped)} unreadable; first: {first})")
    predicted_months = np.concatenate(predicted)
    metrics = compute_metrics(predicted_months, [s.bone_age_months for s in used], [s.sex for s in used])
    metrics["n_skipped"] = len(skipped)
    return EvaluationResult(metrics=metrics, samples=used, predicted_months=predicted_months, skipped=skipped)
