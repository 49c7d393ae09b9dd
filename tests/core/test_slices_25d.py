"""2.5D models (neighbouring slices as channels) and the brain-only percentile normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_semantic_2d import ThresholdNet  # noqa: E402  (class 1 where input channel 0 > 0.5)

import napari_medseg as ms  # noqa: E402
from napari_medseg.errors import ModelError  # noqa: E402
from napari_medseg.inference.normalize import normalization_limits  # noqa: E402
from napari_medseg.inference.tiling import ArraySource, SliceStackSource, slice_stack  # noqa: E402
from napari_medseg.models import registry  # noqa: E402
from napari_medseg.models.spec import ModelCard  # noqa: E402
from napari_medseg.models.testing import make_random_model  # noqa: E402


def test_slice_stack_source_matches_slice_stack_and_mirrors_the_ends():
    vol = np.arange(5 * 4 * 6, dtype=np.float32).reshape(5, 4, 6)
    src = SliceStackSource(ArraySource(vol, "ZYX"), 3)
    assert src.n_channels == 3 and src.shape == (5, 4, 6)
    stacked = slice_stack(vol, 3)  # (Z, Y, X, 3)
    assert stacked.shape == (5, 4, 6, 3)
    for z in range(5):
        got = src.read((z, 0, 0), (1, 4, 6))
        assert got.shape == (3, 1, 4, 6)
        np.testing.assert_array_equal(got[:, 0], np.moveaxis(stacked[z], -1, 0))
    # plane 0's "previous" plane is plane 1 (mirror without edge repeat), the last plane's next is the one before
    np.testing.assert_array_equal(stacked[0, ..., 0], vol[1])
    np.testing.assert_array_equal(stacked[4, ..., 2], vol[3])
    np.testing.assert_array_equal(stacked[2], np.moveaxis(vol[1:4], 0, -1))
    assert slice_stack(vol, 5).shape == (5, 4, 6, 5)


@pytest.fixture
def model_25d(tmp_path, monkeypatch, serve_network):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user-models"))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")
    folder = make_random_model(tmp_path / "m25", name="m25", kind="semantic", depth=3, in_channels=3)
    card = json.loads((folder / "model.json").read_text())
    card["input"].update({"normalization": {"kind": "none"}, "slices": 3, "channels": 3, "color": "grey"})
    (folder / "model.json").write_text(json.dumps(card))
    bad = {**card, "input": {**card["input"], "slices": 2}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="input.slices 2 must be an odd number"):
        ModelCard.from_json(tmp_path / "bad.json")
    serve_network(folder, ThresholdNet())  # a 3-slice stand-in: class 1 where the plane *before* (channel 0) is > 0.5
    return folder


def test_segment_feeds_a_25d_model_the_neighbouring_planes(model_25d):
    vol = np.zeros((6, 20, 24), np.float32)
    vol[1, 5:10, 5:12] = 1.0
    vol[4, 2:4, 2:4] = 1.0
    labels = np.asarray(ms.segment(vol, str(model_25d), axes="ZYX"))
    expected = np.zeros(vol.shape, np.uint16)
    expected[2] = vol[1] > 0.5  # plane 2 sees plane 1 as its previous plane
    expected[5] = vol[4] > 0.5
    expected[0] = vol[1] > 0.5  # plane 0's previous plane is plane 1 (mirror)
    np.testing.assert_array_equal(labels, expected)
    # one grey plane per slice: a 2D image or a 3-channel image do not fit
    with pytest.raises(ModelError, match="3 neighbouring slices"):
        ms.segment(vol[1], str(model_25d), axes="YX")
    with pytest.raises(ModelError, match="1-channel"):
        ms.segment(np.zeros((4, 20, 24, 3), np.float32), str(model_25d), axes="ZYXC")


def test_percentile_normalisation_over_nonzero_pixels():
    vol = np.zeros((4, 10, 10), np.float32)
    vol[:, 2:8, 2:8] = np.arange(4 * 36, dtype=np.float32).reshape(4, 6, 6) + 1.0  # 144 "brain" voxels 1..144
    lo, hi = normalization_limits(vol, "ZYX", {"kind": "percentile", "low": 0, "high": 50, "nonzero": True})
    assert lo.tolist() == [1.0] and hi.tolist() == [72.5]
    lo, hi = normalization_limits(vol, "ZYX", {"kind": "percentile", "low": 0, "high": 50})
    assert lo.tolist() == [0.0] and hi.tolist() == [0.0]  # 256 of 400 voxels are 0
    # an all-zero channel falls back to all pixels
    lo, hi = normalization_limits(np.zeros((5, 5), np.float32), "YX", {"kind": "percentile", "nonzero": True})
    assert lo.tolist() == [0.0] and hi.tolist() == [0.0]
