"""The geometry module: one unit table, the index -> world affine, measurements from it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.analysis.measure import measure
from napari_medseg.errors import ParameterError
from napari_medseg.geometry import (
    LPS,
    Geometry,
    Volume,
    ascii_unit,
    convert,
    factor,
    is_volume,
    napari_unit,
    normalize_unit,
)


@pytest.mark.parametrize(("raw", "sym", "pint", "ascii_"), [
    ("micron", "µm", "micrometer", "um"), ("\\u00B5m", "µm", "micrometer", "um"), ("μm", "µm", "micrometer", "um"),
    ("millimetre", "mm", "millimeter", "mm"), (None, "pixel", "pixel", "px"), ("px", "pixel", "pixel", "px"),
    ("second", "s", "second", "s"), ("Å", "Å", "angstrom", "A"),
])
def test_one_unit_table(raw, sym, pint, ascii_) -> None:
    assert normalize_unit(raw) == sym
    assert napari_unit(raw) == pint and normalize_unit(pint) == sym  # napari's names come back the same
    assert ascii_unit(raw) == ascii_


def test_exact_decimal_conversions() -> None:
    assert convert(0.65, "µm", "mm") == 0.00065
    assert convert(1.016, "mm", "micrometer") == 1016.0
    assert factor("cm", "µm") == 10000.0 and factor("min", "s") == 60.0
    with pytest.raises(ParameterError, match="cannot convert"):
        convert(1.0, "mm", "s")


def _oblique() -> Geometry:
    """A sagittal-like oblique grid: 4.8 x 1.016 x 1.016 mm, rotated 30 degrees about the first world axis."""
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([4.8, 1.016, 1.016])
    a[:3, 3] = (-20.0, 100.5, 7.25)
    return Geometry("ZYX", a, ("mm",) * 3, LPS)


def test_spacing_and_voxel_size_come_from_the_affine() -> None:
    g = _oblique()
    np.testing.assert_allclose(g.spacing, [4.8, 1.016, 1.016], rtol=1e-12)
    assert g.voxel_size == pytest.approx(4.8 * 1.016 * 1.016, rel=1e-12)
    assert not g.is_axis_aligned and g.is_orthogonal and g.scale_translate() is None
    idx = np.array([[0, 0, 0], [3, 5, 7], [1.5, -2, 0.25]])
    np.testing.assert_allclose(g.world_to_index(g.index_to_world(idx)), idx, atol=1e-12)
    np.testing.assert_allclose(g.index_to_world([0, 0, 0]), g.origin)
    np.testing.assert_allclose(g.lengths([[1, 0, 0], [0, 3, 4]]), [4.8, 5 * 1.016], rtol=1e-12)


def test_napari_composition_affine_after_scale() -> None:
    outer = np.eye(3)
    outer[:2, :2] = [[0, 1], [1, 0]]  # swap the world axes
    outer[:2, 2] = (10, 20)
    g = Geometry.from_napari("YX", scale=(2.0, 3.0), translate=(1.0, -1.0), affine=outer, units=("µm", "µm"))
    # world = outer @ (scale * idx + translate)
    np.testing.assert_allclose(g.index_to_world([1, 1]), [10 + 3 - 1, 20 + 2 + 1])
    np.testing.assert_allclose(g.spacing, [2.0, 3.0])
    kw = g.napari_kwargs()
    assert "affine" in kw and kw["axis_labels"] == ("y", "x") and kw["units"] == ("micrometer", "micrometer")
    plain = Geometry.from_scale("ZYX", (2.0, 0.5, 0.5), (0, 1, 2), units="µm").napari_kwargs()
    assert plain["scale"] == (2.0, 0.5, 0.5) and plain["translate"] == (0.0, 1.0, 2.0) and "affine" not in plain


def test_subset_zoom_units_and_json() -> None:
    a = np.eye(5)
    a[0, 0] = 2.5  # T step in s
    a[1:, 1:] = _oblique().affine
    g = Geometry("TZYX", a, ("s", "mm", "mm", "mm"), LPS)
    sub = g.subset("ZYX")
    assert sub.allclose(_oblique())
    with pytest.raises(ParameterError, match="not in geometry"):
        sub.subset("TZ")
    um = sub.with_length_unit("µm")
    np.testing.assert_allclose(um.spacing, [4800.0, 1016.0, 1016.0])
    assert um.units == ("µm",) * 3
    z = sub.zoomed((1, 2, 2))  # twice the pixels along Y and X, same field of view
    np.testing.assert_allclose(z.spacing, [4.8, 0.508, 0.508], rtol=1e-12)
    # the outer pixel edges stay where they were: old edge -0.5 == new edge -0.5
    np.testing.assert_allclose(z.index_to_world([0, -0.5, -0.5]), sub.index_to_world([0, -0.5, -0.5]), atol=1e-12)
    assert Geometry.from_dict(g.to_dict()).allclose(g)
    with pytest.raises(ParameterError, match="singular"):
        Geometry("YX", np.diag([1.0, 0.0, 1.0]), ("mm", "mm"))


def test_volume_geometry_and_duck_type() -> None:
    v = Volume(np.zeros((3, 4, 5, 6)), "TZYX", affine=np.eye(5), units=("s", "mm", "mm", "mm"), frame=LPS)
    assert is_volume(v) and not is_volume(np.zeros(3))
    assert v.spatial_geometry().axes == "ZYX" and v.spatial_geometry().frame == LPS
    _, kw, _ = v.to_layer_data()
    assert kw["axis_labels"] == ("t", "z", "y", "x") and kw["metadata"]["frame"] == LPS
    rgb = Volume(np.zeros((4, 5, 3)), "YXS", scale=(0.5, 0.25), units=("µm", "µm"))
    assert rgb.to_layer_data()[1]["axis_labels"] == ("y", "x")
    np.testing.assert_allclose(rgb.geometry.spacing, [0.5, 0.25])


def test_measure_oblique_geometry_uses_det_and_world_positions() -> None:
    g = _oblique()
    lab = np.zeros((5, 12, 12), np.uint8)
    lab[1:4, 2:8, 3:6] = 4  # 3 x 6 x 3 = 54 voxels
    t = measure(lab, geometry=g)
    assert list(t["label"]) == [4]
    assert float(t["volume_mm3"][0]) == pytest.approx(54 * 4.8 * 1.016**2, rel=1e-12)
    centre = np.array([2.0, 4.5, 4.0])
    np.testing.assert_allclose([t[f"centroid_{a}_mm"][0] for a in "zyx"], g.index_to_world(centre), atol=1e-9)
    # the same voxels on the axis-aligned grid of the same spacing measure the same sizes
    aligned = measure(lab, spacing=(4.8, 1.016, 1.016), units="mm")
    for col in ("volume_mm3", "equivalent_diameter_mm", "surface_area_mm2", "major_axis_length_mm"):
        assert float(t[col][0]) == pytest.approx(float(aligned[col][0]), rel=1e-9), col
    # the world box holds every mapped pixel-box corner
    lo = np.array([t[f"bbox_{a}0_mm"][0] for a in "zyx"])
    hi = np.array([t[f"bbox_{a}1_mm"][0] for a in "zyx"])
    corners = g.index_to_world(np.array(np.meshgrid([0.5, 3.5], [1.5, 7.5], [2.5, 5.5], indexing="ij")).reshape(3, -1).T)
    assert np.all(corners >= lo - 1e-9) and np.all(corners <= hi + 1e-9)
    np.testing.assert_allclose(corners.min(0), lo, atol=1e-9)
    with pytest.raises(ParameterError, match="either geometry"):
        measure(lab, geometry=g, spacing=(1, 1, 1))
