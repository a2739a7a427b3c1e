"""Labelled radiograph collections: the RSNA layout and a generic CSV manifest.

Both produce a list of :class:`Sample`. ``load_images`` decodes and preprocesses them once into a
compact uint8 array at the model's input size, which training then reads from memory: on a CPU this
is far faster than decoding PNGs every epoch, and 12k images at 128 px take under 200 MB.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import BoneAgeError, DatasetError, InvalidInputError
from ..io import read_image
from ..preprocess import PreprocessConfig, build_preprocessing
from ..utils import atomic_write

__all__ = ["Sample", "load_rsna", "load_manifest", "load_images", "parse_sex", "samples_summary"]


@dataclasses.dataclass
class Sample:
    id: str
    path: str
    bone_age_months: float
    sex: str  # "M" or "F"
    chronological_age_months: float | None = None

    @property
    def male(self) -> float:
        return 1.0 if self.sex == "M" else 0.0


_SEX_VALUES = {
    "m": "M", "male": "M", "true": "M", "1": "M", "1.0": "M", "t": "M", "yes": "M",
    "f": "F", "female": "F", "false": "F", "0": "F", "0.0": "F", "no": "F",
}


def parse_sex(value, *, field: str = "sex", from_male_column: bool = False) -> str:
    """``'M'``/``'F'`` from M/F, male/female, or (for RSNA's ``male`` column) True/False, 1/0."""
    text = str(value).strip().lower()
    if not from_male_column and text in ("true", "false", "1", "0", "1.0", "0.0", "t", "yes", "no"):
        raise InvalidInputError(f"{field} must be M or F, got {value!r}")
    sex = _SEX_VALUES.get(text)
    if sex is None:
        expected = "True/False or 1/0" if from_male_column else "M or F"
        raise InvalidInputError(f"{field} must be {expected}, got {value!r}")
    return sex


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    if not path.exists():
        raise DatasetError(f"{path}: label file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = [c.strip() for c in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{path}: cannot be read as CSV ({err})") from None
    rows = [{(k or "").strip(): v for k, v in row.items()} for row in rows]
    return columns, rows


def _find_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def _require_columns(csv_path, columns: list[str], found: dict, expected: str) -> None:
    """A DatasetError naming the required columns (``{name: column found or None}``) that are missing."""
    missing = [name for name, column in found.items() if column is None]
    if missing:
        raise DatasetError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected {expected} "
                           f"(found: {', '.join(columns) or 'no header'})")


def _float(value, field: str, where: str) -> float:
    try:
        result = float(str(value).strip())
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {field} is not a number ({value!r})") from None
    if not np.isfinite(result):
        raise DatasetError(f"{where}: {field} is not a finite number ({value!r})")
    return result


def load_rsna(images_dir: str | Path, labels_csv: str | Path, *, require_images: bool = False) -> list[Sample]:
    """Samples from the RSNA layout: ``labels_csv`` with ``id,boneage,male`` and ``<id>.png`` in ``images_dir``.

    Extra columns are ignored; ``boneage`` may be fractional; ``male`` is True/False or 1/0. The RSNA
    test-set headers (``Case ID``, ``Sex`` M/F, ``Ground truth bone age (months)``) are accepted too.
    """
    images_dir, labels_csv = Path(images_dir), Path(labels_csv)
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: image folder not found")
    columns, rows = _read_csv(labels_csv)
    id_col = _find_column(columns, ("id", "case id", "case_id", "image_id"))
    age_col = _find_column(columns, ("boneage", "bone_age", "bone_age_months", "ground truth bone age (months)"))
    male_col = _find_column(columns, ("male",))
    sex_col = None if male_col else _find_column(columns, ("sex", "gender"))
    _require_columns(labels_csv, columns, {"id": id_col, "boneage": age_col, "male": male_col or sex_col},
                     "RSNA layout id,boneage,male")
    samples = []
    for line, row in enumerate(rows, start=2):
        where = f"{labels_csv}:{line}"
        sample_id = str(row[id_col]).strip()
        if not sample_id:
            raise DatasetError(f"{where}: empty id")
        try:
            sex = parse_sex(row[male_col], field="male", from_male_column=True) if male_col else parse_sex(row[sex_col])
        except InvalidInputError as err:
            raise DatasetError(f"{where}: {err}") from None
        path = _image_path(images_dir, sample_id)
        if require_images and not Path(path).exists():
            raise DatasetError(f"{where}: image {path} not found")
        samples.append(Sample(sample_id, path, _float(row[age_col], "boneage", where), sex))
    if not samples:
        raise DatasetError(f"{labels_csv}: no rows")
    _check_unique_ids(samples, labels_csv)
    return samples


def _check_unique_ids(samples: list[Sample], source) -> None:
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            raise DatasetError(f"{source}: id {sample.id} appears more than once")
        seen.add(sample.id)


