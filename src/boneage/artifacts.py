"""The artefact formats, read and written in one place: a folder with ``model.safetensors`` (the
weights; safetensors holds tensors only, which is the weights-only guarantee) and ``config.json``.

* ``boneage-model``: a bone age model (:func:`boneage.models.load_model` rebuilds it from the registry);
* ``boneage-segmenter``: the hand segmenter (:func:`boneage.segmentation.load_segmenter`);
* ``boneage-recogniser``: the hand-radiograph recogniser (:func:`boneage.segmentation.load_recogniser`).

Both configs share a typed head (:class:`ArtifactConfig`: format, format version, name, version and the
preprocessing the weights were trained with); the rest of the JSON (architecture, training recipe,
metrics) is kept as it is in ``ArtifactConfig.data``. ``split.json`` beside them records the
train/validation split. Every file is written atomically, so a killed export never leaves a torn one.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

from .errors import ModelLoadError
from .preprocess import PreprocessConfig
from .utils import atomic_write

__all__ = [
    "CONFIG_FILE",
    "MODEL_FORMAT",
    "RECOGNISER_FORMAT",
    "SEGMENTER_FORMAT",
    "SPLIT_FILE",
    "WEIGHTS_FILE",
    "Artifact",
    "ArtifactConfig",
    "default_artifact_path",
    "read_artifact",
    "write_artifact",
    "write_artifact_config",
]

MODEL_FORMAT = "boneage-model"
SEGMENTER_FORMAT = "boneage-segmenter"
RECOGNISER_FORMAT = "boneage-recogniser"
FORMAT_VERSIONS = {MODEL_FORMAT: 1, SEGMENTER_FORMAT: 1, RECOGNISER_FORMAT: 1}
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
_WHAT = {MODEL_FORMAT: "model", SEGMENTER_FORMAT: "segmenter", RECOGNISER_FORMAT: "hand recogniser"}
_DEFAULT_FOLDER = {MODEL_FORMAT: "default", SEGMENTER_FORMAT: "segmenter", RECOGNISER_FORMAT: "recogniser"}
_HINTS = {  # (wanted, found): what to say when a path holds the other kind of artefact
    (SEGMENTER_FORMAT, MODEL_FORMAT): " (it is a bone age model; pass it as --model)",
    (MODEL_FORMAT, SEGMENTER_FORMAT): " (it is a hand segmenter; pass it as --segmenter)",
}
_MISSING_DEFAULT = {
    MODEL_FORMAT: "no default model is installed in this boneage package; pass --model PATH to a trained model",
    SEGMENTER_FORMAT: "no hand segmenter is installed in this boneage package ({path}); pass --segmenter PATH "
                      "or train one with 'boneage train-segmenter' and copy its model folder there",
    RECOGNISER_FORMAT: "no hand recogniser is installed in this boneage package ({path}); train one with "
                       "'boneage train-recogniser' and copy its model folder there",
}


@dataclasses.dataclass
class ArtifactConfig:
    """The typed head of an artefact's ``config.json``; ``data`` is the whole JSON object."""

    format: str
    format_version: int
    name: str
    version: str
    preprocess: PreprocessConfig | None
    data: dict

    @classmethod
    def from_json(cls, data: dict, source: str = "config") -> ArtifactConfig:
        try:
            preprocess = PreprocessConfig.from_dict(data["preprocess"]) if "preprocess" in data else None
        except Exception as err:  # noqa: BLE001 - a bad value in a hand-edited config
            raise ModelLoadError(f"{source}: unusable preprocessing section ({err})") from None
        name = data.get("name") or (data.get("model") or {}).get("name") or "unnamed"
        return cls(format=str(data.get("format")), format_version=int(data.get("format_version", 0) or 0),
                   name=str(name), version=str(data.get("version", "unversioned")), preprocess=preprocess, data=data)

    @property
    def metrics(self) -> dict:
        return self.data.get("metrics") or {}

    @property
    def validation_mae(self) -> float | None:
        return (self.metrics.get("validation") or {}).get("mae_months")


