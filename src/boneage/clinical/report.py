"""Clinical reports of an :class:`~boneage.clinical.assessment.Assessment`, as PDF or self-contained HTML.

``write_report(assessment, "report.pdf")`` (or ``.html``) writes one A4 page: patient and study fields,
the radiograph (with the model's evidence overlay when there is one), the numbers, a growth chart of
bone age against chronological age with the Greulich & Pyle +-2 SD band and the patient's point, the
statements about what could not be computed, the model's name and version, and the disclaimer.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (the Agg renderer for PNG, the PDF
backend for PDF), never through pyplot, so a service can write reports from several threads.
Reports are written to a temporary file and renamed, so an error leaves no partial report.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import textwrap
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InvalidInputError
from ..utils import atomic_write
from .assessment import AGE_SOURCES, DISCLAIMER, Assessment, format_age
from .reference import _gp_columns

__all__ = ["REPORT_SUFFIXES", "growth_chart", "render_report", "report_format", "write_report"]

REPORT_SUFFIXES = {".pdf": "pdf", ".html": "html", ".htm": "html"}
A4_INCHES = (8.27, 11.69)
_CHILDREN = {"M": "boys", "F": "girls"}


def report_format(path: str | Path) -> str:
    """``'pdf'`` or ``'html'`` from a report path's suffix; anything else raises InvalidInputError."""
    suffix = Path(path).suffix.lower()
    if suffix not in REPORT_SUFFIXES:
        raise InvalidInputError(f"report file must end in .pdf or .html, got {str(path)!r}")
    return REPORT_SUFFIXES[suffix]


def write_report(assessment: Assessment, path: str | Path, *, image_rgb: np.ndarray | None = None) -> Path:
    """Write the report as PDF or HTML (chosen by the suffix of ``path``) and return the path.

    ``image_rgb`` is the picture to show (an ``(H, W, 3)`` or ``(H, W)`` uint8 array); by default the
    assessment's evidence overlay, else its radiograph. Written atomically: an error leaves no file.
    """
    kind = report_format(path)
    path = Path(path)
    if not path.parent.is_dir():
        raise InvalidInputError(f"cannot write {path}: folder {path.parent} does not exist")
    return atomic_write(path, lambda stream: _render(assessment, kind, image_rgb, stream), fsync=False)


def render_report(assessment: Assessment, kind: str = "pdf", *, image_rgb: np.ndarray | None = None) -> bytes:
    """The report as bytes: ``kind`` ``'pdf'`` or ``'html'`` (see :func:`write_report`)."""
    if kind not in REPORT_SUFFIXES.values():
        raise InvalidInputError(f"report kind must be pdf or html, got {kind!r}")
    buffer = io.BytesIO()
    _render(assessment, kind, image_rgb, buffer)
    return buffer.getvalue()


def _render(assessment: Assessment, kind: str, image_rgb, stream) -> None:
    picture = image_rgb if image_rgb is not None else (
        assessment.evidence if assessment.evidence is not None else assessment.radiograph)
    if picture is not None:
        picture = np.asarray(picture)
        if picture.dtype != np.uint8 or picture.ndim not in (2, 3) or (picture.ndim == 3 and picture.shape[2] != 3):
            raise InvalidInputError(f"image_rgb must be an (H, W, 3) or (H, W) uint8 array, got "
                                    f"{picture.dtype} {tuple(picture.shape)}")
    if kind == "pdf":
        _pdf_figure(assessment, picture).savefig(
            stream, format="pdf", metadata={"Title": "Bone age assessment", "Creator": f"boneage {__version__}"})
    else:
        stream.write(_html(assessment, picture).encode("utf-8"))


