"""Image readers behind one interface: ``read_image(path) -> RadiographImage(pixels, meta)``.

A reader is chosen by the file's content (the DICOM preamble, or what Pillow recognises), not by its
suffix, so a DICOM file named ``.png`` or a PNG without a suffix are read correctly.

* Raster files (PNG, JPEG, TIFF, BMP) go through Pillow. 8- and 16-bit grayscale keep their dtype;
  RGB(A) is returned as ``(H, W, C)`` and converted to grayscale by :mod:`boneage.preprocess`.
* DICOM goes through pydicom: the Modality LUT (rescale slope/intercept) and the VOI LUT (window) are
  applied, MONOCHROME1 is inverted so that bone is always bright, and pixel spacing, patient sex, age,
  birth date, study date and the patient and study identifiers (name, ID, accession number, UIDs,
  study description, institution) are read when present.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from ..errors import ImageReadError, InvalidInputError, NoPixelDataError

__all__ = ["ImageMeta", "RadiographImage", "normalize_sex", "read_file", "read_image", "read_image_bytes",
           "register_reader", "supported_suffixes"]


def normalize_sex(value) -> str:
    """'M'/'F' from user input (M, F, male, female; any case); anything else is an InvalidInputError."""
    text = str(value).strip().lower() if value is not None else ""
    if text in ("m", "male"):
        return "M"
    if text in ("f", "female"):
        return "F"
    raise InvalidInputError(f"sex must be M or F, got {value!r}")


@dataclasses.dataclass
class ImageMeta:
    """What a reader learned about an image besides its pixels."""

    path: str
    format: str  # "png", "jpeg", "tiff", "dicom", ...
    dtype: str  # dtype of the stored pixels, e.g. "uint8", "uint16"
    bits_stored: int | None = None
    photometric: str | None = None  # "MONOCHROME1", "MONOCHROME2", "RGB", "L", ...
    inverted: bool = False  # True when the reader inverted MONOCHROME1 to bone-bright
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) spacing
    sex: str | None = None  # "M" or "F" when the file says so
    age_months: float | None = None  # chronological age from (0010,1010)
    birth_date: str | None = None  # YYYYMMDD
    study_date: str | None = None  # YYYYMMDD
    modality: str | None = None
    body_part: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)
    # patient and study identification (DICOM only; shown on reports)
    patient_name: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    study_description: str | None = None
    institution: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RadiographImage:
    """Pixel array (``(H, W)`` or ``(H, W, C)``) plus its :class:`ImageMeta`; ``dataset`` is the parsed
    DICOM data set of a DICOM file (for callers that copy its patient and study elements), else None."""

    pixels: np.ndarray
    meta: ImageMeta
    dataset: object | None = dataclasses.field(default=None, repr=False, compare=False)


ReaderFn = Callable[[BinaryIO, str], RadiographImage]  # (stream, name used in messages and meta.path)
_READERS: dict[str, tuple[Callable[[Path, bytes], bool], ReaderFn]] = {}
_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def register_reader(name: str, sniff: Callable[[Path, bytes], bool], reader: ReaderFn) -> None:
    """Register a reader; ``sniff(path, head_bytes)`` says whether it can read the file."""
    _READERS[name] = (sniff, reader)


def supported_suffixes() -> tuple[str, ...]:
    """Suffixes picked up when a folder is given instead of files."""
    return _RASTER_SUFFIXES + (".dcm", ".dicom")


def read_file(path: str | Path, name: str | None = None) -> bytes:
    """The bytes of an image file; a missing file, a folder or an unreadable file is an
    :class:`ImageReadError` naming it as ``name`` (default: the path)."""
    path = Path(path)
    name = name or str(path)
    if not path.exists():
        raise ImageReadError(f"{name}: file not found")
    if path.is_dir():
        raise ImageReadError(f"{name}: is a folder, not an image file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"{name}: cannot be read ({err.strerror or err})") from None


def read_image(path: str | Path) -> RadiographImage:
    """Read one radiograph; raises :class:`ImageReadError` with a one-line reason on any failure."""
    return read_image_bytes(read_file(path), str(path))


def read_image_bytes(data: bytes, name: str = "image") -> RadiographImage:
    """Read one radiograph from the bytes of its file (an upload, a received DICOM data set); ``name``
    (a file name or path: its suffix helps to recognise a DICOM file without preamble) names it in
    messages and in ``meta.path``. Raises :class:`ImageReadError` with a one-line reason on any failure."""
    if not data:
        raise ImageReadError(f"{name}: file is empty")
    head = bytes(data[:2048])
    for reader_name, (sniff, reader) in _READERS.items():
        if sniff(Path(name), head):
            try:
                image = reader(io.BytesIO(data), name)
            except ImageReadError:
                raise
            except Exception as err:  # decoder errors come in many types; the user needs one line
                raise ImageReadError(f"{name}: cannot decode as {reader_name} ({type(err).__name__}: {_brief(err)})") from None
            _check_pixels(name, image.pixels)
            return image
    raise ImageReadError(
        f"{name}: not a supported image (expected PNG, JPEG, TIFF, BMP or DICOM)"
    )


def _check_pixels(path: str, pixels: np.ndarray) -> None:
    if pixels.ndim not in (2, 3) or pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ImageReadError(f"{path}: image has an unusable shape {tuple(pixels.shape)}")
    if pixels.ndim == 3 and pixels.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(
            f"{path}: image has {pixels.shape[2]} channels; expected grayscale or RGB(A)"
        )


# --------------------------------------------------------------------------------------------- raster
def _is_raster(path: Path, head: bytes) -> bool:
    return (
        head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith(b"\xff\xd8\xff")
        or head[:4] in (b"II*\x00", b"MM\x00*")
        or head.startswith(b"BM")
    )


def _read_raster(stream: BinaryIO, path: str) -> RadiographImage:
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(stream)
            img.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageReadError(
                f"{path}: image is too large to be a radiograph ({Image.MAX_IMAGE_PIXELS // 1_000_000}+ megapixels)"
            ) from None
    with img:
        fmt = (img.format or Path(path).suffix.lstrip(".")).lower()
        mode = img.mode
        if mode in ("I;16", "I;16B", "I;16L"):
            pixels = np.array(img, dtype=np.uint16)
            bits = 16
        elif mode == "I":
            pixels = np.array(img, dtype=np.int32)
            # 16-bit PNGs are often opened in mode "I"; keep them unsigned 16-bit when they fit.
            if pixels.size and pixels.min() >= 0 and pixels.max() <= 65535:
                pixels = pixels.astype(np.uint16)
            bits = 16 if pixels.dtype == np.uint16 else 32
        elif mode == "F":
            pixels = np.array(img, dtype=np.float32)
            bits = 32
        elif mode in ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "CMYK", "YCbCr"):
            if mode == "1":
                img = img.convert("L")
            elif mode in ("P", "PA"):
                img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
            elif mode in ("CMYK", "YCbCr"):
                img = img.convert("RGB")
            pixels = np.array(img)
            bits = 8
        else:
            pixels = np.array(img.convert("L"))
            bits = 8
    fmt = {"jpg": "jpeg", "tif": "tiff"}.get(fmt, fmt)
    meta = ImageMeta(path=str(path), format=fmt, dtype=str(pixels.dtype), bits_stored=bits, photometric=mode)
    return RadiographImage(pixels=pixels, meta=meta)


# ---------------------------------------------------------------------------------------------- DICOM
def _is_dicom(path: Path, head: bytes) -> bool:
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    # Files without the 128-byte preamble ("raw" DICOM) are accepted by suffix only.
    return path.suffix.lower() in (".dcm", ".dicom") and not _is_raster(path, head)


_AGE_RE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_AGE_UNIT_MONTHS = {"D": 12.0 / 365.25, "W": 12.0 * 7 / 365.25, "M": 1.0, "Y": 12.0}


def parse_dicom_age(value: str | None) -> float | None:
    """Patient's Age (AS value representation, e.g. ``'009Y'``, ``'006M'``) in months, or None."""
    if not value:
        return None
    match = _AGE_RE.match(str(value))
    if not match:
        return None
    return round(int(match.group(1)) * _AGE_UNIT_MONTHS[match.group(2).upper()], 3)


