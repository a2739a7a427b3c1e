"""Accuracy metrics and plots for bone age predictions, and calibrated intervals (:mod:`.calibration`)."""

from .calibration import calibrated_interval, calibration_of, fit_calibration
from .detection import (
    average_precision,
    bone_detection_metrics,
    detection_metrics,
    ossification_hits,
    roi_detection_metrics,
)
from .metrics import AGE_GROUPS_YEARS, age_group, compute_metrics, format_metrics_table, rank_auc, sex_metrics
from .plots import plot_agreement

__all__ = [
    "calibrated_interval",
    "calibration_of",
    "fit_calibration",
    "average_precision",
    "bone_detection_metrics",
    "detection_metrics",
    "ossification_hits",
    "roi_detection_metrics",
    "AGE_GROUPS_YEARS", "age_group", "compute_metrics", "format_metrics_table", "plot_agreement", "rank_auc", "sex_metrics"]