# ------------------------------------------------------------------------------------- growth chart
def growth_chart(ax, sex: str | None, chronological_age_months: float | None, bone_age_months: float | None,
                 *, interval_months: tuple[float, float] | None = None):
    """Plot bone age against chronological age (in years) on ``ax`` (an Axes, or a Figure to add one to).

    The Greulich & Pyle (Brush Foundation) mean and the +-2 SD band of that sex, the line where bone age
    equals chronological age, and the patient's point (with ``interval_months`` as an error bar). Without
    a chronological age the bone age is drawn as a horizontal line and the chart says why there is no point.
    """
    from matplotlib.figure import Figure

    if isinstance(ax, Figure):
        ax = ax.add_subplot(1, 1, 1)
    ax.plot([0, 20], [0, 20], color="0.6", ls="--", lw=0.8, label="bone age = chronological age")
    if sex in _CHILDREN:
        ages, means, sds = (np.asarray(v) for v in _gp_columns(sex))
        ax.fill_between(ages / 12, (means - 2 * sds) / 12, (means + 2 * sds) / 12, color="tab:blue", alpha=0.18,
                        lw=0, label="±2 SD")
        ax.plot(ages / 12, means / 12, color="tab:blue", lw=1.2, label="Greulich & Pyle mean")
        ax.set_title(f"Bone age vs chronological age, {_CHILDREN[sex]}\n(Greulich & Pyle, Brush Foundation)", fontsize=9)
    else:
        ax.set_title("Bone age vs chronological age (sex unknown: no reference)", fontsize=9)
    note = None
    if bone_age_months is None:
        note = "no bone age: nothing to plot"
    elif chronological_age_months is None:
        ax.axhline(bone_age_months / 12, color="tab:red", ls=":", lw=1.2, label="bone age (this patient)")
        note = "chronological age unknown:\nthe patient's point cannot be placed"
    else:
        x, y = chronological_age_months / 12, bone_age_months / 12
        yerr = None
        if interval_months is not None:
            yerr = [[max(0.0, y - interval_months[0] / 12)], [max(0.0, interval_months[1] / 12 - y)]]
        ax.errorbar([x], [y], yerr=yerr, fmt="o", color="tab:red", ms=6, capsize=3, label="this patient")
    if note:
        ax.text(0.97, 0.04, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="tab:red")
    ax.set(xlim=(0, 20), ylim=(0, 20), xlabel="chronological age (years)", ylabel="bone age (years)")
    ax.set_xticks(range(0, 21, 2))
    ax.set_yticks(range(0, 21, 2))
    ax.tick_params(labelsize=8)
    ax.xaxis.label.set_size(8)
    ax.yaxis.label.set_size(8)
    ax.grid(True, lw=0.3, alpha=0.6)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return ax


# ---------------------------------------------------------------------------------------- contents
def _date(value: str | None) -> str | None:
    value = (value or "").strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else (value or None)


def _months(value: float, signed: bool = False) -> str:
    return f"{value:+.1f} months" if signed else f"{value:.1f} months"


def _patient_rows(a: Assessment) -> list[tuple[str, str]]:
    p, s = a.patient or {}, a.study or {}
    sex = {"M": "male", "F": "female"}.get(a.sex or "", "unknown")
    if a.sex_source:
        sex += " (from DICOM)" if a.sex_source == "dicom" else " (given)"
    rows = [
        ("Patient name", p.get("name")),
        ("Patient ID", p.get("id")),
        ("Sex", sex),
        ("Birth date", _date(p.get("birth_date"))),
        ("Study date", _date(s.get("date"))),
        ("Accession number", s.get("accession_number")),
        ("Study description", s.get("description")),
        ("Institution", s.get("institution")),
        ("Study instance UID", s.get("study_instance_uid")),
        ("Image file", Path(a.source).name if a.source else None),
        ("Image SHA-256", a.image_sha256[:16] + "..." if a.image_sha256 else None),
    ]
    return [(label, "-" if value in (None, "") else str(value)) for label, value in rows]


def _number(value, spec: str = ".1f", unit: str = "") -> str:
    """A number for a report cell, or 'unknown' when there is none."""
    return "unknown" if value is None else f"{value:{spec}}{unit}"


