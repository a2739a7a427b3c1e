"""Training: the recipe (:class:`TrainConfig`) and the loop (:func:`train`)."""

from .config import TrainConfig
from .trainer import hardware_description, train

__all__ = ["TrainConfig", "hardware_description", "train"]
