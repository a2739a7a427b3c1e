"""Every transfer syntax a PACS sends is read: each test compresses a DICOM itself, reads it back with
``boneage.io.read_image`` and compares the pixels (exactly for lossless syntaxes, closely for lossy ones).

Who encodes what:

* RLE Lossless, JPEG-LS Lossless and JPEG 2000 Lossless: pydicom 3's ``Dataset.compress`` with the
  installed encoders (pydicom's own RLE encoder, pyjpegls, pylibjpeg-openjpeg).
* JPEG Lossless SV1: no installed package encodes it (pydicom has no encoder, pylibjpeg-libjpeg only
  decodes), so :func:`jpeg_lossless_sv1` below writes the codestream (ITU-T T.81 Annex H, predictor 1)
  and the test encapsulates it; the decoder that reads it back is pylibjpeg-libjpeg.
* JPEG Baseline 8-bit: Pillow encodes the JPEG, the test encapsulates it.
"""

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from boneage.errors import ImageReadError
from boneage.io import read_image
from tests.helpers import make_dicom


def _radiograph_like(shape=(96, 80), bits=12, seed=0) -> np.ndarray:
    """A 12-bit image with a smooth ramp, a bright "bone" and noise (every difference category is used)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = rows * 18 + cols * 9 + rng.integers(0, 300, shape)
    image[30:60, 20:50] += 1500
    image[0, 0], image[-1, -1] = 0, 2**bits - 1
    return np.clip(image, 0, 2**bits - 1).astype(np.uint16)


# ------------------------------------------------------------------- a JPEG Lossless (SV1) encoder
def _huffman_lossless_table() -> tuple[bytes, dict[int, tuple[int, int]]]:
    """A valid Huffman table for the 17 difference categories (SSSS 0..16): every code 5 bits long
    (codes 0..16; the all-ones code is never used). Returns the DHT payload and {SSSS: (code, length)}."""
    counts = [0] * 16
    counts[4] = 17
    payload = bytes([0x00]) + bytes(counts) + bytes(range(17))  # class 0 (DC/lossless), table 0
    return payload, {ssss: (ssss, 5) for ssss in range(17)}


class _BitWriter:
    def __init__(self):
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value: int, length: int) -> None:
        self.acc = (self.acc << length) | (value & ((1 << length) - 1))
        self.n += length
        while self.n >= 8:
            self.n -= 8
            byte = (self.acc >> self.n) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0x00)  # byte stuffing
        self.acc &= (1 << self.n) - 1

    def flush(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with 1-bits
        return bytes(self.out)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def jpeg_lossless_sv1(image: np.ndarray, precision: int) -> bytes:
    """A JPEG Lossless, Non-Hierarchical, First-Order Prediction (process 14, selection value 1)
    codestream of a 2D unsigned ``image`` (T.81 Annex H: first row predicted from the left, first column
    from above, the very first sample from 2**(P-1); differences modulo 2**16)."""
    rows, cols = image.shape
    x = image.astype(np.int64)
    prediction = np.empty_like(x)
    prediction[:, 1:] = x[:, :-1]
    prediction[1:, 0] = x[:-1, 0]
    prediction[0, 0] = 1 << (precision - 1)
    diffs = (x - prediction) % 65536
    diffs[diffs > 32768] -= 65536
    dht, codes = _huffman_lossless_table()
    bits = _BitWriter()
    for diff in diffs.ravel().tolist():
        ssss = 0 if diff == 0 else int(abs(diff)).bit_length()
        bits.put(*codes[ssss])
        if 0 < ssss < 16:
            bits.put(diff if diff > 0 else diff - 1, ssss)
    frame = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    scan = bytes([1, 1, 0x00, 1, 0, 0])  # one component, table 0, Ss = predictor 1, Se = 0, Ah/Al = 0
    return (b"\xff\xd8" + _segment(0xC3, frame) + _segment(0xC4, dht) + _segment(0xDA, scan)
            + bits.flush() + b"\xff\xd9")


def _encapsulated(path, pixels: np.ndarray, syntax, frame: bytes, bits_stored: int):
    """Rewrite the uncompressed DICOM at ``path`` with ``frame`` as its one encapsulated frame."""
    ds = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8 if bits_stored <= 8 else 16), bits_stored, bits_stored - 1
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    if syntax == JPEGBaseline8Bit:
        ds.LossyImageCompression = "01"
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda uid: uid.name)
def test_lossless_syntaxes_compressed_by_pydicom_read_back_exactly(tmp_path, syntax):
    raw = _radiograph_like()
    path = make_dicom(tmp_path / "plain.dcm", raw)
    ds = pydicom.dcmread(path)
    ds.compress(syntax)  # pydicom's encoders: its own RLE, pyjpegls, pylibjpeg-openjpeg
    ds.save_as(tmp_path / "compressed.dcm", enforce_file_format=True)
    assert pydicom.dcmread(tmp_path / "compressed.dcm").file_meta.TransferSyntaxUID == syntax
    image = read_image(tmp_path / "compressed.dcm")
    assert image.pixels.shape == raw.shape and image.meta.format == "dicom"
    np.testing.assert_array_equal(image.pixels, raw)


def test_jpeg_lossless_sv1_reads_back_exactly(tmp_path):
    raw = _radiograph_like()
    codestream = jpeg_lossless_sv1(raw, precision=12)  # written by this test: no installed encoder has it
    path = _encapsulated(make_dicom(tmp_path / "sv1.dcm", raw), raw, JPEGLosslessSV1, codestream, 12)
    image = read_image(path)
    assert image.meta.dtype == "uint16" and image.meta.bits_stored == 12
    np.testing.assert_array_equal(image.pixels, raw)


def test_jpeg_lossless_sv1_encoder_covers_16_bit_differences(tmp_path):
    """The same path with full 16-bit data: the largest jumps (SSSS 15 and 16) decode exactly too."""
    raw = _radiograph_like(shape=(16, 24), bits=16, seed=3)
    raw[5, 3:9] = [0, 65535, 0, 32768, 0, 40000]
    path = make_dicom(tmp_path / "sv1-16.dcm", raw)
    path = _encapsulated(path, raw, JPEGLosslessSV1, jpeg_lossless_sv1(raw, precision=16), 16)
    np.testing.assert_array_equal(read_image(path).pixels, raw)


def test_jpeg_baseline_8bit_reads_back_close(tmp_path):
    raw = (_radiograph_like() >> 4).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(raw).save(buffer, format="JPEG", quality=95)  # Pillow encodes, the test encapsulates
    path = _encapsulated(make_dicom(tmp_path / "jpeg.dcm", raw), raw, JPEGBaseline8Bit, buffer.getvalue(), 8)
    image = read_image(path)
    assert image.pixels.shape == raw.shape
    error = np.abs(image.pixels.astype(np.float64) - raw)
    assert error.mean() < 3 and error.max() < 40, (error.mean(), error.max())


# ------------------------------------------------------------------------------ the decode messages
def _jpeg_ls_file(tmp_path, name="ls.dcm"):
    path = make_dicom(tmp_path / "plain.dcm", _radiograph_like())
    ds = pydicom.dcmread(path)
    ds.compress(JPEGLSLossless)
    ds.save_as(tmp_path / name, enforce_file_format=True)
    return tmp_path / name


def test_missing_decoder_advises_installing_one(tmp_path, monkeypatch):
    """A compressed syntax with no available decoder: the message names what to install."""
    from pydicom.pixels.decoders import JPEGLSLosslessDecoder

    path = _jpeg_ls_file(tmp_path)
    # as pydicom sees an installation without pyjpegls and pylibjpeg-libjpeg
    monkeypatch.setattr(JPEGLSLosslessDecoder, "_available", {})
    monkeypatch.setattr(JPEGLSLosslessDecoder, "_unavailable", {"pyjpegls": ("pyjpegls",),
                                                                "pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1")})
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "no decoder for its transfer syntax JPEG-LS Lossless" in message and "install" in message
    assert "pyjpegls" in message and "pylibjpeg-libjpeg" in message and "\n" not in message
    assert "damaged" not in message


def test_damaged_compressed_data_is_not_blamed_on_a_missing_decoder(tmp_path):
    """A decoder is installed and the codestream is broken off inside its Huffman table: the message says
    the file may be damaged, with the decoder's reason, and gives no install advice. (libjpeg decodes a
    codestream cut inside its scan data without complaint, as garbage; only a broken header is an error.)"""
    raw = _radiograph_like()
    damaged = jpeg_lossless_sv1(raw, precision=12)[:40]
    path = _encapsulated(make_dicom(tmp_path / "bad.dcm", raw), raw, JPEGLosslessSV1, damaged, 12)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "cannot decode DICOM pixel data" in message and "damaged" in message
    assert "install" not in message and "pylibjpeg" not in message


@pytest.mark.filterwarnings("ignore:End of file reached")
def test_truncated_file_is_called_truncated_not_missing_a_decoder(tmp_path):
    data = _jpeg_ls_file(tmp_path).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_image(tmp_path / "cut.dcm")
    assert "install" not in str(info.value)


def test_truncated_uncompressed_file_gives_no_install_advice(tmp_path):
    data = make_dicom(tmp_path / "plain.dcm", _radiograph_like()).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-500])
    with pytest.raises(ImageReadError, match="cannot decode DICOM pixel data") as info:
        read_image(tmp_path / "cut.dcm")
    assert "install" not in str(info.value)


def test_unknown_transfer_syntax_says_no_decoder_exists(tmp_path):
    ds = pydicom.dcmread(_jpeg_ls_file(tmp_path))
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.99.1"  # a private, made-up compression
    ds.save_as(tmp_path / "private.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match="no decoder exists for its transfer syntax") as info:
        read_image(tmp_path / "private.dcm")
    assert "install" not in str(info.value)
