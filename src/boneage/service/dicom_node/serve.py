"""``boneage dicom-node``: :func:`serve_node` runs a :class:`~.node.DicomNode` until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ...errors import InvalidInputError
from ..config import DATA_DIR_ENV, assessor_for, configure_logging, data_folder, resolve_database_url
from .node import DicomNode

__all__ = ["serve_node"]


def serve_node(*, data_dir: str | Path | None = None, model=None, ae_title: str = "BONEAGE", port: int = 11112,
               host: str = "127.0.0.1", destination=None, database_url: str | None = None,
               threads: int | None = None, announce=None) -> None:
    """Run a DICOM node until Ctrl-C or SIGTERM (``boneage dicom-node``).

    ``data_dir`` defaults to ``$BONEAGE_DATA_DIR`` and ``database_url`` to ``$BONEAGE_DATABASE_URL`` (else
    SQLite in the data folder); ``announce(line)`` is told where the node listens. Bad settings are a
    one-line :class:`~boneage.errors.InvalidInputError`.
    """
    import signal

    from ..store import AssessmentStore

    data_dir = _data_folder(data_dir)
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        raise InvalidInputError("the DICOM node needs pynetdicom: pip install pynetdicom") from None
    configure_logging("info")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO lines name SOP instance UIDs
    assessor = assessor_for(model, threads=threads)
    with AssessmentStore(data_dir, resolve_database_url(database_url)) as store:
        node = DicomNode(assessor, store, ae_title=ae_title, port=port, host=host, destination=destination)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: node._stopped.set())
        if announce is not None:
            announce(f"{node.ae_title} listening on {host}:{port}, data in {store.data_dir}"
                     + (f", results to {node.destination}" if node.destination else ", results in outbox/ only")
                     + " (Ctrl-C stops)")
        node.start(blocking=True)


def _data_folder(value) -> Path:
    """The data folder (:func:`~boneage.service.config.data_folder`); a file of that name is refused as such."""
    value = value or os.environ.get(DATA_DIR_ENV) or None
    folder = Path(value).expanduser() if value else None
    if folder is not None and folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"data folder {folder} is a file, not a folder")
    return data_folder(value, "folder")
