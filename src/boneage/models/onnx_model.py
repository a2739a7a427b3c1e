"""Any boneage model as an ONNX file, and an onnxruntime session that stands in for it.

* :func:`export_onnx` writes ``FILE.onnx`` (``boneage export --format onnx``): inputs ``image`` ``(N, C, H, W)``
  float32 (the model input: the preprocessed, normalised image) and ``male`` ``(N,)`` (1 boy, 0 girl, NaN unknown
  for a model that predicts the sex); outputs ``months`` ``(N,)``, an ensemble's ``member_months`` ``(N, M)`` and a
  sex-predicting model's ``sex_probability`` ``(N,)``. The model's whole config (architecture, preprocessing,
  test-time views, metrics, calibration) travels inside the file as the metadata property ``boneage_config``, so
  the file alone is a model :func:`~boneage.models.load_model` reads.
* :class:`OnnxModel` runs such a file with onnxruntime and returns :class:`~boneage.models.ModelOutput` like the
  PyTorch model, so the predictor, the test-time views and the ensemble's SD work unchanged
  (``predict --runtime onnx``). It gives bone ages only: no per-bone results, ROIs or Grad-CAM.
* :func:`onnx_session_model` turns a loaded PyTorch model into one, exporting it once into a cache folder keyed
  by a digest of its weights and config (``$BONEAGE_CACHE``, default ``~/.cache/boneage``).

The export uses the ``torch.export`` based exporter: the older TorchScript exporter gives wrong feature maps for
MONAI's ResNet in this torch (a test compares every exported model with PyTorch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import InvalidInputError, ModelLoadError
from ..runtime import cached_session, onnx_bytes, session
from ..utils import atomic_write
from .base import BoneAgeModel, Capabilities, ModelOutput

__all__ = ["CONFIG_KEY", "OnnxModel", "export_onnx", "load_onnx", "model_onnx_bytes", "onnx_session_model"]

CONFIG_KEY = "boneage_config"


class _Exported(nn.Module):
    """A model's forward as plain tensors: ``(months, [member_months], [sex_probability])``."""

    def __init__(self, model: BoneAgeModel):
        super().__init__()
        self.model = model
        self.members = model.capabilities.ensemble
        self.sex = model.capabilities.predicts_sex

    def forward(self, image: torch.Tensor, male: torch.Tensor):
        outputs = self.model(image, male)
        result = [outputs.bone_age_months.float()]
        if self.members:
            result.append(outputs.member_months.float())
        if self.sex:
            result.append(outputs.sex_probability.float())
        return tuple(result)


def output_names(capabilities: Capabilities) -> list[str]:
    return ["months"] + (["member_months"] if capabilities.ensemble else []) + (
        ["sex_probability"] if capabilities.predicts_sex else [])


def _require_exportable(model: BoneAgeModel, name: str) -> None:
    capabilities = model.capabilities
    if "localize" in capabilities.evidence or capabilities.per_bone or capabilities.needs_keypoints:
        raise InvalidInputError(f"{name}: models with per-bone results, keypoint ROIs or a Grad-CAM crop inside the "
                                "forward pass cannot be exported to ONNX (the global and residual attention models can)")


def _example(config: dict) -> tuple[torch.Tensor, torch.Tensor]:
    size = tuple(config["preprocess"].get("inference_size") or config["preprocess"]["image_size"])
    channels = int(config.get("model", {}).get("kwargs", {}).get("in_channels", 1))
    return torch.rand(2, channels, *size), torch.tensor([1.0, 0.0])


def model_onnx_bytes(model: BoneAgeModel, config: dict, *, name: str = "model") -> bytes:
    """The serialised ONNX model of ``model`` (float32) with ``config`` in its metadata."""
    _require_exportable(model, name)
    return onnx_bytes(_Exported(model), _example(config), ["image", "male"], output_names(model.capabilities),
                      {CONFIG_KEY: json.dumps(config)})


def export_onnx(loaded, path: str | Path) -> Path:
    """``loaded`` (a :class:`~boneage.models.LoadedModel`) written to ``path`` as ONNX (atomically)."""
    path = Path(path)
    if path.suffix != ".onnx":
        raise InvalidInputError(f"{path}: an ONNX model's file name must end in .onnx")
    atomic_write(path, model_onnx_bytes(loaded.model, loaded.config, name=loaded.source))
    return path


class OnnxModel(BoneAgeModel):
    """An exported model run by onnxruntime on the CPU; the forward takes and gives what the PyTorch model's does."""

    def __init__(self, data, config: dict, *, threads: int | None = None):
        super().__init__()
        # data: an onnxruntime session, or an ONNX file or its bytes
        self.session = data if hasattr(data, "get_outputs") else session(data, threads)
        self.names = [output.name for output in self.session.get_outputs()]
        self.config = config
        self._capabilities = Capabilities(ensemble="member_months" in self.names,
                                          predicts_sex="sex_probability" in self.names)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def forward(self, images: torch.Tensor, male: torch.Tensor, keypoints=None) -> ModelOutput:
        male = male.view(-1).float()
        if not self._capabilities.predicts_sex and bool(torch.isnan(male).any()):
            raise ValueError("this model needs the sex of every image (it has no sex head)")
        feeds = {"image": np.ascontiguousarray(images.detach().float().cpu().numpy()), "male": male.cpu().numpy()}
        found = dict(zip(self.names, self.session.run(self.names, feeds)))
        as_tensor = lambda key: torch.from_numpy(found[key]) if key in found else None  # noqa: E731
        return ModelOutput(bone_age_months=as_tensor("months"), member_months=as_tensor("member_months"),
                           sex_probability=as_tensor("sex_probability"))

    def compute_loss(self, outputs, batch):  # pragma: no cover - inference only
        raise InvalidInputError("an ONNX model runs inference only; train the PyTorch model")


def load_onnx(path: str | Path, threads: int | None = None) -> tuple[OnnxModel, dict]:
    """An ONNX file written by :func:`export_onnx` -> ``(OnnxModel, its config)``; ModelLoadError otherwise."""
    import onnx

    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # a damaged or foreign file
        raise ModelLoadError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0][:120]})") from None
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    if CONFIG_KEY not in meta:
        raise ModelLoadError(f"{path}: an ONNX model without a boneage config; export it with 'boneage export --format onnx'")
    config = json.loads(meta[CONFIG_KEY])
    return OnnxModel(proto.SerializeToString(), config, threads=threads), config


def onnx_session_model(loaded, threads: int | None = None) -> OnnxModel:
    """``loaded``'s model run by onnxruntime: exported on first use into the cache (:mod:`boneage.runtime`)."""
    if isinstance(loaded.model, OnnxModel):
        return loaded.model
    _require_exportable(loaded.model, loaded.source)
    onnx_session = cached_session(_Exported(loaded.model), _example(loaded.config), ["image", "male"],
                                  output_names(loaded.model.capabilities), extra=loaded.config,
                                  metadata={CONFIG_KEY: json.dumps(loaded.config)}, threads=threads)
    return OnnxModel(onnx_session, loaded.config)