@dataclasses.dataclass
class Artifact:
    """A read artefact: its typed config, its weights (CPU tensors as stored) and where it came from."""

    config: ArtifactConfig
    state_dict: dict
    source: str
    folder: Path


def default_artifact_path(format: str) -> Path:
    """The folder of the artefact of this format shipped inside the package (``boneage/weights/...``)."""
    return Path(str(resources.files("boneage") / "weights" / _DEFAULT_FOLDER[format]))


def write_artifact(folder: str | Path, state_dict: dict, config: dict, *, format: str, dtype=None,
                   split: dict | None = None) -> Path:
    """Write ``model.safetensors`` (floating tensors cast to ``dtype``, default float32) and
    ``config.json`` (``config`` with the format keys and ``weights_dtype``), and ``split.json`` when given."""
    import torch
    from safetensors.torch import save

    dtype = dtype or torch.float32
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
             for k, v in state_dict.items()}
    folder = Path(folder)
    atomic_write(folder / WEIGHTS_FILE, save(state, metadata={"format": format}))
    _write_config(folder, config, format, str(dtype).replace("torch.", ""))
    if split is not None:
        atomic_write(folder / SPLIT_FILE, json.dumps(split, indent=1))
    return folder


def write_artifact_config(folder: str | Path, config: dict) -> None:
    """Replace the ``config.json`` of a written artefact (e.g. to add metrics), keeping its weights."""
    folder = Path(folder)
    current = json.loads((folder / CONFIG_FILE).read_text())
    _write_config(folder, config, current["format"], current.get("weights_dtype", "float32"))


def _write_config(folder: Path, config: dict, format: str, weights_dtype: str) -> None:
    full = {"format": format, "format_version": FORMAT_VERSIONS[format], **config, "weights_dtype": weights_dtype}
    atomic_write(folder / CONFIG_FILE, json.dumps(full, indent=2))


def _locate(spec, format: str) -> tuple[Path, Path, Path]:
    """``(path, weights file, config file)`` of an artefact spec (None/'default', a folder, its .safetensors)."""
    what = _WHAT[format]
    if spec is None or str(spec) == "default":
        path = default_artifact_path(format)
        if not (path / WEIGHTS_FILE).exists() or not (path / CONFIG_FILE).exists():
            raise ModelLoadError(_MISSING_DEFAULT[format].format(path=path))
    else:
        path = Path(spec)
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found" if format == MODEL_FORMAT else f"{path}: {what} not found")
    folder = path if path.is_dir() else path.parent
    weights = path if path.suffix == ".safetensors" else folder / WEIGHTS_FILE
    config_file = folder / CONFIG_FILE
    if not weights.exists() or not config_file.exists():
        raise ModelLoadError(f"{path}: not a boneage {what} folder (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
    return path, weights, config_file


def read_artifact_config(config_file: Path, format: str) -> ArtifactConfig:
    """The config of an artefact of ``format``; a config of another kind or a newer version is refused."""
    what = _WHAT[format]
    try:
        data = json.loads(Path(config_file).read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{config_file}: unreadable {what} config ({type(err).__name__})") from None
    found = data.get("format") if isinstance(data, dict) else None
    if found != format:
        raise ModelLoadError(f"{config_file}: not a boneage {what} config{_HINTS.get((format, found), '')}")
    config = ArtifactConfig.from_json(data, str(config_file))
    if config.format_version > FORMAT_VERSIONS[format]:
        raise ModelLoadError(f"{config_file}: {what} format {config.format_version} is newer than this boneage "
                             f"understands ({FORMAT_VERSIONS[format]}); upgrade boneage")
    return config


def read_artifact(spec, format: str) -> Artifact:
    """Read an artefact from ``None``/``'default'`` (the one shipped), a folder, or its ``model.safetensors``
    with ``config.json`` beside it. Every problem is a one-line :class:`ModelLoadError`."""
    path, weights, config_file = _locate(spec, format)
    config = read_artifact_config(config_file, format)
    try:
        from safetensors.torch import load_file

        state = load_file(str(weights))
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file
        raise ModelLoadError(f"{weights}: unreadable weights ({type(err).__name__})") from None
    return Artifact(config=config, state_dict=state, source=str(path), folder=weights.parent)
