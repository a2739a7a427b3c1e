"""Model registry: ``@register_model`` on a factory, ``create_model(name, **kw)`` to build one.

The registry is the single source of truth for the CLI's ``--model`` choices, ``boneage models`` and
the tests that run every registered model. A model remembers the name and keyword arguments it was
created with (``model.boneage_spec``) so that a checkpoint can rebuild it exactly.
"""

from __future__ import annotations

import difflib
from typing import Callable

from ..errors import InvalidInputError
from .base import BoneAgeModel

__all__ = ["register_model", "create_model", "list_models", "model_defaults", "model_description"]

_MODELS: dict[str, Callable[..., BoneAgeModel]] = {}


def register_model(fn: Callable[..., BoneAgeModel]) -> Callable[..., BoneAgeModel]:
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_description(name: str) -> str:
    doc = (_MODELS[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def model_defaults(name: str) -> dict:
    """Training defaults a model family declares on its factory (``fn.defaults``, e.g. its head); {} if none
    or an unknown name (create_model reports that)."""
    return dict(getattr(_MODELS.get(name), "defaults", {}))


def create_model(name: str, **kwargs) -> BoneAgeModel:
    """Build a registered model; an unknown name raises an error listing the valid ones."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidInputError(f"unknown model {name!r}.{hint} Available models: {', '.join(list_models())}")
    try:
        model = _MODELS[name](**kwargs)
    except (TypeError, ValueError, RuntimeError) as err:  # bad options, e.g. width=0 or an empty label range
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InvalidInputError(f"model {name!r} with {kwargs}: {first}") from None
    if not isinstance(model, BoneAgeModel):
        raise TypeError(f"registered model {name!r} built a {type(model).__name__}, not a BoneAgeModel")
    model.boneage_spec = {"name": name, "kwargs": dict(kwargs)}
    return model
