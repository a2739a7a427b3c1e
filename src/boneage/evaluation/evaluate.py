"""Evaluate a model on a labelled collection (the job behind ``boneage evaluate``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..data import Sample
from ..errors import BoneAgeError, DatasetError
from ..inference import Predictor
from ..utils import atomic_write
from .metrics import compute_metrics, sex_metrics
from .plots import plot_agreement

__all__ = ["EvaluationResult", "evaluate_collection", "evaluate_degraded", "evaluate_samples", "predict_samples",
           "prepare_sample", "write_predictions"]


@dataclasses.dataclass
class EvaluationResult:
    metrics: dict
    samples: list[Sample]  # the samples that were evaluated, in order
    predicted_months: np.ndarray
    skipped: list[dict]  # {"id", "path", "error"} for images that could not be read


def prepare_sample(predictor: Predictor, sample: Sample, degrade=None):
    """The sample's file through the model's preprocessing, degraded first (seeded by its id) when asked."""
    if degrade is None:
        return predictor.prepare(sample.path)
    import zlib

    from ..io import read_image

    image = read_image(sample.path)
    pixels = degrade(image.pixels, np.random.default_rng(zlib.crc32(sample.id.encode())))
    return predictor.prepare(dataclasses.replace(image, pixels=pixels), str(sample.path))


def predict_samples(predictor: Predictor, samples: list[Sample], *, batch_size: int = 64, progress: bool = False,
                    what: str = "evaluated", desc: str = "evaluating", degrade=None, sex_prediction: dict | None = None,
                    ) -> tuple[list[Sample], np.ndarray, np.ndarray | None, list[dict]]:
    """Every sample through the model's own preprocessing, ``batch_size`` at a time -> ``(used samples, months,
    member SD or None, skipped)``; unreadable images are skipped and listed (``{"id", "path", "error"}``), never
    silently dropped; none readable is a DatasetError saying none could be ``what``. ``degrade``: a
    :class:`~boneage.preprocess.degrade.Degradation` applied to each decoded image first. ``sex_prediction``: a
    dict that, for a model that predicts the sex, receives ``probability`` (of a boy, per used sample) and
    ``months`` (the bone ages when the sex is not given: a second pass over the same inputs)."""
    used, skipped, months, spread = [], [], [], []
    batches = range(0, len(samples), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=desc, unit="batch", leave=False)
    for start in batches:
        prepared, chunk = [], []
        for sample in samples[start : start + batch_size]:
            try:
                prepared.append(prepare_sample(predictor, sample, degrade))
            except BoneAgeError as err:
                skipped.append({"id": sample.id, "path": sample.path, "error": str(err)})
                continue
            chunk.append(sample)
        if chunk:
            results = predictor.run(prepared, [s.sex for s in chunk], batch_size=batch_size)
            months.append(results.months)
            spread.append(results.sd)
            used.extend(chunk)
            if sex_prediction is not None and results.sex_probability is not None:
                unknown = predictor.run(prepared, [None] * len(chunk), batch_size=batch_size)
                sex_prediction.setdefault("probability", []).append(results.sex_probability)
                sex_prediction.setdefault("months", []).append(unknown.months)
    if not used:
        first = skipped[0]["error"] if skipped else "no samples"
        raise DatasetError(f"no image could be {what} ({len(skipped)} unreadable; first: {first})")
    sd_all = None if any(s is None for s in spread) else np.concatenate(spread)
    return used, np.concatenate(months), sd_all, skipped


def evaluate_samples(predictor: Predictor, samples: list[Sample], *, batch_size: int = 64,
                     progress: bool = False) -> EvaluationResult:
    """Predict every sample (:func:`predict_samples`) and measure the predictions against the labels; for a model
    that predicts the sex, ``metrics['sex_prediction']`` (:func:`~boneage.evaluation.metrics.sex_metrics`)."""
    sex_prediction: dict = {}
    used, predicted_months, _, skipped = predict_samples(predictor, samples, batch_size=batch_size, progress=progress,
                                                         sex_prediction=sex_prediction)
    truth, sexes = [s.bone_age_months for s in used], [s.sex for s in used]
    metrics = compute_metrics(predicted_months, truth, sexes)
    if sex_prediction:
        metrics["sex_prediction"] = sex_metrics(np.concatenate(sex_prediction["probability"]), sexes,
                                                np.concatenate(sex_prediction["months"]), truth)
    metrics["n_skipped"] = len(skipped)
    return EvaluationResult(metrics=metrics, samples=used, predicted_months=predicted_months, skipped=skipped)


def evaluate_degraded(predictor: Predictor, samples: list[Sample], degradations, *, batch_size: int = 64,
                      baseline: dict | None = None) -> list[dict]:
    """The model on degraded copies of the samples, one row per degradation: ``{'degradation', 'n', 'n_skipped',
    'mae_months', 'rmse_months', 'mean_error_months', 'mae_change_months'}`` (the change against ``baseline``,
    the clean images' metrics, when given)."""
    rows = []
    for degradation in degradations:
        used, months, _, skipped = predict_samples(predictor, samples, batch_size=batch_size, degrade=degradation)
        metrics = compute_metrics(months, [s.bone_age_months for s in used], [s.sex for s in used])
        row = {"degradation": degradation.label, "n": metrics["n"], "n_skipped": len(skipped),
               **{key: metrics[key] for key in ("mae_months", "rmse_months", "mean_error_months")}}
        if baseline is not None:
            row["mae_change_months"] = round(metrics["mae_months"] - baseline["mae_months"], 3)
        rows.append(row)
    return rows


def format_degradation_table(rows: list[dict]) -> str:
    """The rows of :func:`evaluate_degraded` as a plain-text table."""
    lines = [f"{'degradation':<24} {'n':>6} {'MAE':>7} {'RMSE':>7} {'bias':>7} {'MAE change':>11}"]
    for row in rows:
        change = row.get("mae_change_months")
        lines.append(f"{row['degradation']:<24} {row['n']:>6} {row['mae_months']:>7.2f} {row['rmse_months']:>7.2f} "
                     f"{row['mean_error_months']:>+7.2f} {'' if change is None else f'{change:+.2f}':>11}")
    return "\n".join(lines)


def write_predictions(result: EvaluationResult, path) -> None:
    """``id,sex,bone_age_months,predicted_months``, one row per evaluated image (written atomically)."""
    rows = [f"{s.id},{s.sex},{s.bone_age_months},{p:.2f}" for s, p in zip(result.samples, result.predicted_months)]
    atomic_write(path, "id,sex,bone_age_months,predicted_months\n" + "\n".join(rows) + "\n")


def evaluate_collection(images, labels, model=None, *, batch_size: int = 128, threads: int | None = None,
                        check_hand: bool = False, predictions_csv=None, plot=None,
                        progress: bool = False, degradations=(), runtime: str = "torch") -> tuple[EvaluationResult, dict]:
    """The job of ``boneage evaluate``: ``model`` (a path, None for the shipped one) on an RSNA-layout
    collection -> ``(result, metrics with the model's name, version and source)``; writes the
    per-image predictions and the agreement plot when asked. With ``degradations`` the metrics hold
    ``'degradations'``, the rows of :func:`evaluate_degraded` on degraded copies of the same images."""
    from ..data import load_rsna

    samples = load_rsna(images, labels)
    predictor = Predictor(model, threads=threads, check_hand=check_hand, runtime=runtime)
    result = evaluate_samples(predictor, samples, batch_size=batch_size, progress=progress)
    loaded = predictor.loaded
    metrics = {**result.metrics, "model": {"name": loaded.name, "version": loaded.version, "source": loaded.source,
                                           "runtime": predictor.runtime}}
    if degradations:
        metrics["degradations"] = evaluate_degraded(predictor, samples, degradations, batch_size=batch_size,
                                                    baseline=result.metrics)
    if predictions_csv:
        write_predictions(result, predictions_csv)
    if plot:
        plot_agreement(result.predicted_months, [s.bone_age_months for s in result.samples], plot,
                       sexes=[s.sex for s in result.samples], title=f"{loaded.name}: MAE {metrics['mae_months']:.2f} months")
    return result, metrics
