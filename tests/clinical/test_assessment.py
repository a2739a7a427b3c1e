"""boneage.clinical.assessment and .report without a model: ages, hand-computed SDS and adult heights,
statements instead of guesses, stored results rebuilt, and reports (rows of the packaged CSVs are quoted
where used). The assessment of radiographs with a model is in tests/api/test_assess.py."""

import datetime as dt
import math

import pytest

from boneage.clinical import (
    chronological_age_from_meta,
    format_age,
    growth_chart,
    interpret,
    parse_age,
    report_format,
    write_report,
)
from boneage.errors import InvalidInputError
from boneage.io import read_image
from tests.helpers import dicom_with_dates


# -------------------------------------------------------------------------------------------- ages
@pytest.mark.parametrize("text,months", [
    ("9y4m", 112), ("9y", 108), ("4m", 4), ("9 y 4 m", 112), ("112", 112), ("9.5y", 114),
    ("9 years 4 months", 112), ("0", 0), ("240", 240), (112, 112), (96.5, 96.5),
])
def test_parse_age(text, months):
    assert parse_age(text) == pytest.approx(months)


@pytest.mark.parametrize("text,needle", [
    ("", "empty"), ("  ", "empty"), ("-3", "negative"), (-1, "negative"), ("9q", "not understood"),
    ("4m9y", "not understood"), ("y", "not understood"), ("241", "above 240"), ("21y", "above 240"),
    (float("nan"), "finite"), (True, "age"),
])
def test_parse_age_refuses_with_a_clear_message(text, needle):
    with pytest.raises(InvalidInputError, match=needle):
        parse_age(text)


def test_format_age():
    assert format_age(131.49) == "10 years 11 months"
    assert format_age(13) == "1 year 1 month"
    assert format_age(-14) == "-1 year 2 months"
    assert format_age(None) is None


def test_age_from_dicom_dates_then_patient_age(tmp_path):
    meta = read_image(dicom_with_dates(tmp_path / "a.dcm")).meta
    months, source, statements = chronological_age_from_meta(meta)
    days = (dt.date(2024, 5, 1) - dt.date(2015, 1, 1)).days  # 3408 days
    assert source == "dicom_dates" and months == pytest.approx(days * 12 / 365.25, abs=0.01) and statements == []
    meta = read_image(dicom_with_dates(tmp_path / "b.dcm", birth=None, study=None)).meta
    assert chronological_age_from_meta(meta)[:2] == (108.0, "dicom_age")  # PatientAge 009Y
    meta = read_image(dicom_with_dates(tmp_path / "c.dcm", birth="20240601", study="20240501", age="")).meta
    months, source, statements = chronological_age_from_meta(meta)
    assert months is None and source is None and "before the birth date" in statements[0]


def test_dicom_reader_gives_patient_and_study_fields(tmp_path):
    meta = read_image(dicom_with_dates(tmp_path / "a.dcm")).meta
    assert (meta.patient_name, meta.patient_id, meta.accession_number) == ("Doe^Jane", "P123", "ACC42")
    assert meta.study_description == "XR HAND LEFT" and meta.institution == "Test Hospital"
    assert meta.sop_instance_uid and meta.study_instance_uid is None  # make_dicom writes no study UID


# ---------------------------------------------------------------------------- hand-computed numbers
def test_sds_and_centile_interpolated_between_tabulated_ages():
    # gp_brush_foundation_mean_sd.csv: F,108,113.86,10.74 and F,120,125.66,11.73; 112 months is 1/3 of the way
    mean = 113.86 + (125.66 - 113.86) * 4 / 12  # 117.7933
    sd = 10.74 + (11.73 - 10.74) * 4 / 12  # 11.07
    a = interpret(140, "F", chronological_age_months="9y4m")
    assert a.reference_mean_months == pytest.approx(117.7933, abs=1e-4) == pytest.approx(mean)
    assert a.reference_sd_months == pytest.approx(11.07)
    assert a.sds == pytest.approx((140 - mean) / sd) == pytest.approx(2.0060, abs=1e-4)
    assert a.centile == pytest.approx(50 * (1 + math.erf(2.0060 / math.sqrt(2))), abs=0.01)  # 97.76
    assert a.reading == "advanced" and a.bone_age_minus_chronological_months == 28
    assert interpret(117.8, "F", chronological_age_months=112).reading == "within normal limits"
    assert interpret(90, "F", chronological_age_months=112).reading == "delayed"  # (90 - 117.79) / 11.07 = -2.51


def test_bayley_pinneau_adult_height_by_hand():
    # M,average,126,79.5 and M,average,129,80.0 -> at 127.5: 79.75%; 140 cm / 0.7975 = 175.55 cm
    a = interpret(127.5, "M", chronological_age_months=120, height_cm=140)
    h = a.adult_height
    assert h["maturity_category"] == "average" and h["percent_of_mature_height"] == pytest.approx(79.75)
    assert h["predicted_adult_height_cm"] == pytest.approx(140 / 0.7975) == pytest.approx(175.549, abs=1e-3)
    assert h["method"] == "Bayley-Pinneau" and "boys, average" in h["table"]


