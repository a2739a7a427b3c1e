"""Clinical reports of an :class:`~boneage.clinical.assessment.Assessment`, as PDF or self-contained HTML.

``write_report(assessment, "report.pdf")`` (or ``.html``) writes an A4 page: patient and study fields,
the radiograph (with the model's evidence overlay when there is one; a rejected image as it is, with the
reason beside it), the numbers, a growth chart of bone age against chronological age with the Greulich &
Pyle +-2 SD band of that sex and the patient's point, the statements about what could not be computed,
the model's name and version, and the disclaimer. When the picture is the evidence overlay, a second
page (below the results in HTML) shows the radiograph without it. A per-bone model (RUS-CHN) adds a table
of its 13 bones (stage, score), the total score and the RUS-CHN bone age (a page of its own in the PDF,
after the results in HTML). Pictures keep their own resolution in
the PDF (see :func:`_pdf_picture`); text in any script is drawn without missing glyphs (see
:func:`_drawable_text`).

Figures are drawn on :class:`matplotlib.figure.Figure` objects (the Agg renderer for PNG, the PDF
backend for PDF), never through pyplot, so a service can write reports from several threads.
Reports are written to a temporary file and renamed, so an error leaves no partial report.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import html
import io
import math
import textwrap
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InvalidInputError
from ..utils import atomic_write
from .assessment import AGE_SOURCES, BONE_NAMES, DISCLAIMER, RUS_CHN_SCALE, SEX_WORDS, Assessment, format_age
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
        pages = [_pdf_figure(assessment, picture)]
        if _bone_rows(assessment):
            pages.append(_pdf_bones_page(assessment))
        plain = _plain_radiograph(assessment, picture)
        if plain is not None:  # page 1 shows the evidence: page 2 the radiograph without it
            pages.append(_pdf_radiograph_page(assessment, plain))
        _save_pdf(pages, stream)
    else:
        stream.write(_html(assessment, picture).encode("utf-8"))


def _plain_radiograph(a: Assessment, picture) -> np.ndarray | None:
    """The radiograph without the evidence overlay, when the main picture is the overlay (else None)."""
    if a.radiograph is None or picture is None or picture is a.radiograph:
        return None
    return np.asarray(a.radiograph, dtype=np.uint8)


def _save_pdf(pages: list, stream) -> None:
    """The figures as the pages of one PDF."""
    metadata = {"Title": "Bone age assessment", "Creator": f"boneage {__version__}"}
    if len(pages) == 1:
        pages[0].savefig(stream, format="pdf", metadata=metadata)
        return
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(stream, metadata=metadata) as pdf:
        for page in pages:
            pdf.savefig(page)


# ------------------------------------------------------------------------------------- growth chart
def _reference_extent(sex: str | None) -> tuple[float, float]:
    """(last chronological age, top of the +2 SD band), in years, of the Greulich & Pyle table of ``sex``
    (girls 16 and 17, boys 17 and 20); both tables together when the sex is unknown."""
    ages, tops = [], []
    for key in [sex] if sex in _CHILDREN else list(_CHILDREN):
        age, mean, sd = (np.asarray(v) for v in _gp_columns(key))
        ages.append(age.max() / 12)
        tops.append((mean + 2 * sd).max() / 12)
    return float(math.ceil(max(ages) - 0.1)), float(math.ceil(max(tops) - 0.1))


def _chart_limits(sex, x: float | None, y: float | None, interval) -> tuple[float, float, str | None]:
    """The axes' upper limits (years) from the reference of ``sex``, widened to show the patient's point
    (``x``, ``y`` in years) and interval when they lie beyond it, with a note saying so."""
    x_max, y_max = _reference_extent(sex)
    reference = f"the Greulich & Pyle reference for {_CHILDREN[sex]}" if sex in _CHILDREN else "the reference"
    outside = []
    if x is not None and x > x_max:
        outside.append(f"age beyond {reference} (to {x_max:g} years)")
        x_max = float(math.ceil(x + 0.5))
    if y is not None and y > y_max:
        outside.append(f"bone age beyond {reference} (to {y_max:g} years)")
        y_max = float(math.ceil(y + 0.5))
    if interval is not None and interval[1] / 12 > y_max:
        y_max = float(math.ceil(interval[1] / 12))
    note = ("this patient's " + " and ".join(outside) + ":\naxes widened to show the point") if outside else None
    return x_max, y_max, note


def _patient_point(ax, chronological_age_months, bone_age_months, interval_months) -> str | None:
    """Draw the patient's point (or, without a chronological age, the bone age as a line); the note to show."""
    if bone_age_months is None:
        return "no bone age: nothing to plot"
    if chronological_age_months is None:
        ax.axhline(bone_age_months / 12, color="tab:red", ls=":", lw=1.2, label="bone age (this patient)")
        return "chronological age unknown:\nthe patient's point cannot be placed"
    x, y = chronological_age_months / 12, bone_age_months / 12
    yerr = None
    if interval_months is not None:
        yerr = [[max(0.0, y - interval_months[0] / 12)], [max(0.0, interval_months[1] / 12 - y)]]
    ax.errorbar([x], [y], yerr=yerr, fmt="o", color="tab:red", ms=6, capsize=3, label="this patient")
    return None