def _text(ds, keyword: str) -> str | None:
    """A DICOM element as stripped text, or None when absent, empty or undecodable."""
    try:
        value = ds.get(keyword)
        text = str(value).strip() if value is not None else ""
    except Exception:  # a malformed element must not stop the image from being read
        return None
    return text or None


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) in little endian


def _brief(err: Exception, limit: int = 160) -> str:
    """A decoder's error as one short line: its first line, cut at ``limit`` characters (pydicom quotes raw bytes)."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_dicom(stream: BinaryIO, path: str) -> RadiographImage:
    import pydicom

    try:
        ds = pydicom.dcmread(stream, force=True)
    except Exception as err:
        raise ImageReadError(f"{path}: not a readable DICOM file ({_brief(err)})") from None
    if "PixelData" not in ds:
        whole = stream.getvalue() if hasattr(stream, "getvalue") else b""
        if _PIXEL_DATA_TAG in whole[132:]:  # the element starts, and the file ends inside it
            raise ImageReadError(f"{path}: DICOM file is truncated: it ends inside its pixel data")
        raise NoPixelDataError(f"{path}: DICOM file has no pixel data (is it an image?)")
    raw = _first_frame(ds, path)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    pixels, inverted = _presentation_values(raw, ds, photometric)
    return RadiographImage(pixels=np.asarray(pixels), meta=_dicom_meta(ds, path, raw, photometric, inverted), dataset=ds)


def _first_frame(ds, path: str) -> np.ndarray:
    """The stored pixels of the first frame (only that one is decoded); pydicom converts YBR colour to RGB."""
    try:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            from pydicom.pixels import pixel_array

            return pixel_array(ds, index=0)
        return ds.pixel_array
    except Exception as err:
        raise ImageReadError(_decode_failure(ds, path, err)) from None


def _decode_failure(ds, path: str, err: Exception) -> str:
    """Why the pixel data could not be decoded, in one line: advice to install a decoder only when no
    decoder of its (compressed) transfer syntax is available; else what the decoder said (a truncated or
    corrupt file, pixel data that does not match its description)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", None) or str(syntax or "unknown")
    missing = _missing_decoder(syntax)
    if missing == "":
        return (f"{path}: cannot decode DICOM pixel data: no decoder exists for its transfer syntax {name}; "
                "have the image sent uncompressed or in a standard transfer syntax")
    if missing is not None:
        return (f"{path}: cannot decode DICOM pixel data: no decoder for its transfer syntax {name} is installed; "
                f"install {missing}, or have the image sent uncompressed")
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{path}: cannot decode DICOM pixel data (transfer syntax {name}; the file may be damaged): {detail}"


