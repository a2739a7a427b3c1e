"""Checkpoints and exported models.

Two forms, both rebuilt by :func:`load_model` without any constant copied into inference code:

* **Training checkpoint** (``best.pt``/``last.pt``): a versioned dict saved with ``torch.save`` and read
  with ``weights_only=True``: ``{'format': 'boneage-checkpoint', 'format_version', 'config',
  'state_dict', 'ema_state_dict', 'optimizer', 'scheduler', 'epoch', 'best_metric', 'history', 'rng'}``.
  Written atomically (temporary file + rename), so a killed run never leaves a torn file.
* **Exported model**: a ``boneage-model`` artefact (:mod:`boneage.artifacts`): ``model.safetensors`` +
  ``config.json`` holding the architecture (registry name + kwargs), the preprocessing, the label
  range, the training data and recipe, and the validation metrics. The default model shipped in the
  package is one of these.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..artifacts import (
    MODEL_FORMAT,
    ArtifactConfig,
    default_artifact_path,
    read_artifact,
    write_artifact,
    write_artifact_config,
)
from ..errors import ModelLoadError
from ..preprocess import PreprocessConfig
from ..utils import atomic_write
from ._registry import create_model
from .base import BoneAgeModel

__all__ = [
    "CHECKPOINT_FORMAT",
    "LoadedModel",
    "default_model_path",
    "export_model",
    "load_checkpoint",
    "load_model",
    "SHIPPED_MODELS",
    "shipped_model_path",
    "save_checkpoint",
    "write_model_config",
]

CHECKPOINT_FORMAT = "boneage-checkpoint"
CHECKPOINT_VERSION = 1


@dataclasses.dataclass
class LoadedModel:
    """A model ready for inference (eval mode, CPU, float32) with its config and where it came from."""

    model: BoneAgeModel
    config: dict  # the full JSON config (architecture, preprocess, labels, training, metrics)
    source: str

    @property
    def typed_config(self) -> ArtifactConfig:
        return ArtifactConfig.from_json(self.config, self.source)

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.config["preprocess"])

    @property
    def tta(self) -> str | None:
        """Test-time augmentation the model was validated with (``inference.tta`` in its config)."""
        return self.config.get("inference", {}).get("tta")

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.config["model"]["name"])

    @property
    def version(self) -> str:
        return str(self.config.get("version", "unversioned"))

    @property
    def validation_mae(self) -> float | None:
        return ((self.config.get("metrics") or {}).get("validation") or {}).get("mae_months")


def save_checkpoint(path: str | Path, checkpoint: dict) -> None:
    """Atomically write a training checkpoint dict (adds the format keys)."""
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **checkpoint}
    atomic_write(path, lambda stream: torch.save(payload, stream))


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint safely (``weights_only=True``); clear error if it is not one."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"{path}: not a boneage model (could not be read as a safe PyTorch checkpoint: {reason[:120]})"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ModelLoadError(f"{path}: not a boneage model (no boneage checkpoint header); train one with 'boneage train'")
    if int(checkpoint.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise ModelLoadError(
            f"{path}: checkpoint format {checkpoint.get('format_version')} is newer than this boneage "
            f"understands ({CHECKPOINT_VERSION}); upgrade boneage"
        )
    return checkpoint


def export_model(out_dir: str | Path, model: torch.nn.Module, config: dict, *, dtype: torch.dtype = torch.float32) -> Path:
    """Write the model as a ``boneage-model`` artefact; floating tensors cast to ``dtype``."""
    return write_artifact(out_dir, model.state_dict(), config, format=MODEL_FORMAT, dtype=dtype)


def write_model_config(out_dir: str | Path, config: dict) -> None:
    """Replace the ``config.json`` of an exported model (e.g. to add metrics) without rewriting its weights."""
    write_artifact_config(out_dir, config)


def default_model_path() -> Path:
    """The folder of the model shipped inside the package."""
    return default_artifact_path(MODEL_FORMAT)


# Models shipped in the package, selectable by name (``--model rus-chn``): name -> folder under boneage/weights.
SHIPPED_MODELS = {"default": "default", "rus-chn": "rus-chn", "localize": "localize", "robust": "robust"}


def shipped_model_path(name: str) -> Path:
    """The folder of the shipped model called ``name`` (see :data:`SHIPPED_MODELS`)."""
    return default_model_path().parent / SHIPPED_MODELS[name]


def _build(config: dict, state_dict: dict, source: str) -> LoadedModel:
    spec = config.get("model")
    if not isinstance(spec, dict) or "name" not in spec:
        raise ModelLoadError(f"{source}: not a boneage model (its config has no model architecture)")
    try:
        model = create_model(spec["name"], **spec.get("kwargs", {}))
    except Exception as err:
        raise ModelLoadError(f"{source}: cannot rebuild model {spec.get('name')!r}: {err}") from None
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelLoadError(f"{source}: weights do not match the {spec['name']!r} architecture ({first[:160]})") from None
    if "preprocess" not in config:
        raise ModelLoadError(f"{source}: model config has no preprocessing section")
    model.eval()
    return LoadedModel(model=model, config=config, source=source)


def load_model(spec: str | Path | None = None) -> LoadedModel:
    """Load a model from ``None``/``'default'`` (the shipped one), the name of another shipped model
    (:data:`SHIPPED_MODELS`, e.g. ``'rus-chn'``, unless a path of that name exists), an exported folder, a
    ``.safetensors`` file with ``config.json`` beside it, a training checkpoint (``.pt``) or an ONNX file written by
    ``boneage export --format onnx`` (run by onnxruntime: bone ages only)."""
    if spec is not None and str(spec) in SHIPPED_MODELS and str(spec) != "default" and not Path(spec).exists():
        spec = shipped_model_path(str(spec))
        if not spec.exists():
            raise ModelLoadError(f"the shipped model {spec.name!r} is not in this installation ({spec})")
    if spec is not None and str(spec) != "default":
        path = Path(spec)
        if not path.exists():
            raise ModelLoadError(f"{path}: model file not found")
        if path.is_file() and path.suffix == ".onnx":
            from .onnx_model import load_onnx

            model, config = load_onnx(path)
            return LoadedModel(model=model, config=config, source=str(path))
        if path.is_file() and path.suffix != ".safetensors":
            checkpoint = load_checkpoint(path)
            state = checkpoint.get("ema_state_dict") or checkpoint.get("state_dict")
            if not isinstance(state, dict):
                raise ModelLoadError(f"{path}: checkpoint holds no weights")
            return _build(checkpoint.get("config", {}), state, str(path))
    artifact = read_artifact(spec, MODEL_FORMAT)
    return _build(artifact.config.data, artifact.state_dict, artifact.source)
