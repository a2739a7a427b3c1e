"""The ``boneage`` command line: one module per subcommand (``predict``, ``report``, ``evaluate``,
``segment``, ``models``, ``ensemble``, ``train``, ``train-segmenter``, ``serve``, ``dicom-node``), each adding
its parser and running one call into the package; :mod:`._args` holds the argument types,
:mod:`.command` builds the parser and runs ``main``."""

from ._common import EXIT_USAGE
from .command import build_parser, main

__all__ = ["EXIT_USAGE", "build_parser", "main"]
