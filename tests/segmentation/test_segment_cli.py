"""``boneage segment`` and ``boneage train-segmenter``: outputs, exit codes, one-line errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from boneage import artifacts
from boneage.cli import main
from boneage.data import KEYPOINT_NAMES, hand_phantom, write_phantom_dataset
from boneage.preprocess import AugmentConfig
from boneage.preprocess.masks import classical_hand_mask
from boneage.segmentation import HandSegmenter, export_segmenter, training_masks
from boneage.segmentation.training import fit


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and all(line.startswith("boneage") for line in lines), err
    return lines


@pytest.fixture(scope="module")
def tiny_segmenter_dir(tmp_path_factory):
    """A small segmenter trained for 40 steps on 16 phantoms (finds phantom hands; < 2 s)."""
    rng = np.random.default_rng(0)
    images = [hand_phantom(age, "F", 64, rng) for age in rng.uniform(30, 200, 16)]
    torch.manual_seed(0)
    segmenter = HandSegmenter(input_size=(64, 64))
    inputs = np.stack([segmenter.prepare(image) for image in images])
    fit(segmenter, inputs, np.stack(training_masks(images).masks), epochs=20, batch_size=8, lr=1e-2,
        augment=AugmentConfig.none())
    return export_segmenter(tmp_path_factory.mktemp("segmenter"), segmenter, {"version": "test"})


def test_segment_writes_masks_and_refuses_a_black_image(capsys, tmp_path, tiny_segmenter_dir):
    Image.fromarray(hand_phantom(120, "M", 96, np.random.default_rng(5))).save(tmp_path / "hand.png")
    Image.fromarray(np.zeros((96, 96), dtype=np.uint8)).save(tmp_path / "black.png")
    out = tmp_path / "masks"
    code, stdout, err = run(capsys, "segment", tmp_path / "hand.png", tmp_path / "black.png", tmp_path / "missing.png",
                            "-o", out, "--segmenter", tiny_segmenter_dir, "--overlay")
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 2 and "black.png" in lines[0] and "missing.png" in lines[1]
    assert sorted(p.name for p in out.iterdir()) == ["hand_mask.png", "hand_overlay.png"]  # nothing for the failures
    mask = np.asarray(Image.open(out / "hand_mask.png"))
    assert mask.shape == (96, 96) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert 0.05 < (mask == 255).mean() < 0.6
    overlay = Image.open(out / "hand_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == (96, 96)
    fields = stdout.strip().split("\t")
    assert len(stdout.strip().splitlines()) == 1 and fields[0].endswith("hand.png") and fields[1].endswith("hand_mask.png")


def test_segment_a_folder_exits_0(capsys, tmp_path, tiny_segmenter_dir):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(6)
    for name in ("a.png", "b.png"):
        Image.fromarray(hand_phantom(rng.uniform(30, 200), "F", 80, rng)).save(folder / name)
    code, stdout, err = run(capsys, "segment", folder, "-o", tmp_path / "out", "--segmenter", tiny_segmenter_dir)
    assert code == 0 and err == "" and len(stdout.splitlines()) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_mask.png", "b_mask.png"]


def test_segment_without_shipped_weights_is_one_line(capsys, tmp_path, monkeypatch):
    Image.fromarray(hand_phantom(120, "M", 64, np.random.default_rng(5))).save(tmp_path / "hand.png")
    monkeypatch.setattr(artifacts, "default_artifact_path", lambda _format: tmp_path / "no-weights")
    code, _, err = run(capsys, "segment", tmp_path / "hand.png", "-o", tmp_path / "out")
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "no hand segmenter is installed" in lines[0]
    assert not any((tmp_path / "out").iterdir())


def write_keypoints(path, image_dir, outside_first=True):
    """A COCO keypoint file for phantoms: 21 points on each phantom's classical mask (the first
    image's middle finger tip moved into the background)."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for n, file in enumerate(sorted(image_dir.glob("*.png"))):
        pixels = np.asarray(Image.open(file))
        mask = classical_hand_mask(pixels.astype(np.float32) / 255.0)
        rows, cols = np.nonzero(mask)
        pick = rng.choice(len(rows), size=21, replace=False)
        points = np.stack([cols[pick] + 0.5, rows[pick] + 0.5], axis=1)
        if outside_first and n == 0:
            top = rows.argmin()
            points[11] = [cols[top] + 0.5, rows[top] + 0.5]
            points[12] = [cols[top] + 0.5, max(0.5, rows[top] - 4.5)]
        kpts = np.concatenate([points, np.full((21, 1), 2.0)], axis=1).ravel().tolist()
        images.append({"id": int(file.stem), "width": pixels.shape[1], "height": pixels.shape[0]})
        annotations.append({"id": n, "image_id": int(file.stem), "lefthand_valid": True, "lefthand_kpts": kpts,
                            "righthand_valid": False, "righthand_kpts": []})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "hand", "keypoints": list(KEYPOINT_NAMES)}]}
    path.write_text(json.dumps(coco))
    return path


