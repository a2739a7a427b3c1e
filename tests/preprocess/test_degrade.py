"""Degradations of decoded radiographs (boneage.preprocess.degrade): each does what it says on known images, the
spec parser refuses bad ones in one line, and ``boneage evaluate --degrade`` measures a model on degraded copies."""

import json

import numpy as np
import pytest

from boneage.cli import main
from boneage.data import write_phantom_dataset
from boneage.errors import InvalidInputError
from boneage.preprocess.degrade import DEGRADATIONS, parse_degradation

RAMP = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (48, 1))  # (48, 64), columns 0 -> 1


def _board(size=64, square=1):
    yy, xx = np.mgrid[0:size, 0:size]
    return (((yy // square) + (xx // square)) % 2).astype(np.float32)


def test_intensity_degradations_in_closed_form():
    np.testing.assert_allclose(parse_degradation("gamma:2")(RAMP), RAMP**2, atol=1e-6)
    np.testing.assert_allclose(parse_degradation("contrast:0.5")(RAMP), 0.25 + 0.5 * RAMP, atol=1e-6)
    # a uint16 image is min-max scaled first: the same ramp stored as 0-4000
    np.testing.assert_allclose(parse_degradation("gamma:1")((RAMP * 4000).astype(np.uint16)), RAMP, atol=1e-3)


def test_nearest_resampling_aliases_where_box_filtering_averages():
    board = _board()
    nearest = parse_degradation("resample:32:nearest")(board)
    box = parse_degradation("resample:32:box")(board)
    assert nearest.shape == box.shape == (32, 32)
    assert nearest.std() < 0.01 and nearest.mean() in (0.0, 1.0)  # every sample hits the same colour: aliasing
    np.testing.assert_allclose(box, 0.5, atol=1e-6)  # the true local mean


def test_blur_noise_jpeg_rotate_collimate_and_marker():
    board = _board(square=2)
    assert parse_degradation("blur:2")(board).std() < 0.1 * board.std()
    noisy = parse_degradation("noise:0.05")(RAMP, np.random.default_rng(1))
    assert abs(float((noisy - RAMP)[:, 16:48].std()) - 0.05) < 0.006  # mid-grey columns: nothing clipped
    np.testing.assert_array_equal(noisy, parse_degradation("noise:0.05")(RAMP, np.random.default_rng(1)))
    smooth = parse_degradation("blur:3")(_board(square=8))
    compressed = parse_degradation("jpeg:10")(smooth)
    assert 0.002 < np.abs(compressed - smooth).mean() < 0.1
    asymmetric = np.zeros((64, 64), np.float32)
    asymmetric[10:20, 40:60] = 1.0
    turned = parse_degradation("rotate:90")(asymmetric)  # counter-clockwise, as PIL turns
    np.testing.assert_allclose(turned, np.rot90(asymmetric), atol=0.02)
    shuttered = parse_degradation("collimate:0.25")(np.tile(np.linspace(0.2, 1, 80, dtype=np.float32), (40, 1)))
    assert (shuttered[:10] == 0).all() and (shuttered[:, :20] == 0).all() and (shuttered[10:, 20:] > 0).all()
    marked = parse_degradation("marker")(np.full((128, 128), 0.3, np.float32) + 0.01 * _board(128))
    assert (marked[:32, :32] == 1).any() and (marked[:, 110:] == 1).sum() > 50  # the letter and the ruler


@pytest.mark.parametrize("spec, message", [("fog", "unknown kind"), ("resample", "give the long_side"),
                                           ("jpeg:0", "between 1 and 95"), ("resample:64:cubic", "filter 'cubic'"),
                                           ("blur:wide", "must be a number"), ("marker:2", "takes 0 parameter")])
def test_bad_specs_get_one_line_errors(spec, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_degradation(spec)


def test_every_kind_has_defaults_or_says_what_to_give():
    for kind, (names, defaults, text) in DEGRADATIONS.items():
        assert len(names) == len(defaults) and text
        if all(d is not None for d in defaults):
            assert parse_degradation(kind).kind == kind


def test_evaluate_measures_degraded_copies(capsys, tmp_path, tiny_model_dir):
    image_dir, labels = write_phantom_dataset(tmp_path / "ph", 12, size=64, seed=3)
    argv = ["evaluate", "--images", str(image_dir), "--labels", str(labels), "--model", str(tiny_model_dir)]
    assert main([*argv, "--json", "--degrade", "blur:1", "--degrade", "resample:32:nearest"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    rows = metrics["degradations"]
    assert [row["degradation"] for row in rows] == ["blur:1", "resample:32:nearest"]
    assert all(row["n"] == 12 for row in rows)
    for row in rows:
        assert row["mae_change_months"] == pytest.approx(row["mae_months"] - metrics["mae_months"], abs=1e-3)
    assert main([*argv, "--degrade", "jpeg:30"]) == 0
    assert "the same images, degraded:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--degrade", "fog"])
    assert stop.value.code == 2 and "unknown kind 'fog'" in capsys.readouterr().err
