"""Agreement plots: predicted vs reference scatter and a Bland-Altman plot, side by side, as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import atomic_write

__all__ = ["plot_agreement"]


def plot_agreement(predicted_months, true_months, out_png: str | Path, *, sexes=None, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predicted = np.asarray(predicted_months, dtype=float)
    true = np.asarray(true_months, dtype=float)
    colours = None
    if sexes is not None:
        colours = ["tab:blue" if s == "M" else "tab:red" for s in sexes]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5))
    ax1.scatter(true, predicted, s=6, alpha=0.5, c=colours)
    lim = (0, max(240.0, float(np.max(true, initial=0)), float(np.max(predicted, initial=0))))
    ax1.plot(lim, lim, "k--", lw=1)
    ax1.set(xlim=lim, ylim=lim, xlabel="reference bone age (months)", ylabel="predicted bone age (months)",
            title="predicted vs reference")
    mean = (predicted + true) / 2
    diff = predicted - true
    bias, sd = float(diff.mean()) if diff.size else 0.0, float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    ax2.scatter(mean, diff, s=6, alpha=0.5, c=colours)
    for y, style, label in ((bias, "-", f"bias {bias:.1f}"), (bias + 1.96 * sd, "--", f"+1.96 SD {bias + 1.96 * sd:.1f}"),
                            (bias - 1.96 * sd, "--", f"-1.96 SD {bias - 1.96 * sd:.1f}")):
        ax2.axhline(y, color="k", ls=style, lw=1)
        ax2.text(lim[1], y, f" {label}", va="center", fontsize=8)
    ax2.set(xlabel="mean of predicted and reference (months)", ylabel="predicted - reference (months)",
            title="Bland-Altman", xlim=lim)
    if colours is not None:
        ax1.scatter([], [], c="tab:blue", s=10, label="male")
        ax1.scatter([], [], c="tab:red", s=10, label="female")
        ax1.legend(loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return atomic_write(out_png, lambda stream: fig.savefig(stream, format="png", dpi=110))
    finally:
        plt.close(fig)
