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
    assert tif.meta.format == "tiff" and tif.pixels.dtype == np.uint16 and np.array_equal(tif.pixels, arr16)


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


@pytest.mark.parametrize("value,months", [("009Y", 108), ("006M", 6), ("052W", pytest.approx(11.96, abs=0.01)), ("", None),
                                          ("abc", None)])
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


def test_dicom_rgb_and_ybr_colour_come_back_as_rgb(tmp_path):
    from pydicom.pixels import convert_color_space

    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[...] = (200, 50, 10)
    image = read_image(_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    assert image.pixels.shape == (4, 4, 3) and tuple(image.pixels[0, 0]) == (200, 50, 10)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    back = read_image(_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL")).pixels
    assert np.abs(back[0, 0].astype(int) - (200, 50, 10)).max() <= 2  # converted once, not twice


def test_dicom_multiframe_reads_the_first_frame_and_no_preamble_is_accepted(tmp_path):
    raw = np.arange(16, dtype=np.uint16).reshape(4, 4) * 10
    image = read_image(_dicom(tmp_path / "multi.dcm", raw, frames=3))
    np.testing.assert_allclose(image.pixels, raw)  # frame 0 (frame k is raw + k)
    bare = read_image(_dicom(tmp_path / "bare.dcm", raw, preamble=False))
    assert bare.meta.format == "dicom" and np.allclose(bare.pixels, raw)


def test_dicom_with_unusable_window_falls_back_to_modality_values(tmp_path):
    raw = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    image = read_image(_dicom(tmp_path / "w0.dcm", raw, window=(150, 0)))
    np.testing.assert_allclose(image.pixels, raw)


def test_rgba_transparent_background_reads_as_background():
    from boneage.preprocess import to_grayscale

    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere ...
    rgba[1:3, 1:3, 3] = 255  # ... but only the centre is opaque
    gray = to_grayscale(rgba)
    assert gray[0, 0] == 0 and gray[1, 1] == pytest.approx(255)


@pytest.mark.parametrize("shape,value,match", [((10, 10), None, "too small"), ((200, 200), 0, "blank"),
                                                ((200, 200), 77, "blank"), ((1, 1), 5, "too small")])
def test_blank_and_tiny_images_are_refused(shape, value, match):
    from boneage.errors import UnusableImageError
    from boneage.preprocess import PreprocessConfig, preprocess_image

    if value is not None:
        pixels = np.full(shape, value, dtype=np.uint8)
    else:
        pixels = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    with pytest.raises(UnusableImageError, match=match):
        preprocess_image(pixels, PreprocessConfig(), source="x.png")


def test_small_bright_object_on_uniform_field_is_not_normalised_away():
    from boneage.preprocess import normalize_intensity

    image = np.zeros((1000, 1000), dtype=np.uint8)
    image[:40, :40] = 200  # 0.16% of the pixels: inside the 99.5th percentile's blind spot
    out = normalize_intensity(image, "percentile", (0.5, 99.5))
    assert out.max() == 1.0 and out[0, 0] == 1.0 and out[500, 500] == 0.0


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((300, 300), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10_000)  # 90k px is "too large" under this limit
    with pytest.raises(ImageReadError, match="too large"):
        read_image(tmp_path / "big.png")
