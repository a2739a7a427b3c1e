"""Training: the recipe (:class:`TrainConfig`), the loop (:func:`train`) and ensembles of trained models
(:func:`build_ensemble`)."""

from .config import TrainConfig
from .ensemble import build_ensemble
from .trainer import hardware_description, train

__all__ = ["TrainConfig", "build_ensemble", "hardware_description", "train"]