def growth_chart(ax, sex: str | None, chronological_age_months: float | None, bone_age_months: float | None,
                 *, interval_months: tuple[float, float] | None = None):
    """Plot bone age against chronological age (in years) on ``ax`` (an Axes, or a Figure to add one to).

    The Greulich & Pyle (Brush Foundation) mean and the +-2 SD band of that sex, the line where bone age
    equals chronological age, and the patient's point (with ``interval_months`` as an error bar). The axes
    span that sex's reference (girls to 16 years of age, boys to 17; bone age to the top of the band); a
    point beyond it widens them, with a note. Without a chronological age the bone age is drawn as a
    horizontal line and the chart says why there is no point.
    """
    from matplotlib.figure import Figure

    if isinstance(ax, Figure):
        ax = ax.add_subplot(1, 1, 1)
    x = None if chronological_age_months is None or bone_age_months is None else chronological_age_months / 12
    y = None if bone_age_months is None else bone_age_months / 12
    x_max, y_max, outside = _chart_limits(sex, x, y, interval_months if x is not None else None)
    ax.plot([0, max(x_max, y_max)], [0, max(x_max, y_max)], color="0.6", ls="--", lw=0.8,
            label="bone age = chronological age")
    if sex in _CHILDREN:
        ages, means, sds = (np.asarray(v) for v in _gp_columns(sex))
        ax.fill_between(ages / 12, (means - 2 * sds) / 12, (means + 2 * sds) / 12, color="tab:blue", alpha=0.18,
                        lw=0, label="±2 SD")
        ax.plot(ages / 12, means / 12, color="tab:blue", lw=1.2, label="Greulich & Pyle mean")
        ax.set_title(f"Bone age vs chronological age, {_CHILDREN[sex]}\n(Greulich & Pyle, Brush Foundation)", fontsize=9)
    else:
        ax.set_title("Bone age vs chronological age (sex unknown: no reference)", fontsize=9)
    notes = [n for n in (_patient_point(ax, chronological_age_months, bone_age_months, interval_months), outside) if n]
    if notes:
        ax.text(0.97, 0.04, "\n".join(notes), transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
                color="tab:red")
    ax.set(xlim=(0, x_max), ylim=(0, y_max), xlabel="chronological age (years)", ylabel="bone age (years)")
    ax.set_xticks(range(0, int(x_max) + 1, 2))
    ax.set_yticks(range(0, int(y_max) + 1, 2))
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
    sex = SEX_WORDS.get(a.sex or "", "unknown")
    if a.sex_source == "predicted":
        probability = f", probability {a.sex_probability:.2f}" if a.sex_probability is not None else ""
        sex += f" (predicted from the radiograph{probability}; not given)"
    elif a.sex_source:
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
        rows.append(("Model uncertainty", "not available" if u is None else _uncertainty_text(u)))
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


def _uncertainty_text(u: dict) -> str:
    """The interval, how it was made, and (for a calibrated interval, apart from it) the ensemble's spread."""
    interval = (f"{_number(u.get('low_months'))} to {_number(u.get('high_months'))} months "
                f"({_number(u.get('level'), '.0%')} interval")
    method = u.get("method") or "spread of the model estimates"
    if not u.get("calibrated"):
        return f"{interval}; SD {_number(u.get('sd_months'))} months: {method})"
    spread = "" if u.get("sd_months") is None else f"; the ensemble members' estimates: SD {_number(u.get('sd_months'))} months"
    return f"{interval}: {method}{spread})"


