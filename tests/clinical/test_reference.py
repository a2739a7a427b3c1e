"""boneage.clinical against values computed by hand from rows of the packaged CSVs (rows quoted)."""

import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

import boneage
from boneage.clinical import (
    OutOfReferenceRange,
    bone_age_sds,
    gp_reference,
    maturity_category,
    predicted_adult_height,
)
from boneage.errors import InvalidInputError
from tests.conftest import REPO, SHARED_DATA

DATA_FILES = (
    "gp_brush_foundation_mean_sd.csv",
    "gp_table_V_VI_sd_claudemn61.csv",
    "bayley_pinneau_percent_mature_height.csv",
)


def test_sds_at_a_tabulated_age():
    # gp_brush_foundation_mean_sd.csv: M,120,125.68,9.79
    r = bone_age_sds(140, 120, "M")
    assert (r.reference_mean_months, r.reference_sd_months) == pytest.approx((125.68, 9.79))
    assert r.sds == pytest.approx(14.32 / 9.79)  # (140 - 125.68) / 9.79 = 1.4627
    assert r.difference_months == 20 and r.reading == "within normal limits"
    assert r.to_dict()["sds"] == r.sds and "Greulich" in r.reference


def test_sds_between_tabulated_ages_is_interpolated():
    # F,84,89.3,9.64 and F,96,100.66,10.23 -> at 90 (half way): mean 94.98, SD 9.935
    r = bone_age_sds(100, 90, "F")
    assert (r.reference_mean_months, r.reference_sd_months) == pytest.approx((94.98, 9.935))
    assert r.sds == pytest.approx(5.02 / 9.935)  # 0.5053
    # M,60,62.43,8.79 and M,72,75.46,9.17 -> at 63 (a quarter): 62.43 + 13.03/4, 8.79 + 0.38/4
    assert gp_reference("M", 63) == pytest.approx((65.6875, 8.885))


@pytest.mark.parametrize(
    "bone_age,sds,reading",
    # M,108,113.9,9.0: +2 SD = 131.9, -2 SD = 95.9 (exact in floating point); 0.1 month beyond crosses
    [(131.9, 2.0, "within normal limits"), (132.0, 18.1 / 9, "advanced"),
     (95.9, -2.0, "within normal limits"), (95.8, -18.1 / 9, "delayed")],
)
def test_readings_at_the_two_sd_boundaries(bone_age, sds, reading):
    r = bone_age_sds(bone_age, 108, "M")
    assert r.sds == pytest.approx(sds) and r.reading == reading


def test_centiles_from_the_normal_cdf():
    # M,108,113.9,9.0: bone age = mean -> SDS 0 -> 50th; mean + 1.96 SD -> 97.5th
    assert bone_age_sds(113.9, 108, "M").centile == pytest.approx(50.0)
    assert bone_age_sds(113.9 + 1.96 * 9.0, 108, "M").centile == pytest.approx(97.5, abs=0.01)
    assert bone_age_sds(113.9 - 1.96 * 9.0, 108, "M").centile == pytest.approx(2.5, abs=0.01)


@pytest.mark.parametrize(
    "bone_age,age,sex,needle",
    [(100, 210, "M", "3-204"), (100, 200, "F", "3-192"), (10, 2, "F", "3-192"),  # M,3.0 / M,204 / F,192 rows
     (-1, 120, "M", "0-228"), (229, 120, "F", "0-228")],
)
def test_out_of_range_ages_raise_one_line_messages(bone_age, age, sex, needle):
    with pytest.raises(OutOfReferenceRange) as info:
        bone_age_sds(bone_age, age, sex)
    message = str(info.value)
    assert "\n" not in message and needle in message
    assert f"{bone_age if bone_age in (-1, 229) else age:g} months" in message
    assert isinstance(info.value, InvalidInputError)


@pytest.mark.parametrize(
    "bone_age,age,category",
    [(132, 120, "average"), (133, 120, "accelerated"), (108, 120, "average"), (107, 120, "retarded")],
)
def test_maturity_category_switches_beyond_twelve_months(bone_age, age, category):
    assert maturity_category(bone_age, age) == category


