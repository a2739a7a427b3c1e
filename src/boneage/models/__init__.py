"""Bone age models: the contract every model keeps (:mod:`.base`), a registry (``create_model``/
``list_models``), heads, and serialisation.

One module per method family registers its models on import; this package imports them all.
"""

from . import alanet, ensemble, global_resnet, localize, residual_attention, rus_chn  # noqa: F401  (register their models)
from ._registry import create_model, list_models, model_defaults, model_description, register_model
from .base import EVIDENCE_KINDS, BoneAgeModel, Capabilities, ModelOutput
from .ensemble import Ensemble, combine_models
from .heads import HEADS, OrdinalHead, RegressionHead, ordinal_decode, ordinal_encode
from .serialization import (
    SHIPPED_MODELS,
    LoadedModel,
    default_model_path,
    export_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
    shipped_model_path,
    write_model_config,
)

__all__ = [
    "EVIDENCE_KINDS",
    "SHIPPED_MODELS",
    "HEADS",
    "BoneAgeModel",
    "Capabilities",
    "Ensemble",
    "LoadedModel",
    "ModelOutput",
    "OrdinalHead",
    "RegressionHead",
    "combine_models",
    "create_model",
    "default_model_path",
    "export_model",
    "list_models",
    "load_checkpoint",
    "load_model",
    "model_defaults",
    "model_description",
    "ordinal_decode",
    "ordinal_encode",
    "register_model",
    "save_checkpoint",
    "shipped_model_path",
    "write_model_config",
]