def _result_rows(a: Assessment) -> list[tuple[str, str]]:
    if a.status == "rejected" or a.bone_age_months is None:
        rows = [("Status", f"REJECTED: {a.rejection or 'no bone age'}"),
                ("Bone age", "not estimated (the image was rejected)")]
    else:
        rows = [("Status", "assessed"), ("Bone age", f"{_months(a.bone_age_months)} ({a.bone_age_text})")]
        u = a.uncertainty
        rows.append(("Model uncertainty", "not available" if u is None else
                     f"{_number(u.get('low_months'))} to {_number(u.get('high_months'))} months "
                     f"({_number(u.get('level'), '.0%')} interval; SD {_number(u.get('sd_months'))} months: "
                     f"{u.get('method') or 'spread of the model estimates'})"))
    if a.chronological_age_months is None:
        rows.append(("Chronological age", "unknown"))
    else:
        source = AGE_SOURCES.get(a.chronological_age_source or "", "")
        rows.append(("Chronological age", f"{_months(a.chronological_age_months)} ({a.chronological_age_text})"
                     + (f", {source}" if source else "")))
    if a.status == "rejected" or a.bone_age_months is None:
        if a.height_cm is not None:
            rows.append(("Height", f"{a.height_cm:.1f} cm"))
        return rows
    if a.bone_age_minus_chronological_months is not None:
        diff = a.bone_age_minus_chronological_months
        rows.append(("Bone age - chronological age", f"{_months(diff, signed=True)} ({format_age(diff)})"))
    if a.sds is not None:
        rows.append(("Bone age SDS", f"{a.sds:+.2f} (centile {_number(a.centile)})"))
        rows.append(("Reading", f"{a.reading or 'unknown'} (limits ±2 SD)"))
        reference = (f"mean {_number(a.reference_mean_months)} months, SD {_number(a.reference_sd_months)} months "
                     f"({a.reference or 'Greulich & Pyle'}; interpolated)")
        rows.append(("Reference at this age", reference))
    else:
        rows.append(("Bone age SDS", "not computed (see notes)"))
    if a.height_cm is None:
        rows.append(("Predicted adult height", "no height given"))
    else:
        rows.append(("Height", f"{a.height_cm:.1f} cm"))
        h = a.adult_height
        rows.append(("Predicted adult height", "not computed (see notes)" if h is None else
                     f"{_number(h.get('predicted_adult_height_cm'))} cm ({h.get('table') or 'Bayley-Pinneau'}; "
                     f"{_number(h.get('percent_of_mature_height'))}% of mature height reached)"))
    return rows


def _model_line(a: Assessment) -> str:
    m = a.model or {}
    line = f"Model: {m.get('name') or 'unknown'} {m.get('version') or ''}".rstrip()
    mae = m.get("validation_mae_months")
    if isinstance(mae, (int, float)) and not isinstance(mae, bool):
        line += f" (validation MAE {float(mae):.1f} months)"
    return line + f"; boneage {__version__}."


def _picture_caption(a: Assessment, picture) -> str:
    if picture is None:
        return "No image can be shown."
    if a.status == "rejected":
        return "The image as read (intensity windowed); the model rejected it."
    if a.evidence is not None:
        return f"Evidence overlay: {a.evidence_label or 'model evidence'}."
    return "Radiograph as read (intensity windowed). No evidence overlay is available for this model."


def _interval(a: Assessment):
    u = a.uncertainty or {}
    low, high = u.get("low_months"), u.get("high_months")
    return None if low is None or high is None else (low, high)


def _generated() -> str:
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