def _model_line(a: Assessment) -> str:
    m = a.model or {}
    line = f"Model: {m.get('name') or 'unknown'} {m.get('version') or ''}".rstrip()
    mae = m.get("validation_mae_months")
    if isinstance(mae, (int, float)) and not isinstance(mae, bool):
        line += f" (validation MAE {float(mae):.1f} months)"
    return line + f"; boneage {__version__}."


def _picture_caption(a: Assessment, picture, plain_at: str = "") -> str:
    """What the picture shows; ``plain_at`` says where the radiograph without the overlay is (e.g. 'on page 2')."""
    caption = _what_the_picture_shows(a, picture)
    return f"{caption} The radiograph without it: {plain_at}." if plain_at and _plain_radiograph(a, picture) is not None \
        else caption


def _what_the_picture_shows(a: Assessment, picture) -> str:
    if picture is None:
        return "No image can be shown."
    flat = picture.ndim == 2 and picture.size and int(picture.min()) == int(picture.max())
    how = ("every pixel has the same value: shown at that grey level" if flat else "intensity windowed")
    size = f"{picture.shape[1]}x{picture.shape[0]} px"
    if a.status == "rejected":
        return f"The image as read ({how}; {size}); the model rejected it."
    if a.evidence is not None:
        return f"Evidence overlay: {a.evidence_label or 'model evidence'} (on the radiograph, {size})."
    return f"Radiograph as read ({how}; {size}). No evidence overlay is available for this model."


def _rejection_line(a: Assessment) -> str | None:
    """Why the model rejected the image (shown beside its picture), or None for an assessed image."""
    if a.status != "rejected" and a.bone_age_months is not None:
        return None
    return f"Rejected: {a.rejection or 'no bone age'}"


def _bone_rows(a: Assessment) -> list[tuple[str, str, str]]:
    """The per-bone table: ``(bone, stage, score)`` for each bone, then the total; empty without bones."""
    if not a.bones or a.status != "ok":
        return []
    rows = [(_bone_name(b["name"]), str(b["stage"]), _score(b["score"])) for b in a.bones]
    total = (a.rus_chn or {}).get("total_score")
    return rows + [("Total score", "", _score(total if total is not None else sum(b["score"] for b in a.bones)))]


def _bone_name(name: str) -> str:
    """``'MCPFirst'`` -> ``'1st metacarpal (MCPFirst)'``; ``'Radius'`` -> ``'Radius'``."""
    readable = BONE_NAMES.get(name, name)
    return readable.capitalize() if readable.lower() == name.lower() else f"{readable} ({name})"


def _score(value) -> str:
    return f"{value:.0f}" if isinstance(value, (int, float)) else "-"


def _rus_chn_line(a: Assessment) -> str:
    """The RUS-CHN total and bone age in one sentence, with the scale each bone age is on."""
    summary = a.rus_chn or {}
    age = summary.get("age_months")
    age_text = "unknown" if age is None else f"{format_age(age)} ({age:.1f} months)"
    return (f"RUS-CHN total score {summary.get('total_score', '-')}; RUS-CHN bone age {age_text}, Chinese standard. "
            f"Stages are numbered from 0. {summary.get('scale') or RUS_CHN_SCALE}")


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
    below = _pdf_picture(fig, a, picture, [left, top - height, 0.42, height])
    chart_ax = fig.add_axes([0.58, top - height + 0.035, 0.37, height - 0.06])
    growth_chart(chart_ax, a.sex, a.chronological_age_months, a.bone_age_months, interval_months=_interval(a))
    y = min(top - height - 0.05, below - 0.012)
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
    _drawable_text(fig)
    return fig


