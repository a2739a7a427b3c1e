"""Checkpoints and model artefacts.

Two forms, both rebuilt by :func:`load_model` without any constant copied into inference code:

* **Training checkpoint** (``best.pt``/``last.pt``): a versioned dict saved with ``torch.save`` and read
  with ``weights_only=True``: ``{'format': 'boneage-checkpoint', 'format_version', 'config',
  'state_dict', 'ema_state_dict', 'optimizer', 'scheduler', 'epoch', 'best_metric', 'history', 'rng'}``.
  Written atomically (temporary file + rename), so a killed run never leaves a torn file.
* **Exported model** (a folder): ``model.safetensors`` + ``config.json`` holding the architecture
  (registry name + kwargs), the preprocessing, the label range, the training data and recipe, and
  the validation metrics. The default model shipped in the package is one of these.
"""

from __future__ import annotations

import dataclasses
import json
import os
from importlib import resources
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ModelLoadError
from ..preprocess import PreprocessConfig
from ._registry import create_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "LoadedModel",
    "default_model_path",
    "export_model",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "write_model_config",
]

CHECKPOINT_FORMAT = "boneage-checkpoint"
MODEL_FORMAT = "boneage-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclasses.dataclass
class LoadedModel:
    model: nn.Module  # in eval mode, on the CPU, float32
    config: dict  # the full JSON config (architecture, preprocess, labels, training, metrics)
    source: str  # where it was loaded from

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


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: str | Path, checkpoint: dict) -> None:
    """Atomically write a training checkpoint dict (adds the format keys)."""
    payload = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **checkpoint}
    _atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


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
    if int(checkpoint.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelLoadError(
            f"{path}: checkpoint format {checkpoint.get('format_version')} is newer than this boneage "
            f"understands ({FORMAT_VERSION}); upgrade boneage"
        )
    return checkpoint


def export_model(out_dir: str | Path, model: nn.Module, config: dict, *, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir``; floating tensors cast to ``dtype``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    state = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    _atomic_write(out_dir / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": MODEL_FORMAT}))
    _write_config(out_dir, config, str(dtype).replace("torch.", ""))
    return out_dir


def write_model_config(out_dir: str | Path, config: dict) -> None:
    """Replace the ``config.json`` of an exported model (e.g. to add metrics) without rewriting its weights."""
    current = json.loads((Path(out_dir) / CONFIG_FILE).read_text())
    _write_config(Path(out_dir), config, current["weights_dtype"])


def _write_config(out_dir: Path, config: dict, weights_dtype: str) -> None:
    full_config = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, **config, "weights_dtype": weights_dtype}
    _atomic_write(out_dir / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(full_config, indent=2)))


def default_model_path() -> Path:
    """The folder of the model shipped inside the package."""
    return Path(str(resources.files("boneage") / "weights" / "default"))


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
    """Load a model from ``None``/``'default'`` (the shipped one), an exported folder, a
    ``.safetensors`` file with ``config.json`` beside it, or a training checkpoint (``.pt``)."""
    if spec is None or str(spec) == "default":
        path = default_model_path()
        if not (path / WEIGHTS_FILE).exists():
            raise ModelLoadError(
                "no default model is installed in this boneage package; pass --model PATH to a trained model"
            )
    else:
        path = Path(spec)
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found")
    if path.is_dir() or path.suffix == ".safetensors":
        folder = path if path.is_dir() else path.parent
        weights = path if path.suffix == ".safetensors" else folder / WEIGHTS_FILE
        config_file = folder / CONFIG_FILE
        if not weights.exists() or not config_file.exists():
            raise ModelLoadError(f"{path}: not a boneage model folder (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{config_file}: unreadable model config ({err})") from None
        if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
            raise ModelLoadError(f"{config_file}: not a boneage model config")
        try:
            from safetensors.torch import load_file

            state = load_file(str(weights))
        except Exception as err:
            raise ModelLoadError(f"{weights}: unreadable weights ({type(err).__name__}: {err})") from None
        return _build(config, state, str(path))
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("ema_state_dict") or checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: checkpoint holds no weights")
    return _build(checkpoint.get("config", {}), state, str(path))
