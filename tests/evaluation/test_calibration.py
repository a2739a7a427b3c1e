"""Calibrated intervals (split conformal, Mondrian by predicted bone age group x sex): hand-computed
quantiles, coverage on synthetic exchangeable data, fallbacks, clipping, the model config round trip and
the ``boneage calibrate`` command; and the shipped calibration on real data."""

import json
import math
import shutil

import numpy as np
import pytest

from boneage.errors import InvalidInputError, ModelLoadError
from boneage.evaluation.calibration import (
    MIN_GROUP_N,
    calibrated_interval,
    calibration_of,
    conformal_quantile,
    coverage_table,
    cross_fitted_intervals,
    describe_calibration,
    fit_calibration,
    intervals,
    min_points,
    prediction_bin,
)

# heteroscedastic noise (months) per (predicted group, sex): 8-12 year old boys are hard, the rest easy
NOISE = {("0-4", "M"): 3, ("0-4", "F"): 3, ("4-8", "M"): 6, ("4-8", "F"): 5, ("8-12", "M"): 20, ("8-12", "F"): 8,
         ("12-16", "M"): 5, ("12-16", "F"): 5, ("16-19", "M"): 4, ("16-19", "F"): 4}


def synthetic(n, seed):
    """Exchangeable (predicted, true, sex): the true bone age scatters around the prediction with an SD that
    depends on the predicted group and sex."""
    rng = np.random.default_rng(seed)
    predicted = rng.uniform(6, 222, n)
    sexes = rng.choice(["M", "F"], n)
    sd = np.array([NOISE[(prediction_bin(p), s)] for p, s in zip(predicted, sexes)], dtype=float)
    true = predicted + rng.normal(0, 1, n) * sd
    return predicted, true, sexes, sd


def covered(low, high, true):
    return (low <= true) & (true <= high)


# ------------------------------------------------------------------------------------------ quantile
def test_conformal_quantile_by_hand():
    scores = [7, 1, 9, 3, 10, 2, 8, 4, 6, 5]  # n = 10
    assert conformal_quantile(scores, 0.8) == 9  # ceil(11 * 0.8) = 9th smallest
    assert conformal_quantile(scores, 0.9) == 10  # ceil(11 * 0.9) = 10th
    assert conformal_quantile(scores, 0.5) == 6  # ceil(5.5) = 6th
    assert conformal_quantile(scores, 0.95) == math.inf  # ceil(10.45) = 11 > n
    assert min_points(0.95) == 19 and min_points(0.9) == 9 and min_points(0.8) == 4
    assert conformal_quantile(np.arange(1, 20), 0.95) == 19  # n = 19: ceil(19.0) = 19, the largest


def test_fit_by_hand_and_interval():
    predicted = np.full(20, 100.0)  # all in 8-12 years
    true = predicted + np.arange(1, 21)  # residuals 1..20
    sexes = ["M"] * 20
    cal = fit_calibration(predicted, true, sexes, level=0.9, min_group_n=5, label_range=(0, 228))
    # n = 20 at 0.9: ceil(21 * 0.9) = 19th smallest residual
    assert cal["groups"]["8-12/M"] == {"n": 20, "quantile": 19.0, "pooled_from": "8-12/M"}
    assert cal["all"] == {"n": 20, "quantile": 19.0} and cal["level"] == 0.9
    assert calibrated_interval(100.0, "M", None, cal) == (81.0, 119.0)
    assert json.loads(json.dumps(cal)) == cal  # JSON-able as it is


# ----------------------------------------------------------------------------------------- coverage
def test_coverage_close_to_the_level_and_mondrian_covers_each_group():
    p, y, s, _ = synthetic(4000, seed=1)
    tp, ty, ts, _ = synthetic(20000, seed=2)
    mondrian = fit_calibration(p, y, s)
    flat = fit_calibration(p, y, s, grouping="none")
    for cal in (mondrian, flat):
        low, high = intervals(cal, tp, ts)
        assert covered(low, high, ty).mean() == pytest.approx(0.95, abs=0.012)
    low_m, high_m = intervals(mondrian, tp, ts)
    low_g, high_g = intervals(flat, tp, ts)
    groups = np.array([f"{prediction_bin(v)}/{x}" for v, x in zip(tp, ts)])
    for group in np.unique(groups):
        mask = groups == group
        assert covered(low_m, high_m, ty)[mask].mean() >= 0.92, group  # each group covered
    hard = groups == "8-12/M"
    assert covered(low_g, high_g, ty)[hard].mean() < 0.8  # one global quantile misses the hard group
    assert covered(low_g, high_g, ty)[groups == "12-16/F"].mean() > 0.99  # ... and is too wide elsewhere
    assert (high_m - low_m)[groups == "12-16/F"].mean() < 0.6 * (high_g - low_g)[groups == "12-16/F"].mean()


