"""Shared fixtures. Real-data tests read ../shared/data beside the repository and skip when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
RSNA_100 = SHARED_DATA / "rsna-100px"
RSNA_512 = SHARED_DATA / "rsna-512px-samples"


def require_shared(path: Path = SHARED_DATA) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set BONEAGE_SHARED_DATA or place ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def rsna100() -> Path:
    return require_shared(RSNA_100)


@pytest.fixture(scope="session")
def rsna512() -> Path:
    return require_shared(RSNA_512)


def export_tiny_model(folder: Path, label: str, name: str, **kwargs) -> Path:
    """Export an untrained, seeded registered model at 64 x 64 px: for plumbing tests that need no accuracy."""
    import torch

    from boneage.models import create_model, export_model
    from boneage.preprocess import PreprocessConfig

    torch.manual_seed(0)
    model = create_model(name, label_range=[0.0, 228.0], **kwargs)
    config = {
        "name": label,
        "version": "test",
        "model": model.boneage_spec,
        "preprocess": PreprocessConfig(image_size=(64, 64)).to_dict(),
        "labels": {"unit": "months", "min": 0.0, "max": 228.0},
    }
    return export_model(folder, model.eval(), config)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An exported (untrained) small model: for CLI plumbing tests that need no accuracy."""
    return export_tiny_model(tmp_path_factory.mktemp("tiny_model"), "tiny-test", "global_resnet18", width=0.25, head="ordinal")


@pytest.fixture(scope="session")
def tiny_alanet_dir(tmp_path_factory) -> Path:
    """An exported (untrained) small ALA-Net: ROIs for evidence and plumbing tests."""
    return export_tiny_model(tmp_path_factory.mktemp("tiny_alanet"), "tiny-alanet-test", "alanet18", width=0.25, head="ordinal",
                             max_pool=False)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (install Debian's chromium: apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; no browser download is needed)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
