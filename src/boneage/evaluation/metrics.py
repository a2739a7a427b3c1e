"""Bone age accuracy: MAE, RMSE, median and 90th-percentile absolute error, per sex and per age group.

Age groups follow Table 2 of the fine-grained four-stage paper: 0-3, 4-7, 8-11, 12-15 and 16-19 years
of (reference) bone age, i.e. [0, 4), [4, 8), [8, 12), [12, 16) and [16, 20) years.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AGE_GROUPS_YEARS", "age_group", "compute_metrics", "format_metrics_table", "rank_auc", "sex_metrics"]

AGE_GROUPS_YEARS = (("0-3", 0, 4), ("4-7", 4, 8), ("8-11", 8, 12), ("12-15", 12, 16), ("16-19", 16, 20))


def age_group(bone_age_months: float) -> str:
    years = bone_age_months / 12.0
    for name, low, high in AGE_GROUPS_YEARS:
        if low <= years < high:
            return name
    return AGE_GROUPS_YEARS[-1][0] if years >= 20 else AGE_GROUPS_YEARS[0][0]


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def compute_metrics(predicted_months, true_months, sexes=None) -> dict:
    """Metrics dict; groups with no samples get ``None`` for their MAE and 0 for their count."""
    predicted = np.asarray(predicted_months, dtype=np.float64)
    true = np.asarray(true_months, dtype=np.float64)
    if predicted.shape != true.shape or predicted.ndim != 1:
        raise ValueError(f"predictions {predicted.shape} and labels {true.shape} must be equal-length vectors")
    n = int(true.size)
    error = predicted - true
    abs_error = np.abs(error)
    result = {
        "n": n,
        "mae_months": _round(abs_error.mean()) if n else None,
        "rmse_months": _round(np.sqrt((error**2).mean())) if n else None,
        "median_ae_months": _round(np.median(abs_error)) if n else None,
        "p90_ae_months": _round(np.percentile(abs_error, 90)) if n else None,
        "mean_error_months": _round(error.mean()) if n else None,
        "within_12_months": _round((abs_error <= 12).mean()) if n else None,
    }
    groups = np.array([age_group(t) for t in true]) if n else np.array([])
    result["mae_by_age_group"] = {}
    result["n_by_age_group"] = {}
    for name, _, _ in AGE_GROUPS_YEARS:
        mask = groups == name
        result["mae_by_age_group"][name] = _round(abs_error[mask].mean()) if mask.any() else None
        result["n_by_age_group"][name] = int(mask.sum())
    if sexes is not None:
        sexes = np.asarray(sexes)
        result["mae_by_sex"] = {}
        result["n_by_sex"] = {}
        for sex in ("M", "F"):
            mask = sexes == sex
            result["mae_by_sex"][sex] = _round(abs_error[mask].mean()) if mask.any() else None
            result["n_by_sex"][sex] = int(mask.sum())
    return result


def rank_auc(scores, positive) -> float | None:
    """The area under the ROC curve of ``scores`` for the ``positive`` (bool) class: the probability that a random
    positive scores above a random negative, ties counted half (Mann-Whitney); None without both classes."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        ranks[order[start : start + count]] = start + (count + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def sex_metrics(probability_male, sexes, months_sex_unknown=None, true_months=None) -> dict:
    """How well a model predicts the sex: ``accuracy`` (at 0.5), ``auc``, ``majority_rate`` (the accuracy of always
    guessing the commoner sex), ``n``; with ``months_sex_unknown`` (its bone ages when not told the sex) and
    ``true_months``, ``mae_months_sex_unknown``."""
    probability = np.asarray(probability_male, dtype=np.float64)
    male = np.asarray(sexes) == "M"
    n = int(male.size)
    result = {"n": n, "accuracy": _round(((probability >= 0.5) == male).mean()) if n else None,
              "auc": _round(rank_auc(probability, male)) if n else None,
              "majority_rate": _round(max(male.mean(), 1 - male.mean())) if n else None}
    if months_sex_unknown is not None and true_months is not None and n:
        error = np.asarray(months_sex_unknown, dtype=np.float64) - np.asarray(true_months, dtype=np.float64)
        result["mae_months_sex_unknown"] = _round(np.abs(error).mean())
    return result


def format_metrics_table(metrics: dict) -> str:
    """A short Markdown table of a metrics dict, for the terminal and the README."""
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        f"n = {metrics['n']}: MAE {fmt(metrics['mae_months'])} months, RMSE {fmt(metrics['rmse_months'])}, "
        f"median {fmt(metrics['median_ae_months'])}, P90 {fmt(metrics['p90_ae_months'])}, "
        f"bias {fmt(metrics['mean_error_months'])}",
        "",
        "| group | n | MAE (months) |",
        "|---|---:|---:|",
    ]
    for name, mae in metrics["mae_by_age_group"].items():
        lines.append(f"| {name} years | {metrics['n_by_age_group'][name]} | {fmt(mae)} |")
    for sex, mae in metrics.get("mae_by_sex", {}).items():
        label = "male" if sex == "M" else "female"
        lines.append(f"| {label} | {metrics['n_by_sex'][sex]} | {fmt(mae)} |")
    sex = metrics.get("sex_prediction")
    if sex:
        lines += ["", f"sex predicted from the image: accuracy {100 * sex['accuracy']:.1f} % (always the commoner sex: "
                  f"{100 * sex['majority_rate']:.1f} %), AUC {fmt(sex['auc'])}; bone age MAE without the sex given "
                  f"{fmt(sex.get('mae_months_sex_unknown'))} months"]
    return "\n".join(lines)
