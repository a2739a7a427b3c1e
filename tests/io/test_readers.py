import numpy as np
import pytest
from PIL import Image

from boneage.errors import ImageReadError
from boneage.io import read_image
from boneage.io.readers import parse_dicom_age
from tests.helpers import make_dicom as _dicom


def test_png_8bit(tmp_path):
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.pixels.dtype == np.uint8 and np.array_equal(image.pixels, arr)
    assert image.meta.format == "png" and image.meta.bits_stored == 8


def test_png_16bit_keeps_full_range(tmp_path):
    arr = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600).astype(np.uint16)  # up to 59400
    Image.fromarray(arr).save(tmp_path / "b.png")
    image = read_image(tmp_path / "b.png")
    assert image.pixels.dtype == np.uint16
    assert image.pixels.max() == 59400 and np.array_equal(image.pixels, arr)
    assert image.meta.bits_stored == 16


def test_rgb_jpeg_and_tiff(tmp_path):
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    image = read_image(tmp_path / "c.jpg")
    assert image.pixels.shape == (16, 16, 3) and image.meta.format == "jpeg"
    arr16 = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 200).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "d.tif")
    tif = read_image(tmp_path / "d.tif")
    assert tif.meta.format == "tiff" and np.array_equal(tif.pixels.astype(np.uint16), arr16)


def test_reader_sniffs_content_not_suffix(tmp_path):
    arr = np.full((4, 4), 7, dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    (tmp_path / "x.png").rename(tmp_path / "no_suffix")
    assert read_image(tmp_path / "no_suffix").meta.format == "png"


def test_dicom_monochrome2_with_modality_lut_and_metadata(tmp_path):
    raw = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100
    path = _dicom(tmp_path / "m2.dcm", raw, slope=2.0, intercept=-50.0, sex="M", age="010Y")
    image = read_image(path)
    np.testing.assert_allclose(image.pixels, raw * 2.0 - 50.0)
    assert image.meta.format == "dicom" and image.meta.sex == "M" and image.meta.age_months == 120
    assert image.meta.pixel_spacing_mm == (0.1, 0.12) and not image.meta.inverted


def test_dicom_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    raw = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    path = _dicom(tmp_path / "m1.dcm", raw, photometric="MONOCHROME1")
    image = read_image(path)
    assert image.meta.inverted and image.meta.photometric == "MONOCHROME1"
    # max + min - x: the darkest stored pixel becomes the brightest
    np.testing.assert_allclose(image.pixels, [[4000, 3000], [2000, 0]])


def test_dicom_voi_window_is_applied(tmp_path):
    raw = np.array([[0, 1000, 2000, 3000]], dtype=np.uint16)
    path = _dicom(tmp_path / "w.dcm", raw, window=(1500, 1000))  # window 1000..2000
    pixels = read_image(path).pixels[0]
    # DICOM linear VOI: x <= 1000 -> lowest output, x > 1999 -> highest output
    assert pixels[0] == pixels[1] < pixels[2] == pixels[3]


@pytest.mark.parametrize("value,months", [("009Y", 108), ("006M", 6), ("052W", pytest.approx(11.96, abs=0.01)), ("", None), ("abc", None)])
def test_parse_dicom_age(value, months):
    assert parse_dicom_age(value) == months


def test_errors_are_one_line(tmp_path):
    (tmp_path / "text.png").write_text("this is not an image\nsecond line")
    (tmp_path / "empty.png").write_bytes(b"")
    cases = [tmp_path / "missing.png", tmp_path / "text.png", tmp_path / "empty.png", tmp_path]
    for path in cases:
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_truncated_png_is_a_clear_error(tmp_path):
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8) + 5).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cannot decode"):
        read_image(tmp_path / "t.png")
