"""Accuracy metrics and plots for bone age predictions."""

from .metrics import AGE_GROUPS_YEARS, age_group, compute_metrics, format_metrics_table
from .plots import plot_agreement

__all__ = ["AGE_GROUPS_YEARS", "age_group", "compute_metrics", "format_metrics_table", "plot_agreement"]
