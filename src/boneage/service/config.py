"""What the web service (``boneage serve``) and the DICOM node (``boneage dicom-node``) share when they
start: the data folder, the database URL, the model and the logging set-up.

Importing this module is cheap (the standard library only): the CLI loads the DICOM node's arguments
through it without loading the database or the model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import InvalidInputError

__all__ = ["DATA_DIR_ENV", "assessor_for", "configure_logging", "data_folder", "resolve_database_url"]

DATA_DIR_ENV = "BONEAGE_DATA_DIR"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def data_folder(value: str | Path | None, noun: str = "directory") -> Path:
    """The data folder: ``value``, else ``$BONEAGE_DATA_DIR``; made when missing. ``noun`` is what the
    one-line :class:`~boneage.errors.InvalidInputError` calls it (``'directory'`` or ``'folder'``)."""
    value = value or os.environ.get(DATA_DIR_ENV) or None
    if not value:
        raise InvalidInputError(f"no data {noun}: pass --data-dir DIR or set {DATA_DIR_ENV}")
    folder = Path(value).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(f"cannot use {folder} as the data {noun} ({err.strerror or err})") from None
    return folder


UPLOADS_DIRNAME = "uploads"


def spool_uploads_into(data_dir: Path) -> Path:
    """Make ``<data_dir>/uploads`` the folder where this process spools large request bodies (Starlette keeps
    an upload above 1 MB in a temporary file), emptied of what a killed server left there: an upload in flight
    never lies outside the data folder, and never stays. Call it once, in the server's own process."""
    import tempfile

    folder = data_dir / UPLOADS_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.iterdir():
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
    tempfile.tempdir = str(folder)
    return folder


def resolve_database_url(value: str | None) -> str | None:
    """``value``, else ``$BONEAGE_DATABASE_URL``, else None (SQLite in the data folder)."""
    from .store import DATABASE_URL_ENV

    return value or os.environ.get(DATABASE_URL_ENV) or None


def configure_logging(level: str = "info") -> None:
    """Log to stderr at ``level`` unless the program already set up logging; alembic's INFO lines
    (migration plumbing) are left out."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=LOG_FORMAT)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def assessor_for(model, threads: int | None = None):
    """``model`` as a :class:`boneage.api.Assessor`: itself when it is one, else one loaded from it (a
    Predictor, a model path, or None for the shipped model)."""
    from ..api import Assessor

    return model if isinstance(model, Assessor) else Assessor(model, threads=threads)
