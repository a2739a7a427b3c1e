"""End-to-end tests of the command-line contract: output formats, exit codes, one-line errors."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from boneage.cli import main
from boneage.data import hand_phantom, write_phantom_dataset
from tests.helpers import make_dicom


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, age in (("a.png", 60), ("b.png", 150)):
        Image.fromarray(hand_phantom(age, "F", 96, rng)).save(folder / name)
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) >= 1 and "Traceback" not in err, err
    for line in lines:
        assert line.startswith("boneage"), err
    for needle in needles:
        assert needle in err, (needle, err)


def test_predict_text_and_json(capsys, images, tiny_model_dir):
    code, out, err = run(capsys, "predict", images / "a.png", "--sex", "F", "--model", tiny_model_dir)
    assert code == 0 and err == ""
    fields = out.strip().split("\t")
    assert fields[0].endswith("a.png") and fields[1] == "F" and fields[2].endswith("months")
    assert " y " in fields[3] and fields[3].endswith(" m")
    code, out, _ = run(capsys, "predict", images, "--sex", "m", "--model", tiny_model_dir, "--json")
    data = json.loads(out)
    assert code == 0 and [d["file"].rsplit("/", 1)[1] for d in data] == ["a.png", "b.png"]
    for item in data:
        assert item["sex"] == "M" and isinstance(item["bone_age_months"], float)
        assert 0 <= item["bone_age_months"] <= 228
        assert item["bone_age_interval_months"] is None  # a single model without calibration gives no interval


def test_batch_with_bad_files_still_predicts_the_good_ones(capsys, images, tiny_model_dir, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    argv = ["predict", images / "a.png", tmp_path / "missing.png", tmp_path / "notes.png", "--sex", "F",
            "--model", tiny_model_dir, "--json"]
    code, out, err = run(capsys, *argv)
    assert code == 2
    data = json.loads(out)
    assert isinstance(data[0]["bone_age_months"], float) and "error" not in data[0]
    assert data[1]["bone_age_months"] is None and "not found" in data[1]["error"]
    assert data[2]["bone_age_months"] is None and "not a supported image" in data[2]["error"]
    assert_one_line_error(err, "missing.png", "notes.png")
    assert len(err.strip().splitlines()) == 2


@pytest.mark.parametrize("argv,needle", [
    (["predict", "{img}", "--sex", "X", "--model", "{model}"], "sex must be M or F"),
    (["predict", "{img}", "--model", "{model}"], "sex unknown"),
    (["predict", "{tmp}/nope.png", "--sex", "M", "--model", "{model}"], "file not found"),
    (["predict", "{img}", "--sex", "M", "--model", "{tmp}/garbage.pt"], "not a boneage model"),
    (["predict", "{img}", "--sex", "M", "--model", "{tmp}/absent.pt"], "not found"),
    (["evaluate", "--images", "{tmp}", "--labels", "{tmp}/bad.csv", "--model", "{model}"], "missing column"),
    (["evaluate", "--images", "{tmp}/nodir", "--labels", "{tmp}/bad.csv", "--model", "{model}"], "image folder not found"),
    (["train", "--images", "{tmp}", "--labels", "{tmp}/bad.csv", "--model", "resnet9000"], "unknown model"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_gives_one_line_and_exit_2(capsys, images, tiny_model_dir, tmp_path, argv, needle):
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01 definitely not torch")
    (tmp_path / "bad.csv").write_text("id,age\n1,2\n")
    fill = {"img": images / "a.png", "tmp": tmp_path, "model": tiny_model_dir}
    argv = [a.format(**fill) for a in argv]
    try:
        code, _, err = run(capsys, *argv)
    except SystemExit as exit_:  # argparse
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2
    assert_one_line_error(err, needle)
    assert len(err.strip().splitlines()) == 1, err


def test_dicom_sex_is_used_when_not_given(capsys, tmp_path, tiny_model_dir):
    pixels = hand_phantom(100, "M", 64).astype(np.uint16) * 16
    path = make_dicom(tmp_path / "hand.dcm", pixels, sex="M")
    code, out, _ = run(capsys, "predict", path, "--model", tiny_model_dir, "--json")
    item = json.loads(out)[0]
    assert code == 0 and item["sex"] == "M" and item["sex_source"] == "dicom"
    code, out, _ = run(capsys, "predict", path, "--sex", "F", "--model", tiny_model_dir, "--json")
    assert json.loads(out)[0]["sex"] == "F"  # the argument wins over the file


def test_evaluate_json_contract(capsys, tmp_path, tiny_model_dir):
    image_dir, labels = write_phantom_dataset(tmp_path / "ph", 30, size=64, seed=2)
    plot, preds = tmp_path / "agreement.png", tmp_path / "pred.csv"
    code, out, _ = run(capsys, "evaluate", "--images", image_dir, "--labels", labels, "--model", tiny_model_dir,
                       "--json", "--plot", plot, "--predictions", preds)
    metrics = json.loads(out)
    assert code == 0 and metrics["n"] == 30
    for key in ("mae_months", "rmse_months", "mae_by_age_group", "mae_by_sex", "median_ae_months", "p90_ae_months"):
        assert key in metrics
    assert set(metrics["mae_by_age_group"]) == {"0-3", "4-7", "8-11", "12-15", "16-19"}
    assert set(metrics["mae_by_sex"]) == {"M", "F"}
    assert plot.exists() and len(preds.read_text().splitlines()) == 31


def test_evaluate_skips_and_reports_unreadable_images(capsys, tmp_path, tiny_model_dir):
    image_dir, labels = write_phantom_dataset(tmp_path / "ph", 5, size=64, seed=3)
    next(image_dir.glob("*.png")).unlink()
    code, out, err = run(capsys, "evaluate", "--images", image_dir, "--labels", labels, "--model", tiny_model_dir, "--json")
    metrics = json.loads(out)
    assert code == 2 and metrics["n"] == 4 and metrics["n_skipped"] == 1  # metrics for the rest, but not "all fine"
    assert "skipped" in err and "not found" in err and len(metrics["skipped"]) == 1


def test_models_lists_registry(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "global_resnet18" in out and "global_resnet50" in out and "rus_chn" in out
    assert "shipped models" in out and "rus-chn" in out


def test_real_process_exit_code_and_stderr(tmp_path, images, tiny_model_dir):
    """The installed entry point (or python -m boneage) behaves the same as main()."""
    exe = shutil.which("boneage")
    cmd = [exe] if exe else [sys.executable, "-m", "boneage"]
    result = subprocess.run(cmd + ["predict", str(images / "a.png"), str(tmp_path / "nope.png"), "--sex", "F",
                                   "--model", str(tiny_model_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "a.png" in result.stdout and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "nope.png" in result.stderr


def test_ensemble_command_combines_and_evaluates(capsys, tmp_path):
    import torch

    from boneage.models import create_model, export_model, load_model
    from boneage.preprocess import PreprocessConfig

    dirs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = create_model("global_resnet18", width=0.25)
        config = {"name": "m", "version": f"v{seed}", "model": model.boneage_spec,
                  "preprocess": PreprocessConfig(image_size=(64, 64)).to_dict(), "labels": {"min": 0.0, "max": 228.0},
                  "training": {"command": "boneage train ..."}}
        dirs.append(export_model(tmp_path / f"m{seed}", model.eval(), config))
    image_dir, labels = write_phantom_dataset(tmp_path / "ph", 12, size=64, seed=4)
    code, out, _ = run(capsys, "ensemble", *dirs, "--out-dir", tmp_path / "ens", "--images", image_dir, "--labels", labels)
    assert code == 0 and "ensemble of 2" in out
    loaded = load_model(tmp_path / "ens")
    assert loaded.config["metrics"]["validation"]["n"] == 12 and len(loaded.config["members"]) == 2
    code, out, _ = run(capsys, "predict", image_dir / "1000.png", "--sex", "M", "--model", tmp_path / "ens", "--json")
    item = json.loads(out)[0]
    assert code == 0 and item["bone_age_sd_months"] >= 0
    low, high = item["bone_age_interval_months"]  # uncalibrated: +/- 1.96 member SD, and labelled so
    assert low <= item["bone_age_months"] <= high and item["bone_age_interval_calibrated"] is False
    code, _, err = run(capsys, "ensemble", dirs[0], "--out-dir", tmp_path / "e1")
    assert code == 2 and "at least two" in err


def _dated_dicom(path, sex="F", birth="20150101", study="20240501"):
    import pydicom

    make_dicom(path, hand_phantom(110, sex, 96).astype(np.uint16) * 16, sex=sex, age="")
    ds = pydicom.dcmread(path)
    ds.PatientBirthDate, ds.StudyDate, ds.PatientName, ds.PatientID = birth, study, "Doe^Jane", "P123"
    ds.save_as(path)
    return path


def test_report_takes_sex_and_age_from_dicom_tags(capsys, tmp_path, tiny_model_dir):
    path = _dated_dicom(tmp_path / "hand.dcm")
    out_pdf, out_html = tmp_path / "report.pdf", tmp_path / "report.html"
    code, out, err = run(capsys, "report", path, "--height", "132", "--model", tiny_model_dir, "-o", out_pdf, "--json")
    data = json.loads(out)
    assert code == 0 and err == "" and data["status"] == "ok"
    assert data["sex"] == "F" and data["sex_source"] == "dicom"
    assert data["chronological_age_source"] == "dicom_dates"
    assert data["chronological_age_months"] == pytest.approx(3408 * 12 / 365.25, abs=0.01)  # 2015-01-01 to 2024-05-01
    assert data["patient"]["name"] == "Doe^Jane" and data["model"]["name"] == "tiny-test"
    assert out_pdf.read_bytes().startswith(b"%PDF")
    code, out, _ = run(capsys, "report", path, "--age", "9y4m", "--model", tiny_model_dir, "-o", out_html)
    fields = out.strip().split("\t")
    assert code == 0 and fields[1] == "F" and fields[2].endswith("months") and fields[-1] == str(out_html)
    text = out_html.read_text()
    assert "112.0 months (9 years 4 months), given" in text and "to support, not replace, a qualified reader" in text


def test_report_of_a_rejected_image_is_written_and_exits_2(capsys, tmp_path, tiny_model_dir):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((200, 200), dtype=np.uint8)).save(blank)
    out_html = tmp_path / "blank.html"
    code, out, err = run(capsys, "report", blank, "--sex", "M", "--age", "120", "--model", tiny_model_dir, "-o", out_html)
    assert code == 2 and out == ""
    assert_one_line_error(err, "blank", "rejected")
    assert len(err.strip().splitlines()) == 1
    assert "The image was rejected" in out_html.read_text()


@pytest.mark.parametrize("argv,needle", [
    (["{img}", "--sex", "F", "-o", "{tmp}/r.txt"], "must end in .pdf or .html"),
    (["{img}", "--sex", "F", "-o", "{tmp}/nodir/r.pdf"], "does not exist"),
    (["{img}", "--sex", "F", "--age", "9q", "-o", "{tmp}/r.pdf"], "not understood"),
    (["{img}", "--sex", "F", "--age", "25y", "-o", "{tmp}/r.pdf"], "above 240"),
    (["{img}", "--sex", "F", "--height", "2", "-o", "{tmp}/r.pdf"], "between 30 and 250 cm"),
    (["{img}", "-o", "{tmp}/r.pdf"], "sex unknown"),
    (["{tmp}/missing.png", "--sex", "F", "-o", "{tmp}/r.pdf"], "file not found"),
])
def test_report_bad_input_leaves_no_output(capsys, images, tiny_model_dir, tmp_path, argv, needle):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    fill = {"img": images / "a.png", "tmp": out_dir}
    argv = ["report", *[a.format(**fill) for a in argv], "--model", str(tiny_model_dir)]
    try:
        code, _, err = run(capsys, *argv)
    except SystemExit as exit_:  # argparse
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2
    assert_one_line_error(err, needle)
    assert len(err.strip().splitlines()) == 1, err
    assert list(out_dir.iterdir()) == []


def test_predict_explain_writes_one_evidence_png_per_image(capsys, images, tiny_model_dir, tiny_alanet_dir, tmp_path):
    out_dir = tmp_path / "evidence"
    code, out, err = run(capsys, "predict", images, "--sex", "F", "--model", tiny_alanet_dir, "--explain", out_dir)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["a_rois.png", "b_rois.png"]
    assert all(str(out_dir / "a_rois.png") in line for line in out.splitlines() if "a.png" in line)
    assert Image.open(out_dir / "a_rois.png").size == (96 * 3, 96 * 3)  # small images are enlarged for reading
    code, out, _ = run(capsys, "predict", images / "a.png", "--sex", "F", "--model", tiny_model_dir, "--explain",
                       out_dir, "--json")
    assert code == 0 and json.loads(out)[0]["evidence"].endswith("a_gradcam.png")


def test_predict_explain_folder_must_be_creatable(capsys, images, tiny_model_dir, tmp_path):
    with pytest.raises(SystemExit) as exit_:  # argparse checks the folder before any work
        run(capsys, "predict", images, "--sex", "F", "--model", tiny_model_dir, "--explain", tmp_path / "missing" / "deeper")
    code, err = exit_.value.code, capsys.readouterr().err
    assert code == 2
    assert_one_line_error(err, "--explain", "cannot create folder")


def test_bad_input_sizes_give_one_line_or_a_result(capsys, tmp_path, tiny_model_dir):
    """All-black, 10x10 and handless (noise) images are refused in one line; an 8000x8000 radiograph is assessed."""
    Image.fromarray(np.zeros((400, 300), np.uint8)).save(tmp_path / "black.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8)).save(tmp_path / "noise.png")
    Image.fromarray(np.full((10, 10), 128, np.uint8)).save(tmp_path / "tiny.png")
    hand = hand_phantom(120, "F", 500, np.random.default_rng(0))
    Image.fromarray(hand).resize((8000, 8000)).save(tmp_path / "huge.png", compress_level=1)
    for name, needle in (("black.png", "blank"), ("tiny.png", "too small"), ("noise.png", "not a hand radiograph")):
        code, out, err = run(capsys, "predict", tmp_path / name, "--sex", "F", "--model", tiny_model_dir)
        assert code == 2 and out == ""
        assert_one_line_error(err, needle)
        assert len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, "predict", tmp_path / "huge.png", "--sex", "F", "--model", tiny_model_dir, "--json")
    assert code == 0, err
    assert 0 <= json.loads(out)[0]["bone_age_months"] <= 228