def _pdf_picture(fig, a: Assessment, picture, box: list[float]) -> float:
    """The radiograph (or its evidence overlay) in ``box`` (figure coordinates), framed, with the reason of a
    rejection in red and the caption below it; returns the height (figure coordinates) below the caption.

    ``interpolation="none"`` embeds the picture in the PDF at its own resolution (up to the 1024 px of
    :func:`~boneage.explain.display_image`): with any other interpolation matplotlib resamples images in
    vector output to the figure's dpi, and a 1024 px radiograph in this box would come out at ~350 px.
    A grey picture is drawn as RGB (through no colour map), so that its grey levels are kept exactly."""
    left, bottom, width, height = box
    image_ax = fig.add_axes(box)
    image_ax.set_xticks([])
    image_ax.set_yticks([])
    for spine in image_ax.spines.values():  # a frame: an all-white image stays visible on the page
        spine.set(color="0.6", linewidth=0.5, visible=picture is not None)
    if picture is not None:  # grey as RGB: drawn through no colour map, every grey level stays as it is
        rgb = np.repeat(picture[:, :, None], 3, axis=2) if picture.ndim == 2 else picture
        image_ax.imshow(rgb, interpolation="none")
    else:
        image_ax.set_facecolor("none")
        image_ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=image_ax.transAxes)
    y = bottom - 0.008
    rejection = _rejection_line(a)
    if rejection:
        lines = textwrap.wrap(rejection, 58)
        fig.text(left, y, "\n".join(lines), fontsize=8, va="top", color="#b00000", weight="bold")
        y -= 0.0125 * len(lines) + 0.003
    lines = textwrap.wrap(_picture_caption(a, picture, "page 3" if _bone_rows(a) else "page 2"), 62)
    fig.text(left, y, "\n".join(lines), fontsize=7, va="top", color="0.3")
    return y - 0.011 * len(lines)


def _pdf_bones_page(a: Assessment):
    """The page of a per-bone model's results: each bone's stage and score, the total and the RUS-CHN age."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4_INCHES)
    left, y = 0.06, 0.965
    fig.text(left, y, "RUS-CHN bones", fontsize=14, weight="bold", va="top")
    y -= 0.04
    columns = (left, left + 0.45, left + 0.6)
    for x, header in zip(columns, ("Bone", "Stage", "Score")):
        fig.text(x, y, header, fontsize=9, weight="bold", va="top", color="0.3")
    for bone, stage, score in _bone_rows(a):
        y -= 0.022
        weight = "bold" if bone == "Total score" else "normal"
        for x, value in zip(columns, (bone, stage, score)):
            fig.text(x, y, value, fontsize=9, va="top", weight=weight)
    y -= 0.04
    fig.text(left, y, "\n".join(textwrap.wrap(_rus_chn_line(a), 110)), fontsize=8.5, va="top")
    fig.text(left, 0.03, "\n".join(textwrap.wrap(DISCLAIMER, 125)), fontsize=7.5, va="bottom", color="0.15",
             style="italic")
    _drawable_text(fig)
    return fig


def _pdf_radiograph_page(a: Assessment, radiograph: np.ndarray):
    """Page 2 when page 1 shows the model's evidence: the radiograph as read, without the overlay, as large
    as the page allows and embedded at its own resolution, so that a reader can check the bones on it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4_INCHES)
    left = 0.06
    fig.text(left, 0.965, "Radiograph as read", fontsize=14, weight="bold", va="top")
    name = Path(a.source).name if a.source else "the image"
    fig.text(left, 0.935, f"{name}: {radiograph.shape[1]}x{radiograph.shape[0]} px, intensity windowed, without the "
             "evidence overlay of page 1.", fontsize=8, va="top", color="0.3")
    ax = fig.add_axes([left, 0.08, 1 - 2 * left, 0.83])
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set(color="0.6", linewidth=0.5)
    rgb = np.repeat(radiograph[:, :, None], 3, axis=2) if radiograph.ndim == 2 else radiograph
    ax.imshow(rgb, interpolation="none")  # at its own resolution and grey levels (see _pdf_picture)
    fig.text(left, 0.03, "\n".join(textwrap.wrap(DISCLAIMER, 125)), fontsize=7.5, va="bottom", color="0.15",
             style="italic")
    _drawable_text(fig)
    return fig


# -------------------------------------------------------------------------------------------- fonts
PLACEHOLDER = "\ufffd"  # what a character no installed font can draw is shown as (DejaVu Sans has it)
_NOT_FALLBACKS = ("Last Resort", "STIX", "DejaVu Math", "cm")  # math and symbol fonts: not for names


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.cache
def _fallback_font(char: str) -> str | None:
    """The family name of an installed font that draws ``char`` (e.g. a CJK font for a Chinese name), or None."""
    from matplotlib import font_manager

    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith(_NOT_FALLBACKS) or entry.style != "normal":
            continue
        if ord(char) in _charmap(entry.fname):
            return entry.name
    return None


