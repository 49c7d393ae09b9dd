"""Shared fixtures: paths to the real datasets (tests skip cleanly without them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))


def dataset(*parts: str) -> Path:
    """Path to a real dataset under ``../shared/datasets``; skip the test if it is absent."""
    p = DATASETS.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"dataset {p} not present (../shared/datasets is only on developer/CI machines)")
    return p


@pytest.fixture
def datasets_dir() -> Path:
    return dataset()


@pytest.fixture(scope="session")
def tiny_tile_classifier(tmp_path_factory) -> Path:
    """A 2-class (normal / tumour) CNN tile classifier trained once per session (``tests/slide_data.py``)."""
    from tests.slide_data import train_tiny

    return train_tiny(tmp_path_factory.mktemp("slide-model") / "tiny-tiles")