def _image_path(images_dir: Path, sample_id: str) -> str:
    png = images_dir / f"{sample_id}.png"
    if png.exists():
        return str(png)
    for suffix in (".jpg", ".jpeg", ".dcm", ".tif", ".tiff"):
        candidate = images_dir / f"{sample_id}{suffix}"
        if candidate.exists():
            return str(candidate)
    return str(png)


def load_manifest(manifest_csv: str | Path) -> list[Sample]:
    """Samples from a generic CSV: ``path, bone_age_months, sex[, chronological_age_months][, id]``.

    Relative paths are resolved against the CSV's folder; ``sex`` is M/F (RSNA's ``male`` also works).
    """
    manifest_csv = Path(manifest_csv)
    columns, rows = _read_csv(manifest_csv)
    path_col = _find_column(columns, ("path", "file", "image"))
    age_col = _find_column(columns, ("bone_age_months", "boneage", "bone_age"))
    sex_col = _find_column(columns, ("sex",))
    male_col = None if sex_col else _find_column(columns, ("male",))
    chrono_col = _find_column(columns, ("chronological_age_months", "age_months"))
    id_col = _find_column(columns, ("id",))
    _require_columns(manifest_csv, columns, {"path": path_col, "bone_age_months": age_col, "sex": sex_col or male_col},
                     "path,bone_age_months,sex[,chronological_age_months]")
    samples = []
    for line, row in enumerate(rows, start=2):
        where = f"{manifest_csv}:{line}"
        path = Path(str(row[path_col]).strip())
        if not path.is_absolute():
            path = manifest_csv.parent / path
        try:
            sex = parse_sex(row[sex_col]) if sex_col else parse_sex(row[male_col], from_male_column=True)
        except InvalidInputError as err:
            raise DatasetError(f"{where}: {err}") from None
        chrono = row.get(chrono_col) if chrono_col else None
        samples.append(
            Sample(
                id=str(row[id_col]).strip() if id_col else path.stem,
                path=str(path),
                bone_age_months=_float(row[age_col], "bone_age_months", where),
                sex=sex,
                chronological_age_months=_float(chrono, "chronological_age_months", where) if chrono not in (None, "") else None,
            )
        )
    if not samples:
        raise DatasetError(f"{manifest_csv}: no rows")
    _check_unique_ids(samples, manifest_csv)
    return samples


def samples_summary(samples: list[Sample]) -> dict:
    ages = np.array([s.bone_age_months for s in samples], dtype=np.float64)
    return {
        "n": len(samples),
        "male_fraction": float(np.mean([s.sex == "M" for s in samples])),
        "bone_age_months_mean": float(ages.mean()),
        "bone_age_months_min": float(ages.min()),
        "bone_age_months_max": float(ages.max()),
    }


def _cache_key(samples: list[Sample], config: PreprocessConfig) -> str:
    # inference_size does not change the images decoded at image_size (and older caches hold no such key)
    settings = {key: value for key, value in config.to_dict().items() if key != "inference_size"}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for s in samples:
        try:
            stat = os.stat(s.path)
            digest.update(f"{s.path}|{stat.st_size}|{int(stat.st_mtime)}\n".encode())
        except OSError:
            digest.update(f"{s.path}|missing\n".encode())
    return digest.hexdigest()[:20]


def load_images(
    samples: list[Sample],
    config: PreprocessConfig,
    *,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = False,
    pipeline=None,
) -> np.ndarray:
    """Decode and preprocess every sample into a ``(N, H, W)`` uint8 array (0-255 = [0, 1]).

    ``pipeline`` is the model's composed preprocessing (``pipeline(pixels, source) -> Prepared``;
    default: :func:`~boneage.preprocess.build_preprocessing` of ``config``, which a config with hand
    clean-up refuses: pass :func:`boneage.segmentation.model_preprocessing` of it); an image where it
    finds no hand is an error naming the sample, as an unreadable one is.

    With ``cache_dir`` the array is stored as ``.npy`` keyed by the files and the config, so a second
    run with the same data starts at once. An unreadable image raises :class:`DatasetError` naming it.
    """
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images-{_cache_key(samples, config)}.npy"
        if cache_file.exists():
            return np.load(cache_file)

    pipeline = pipeline or build_preprocessing(config)

    def one(sample: Sample) -> np.ndarray:
        try:
            return pipeline(read_image(sample.path).pixels, sample.path).to_uint8()
        except BoneAgeError as err:
            raise DatasetError(f"sample {sample.id}: {err}") from None

    out = np.empty((len(samples), *config.image_size), dtype=np.uint8)
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        results = pool.map(one, samples, chunksize=64)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(samples), desc="loading images", unit="img", leave=False)
        for i, image in enumerate(results):
            out[i] = image
    finally:  # on the first bad image, do not decode the thousands still queued
        pool.shutdown(wait=True, cancel_futures=True)
    if cache_file is not None:
        atomic_write(cache_file, lambda stream: np.save(stream, out), fsync=False)
    return out