def test_cross_fitting_measures_on_held_out_images():
    p, y, s, _ = synthetic(3000, seed=3)
    low, high = cross_fitted_intervals(p, y, s, folds=5, seed=0)
    assert covered(low, high, y).mean() == pytest.approx(0.95, abs=0.015)
    again = cross_fitted_intervals(p, y, s, folds=5, seed=0)
    assert np.array_equal(low, again[0])  # seeded
    table = coverage_table(y, low, high, s)
    assert table["all"]["n"] == 3000 and set(table) >= {"0-3", "4-7", "8-11", "12-15", "16-19", "M", "F"}
    assert 0 < table["all"]["mean_width_months"] and table["M"]["n"] + table["F"]["n"] == 3000
    with pytest.raises(InvalidInputError, match="folds"):
        cross_fitted_intervals(p, y, s, folds=1)


def test_member_sd_scaling_when_the_spread_is_informative():
    rng = np.random.default_rng(4)
    p = rng.uniform(30, 200, 6000)
    s = rng.choice(["M", "F"], 6000)
    sd = rng.uniform(0.5, 10, 6000)  # the error scales with the members' spread
    y = p + rng.normal(0, 1, 6000) * 2 * sd
    cal = fit_calibration(p[:3000], y[:3000], s[:3000], sd[:3000], use_sd=True)
    plain = fit_calibration(p[:3000], y[:3000], s[:3000])
    assert cal["sd_floor_months"] > 0 and "member SD" in cal["score"]
    scaled, flat = intervals(cal, p[3000:], s[3000:], sd[3000:]), intervals(plain, p[3000:], s[3000:])
    assert covered(*scaled, y[3000:]).mean() == pytest.approx(0.95, abs=0.02)
    assert (scaled[1] - scaled[0]).mean() < (flat[1] - flat[0]).mean()
    with pytest.raises(InvalidInputError, match="SD"):
        calibrated_interval(100.0, "M", None, cal)
    with pytest.raises(InvalidInputError, match="use_sd"):
        fit_calibration(p, y, s, use_sd=True)


# -------------------------------------------------------------------------------------- fallbacks
def test_small_groups_fall_back_to_the_age_group_then_to_all():
    rng = np.random.default_rng(5)
    predicted = np.concatenate([np.full(60, 100.0), np.full(5, 100.0), np.full(10, 210.0)])  # 8-12 M, 8-12 F, 16-19 M
    sexes = ["M"] * 60 + ["F"] * 5 + ["M"] * 10
    true = predicted + rng.normal(0, 5, predicted.size)
    cal = fit_calibration(predicted, true, sexes)
    residual = np.abs(true - predicted)
    assert cal["min_group_n"] == MIN_GROUP_N
    assert cal["groups"]["8-12/M"]["pooled_from"] == "8-12/M" and cal["groups"]["8-12/M"]["n"] == 60
    assert cal["groups"]["8-12/F"]["pooled_from"] == "8-12" and cal["groups"]["8-12/F"]["n_own"] == 5
    assert cal["groups"]["8-12/F"]["quantile"] == pytest.approx(conformal_quantile(residual[:65], 0.95), abs=1e-4)
    assert cal["groups"]["16-19/M"]["pooled_from"] == "all" and cal["groups"]["16-19/M"]["n"] == 75
    assert cal["groups"]["16-19/M"]["quantile"] == pytest.approx(conformal_quantile(residual, 0.95), abs=1e-4)
    assert cal["groups"]["0-4/F"]["pooled_from"] == "all"  # no images at all
    with pytest.raises(InvalidInputError, match="too few"):
        fit_calibration(predicted[:10], true[:10], sexes[:10])


def test_interval_is_clipped_to_the_label_range():
    p, y, s, _ = synthetic(2000, seed=6)
    cal = fit_calibration(p, y, s, label_range=(0.0, 228.0))
    low, high = calibrated_interval(2.0, "F", None, cal)
    assert low == 0.0 and high > 2.0
    low, high = calibrated_interval(226.0, "M", None, cal)
    assert high == 228.0 and low < 226.0
    assert prediction_bin(-3) == "0-4" and prediction_bin(300) == "16-19" and prediction_bin(48) == "4-8"


def test_calibration_of_a_config():
    p, y, s, _ = synthetic(500, seed=7)
    cal = fit_calibration(p, y, s)
    assert calibration_of({"name": "m"}) is None
    assert calibration_of({"calibration": cal}) is cal
    for broken in ({"level": 2}, {**cal, "groups": {"0-4/M": {"quantile": float("inf")}}}, {**cal, "label_range_months": [1]}):
        with pytest.raises(ModelLoadError, match="calibration"):
            calibration_of({"calibration": broken}, "x")
    cal["fitted_on"] = {"description": "rsna-100px, the model's validation split"}
    cal["coverage"] = {"held_out": {"folds": 5, "groups": {"all": {"coverage": 0.951, "mean_width_months": 45.3}}}}
    text = describe_calibration(cal)
    assert "95% interval is calibrated" in text and "500 held-out validation images" in text
    assert "95.1%" in text and "5-fold" in text and "rsna-100px" in text


