"""Property-based tests of the readers (hypothesis): random bytes and mutated or truncated real files of every
supported format end in an image or in a one-line ImageReadError naming the file, never in a hang, a crash
or another exception."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from boneage.errors import ImageReadError
from boneage.io import RadiographImage, read_image_bytes
from tests.helpers import make_dicom

NAMES = ("upload", "hand.png", "hand.jpg", "hand.tif", "hand.dcm")
FUZZ = settings(max_examples=150, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])


def _raster(fmt: str, mode: str = "L") -> bytes:
    pixels = (np.arange(48 * 40).reshape(48, 40) % 251).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode) if mode != "I;16" else Image.fromarray(pixels.astype(np.uint16) * 200)
    stream = io.BytesIO()
    image.save(stream, format=fmt)
    return stream.getvalue()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    pixels = (np.arange(40 * 32).reshape(40, 32) % 4000).astype(np.uint16)
    dicom = make_dicom(tmp_path_factory.mktemp("fuzz") / "hand.dcm", pixels)
    return {"hand.png": _raster("PNG"), "hand16.png": _raster("PNG", "I;16"), "hand.jpg": _raster("JPEG"),
            "hand.tif": _raster("TIFF"), "hand.bmp": _raster("BMP", "RGB"), "hand.dcm": dicom.read_bytes()}


def _ends_well(data: bytes, name: str) -> None:
    try:
        image = read_image_bytes(data, name)
    except ImageReadError as err:
        message = str(err)
        assert message.startswith(name) and "\n" not in message and len(message) < 400, message
        return
    assert isinstance(image, RadiographImage) and image.pixels.ndim in (2, 3) and min(image.pixels.shape[:2]) >= 1


def test_the_seeds_read(seeds):
    for name, data in seeds.items():
        assert read_image_bytes(data, name).pixels.size > 0


@FUZZ
@given(data=st.binary(max_size=4096), name=st.sampled_from(NAMES))
def test_random_bytes(data, name):
    _ends_well(data, name)


@FUZZ
@given(data=st.data())
def test_headers_followed_by_noise(seeds, data):
    """A real file's first bytes (its magic number and header) followed by random bytes."""
    name = data.draw(st.sampled_from(sorted(seeds)))
    keep = data.draw(st.integers(0, min(len(seeds[name]), 400)))
    _ends_well(seeds[name][:keep] + data.draw(st.binary(max_size=2048)), name)


@FUZZ
@given(data=st.data())
def test_mutated_and_truncated_files(seeds, data):
    name = data.draw(st.sampled_from(sorted(seeds)))
    raw = bytearray(seeds[name])
    for _ in range(data.draw(st.integers(1, 8))):  # overwrite a few bytes anywhere
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    _ends_well(bytes(raw[:cut]), name)


def test_a_dicom_whose_meta_length_is_damaged_gets_a_short_line(seeds):
    """Found by the mutation test above: pydicom's error quotes the raw bytes; the message is still one short line."""
    data = bytearray(seeds["hand.dcm"])
    meta = data.index(b"\x02\x00\x00\x00UL")  # (0002,0000) File Meta Information Group Length
    data[meta + 6 : meta + 8] = b"\x85\x00"  # 133: not a multiple of 4, as hypothesis found it
    _ends_well(bytes(data), "hand.dcm")
