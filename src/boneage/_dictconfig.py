"""The JSON round trip shared by the settings dataclasses that travel in model and segmenter configs."""

from __future__ import annotations

import dataclasses
from typing import Self


class DictConfig:
    """Mixin for a settings dataclass: ``to_dict`` gives JSON-ready values (tuples as lists) and
    ``from_dict`` rebuilds it, turning lists back into tuples and ignoring keys it does not know (a
    config written by another version of boneage)."""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})
