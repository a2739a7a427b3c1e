import numpy as np
import pytest

from boneage.data import (
    hand_phantom,
    load_images,
    load_manifest,
    load_rsna,
    split_samples,
    write_phantom_dataset,
)
from boneage.errors import DatasetError
from boneage.preprocess import PreprocessConfig


def test_rsna_layout_variants(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "a.csv").write_text("id,boneage,male,extra\n1,12,True,x\n2,100.5,False,y\n3,40,1,z\n4,50,0,w\n")
    samples = load_rsna(tmp_path / "img", tmp_path / "a.csv")
    assert [s.sex for s in samples] == ["M", "F", "M", "F"]
    assert samples[1].bone_age_months == 100.5
    assert samples[0].path.endswith("1.png")
    # RSNA test-set headers
    (tmp_path / "b.csv").write_text("Case ID,Sex,Ground truth bone age (months)\n7,M,33.3\n")
    assert load_rsna(tmp_path / "img", tmp_path / "b.csv")[0].bone_age_months == pytest.approx(33.3)


@pytest.mark.parametrize("content,match", [
    ("id,age,male\n1,12,True\n", "missing column"),
    ("id,boneage,male\n1,twelve,True\n", "not a number"),
    ("id,boneage,male\n1,12,maybe\n", "male must be"),
    ("id,boneage,male\n", "no rows"),
])
def test_rsna_bad_csv_is_a_clear_error(tmp_path, content, match):
    (tmp_path / "img").mkdir()
    (tmp_path / "l.csv").write_text(content)
    with pytest.raises(DatasetError, match=match):
        load_rsna(tmp_path / "img", tmp_path / "l.csv")


def test_manifest_relative_paths_and_optional_age(tmp_path):
    (tmp_path / "m.csv").write_text("path,bone_age_months,sex,chronological_age_months\nimgs/a.png,120,F,118\n/abs/b.png,60,M,\n")
    samples = load_manifest(tmp_path / "m.csv")
    assert samples[0].path == str(tmp_path / "imgs" / "a.png") and samples[0].chronological_age_months == 118
    assert samples[1].path == "/abs/b.png" and samples[1].chronological_age_months is None
    (tmp_path / "bad.csv").write_text("path,bone_age_months,sex\na.png,10,X\n")
    with pytest.raises(DatasetError, match="sex must be M or F"):
        load_manifest(tmp_path / "bad.csv")


def test_split_is_seeded_disjoint_and_stratified(tmp_path):
    image_dir, labels = write_phantom_dataset(tmp_path, 200, size=16, seed=0)
    samples = load_rsna(image_dir, labels)
    a = split_samples(samples, 0.2, seed=5)
    b = split_samples(list(reversed(samples)), 0.2, seed=5)
    c = split_samples(samples, 0.2, seed=6)
    assert a == b and a["val"] != c["val"]
    assert not set(a["train"]) & set(a["val"]) and len(a["train"]) + len(a["val"]) == 200
    assert 30 <= len(a["val"]) <= 50
    val_ages = [s.bone_age_months for s in samples if s.id in set(a["val"])]
    assert abs(np.mean(val_ages) - np.mean([s.bone_age_months for s in samples])) < 20


def test_load_images_cache_and_bad_file(tmp_path):
    image_dir, labels = write_phantom_dataset(tmp_path, 6, size=32, seed=1)
    samples = load_rsna(image_dir, labels)
    config = PreprocessConfig(image_size=(24, 24))
    first = load_images(samples, config, cache_dir=tmp_path / "cache")
    assert first.shape == (6, 24, 24) and first.dtype == np.uint8
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert np.array_equal(load_images(samples, config, cache_dir=tmp_path / "cache"), first)
    (image_dir / f"{samples[2].id}.png").write_text("broken")
    with pytest.raises(DatasetError, match=f"sample {samples[2].id}"):
        load_images(samples, config)


def test_phantom_maturity_grows_with_age():
    rng = np.random.default_rng(0)
    bright = [np.mean(hand_phantom(age, "M", 96, rng) > 150) for age in (12, 60, 120, 200)]
    assert bright == sorted(bright), bright  # more and bigger bones with age
