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


def test_the_rus_chn_figures_are_the_benchmark_s_and_the_shipped_model_s():
    """The README's RUS-CHN table is benchmarks/results/rus_chn.md's, whose overall MAE is the shipped model's."""
    from boneage.models import load_model, shipped_model_path

    if not (shipped_model_path("rus-chn") / "model.safetensors").exists():
        pytest.fail("the package ships no RUS-CHN model (src/boneage/weights/rus-chn)")
    text = (REPO / "README.md").read_text()
    section = text[text.index("## RUS-CHN"):text.index("## Clinical report")]
    results = (REPO / "benchmarks" / "results" / "rus_chn.md").read_text()
    rows = [line for line in section.splitlines() if re.match(r"\| (\d+-\d+|all) \| \d+ \|", line)]
    assert len(rows) == 6 and all(row in results for row in rows), rows
    overall = re.match(r"\| all \| \d+ \| ([\d.]+) /", rows[-1]).group(1)
    recorded = load_model("rus-chn").config["metrics"]["validation"]["mae_months"]
    assert float(overall) == pytest.approx(recorded, abs=0.01)
    detection = [line.strip() for line in section.splitlines() if line.strip().startswith(("| **mAP50", "| mAP@"))]
    assert len(detection) == 2 and all(line in results for line in detection), detection
    speed = text[text.index("## Speed"):text.index("## Design")]
    rus_ms, default_ms, ratio = re.search(r"(\d+) ms vs (\d+) ms per image \(ratio ([\d.]+)", speed).groups()
    assert f"| RUS-CHN | {int(rus_ms) / 1000:.3f} |" in results and f"| default | {int(default_ms) / 1000:.3f} |" in results
    assert f"| ratio RUS-CHN / default | {ratio} |" in results


def test_the_transfer_figures_are_the_benchmark_s():
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Transfer learning"):text.index("## RUS-CHN")]
    results = (REPO / "benchmarks" / "results" / "transfer.md").read_text()
    rows = [line for line in section.splitlines() if line.startswith("| from scratch") or line.startswith("| --init")]
    assert len(rows) == 2 and all(row in results for row in rows), rows


def test_the_localize_figures_are_the_benchmark_s_and_the_shipped_model_s():
    """The README's localize-then-regress tables are benchmarks/results/localize.md's rows, whose shipped-model row
    is the installed model's recorded validation MAE; the speed line is the benchmark's."""
    from boneage.models import load_model, shipped_model_path

    if not (shipped_model_path("localize") / "model.safetensors").exists():
        pytest.fail("the package ships no localize-then-regress model (src/boneage/weights/localize)")
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Localize-then-regress"):text.index("## Clinical report")]
    results = (REPO / "benchmarks" / "results" / "localize.md").read_text()
    rows = [line for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| step", "| 1.", "| 2.", "| 3.")) and not set(line) <= set("|-: ")]
    body = [row for row in rows if not re.match(r"\| (input|gamma|regressor|model) \|", row)]
    assert len(body) >= 15 and all(row in results for row in body), [row for row in body if row not in results]
    shipped = next(row for row in body if row.startswith("| shipped `--model localize`"))
    recorded = load_model("localize").config["metrics"]["validation"]["mae_months"]
    assert float(shipped.split("|")[3]) == pytest.approx(recorded, abs=0.01)
    speed = text[text.index("## Speed"):text.index("## Design")]
    pattern = r"localize-then-regress model against the default model.*?(\d+) ms vs (\d+) ms per image \(ratio ([\d.]+)"
    local_ms, default_ms, ratio = re.search(pattern, speed, re.S).groups()
    assert f"| localize-then-regress (crop from 100 px) | {local_ms} | {ratio} |" in results
    assert f"| global default model | {default_ms} | 1.00 |" in results


def test_the_robustness_figures_are_the_benchmark_s():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Robustness"):text.index("## Uncertainty")]
    results = (REPO / "benchmarks" / "results" / "robustness.md").read_text()
    rows = [line for line in section.splitlines() if re.match(r"\| (as stored|[a-z]+(:[\w.]+)*) \| \d+ \|", line)]
    assert len(rows) >= 15 and all(row in results for row in rows), [row for row in rows if row not in results]


def test_the_recipe_figures_are_the_benchmark_s():
    """The robust model's section: the arm and view rows are benchmarks/results/recipe.md's; the default-vs-robust
    rows are the two models' rows of benchmarks/results/robustness.md."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### The robust model"):text.index("## Robustness")]
    results = (REPO / "benchmarks" / "results" / "recipe.md").read_text()
    rows = [line for line in section.splitlines() if line.startswith(("| `", "| stage", "| **stage"))]
    assert len(rows) >= 14 and all(row in results for row in rows), [row for row in rows if row not in results]
    robustness = (REPO / "benchmarks" / "results" / "robustness.md").read_text()
    split = robustness.index("## robust")
    default, robust = robustness[robustness.index("## default"):split], robustness[split:]
    pairs = re.findall(r"^\| ([a-z:.0-9 ]+) \| ([\d.]+) \| ([\d.]+) \|$", section, re.M)
    assert len(pairs) == 6, pairs
    for images, default_mae, robust_mae in pairs:
        assert f"| {images} | 1158 | {default_mae} |" in default and f"| {images} | 1158 | {robust_mae} |" in robust, images
    for figure in ("70.4 %", "0.77", "13.14"):
        assert figure in section and figure in results
