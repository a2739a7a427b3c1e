"""``boneage serve [--host 127.0.0.1] [--port 8000] [--data-dir DIR] [--model PATH] [--api-token TOKEN]``:
the web service (:func:`boneage.service.app.serve`)."""

from __future__ import annotations

from . import _args
from ._common import MODEL_HELP

NAME = "serve"
HELP = "web service: REST API and browser UI, assessments stored in a data folder"


def arguments(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_args.port, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder of the database and the uploaded images (default: $BONEAGE_DATA_DIR)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--api-token", default=None, metavar="TOKEN",
                   help="require 'Authorization: Bearer TOKEN' on /api/* but /api/health (default: $BONEAGE_API_TOKEN)")
    p.add_argument("--max-upload-mb", type=_args.positive_float, default=32.0, metavar="MB", help="largest image accepted")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="SQLAlchemy URL of the assessment database, e.g. postgresql+psycopg://user@host/db "
                        "(default: $BONEAGE_DATABASE_URL, else SQLite in DIR)")


def run(args) -> int:
    from ..service.app import serve

    serve(host=args.host, port=args.port, data_dir=args.data_dir, model=args.model, api_token=args.api_token,
          max_upload_mb=args.max_upload_mb, database_url=args.database_url)
    return 0