# ---------------------------------------------------------------------------------------------- PDF
def _pdf_figure(a: Assessment, picture):
    """The report as one A4 portrait matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4_INCHES)
    left, y = 0.06, 0.965
    fig.text(left, y, "Bone age assessment", fontsize=16, weight="bold", va="top")
    fig.text(0.94, y, f"generated {_generated()}", fontsize=7, ha="right", va="top", color="0.4")
    y -= 0.04
    rows = _patient_rows(a)
    half = (len(rows) + 1) // 2
    for column, chunk in enumerate((rows[:half], rows[half:])):
        x = left + column * 0.46
        for k, (label, value) in enumerate(chunk):
            yy = y - k * 0.015
            fig.text(x, yy, label, fontsize=7.5, color="0.35", va="top")
            fig.text(x + 0.14, yy, textwrap.shorten(value, 48, placeholder="..."), fontsize=7.5, va="top")
    y -= half * 0.015 + 0.01
    top, height = y, 0.34
    image_ax = fig.add_axes([left, top - height, 0.42, height])
    image_ax.set_axis_off()
    if picture is not None:
        image_ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255, interpolation="lanczos")
    else:
        image_ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=image_ax.transAxes)
    fig.text(left, top - height - 0.008, "\n".join(textwrap.wrap(_picture_caption(a, picture), 62)),
             fontsize=7, va="top", color="0.3")
    chart_ax = fig.add_axes([0.58, top - height + 0.035, 0.37, height - 0.06])
    growth_chart(chart_ax, a.sex, a.chronological_age_months, a.bone_age_months, interval_months=_interval(a))
    y = top - height - 0.05
    fig.text(left, y, "Results", fontsize=11, weight="bold", va="top")
    y -= 0.025
    for label, value in _result_rows(a):
        lines = textwrap.wrap(value, 80) or [""]
        fig.text(left, y, label, fontsize=8.5, color="0.3", va="top")
        fig.text(left + 0.27, y, "\n".join(lines), fontsize=8.5, va="top",
                 weight="bold" if label in ("Bone age", "Bone age SDS", "Reading", "Status") else "normal")
        y -= 0.0155 * len(lines) + 0.003
    if a.statements:
        y -= 0.01
        fig.text(left, y, "Notes", fontsize=11, weight="bold", va="top")
        y -= 0.022
        for statement in a.statements:
            lines = textwrap.wrap(statement, 118)
            fig.text(left, y, "- " + "\n  ".join(lines), fontsize=8, va="top")
            y -= 0.0135 * len(lines) + 0.003
    footer = [_model_line(a), DISCLAIMER]
    fig.text(left, 0.03, "\n".join(line for text in footer for line in textwrap.wrap(text, 125)),
             fontsize=7.5, va="bottom", color="0.15", style="italic")
    return fig


# --------------------------------------------------------------------------------------------- HTML
def _png_base64(picture: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _chart_base64(a: Assessment) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 4.2))
    growth_chart(fig, a.sex, a.chronological_age_months, a.bone_age_months, interval_months=_interval(a))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(rows: list[tuple[str, str]]) -> str:
    e = html.escape
    return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows) + "</table>"


_CSS = """
body{font-family:Helvetica,Arial,sans-serif;max-width:820px;margin:24px auto;color:#111;font-size:14px}
h1{font-size:22px;margin:0}h2{font-size:16px;margin:18px 0 6px}
.meta{color:#666;font-size:12px}.rejected{color:#b00;font-weight:bold}
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:3px 8px;
border-bottom:1px solid #e4e4e4}th{color:#555;font-weight:normal;width:34%}
.figures{display:flex;gap:16px;align-items:flex-start}.figures figure{margin:0;flex:1}
.figures img{max-width:100%;height:auto;border:1px solid #ddd}figcaption{font-size:12px;color:#555}
.disclaimer{margin-top:20px;padding:8px;border:1px solid #ccc;background:#f7f7f7;font-style:italic}
@media print{body{margin:0}}
"""


def _html(a: Assessment, picture) -> str:
    e = html.escape
    image_html = (f'<img alt="radiograph" src="data:image/png;base64,{_png_base64(picture)}">' if picture is not None
                  else "<p>No image can be shown.</p>")
    status = (f'<p class="rejected">The image was rejected: {e(a.rejection or "")}</p>' if a.status == "rejected" else "")
    notes = "".join(f"<li>{e(s)}</li>" for s in a.statements)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Bone age assessment</title><style>{_CSS}</style></head>
<body>
<h1>Bone age assessment</h1>
<p class="meta">generated {e(_generated())} by boneage {e(__version__)}</p>
{status}
<h2>Patient and study</h2>
{_table(_patient_rows(a))}
<div class="figures">
<figure>{image_html}<figcaption>{e(_picture_caption(a, picture))}</figcaption></figure>
<figure><img alt="growth chart" src="data:image/png;base64,{_chart_base64(a)}">
<figcaption>Bone age against chronological age with the Greulich &amp; Pyle mean and ±2 SD band.</figcaption></figure>
</div>
<h2>Results</h2>
{_table(_result_rows(a))}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<p class="meta">{e(_model_line(a))}</p>
<p class="disclaimer">{e(DISCLAIMER)}</p>
</body></html>
"""
