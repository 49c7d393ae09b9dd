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


@pytest.fixture
def serve_network(monkeypatch):
    """``serve(folder, net)``: the engine's model cache hands out ``net`` (a stand-in network) for that folder.

    The folder's card is still read (and its weights loaded) by the real
    :func:`napari_medseg.models.cache.get_model`; only the network is
    replaced.  Other folders are served as usual.
    """
    from napari_medseg.models import cache

    real = cache.get_model
    served: dict[Path, object] = {}

    def get_model(path, device="cpu"):
        net, card = real(path, device)
        return served.get(Path(path), net), card

    monkeypatch.setattr(cache, "get_model", get_model)

    def serve(folder, net) -> None:
        served[Path(folder)] = net

    return serve