def test_train_segmenter_end_to_end_on_phantoms(capsys, tmp_path):
    image_dir, _ = write_phantom_dataset(tmp_path / "data", 14, size=64, seed=3)
    keypoints = write_keypoints(tmp_path / "kp.json", image_dir)
    # 10 images with keypoints (10% = 1 held out), 3 of the other 4 as extra images with classical masks
    (tmp_path / "kp10.json").write_text(json.dumps({
        **(coco := json.loads(keypoints.read_text())),
        "annotations": coco["annotations"][:10],
    }))
    run_dir = tmp_path / "run"
    code, stdout, err = run(capsys, "train-segmenter", "--images", image_dir, "--keypoints", tmp_path / "kp10.json",
                            "--out-dir", run_dir, "--epochs", "2", "--size", "32", "--extra-images", "3",
                            "--batch-size", "8", "--split-file", "none", "--threads", "1")
    assert code == 0, err
    summary = json.loads(stdout)
    assert "dice_refined" in summary["validation"] and "keypoint_coverage" in summary["validation"]
    config = json.loads((run_dir / "model" / "config.json").read_text())
    training = config["training"]
    assert training["n_train_annotated"] == 9 and training["n_validation"] == 1 and training["n_train_extra"] <= 3
    refined = training["masks"]["train_annotated"]["n_refined"] + training["masks"]["validation"]["n_refined"]
    assert refined >= 1  # the tip placed in the background
    assert training["masks"]["train_annotated"]["after"]["keypoint_coverage"] == 1.0
    assert len(json.loads((run_dir / "history.json").read_text())) == 2
    split = json.loads((run_dir / "model" / "split.json").read_text())
    assert len(split["val"]) == 1 and not set(split["val"]) & set(split["train_annotated"] + split["train_extra"])
    assert "epoch 2/2" in err and "keypoint coverage" in err
    code, stdout, err = run(capsys, "segment", image_dir / "1000.png", "-o", tmp_path / "m", "--segmenter", run_dir / "model")
    assert code in (0, 2)  # 2 epochs need not find the hand; the plumbing must hold either way
    assert (code == 0) == (tmp_path / "m" / "1000_mask.png").exists()


def test_train_segmenter_argument_errors(capsys, tmp_path):
    code, _, err = run(capsys, "train-segmenter", "--images", tmp_path, "--keypoints", tmp_path / "k.json",
                       "--out-dir", tmp_path / "r", "--size", "100")
    assert code == 2 and len(error_lines(err)) == 1 and "multiple of 8" in err
    code, _, err = run(capsys, "train-segmenter", "--images", tmp_path / "nope", "--keypoints", tmp_path / "k.json",
                       "--out-dir", tmp_path / "r")
    assert code == 2 and len(error_lines(err)) == 1
