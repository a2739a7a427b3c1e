"""The README's quick-start example prints what the README says it prints (with the shipped model)."""

from __future__ import annotations

import re
import shlex

import pytest

from boneage.cli import main
from tests.conftest import REPO, RSNA_512


def _quick_start() -> tuple[list[str], str]:
    """The ``boneage predict`` command of the quick start and the output line shown under it."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Quick start"):text.index("## Data and licence note")]
    command = re.search(r"^\.venv/bin/boneage (predict .+)$", section, re.M).group(1)
    printed = re.search(r"```text\n(.+?)\n```", section, re.S).group(1)
    return shlex.split(command), printed


@pytest.mark.realdata
def test_the_quick_start_prints_what_the_readme_says(capsys, monkeypatch):
    if not RSNA_512.exists():
        pytest.skip(f"real data not found at {RSNA_512}")
    argv, expected = _quick_start()
    monkeypatch.chdir(REPO)  # the README's paths are relative to the checkout
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == expected
