"""Small helpers every layer shares: atomic file writes, autocast, eval mode, month formatting, the
JSON round trip of settings dataclasses and objects loaded once per process. This module imports nothing
from boneage but its errors."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Self

from .errors import InvalidInputError

__all__ = ["PRECISIONS", "DictConfig", "LoadedOnce", "atomic_write", "autocast", "evaluating", "format_months"]

PRECISIONS = ("bf16", "fp32")


def atomic_write(path: str | Path, data: bytes | str | Callable[[BinaryIO], None], *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` so that a reader (or a crash) never sees a partial file.

    ``data`` is bytes, text (UTF-8) or a function that writes into the open binary file it is given
    (``torch.save``, ``np.save``, ``Image.save``, ``Dataset.save_as`` all take one). It goes into a
    temporary file beside ``path`` (unique per process and thread), is flushed and fsynced, then renamed
    over ``path``; on any error the temporary file is removed and ``path`` is left as it was. The
    folder is created when missing. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as stream:
            if isinstance(data, str):
                stream.write(data.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray, memoryview)):
                stream.write(data)
            else:
                data(stream)
            stream.flush()
            if fsync:
                os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def autocast(device, precision: str):
    """The autocast context of a precision: ``'bf16'`` (bfloat16 autocast on the device's type) or
    ``'fp32'`` (no autocast); anything else is an :class:`InvalidInputError`."""
    import torch

    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def evaluating(module):
    """``module`` in eval mode for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def format_months(months: float | None, style: str = "short") -> str | None:
    """An age in months as years and months, whole months rounded; None stays None.

    ``style='short'``: ``125.4`` -> ``'10 y 5 m'`` (the ``predict`` output); ``'long'``:
    ``'10 years 5 months'`` (reports, singular forms where due). Negative ages get a sign.
    """
    if months is None:
        return None
    total = round(float(months))
    sign = "-" if total < 0 else ""
    years, rest = divmod(abs(total), 12)
    if style == "short":
        return f"{sign}{years} y {rest} m"
    if style == "long":
        return f"{sign}{years} year{'' if years == 1 else 's'} {rest} month{'' if rest == 1 else 's'}"
    raise InvalidInputError(f"month format style must be 'short' or 'long', got {style!r}")


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


class LoadedOnce:
    """What ``load(spec)`` builds, built once per process for each spec and shared between threads
    (``None`` and ``'default'`` are the same spec): ``LoadedOnce(load_segmenter).get(spec)``."""

    def __init__(self, load: Callable):
        self.load = load
        self._items: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, spec=None):
        key = "default" if spec is None else str(spec)
        with self._lock:
            if key not in self._items:
                self._items[key] = self.load(key)
            return self._items[key]

