"""Crops of a fixed physical size around objects: 2D, 2.5D and 3D, on anisotropic grids; CNN columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_medseg.analysis.crop_classify import CropSpec, cnn_columns, object_centres, sample_crops
from napari_medseg.errors import ParameterError
from napari_medseg.geometry import Geometry


def _ramps(shape):
    """Three float volumes whose value is the z, y and x index."""
    return np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")


def test_crops_span_the_physical_size_on_an_anisotropic_grid() -> None:
    zr, yr, xr = _ramps((20, 60, 80))
    g = Geometry.from_scale("ZYX", (2.0, 0.5, 0.25), units="mm")
    centre = np.array([[10.0, 30.0, 40.0]])
    spec = CropSpec(8.0, "mm", "3d", 16)  # 8 mm: 4 slices, 16 rows, 32 columns of this grid
    cube_x = sample_crops(xr, centre, g, spec)[0]
    cube_z = sample_crops(zr, centre, g, spec)[0]
    assert cube_x.shape == (16, 16, 16) and cube_x.dtype == np.float32
    off = np.arange(16) - 7.5
    np.testing.assert_allclose(cube_x[0, 0], 40 + off * (8 / 16) / 0.25, atol=1e-4)
    np.testing.assert_allclose(cube_z[:, 0, 0], 10 + off * (8 / 16) / 2.0, atol=1e-4)
    # micrometres on a millimetre grid convert: 8000 µm is the same crop
    again = sample_crops(xr, centre, g, CropSpec(8000.0, "µm", "3d", 16))[0]
    np.testing.assert_allclose(again, cube_x, atol=1e-4)


def test_two_and_a_half_d_gives_the_three_orthogonal_planes() -> None:
    zr, yr, xr = _ramps((20, 60, 80))
    g = Geometry.from_scale("ZYX", (2.0, 0.5, 0.5), units="mm")
    c = np.array([[10.0, 30.0, 40.0]])
    spec = CropSpec(8.0, "mm", "2.5d", 8)
    z3, y3, x3 = (sample_crops(r, c, g, spec)[0] for r in (zr, yr, xr))
    assert z3.shape == (8, 8, 3)
    assert np.allclose(z3[..., 0], 10) and np.allclose(y3[..., 1], 30) and np.allclose(x3[..., 2], 40)  # planes
    off = (np.arange(8) - 3.5) * 1.0  # 1 mm per sample
    np.testing.assert_allclose(z3[:, 0, 1], 10 + off / 2.0, atol=1e-4)   # coronal rows run along Z
    np.testing.assert_allclose(x3[0, :, 0], 40 + off / 0.5, atol=1e-4)   # axial columns run along X
    np.testing.assert_allclose(y3[0, :, 2], 30 + off / 0.5, atol=1e-4)   # sagittal columns run along Y


def test_2d_rgb_crops_keep_uint8_and_edges_repeat() -> None:
    img = np.zeros((50, 50, 3), np.uint8)
    img[..., 1] = 200
    crops = sample_crops(img, np.array([[2.0, 2.0], [25.0, 25.0]]), None, CropSpec(20, "px", "2d", 10))
    assert [c.shape for c in crops] == [(10, 10, 3)] * 2 and crops[0].dtype == np.uint8
    assert (crops[0][..., 1] == 200).all() and (crops[0][..., 0] == 0).all()  # outside: the edge value


def test_bad_crops_are_refused_clearly() -> None:
    img = np.zeros((30, 30), np.float32)
    with pytest.raises(ParameterError, match="needs a 3D grey image"):
        sample_crops(img, np.array([[5.0, 5.0]]), None, CropSpec(10, "px", "2.5d", 8))
    with pytest.raises(ParameterError, match="no pixel size"):
        sample_crops(img, np.array([[5.0, 5.0]]), None, CropSpec(10, "mm", "2d", 8))
    with pytest.raises(ParameterError, match="crop mode"):
        CropSpec(10, "mm", "4d", 8)
    assert sample_crops(img, np.zeros((0, 2)), None, CropSpec()) == []


def test_centres_and_cnn_columns() -> None:
    lab = np.zeros((10, 10), np.int32)
    lab[1:4, 1:4] = 3
    lab[6:9, 5:9] = 5
    c, ids = object_centres(lab)
    assert ids.tolist() == [3, 5]
    np.testing.assert_allclose(c, [[2.0, 2.0], [7.0, 6.5]])
    t = cnn_columns(pd.DataFrame({"id": ids}), np.array([[0.2, 0.8], [0.9, 0.1]]), ["a", "b"])
    assert t["cnn_class"].tolist() == ["b", "a"]
    np.testing.assert_allclose(t["cnn_probability"], [0.8, 0.9])
    np.testing.assert_allclose(t["cnn_p_a"], [0.2, 0.9])


def _balls(seed: int, n: int = 16):
    """A 3D grey volume (2 x 1 x 1 mm voxels) of solid balls and hollow shells of 4 mm radius, and their centres."""
    rng = np.random.default_rng(seed)
    shape = (12, 40, 20 * n)
    img = rng.normal(20, 4, shape).astype(np.float32)
    zz, yy, xx = np.meshgrid(*[np.arange(k) * s for k, s in zip(shape, (2.0, 1.0, 1.0), strict=True)], indexing="ij")
    centres, kinds = [], []
    for i in range(n):
        c = np.array([12.0 + rng.uniform(-1, 1), 20.0 + rng.uniform(-2, 2), 10.0 + 20 * i])
        d = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        kind = "solid" if i % 2 else "shell"
        img[(d <= 4.0) if kind == "solid" else ((d <= 4.0) & (d > 2.5))] += 100
        centres.append(c / np.array([2.0, 1.0, 1.0]))
        kinds.append(kind)
    return img, np.asarray(centres), kinds


def test_3d_crop_classifier_learns_solid_vs_hollow_and_keeps_its_crops(tmp_path) -> None:
    pytest.importorskip("torch")
    import json

    from napari_medseg.analysis.crop_classify import classify_at
    from napari_medseg.progress import run
    from napari_medseg.training.crop_classifier import fit_and_classify_iter

    img, centres, kinds = _balls(0)
    g = Geometry.from_scale("ZYX", (2.0, 1.0, 1.0), units="mm")
    spec = CropSpec(12.0, "mm", "3d", 16)
    labelled = dict(enumerate(kinds))
    res, probs, names = run(fit_and_classify_iter(img, centres, labelled, g, spec=spec, epochs=30, minutes=None,
                                                  base_channels=8, batch_size=8, val_fraction=0.0, seed=0,
                                                  device="cpu", out=tmp_path / "balls", name="balls"))
    card = json.loads((res.model_path / "model.json").read_text())
    assert card["architecture"]["dims"] == 3 and card["input"]["crop"] == spec.to_dict()
    assert probs.shape == (16, 2) and names == ["shell", "solid"]
    # new balls, another seed: the card's crops (12 mm cubes) classify them
    img2, c2, k2 = _balls(1)
    p2, _ = classify_at(img2, c2, res.model_path, g)
    acc = float(np.mean([names[i] == k for i, k in zip(p2.argmax(axis=1), k2, strict=True)]))
    assert acc >= 0.85