def test_adult_height_at_a_tabulated_skeletal_age():
    # bayley_pinneau_percent_mature_height.csv: M,average,120,78.4 -> 140 / 0.784 = 178.571 cm
    p = predicted_adult_height(140, 120, 120, "M")
    assert p.maturity_category == "average" and p.percent_of_mature_height == pytest.approx(78.4)
    assert p.predicted_adult_height_cm == pytest.approx(178.5714, abs=1e-3)
    # F,accelerated,132,88.3 (bone age 17 months ahead) -> 155 / 0.883 = 175.538 cm
    p = predicted_adult_height(155, 132, 115, "F")
    assert p.maturity_category == "accelerated" and p.percent_of_mature_height == pytest.approx(88.3)
    assert p.predicted_adult_height_cm == pytest.approx(175.5379, abs=1e-3)
    assert p.to_dict()["table"] == p.table and "girls" in p.table and "accelerated" in p.table


def test_adult_height_between_tabulated_skeletal_ages():
    # F,average,120,86.2 and F,average,123,87.4 -> at 121: 86.2 + 1.2/3 = 86.6 -> 150 / 0.866 = 173.210 cm
    p = predicted_adult_height(150, 121, 121, "F")
    assert p.percent_of_mature_height == pytest.approx(86.6)
    assert p.predicted_adult_height_cm == pytest.approx(173.2102, abs=1e-3)
    # M,retarded,96,75.6 and M,retarded,99,76.5 -> at 97.5: 76.05 -> 130 / 0.7605 = 170.940 cm
    p = predicted_adult_height(130, 97.5, 120, "M")
    assert p.maturity_category == "retarded" and p.percent_of_mature_height == pytest.approx(76.05)
    assert p.predicted_adult_height_cm == pytest.approx(170.9402, abs=1e-3)


def test_skeletal_age_outside_the_category_table_raises():
    # M,retarded runs 72-156; the same bone age is inside M,average (84-222) when not retarded
    with pytest.raises(OutOfReferenceRange, match=r"^bone age 160 months .*retarded.*\(72-156 months\)$"):
        predicted_adult_height(150, 160, 180, "M")
    assert predicted_adult_height(150, 160, 160, "M").maturity_category == "average"
    # F,accelerated runs 84-210
    with pytest.raises(OutOfReferenceRange, match=r"\(84-210 months\)"):
        predicted_adult_height(120, 80, 60, "F")


@pytest.mark.parametrize("height", [20, 300, float("nan"), "tall"])
def test_implausible_height_raises(height):
    with pytest.raises(InvalidInputError) as info:
        predicted_adult_height(height, 120, 120, "M")
    assert not isinstance(info.value, OutOfReferenceRange) and "height" in str(info.value)


@pytest.mark.parametrize("sex", ["X", "male", "", None])
def test_bad_sex_raises(sex):
    for call in (lambda: gp_reference(sex, 120), lambda: bone_age_sds(120, 120, sex),
                 lambda: predicted_adult_height(140, 120, 120, sex)):
        with pytest.raises(InvalidInputError, match="sex must be 'M' or 'F'"):
            call()


def test_package_data_is_loadable_from_the_installed_package():
    data = files("boneage.clinical") / "data"
    package_dir = Path(boneage.__file__).parent
    for name in (*DATA_FILES, "SOURCES.md"):
        resource = data / name
        assert resource.is_file() and Path(str(resource)).parent == package_dir / "clinical" / "data"
        assert resource.read_text(encoding="utf-8").strip()
    assert "Bayley N, Pinneau SR" in (data / "SOURCES.md").read_text(encoding="utf-8")
    # the wheel must ship them too
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["boneage"]
    assert {"clinical/data/*.csv", "clinical/data/*.md"} <= set(patterns)


def test_packaged_tables_match_the_shared_originals():
    shared = SHARED_DATA / "reference"
    if not shared.exists():
        pytest.skip(f"shared reference tables not found at {shared}")
    for name in DATA_FILES:
        assert (files("boneage.clinical") / "data" / name).read_bytes() == (shared / name).read_bytes(), name