def test_interpret_takes_a_ready_interval():
    from boneage.clinical import interpret

    interval = {"low_months": 110.0, "high_months": 160.0, "level": 0.95, "method": "split conformal", "calibrated": True}
    a = interpret(135, "F", chronological_age_months=120, interval=interval)
    assert a.uncertainty == {**interval, "sd_months": None}
    assert interpret(135, "F", interval={**interval, "sd_months": 0.5}).uncertainty["sd_months"] == 0.5
    none = interpret(135, "F")
    assert none.uncertainty is None and any("no uncertainty estimate" in s for s in none.statements)
    for bad in ({"low_months": 170.0, "high_months": 160.0, "level": 0.95}, {"low_months": 1.0, "level": 0.95},
                {**interval, "level": 95}, {**interval, "high_months": float("nan")}):
        with pytest.raises(InvalidInputError, match="interval"):
            interpret(135, "F", interval=bad)


# -------------------------------------------------------------------------------- the command, a model
@pytest.fixture()
def phantom_val(tmp_path):
    from boneage.data import write_phantom_dataset

    image_dir, labels = write_phantom_dataset(tmp_path / "ph", 40, size=64, seed=3)
    ids = [str(1000 + i) for i in range(40)]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": ids}))
    return image_dir, labels, split


def test_calibrate_command_writes_the_config_and_predict_uses_it(capsys, tmp_path, tiny_model_dir, phantom_val):
    from boneage.cli import main
    from boneage.models import load_model

    image_dir, labels, split = phantom_val
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = (model / "model.safetensors").read_bytes()
    argv = ["calibrate", "--model", model, "--images", image_dir, "--labels", labels, "--split-file", split]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "coverage on images not used to calibrate" in out and "| all | 40 |" in out
    cal = load_model(model).config["calibration"]
    assert cal["n"] == 40 and cal["level"] == 0.95 and cal["fitted_on"]["split"].startswith("split.json")
    assert cal["coverage"]["held_out"]["folds"] == 5 and cal["ensemble_sd"] is None  # a single model: no spread
    assert (model / "model.safetensors").read_bytes() == weights  # the weights are not touched
    assert main(["predict", str(image_dir / "1000.png"), "--sex", "F", "--model", str(model), "--json", "--no-hand-check"]) == 0
    item = json.loads(capsys.readouterr().out)[0]
    low, high = item["bone_age_interval_months"]
    assert low <= item["bone_age_months"] <= high and item["bone_age_interval_calibrated"] is True
    assert item["bone_age_interval_level"] == 0.95 and "bone_age_sd_months" not in item  # single model: no SD
    code = main(["calibrate", "--model", str(model), "--images", str(image_dir), "--labels", str(labels)])
    assert code == 2 and "no split file" in capsys.readouterr().err  # tiny model ships no split.json


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.realdata
def test_shipped_calibration_reproduces_its_stored_coverage(rsna100):
    """The shipped calibration exists, was fitted on the whole validation split, and covers a seeded subset of
    200 of those validation images as its stored in-sample coverage says (within binomial noise)."""
    from boneage.data import apply_split, load_rsna, load_split
    from boneage.evaluation.calibration import predict_with_spread
    from boneage.inference import Predictor
    from boneage.models import default_model_path

    predictor = Predictor(None, check_hand=False)
    cal = calibration_of(predictor.loaded.config, "default")
    split = load_split(default_model_path() / "split.json")
    assert cal is not None and cal["level"] == 0.95 and cal["n"] == len(split["val"]) == 1158
    assert cal["fitted_on"]["n"] == 1158 and cal["fitted_on"]["model_version"] == predictor.loaded.version
    held_out = cal["coverage"]["held_out"]["groups"]
    assert held_out["all"]["n"] == 1158 and held_out["all"]["coverage"] >= 0.94
    stored = cal["coverage"]["in_sample"]["groups"]["all"]["coverage"]
    _, val = apply_split(load_rsna(rsna100 / "images", rsna100 / "boneage-training-dataset.csv"), split)
    subset = [val[i] for i in np.random.default_rng(0).choice(len(val), 200, replace=False)]
    used, months, sd, _ = predict_with_spread(predictor, subset)
    low, high = intervals(cal, months, [s.sex for s in used], sd)
    coverage = covered(low, high, np.array([s.bone_age_months for s in used])).mean()
    assert abs(coverage - stored) <= 3 * math.sqrt(stored * (1 - stored) / 200) + 1e-9, (coverage, stored)