@pytest.mark.parametrize("chronological,category,percent", [
    (100, "accelerated", 75.8),  # bone age 26 months ahead: M,accelerated,126,75.8
    (140, "retarded", 81.9),  # 14 months behind: M,retarded,126,81.9
    (114, "average", 79.5),  # exactly 12 months ahead is still average: M,average,126,79.5
    (138, "average", 79.5),  # exactly 12 months behind: average
])
def test_bayley_pinneau_table_selection(chronological, category, percent):
    h = interpret(126, "M", chronological_age_months=chronological, height_cm=150).adult_height
    assert h["maturity_category"] == category and h["percent_of_mature_height"] == pytest.approx(percent)
    assert h["predicted_adult_height_cm"] == pytest.approx(150 / (percent / 100))


# ----------------------------------------------------------------------------- said, not guessed
def test_age_outside_the_reference_is_a_statement_not_an_error():
    a = interpret(190, "F", chronological_age_months=200)  # girls are tabulated up to 192 months
    assert a.status == "ok" and a.sds is None and a.centile is None and a.reading is None
    assert any("No SDS" in s and "192" in s for s in a.statements)
    assert a.bone_age_minus_chronological_months == -10
    a = interpret(3, "M", chronological_age_months=2)
    assert a.sds is None and any("3-204" in s for s in a.statements)


def test_bone_age_outside_0_to_19_years_is_stated():
    a = interpret(235, "M", chronological_age_months=200, height_cm=170)
    assert a.sds is None and a.adult_height is None
    assert any("outside 0-19 years" in s for s in a.statements)


def test_adult_height_outside_the_table_or_without_age_is_stated():
    a = interpret(60, "M", chronological_age_months=60, height_cm=110)  # M,average starts at 84 months
    assert a.adult_height is None and a.sds is not None
    assert any("No adult height" in s and "84-222" in s for s in a.statements)
    a = interpret(120, "M", height_cm=140)
    assert a.adult_height is None and a.sds is None and a.bone_age_minus_chronological_months is None
    assert any("no chronological age" in s.lower() for s in a.statements)


def test_bad_input_still_raises():
    with pytest.raises(InvalidInputError, match="height"):
        interpret(120, "M", chronological_age_months=120, height_cm=5)
    with pytest.raises(InvalidInputError, match="sex"):
        interpret(120, "X")



# ------------------------------------------------------------------------------------ stored results and reports
@pytest.mark.parametrize("junk", [
    {},
    {"status": "ok"},  # no bone age: shown as rejected, not a crash
    {"status": "ok", "bone_age_months": "140", "sds": float("nan"), "patient": None, "study": "x", "model": 3},
    {"status": "ok", "bone_age_months": 140, "sds": 1.0, "uncertainty": {"low_months": 1}, "adult_height": {"x": 1},
     "statements": "not a list", "evidence": [], "chronological_age_months": 120, "sex": "Q"},
    {"status": "weird", "bone_age_months": 130.0, "statements": [1, "kept"], "model": {"name": "m",
     "validation_mae_months": "n/a"}},
])
def test_from_dict_is_robust_to_what_a_database_hands_back(tmp_path, junk):
    from boneage.clinical import Assessment

    a = Assessment.from_dict(junk)
    assert a.status in ("ok", "rejected") and (a.status == "rejected") == (a.bone_age_months is None)
    assert isinstance(a.patient, dict) and isinstance(a.study, dict) and isinstance(a.statements, list)
    assert write_report(a, tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    assert "Bone age assessment" in write_report(a, tmp_path / "r.html").read_text()
    with pytest.raises(InvalidInputError):
        Assessment.from_dict(["not", "a", "dict"])


def test_report_suffix_and_no_partial_output(tmp_path, monkeypatch):
    from boneage.clinical import report

    assert report_format("a.PDF") == "pdf" and report_format("b.htm") == "html"
    a = interpret(120, "M", chronological_age_months=120)
    with pytest.raises(InvalidInputError, match=".pdf or .html"):
        write_report(a, tmp_path / "report.docx")
    with pytest.raises(InvalidInputError, match="does not exist"):
        write_report(a, tmp_path / "nope" / "report.pdf")

    class HalfWritten:  # a figure whose saving dies half way through the file
        def savefig(self, stream, **_kw):
            stream.write(b"%PDF-1.4 partial")
            raise OSError("disk full")

    def broken(*_args):
        raise RuntimeError("chart failed")

    monkeypatch.setattr(report, "_pdf_figure", lambda *_args: HalfWritten())
    monkeypatch.setattr(report, "_chart_base64", broken)
    with pytest.raises(OSError, match="disk full"):
        write_report(a, tmp_path / "report.pdf")
    with pytest.raises(RuntimeError, match="chart failed"):
        write_report(a, tmp_path / "report.html")
    assert list(tmp_path.iterdir()) == []  # neither a report nor a temporary file is left


def test_growth_chart_plots_the_band_and_says_when_the_age_is_unknown():
    from matplotlib.figure import Figure

    ax = growth_chart(Figure(), "F", 112, 140, interval_months=(136, 144))
    assert ax.get_xlim() == (0, 16) and len(ax.collections) >= 1  # the +-2 SD band; girls' reference to 16 years
    ax = growth_chart(Figure(), "M", None, 140)
    assert any("chronological age unknown" in t.get_text() for t in ax.texts)