def _drawable_text(fig) -> None:
    """Make every text of ``fig`` drawable without a missing-glyph warning: a character its font lacks (a
    file or patient name in another script) is drawn from an installed font that has it (matplotlib's
    per-glyph font fallback), else shown as :data:`PLACEHOLDER`. Text is never parsed as mathtext (a
    file name with two ``$`` stays as it is)."""
    from matplotlib import font_manager
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
        value = text.get_text()
        if value.isascii():
            continue
        have = _charmap(font_manager.findfont(text.get_fontproperties()))
        missing = {c for c in value if ord(c) not in have and not c.isspace()}
        if not missing:
            continue
        fallbacks = {c: _fallback_font(c) for c in missing}
        families = list(dict.fromkeys(name for name in fallbacks.values() if name))
        if families:
            text.set_fontfamily([*text.get_fontfamily(), *families])
        text.set_text("".join(PLACEHOLDER if c in fallbacks and fallbacks[c] is None else c for c in value))


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
.figures img,.plain img{max-width:100%;height:auto;border:1px solid #ddd}figcaption{font-size:12px;color:#555}
.plain{margin:0}
.disclaimer{margin-top:20px;padding:8px;border:1px solid #ccc;background:#f7f7f7;font-style:italic}
@media print{body{margin:0}}
"""


def _html_plain(a: Assessment, picture) -> str:
    """The radiograph without the evidence overlay, full width, when the main picture is the overlay."""
    plain = _plain_radiograph(a, picture)
    if plain is None:
        return ""
    return (f'<h2>Radiograph as read</h2><figure class="plain"><img alt="radiograph without overlay" '
            f'src="data:image/png;base64,{_png_base64(plain)}"><figcaption>{plain.shape[1]}x{plain.shape[0]} px, '
            "intensity windowed, without the evidence overlay.</figcaption></figure>")


def _html_bones(a: Assessment) -> str:
    """The per-bone table of a per-bone model, or nothing."""
    rows = _bone_rows(a)
    if not rows:
        return ""
    e = html.escape
    body = "".join(f"<tr><th>{e(bone)}</th><td>{e(stage)}</td><td>{e(score)}</td></tr>" for bone, stage, score in rows)
    return (f'<h2>RUS-CHN bones</h2><table class="bones"><tr><th>Bone</th><th>Stage</th><th>Score</th></tr>{body}</table>'
            f'<p>{e(_rus_chn_line(a))}</p>')


def _html(a: Assessment, picture) -> str:
    e = html.escape
    image_html = (f'<img alt="radiograph" src="data:image/png;base64,{_png_base64(picture)}">' if picture is not None
                  else "<p>No image can be shown.</p>")
    status = (f'<p class="rejected">The image was rejected: {e(a.rejection or "")}</p>' if a.status == "rejected" else "")
    notes = "".join(f"<li>{e(s)}</li>" for s in a.statements)
    rejection = f'<span class="rejected">{e(_rejection_line(a))}</span><br>' if _rejection_line(a) else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Bone age assessment</title><style>{_CSS}</style></head>
<body>
<h1>Bone age assessment</h1>
<p class="meta">generated {e(_generated())} by boneage {e(__version__)}</p>
{status}
<h2>Patient and study</h2>
{_table(_patient_rows(a))}
<div class="figures">
<figure>{image_html}<figcaption>{rejection}{e(_picture_caption(a, picture, "below the results"))}</figcaption></figure>
<figure><img alt="growth chart" src="data:image/png;base64,{_chart_base64(a)}">
<figcaption>Bone age against chronological age with the Greulich &amp; Pyle mean and ±2 SD band.</figcaption></figure>
</div>
<h2>Results</h2>
{_table(_result_rows(a))}
{_html_bones(a)}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
{_html_plain(a, picture)}
<p class="meta">{e(_model_line(a))}</p>
<p class="disclaimer">{e(DISCLAIMER)}</p>
</body></html>
"""