def _missing_decoder(syntax) -> str | None:
    """What to install to decode ``syntax`` when it is compressed and no decoder of it is available; ``''``
    when no decoder of it exists at all; None when a decoder is there or the syntax is not compressed
    (then the data itself is at fault)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    if not syntax:
        return None
    try:
        if not UID(str(syntax)).is_compressed:
            return None
        decoder = get_decoder(syntax)
    except (ValueError, NotImplementedError):  # not a transfer syntax pydicom knows, or one it cannot decode
        return ""
    if decoder.is_available:
        return None
    needs = decoder.missing_dependencies  # e.g. 'pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1'
    return f"one of ({'; '.join(needs)})" if needs else "pylibjpeg with its plugins"


def _presentation_values(raw: np.ndarray, ds, photometric: str) -> tuple[np.ndarray, bool]:
    """``(pixels, inverted)``: grayscale through the Modality LUT and the VOI LUT (window), MONOCHROME1
    inverted so that bone is bright; palette colour through its LUT; other colour as stored."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return apply_color_lut(raw, ds), False
    if not photometric.startswith("MONOCHROME"):
        return raw, False
    pixels = apply_modality_lut(raw, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        try:
            pixels = apply_voi_lut(pixels, ds, prefer_lut=True)
        except Exception:  # an unusable window (e.g. width 0): keep the modality values
            pass
    pixels = np.asarray(pixels, dtype=np.float32)
    if photometric == "MONOCHROME1":
        return pixels.max() + pixels.min() - pixels, True
    return pixels, False


def _pixel_spacing(ds) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            try:
                return float(value[0]), float(value[1])
            except (TypeError, ValueError):
                pass
    return None


def _dicom_meta(ds, path: str, raw: np.ndarray, photometric: str, inverted: bool) -> ImageMeta:
    sex = str(ds.get("PatientSex", "") or "").strip().upper() or None
    return ImageMeta(
        path=str(path),
        format="dicom",
        dtype=str(raw.dtype),
        bits_stored=int(ds.get("BitsStored", 0) or 0) or None,
        photometric=photometric,
        inverted=inverted,
        pixel_spacing_mm=_pixel_spacing(ds),
        sex=sex if sex in ("M", "F") else None,
        age_months=parse_dicom_age(ds.get("PatientAge")),
        birth_date=str(ds.get("PatientBirthDate", "") or "") or None,
        study_date=str(ds.get("StudyDate", "") or "") or None,
        modality=str(ds.get("Modality", "") or "") or None,
        body_part=str(ds.get("BodyPartExamined", "") or "") or None,
        patient_name=_text(ds, "PatientName"),
        patient_id=_text(ds, "PatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        study_description=_text(ds, "StudyDescription"),
        institution=_text(ds, "InstitutionName"),
    )


register_reader("dicom", _is_dicom, _read_dicom)
register_reader("raster", _is_raster, _read_raster)
