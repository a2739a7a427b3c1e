"""What several commands share: the one-line usage errors, the expansion of folders into files, unique
output names, the command line as it was typed (recorded with trained models) and the --model help."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (plus exit code 2)."""

    def error(self, message: str):  # noqa: D401
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def expand_inputs(items: list[str]) -> list[str]:
    """Files as given, folders replaced by the supported image files in them (sorted); a folder without
    any stays as it is, so that it is reported as an error of its own."""
    from ..io import supported_suffixes

    files: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            try:
                found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in supported_suffixes())
            except OSError:
                found = []
            if not found:
                files.append(item)
            files.extend(str(p) for p in found)
        else:
            files.append(item)
    return files


def empty_folder_error(item: str) -> str | None:
    """The error for an input that is a folder without supported images (None for anything else)."""
    return f"{item}: folder holds no readable supported image files" if Path(item).is_dir() else None


def unique_name(stem: str, suffix: str, used: set[str]) -> str:
    """``<stem><suffix>``, or ``<stem>-2<suffix>``... when a file of that name was already written
    (the same file name from two folders)."""
    name, n = f"{stem}{suffix}", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}{suffix}"
    used.add(name)
    return name


def command_line() -> str | None:
    """``boneage ...`` as typed, when run as the boneage command (recorded in trained models)."""
    return "boneage " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("boneage") else None


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


MODEL_HELP = ("model folder, .safetensors, .pt checkpoint or .onnx file, or the name of a shipped model: default, rus-chn, "
              "localize, robust "
              "(see 'boneage models'; default: the shipped default model)")
