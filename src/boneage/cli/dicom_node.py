"""``boneage dicom-node [--host H] [--port N] [--ae-title AE] [--data-dir DIR] [--model PATH]
[--destination AE@HOST:PORT]``: the DICOM node (:func:`boneage.service.dicom_node.serve_node`)."""

from __future__ import annotations

import sys

from . import _args
from ._common import MODEL_HELP

NAME = "dicom-node"
HELP = "DICOM node: assess CR/DX hand radiographs sent by C-STORE and send back a Secondary Capture and a text SR"


def arguments(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=_args.port, default=11112, help="port to listen on (default 11112)")
    p.add_argument("--ae-title", type=_args.ae_title, default="BONEAGE", help="this node's AE title (default BONEAGE)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="database, received images and outbox/ (default: $BONEAGE_DATA_DIR)")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="SQLAlchemy URL of the assessment database, e.g. postgresql+psycopg://user@host/db "
                        "(default: $BONEAGE_DATABASE_URL, else SQLite in DIR)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--destination", type=_args.destination, default=None, metavar="AE@HOST:PORT",
                   help="send the results here by C-STORE (default: only write them to DIR/outbox)")
    p.add_argument("--threads", type=_args.positive_int, default=None, help="CPU threads for inference")


def run(args) -> int:
    from ..service.dicom_node import serve_node

    serve_node(data_dir=args.data_dir, model=args.model, ae_title=args.ae_title, port=args.port, host=args.host,
               destination=args.destination, database_url=args.database_url, threads=args.threads,
               announce=lambda line: print(f"boneage dicom-node: {line}", file=sys.stderr))
    return 0
