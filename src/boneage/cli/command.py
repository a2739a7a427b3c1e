"""The ``boneage`` command: the parser built from one module per subcommand, and ``main``.

Contract (other tools call these; keep them stable):

* ``boneage predict FILE... [--sex M|F] [--model PATH] [--json]``
* ``boneage evaluate --images DIR --labels CSV [--model PATH] [--json]``
* ``boneage calibrate [--model PATH] --images DIR --labels CSV [--split-file PATH] [--level 0.95]``
* ``boneage report IMAGE [--sex M|F] [--age 9y4m] [--height CM] [--model PATH] -o OUT.pdf|OUT.html [--json]``
* ``boneage serve [--host 127.0.0.1] [--port 8000] [--data-dir DIR] [--model PATH] [--api-token TOKEN]``
* ``boneage dicom-node [--port 11112] [--ae-title BONEAGE] [--data-dir DIR] [--destination AE@HOST:PORT]``
* ``boneage segment IMAGE... -o DIR [--segmenter PATH] [--overlay]``
* ``boneage export [--model PATH] --format onnx -o FILE.onnx``
* ``boneage train ...``, ``boneage train-segmenter ...``, ``boneage ensemble ...`` and ``boneage models``

Bad input ends with one line on stderr naming the problem and exit code 2, never a traceback; in a
batch, the files that can be read are still predicted. ``BONEAGE_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import BoneAgeError
from . import (
    calibrate,
    dicom_node,
    ensemble,
    evaluate,
    export,
    models,
    predict,
    report,
    segment,
    serve,
    train,
    train_recogniser,
    train_segmenter,
)
from ._common import EXIT_USAGE, Parser

COMMANDS = (predict, segment, report, serve, evaluate, calibrate, models, ensemble, export, train, train_segmenter,
            train_recogniser, dicom_node)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; with ``command``, only that one gets its arguments (the others
    keep their name and help), so that a command imports no more of boneage than it needs."""
    parser = Parser(prog="boneage", description="Automated skeletal bone age assessment from hand radiographs.")
    parser.add_argument("--version", action="version", version=f"boneage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS:
        p = sub.add_parser(module.NAME, help=module.HELP)
        p.set_defaults(func=module.run)
        if command is None or command == module.NAME:
            module.arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser(next((a for a in argv if not a.startswith("-")), ""))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except BoneAgeError as err:
        print(f"boneage {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"boneage {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `boneage predict ... | head`): not an error of ours
        sys.stderr.close()  # nothing more can be said; keeps Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # a bug, not a user error: still one line unless debugging
        if os.environ.get("BONEAGE_DEBUG"):
            raise
        print(f"boneage {args.command}: internal error: {type(err).__name__}: {err} "
              "(set BONEAGE_DEBUG=1 for a traceback and report it)", file=sys.stderr)
        return 1
