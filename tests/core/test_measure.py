"""Object measurements: hand-computed values (2D, 3D, anisotropic) and agreement with scikit-image."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import polygon
from skimage.measure import label as cc_label
from skimage.measure import regionprops_table

from napari_medseg.analysis.measure import PROPERTIES, features, measure, perimeter_weights, unit_suffix
from napari_medseg.errors import ParameterError

SQ2 = np.sqrt(2.0)


def _random_labels(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 2.0) -> np.ndarray:
    """Blobs of varied shape plus one scattered (disconnected) object with a large id."""
    smooth = ndi.gaussian_filter(rng.random(shape), sigma)
    lab = cc_label(smooth > np.quantile(smooth, 0.6)).astype(np.int32)
    lab[rng.random(shape) < 0.003] = 999
    return lab


# ----------------------------------------------------------------------------- hand-computed, 2D


def test_rectangle_anisotropic_by_hand():
    lab = np.zeros((6, 7), np.uint16)
    lab[1:4, 1:5] = 7  # 3 rows x 4 columns
    img = 10.0 * np.arange(6)[:, None] + np.arange(7)[None, :]  # value = 10 * row + col
    t = measure(lab, img, spacing=(2.0, 0.5), units="µm", translate=(10.0, 20.0))
    r = t.iloc[0]
    assert len(t) == 1 and r["label"] == 7
    assert r["n_pixels"] == 12
    assert r["area_um2"] == pytest.approx(12 * 2.0 * 0.5, abs=1e-12)
    assert (r["centroid_y"], r["centroid_x"]) == pytest.approx((2.0, 2.5), abs=1e-12)
    assert (r["centroid_y_um"], r["centroid_x_um"]) == pytest.approx((10 + 2.0 * 2.0, 20 + 2.5 * 0.5), abs=1e-12)
    assert [r["bbox_y0"], r["bbox_x0"], r["bbox_y1"], r["bbox_x1"]] == [1, 1, 4, 5]
    # outer pixel edges in the world: extent 3 rows * 2.0 by 4 columns * 0.5
    assert [r["bbox_y0_um"], r["bbox_y1_um"]] == pytest.approx([11.0, 17.0], abs=1e-12)
    assert [r["bbox_x0_um"], r["bbox_x1_um"]] == pytest.approx([20.25, 22.25], abs=1e-12)
    assert r["equivalent_diameter_um"] == pytest.approx(np.sqrt(4 * 12.0 / np.pi), abs=1e-12)
    # through the border pixel centres: 2 * ((4-1) * 0.5 + (3-1) * 2.0)
    assert r["perimeter_um"] == pytest.approx(11.0, abs=1e-12)
    assert r["solidity"] == pytest.approx(1.0, abs=1e-12)
    var_y, var_x = (2 / 3) * 2.0**2, 1.25 * 0.5**2  # physical variances of the pixel centres
    assert r["major_axis_length_um"] == pytest.approx(4 * np.sqrt(var_y), abs=1e-12)
    assert r["minor_axis_length_um"] == pytest.approx(4 * np.sqrt(var_x), abs=1e-12)
    assert r["eccentricity"] == pytest.approx(np.sqrt(1 - var_x / var_y), abs=1e-12)
    assert r["mean_intensity"] == pytest.approx(22.5, abs=1e-12)
    assert (r["min_intensity"], r["max_intensity"]) == (11.0, 34.0)
    assert r["std_intensity"] == pytest.approx(np.sqrt(100 * 2 / 3 + 1.25), abs=1e-12)


def test_single_pixel_and_diagonal_line_by_hand():
    lab = np.zeros((8, 8), np.int32)
    lab[1, 1] = 1
    for i in range(3, 7):  # diagonal line of 4 pixels
        lab[i, i - 2] = 2
    t = measure(lab)
    one, diag = t.iloc[0], t.iloc[1]
    assert one["area_px2"] == 1 and one["perimeter_px"] == 0.0 and one["eccentricity"] == 0.0
    assert one["solidity"] == 1.0 and one["major_axis_length_px"] == 0.0
    # skimage's perimeter of a 4-pixel diagonal: ends contribute 0, middle pixels sqrt(2) each
    assert diag["perimeter_px"] == pytest.approx(2 * SQ2, abs=1e-12)
    assert diag["eccentricity"] == pytest.approx(1.0, abs=1e-12)
    # convex hull of the diamonds of the 4 pixels holds no other pixel centre
    assert diag["solidity"] == pytest.approx(1.0, abs=1e-12)


def test_perimeter_weights_match_skimage_codes():
    # (n4, nd) patterns with skimage's weights 1, sqrt 2, (1 + sqrt 2) / 2 or 0 (isotropic)
    expected = {(2, 0): 1, (3, 0): 1, (2, 1): 1, (3, 1): 1, (2, 2): 1, (3, 2): 1, (0, 2): SQ2, (1, 3): SQ2,
                (1, 1): (1 + SQ2) / 2, (1, 2): (1 + SQ2) / 2}
    for n4 in range(5):
        for nd in range(5):
            nh = np.array([min(n4, 2)])
            nv = np.array([n4 - min(n4, 2)])
            w = perimeter_weights((nh, nv), np.array([nd]), (1.5, 1.5))[0]
            assert w == pytest.approx(1.5 * expected.get((n4, nd), 0.0), abs=1e-12), (n4, nd)
    # anisotropic: a horizontal run costs sx, a vertical one sy, an L-corner their mean
    w = perimeter_weights((np.array([2, 0, 1]), np.array([0, 2, 1])), np.zeros(3, int), (3.0, 0.5))
    assert w.tolist() == pytest.approx([0.5, 3.0, 1.75])


# ----------------------------------------------------------------------------- against skimage, 2D

PAIRS_2D = {
    "centroid_y_um": "centroid-0", "centroid_x_um": "centroid-1",
    "bbox_y0": "bbox-0", "bbox_x0": "bbox-1", "bbox_y1": "bbox-2", "bbox_x1": "bbox-3",
    "area_um2": "area", "equivalent_diameter_um": "equivalent_diameter_area", "perimeter_um": "perimeter",
    "eccentricity": "eccentricity", "solidity": "solidity",
    "major_axis_length_um": "axis_major_length", "minor_axis_length_um": "axis_minor_length",
    "mean_a": "intensity_mean-0", "min_a": "intensity_min-0", "max_a": "intensity_max-0", "std_a": "intensity_std-0",
    "mean_b": "intensity_mean-1", "min_b": "intensity_min-1", "max_b": "intensity_max-1", "std_b": "intensity_std-1",
}
SK_PROPS = ("label", "centroid", "bbox", "area", "equivalent_diameter_area", "perimeter", "eccentricity",
            "solidity", "axis_major_length", "axis_minor_length",
            "intensity_mean", "intensity_min", "intensity_max", "intensity_std")


@pytest.mark.parametrize("spacing", [1.0, 0.65])
def test_2d_matches_regionprops_table(spacing):
    rng = np.random.default_rng(7)
    for _ in range(4):
        lab = _random_labels(rng, (70, 90))
        img = rng.random(lab.shape + (2,)) * 1000  # float64, channels last
        t = measure(lab, img, spacing=spacing, units="um", channel_names=["a", "b"])
        ref = regionprops_table(lab, img, spacing=(spacing, spacing), properties=SK_PROPS)
        np.testing.assert_array_equal(t["label"], ref["label"])
        for ours, theirs in PAIRS_2D.items():
            np.testing.assert_allclose(t[ours], ref[theirs], rtol=1e-9, atol=1e-9, err_msg=ours)
        assert t["n_pixels"].sum() == np.count_nonzero(lab)


def test_solidity_and_perimeter_match_skimage_on_irregular_objects():
    """Sparse, disconnected, thin and polygonal objects of all sizes, touching each other."""
    rng = np.random.default_rng(11)
    n_obj = 0
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(1, 45, 2))
        lab = np.zeros((h, w), np.int64)
        for _ in range(int(rng.integers(1, 6))):
            lab[rng.random((h, w)) < rng.uniform(0.002, 0.5)] = rng.integers(1, 40)
        if trial % 3 == 0:
            rr, cc = polygon(rng.uniform(0, h, 6), rng.uniform(0, w, 6), (h, w))
            lab[rr, cc] = 41
        if not lab.any():
            continue
        t = measure(lab, properties=("solidity", "perimeter"))
        ref = regionprops_table(lab, properties=("label", "solidity", "perimeter"))
        np.testing.assert_array_equal(t["label"], ref["label"])
        np.testing.assert_allclose(t["solidity"], ref["solidity"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(t["perimeter_px"], ref["perimeter"], rtol=1e-12, atol=1e-12)
        n_obj += len(t)
    assert n_obj > 300


def test_large_convex_and_concave_objects_solidity():
    lab = np.zeros((300, 320), np.int32)
    rr, cc = polygon([10, 280, 150], [10, 40, 300], lab.shape)  # big triangle
    lab[rr, cc] = 1
    rr, cc = polygon([200, 290, 290, 200, 240], [200, 200, 310, 310, 255], lab.shape)  # notched box
    lab[rr, cc] = 2
    t = measure(lab, properties=("solidity",))
    ref = regionprops_table(lab, properties=("label", "solidity"))
    np.testing.assert_allclose(t["solidity"], ref["solidity"], rtol=1e-12)
    assert t["solidity"][1] < 0.95 < t["solidity"][0]


def test_anisotropic_2d_consistent_with_isotropic_resampling():
    """Spacing (2, 1) on an image equals spacing (1, 1) on it with rows duplicated, for area and centroid."""
    rng = np.random.default_rng(3)
    lab = _random_labels(rng, (40, 50))
    aniso = measure(lab, spacing=(2.0, 1.0), units="um")
    iso = measure(np.repeat(lab, 2, axis=0), spacing=(1.0, 1.0), units="um")
    np.testing.assert_allclose(aniso["area_um2"], iso["area_um2"], rtol=1e-12)
    # duplicated rows shift centres by half a row: world position of row r is 2r vs (2r, 2r + 1)
    np.testing.assert_allclose(aniso["centroid_y_um"] + 0.5, iso["centroid_y_um"], rtol=1e-12)
    np.testing.assert_allclose(aniso["centroid_x_um"], iso["centroid_x_um"], rtol=1e-12)
    np.testing.assert_allclose(aniso["bbox_y1_um"] - aniso["bbox_y0_um"], iso["bbox_y1_um"] - iso["bbox_y0_um"])


# ----------------------------------------------------------------------------- 3D


def _box_surface(a: int, b: int, c: int, sz: float, sy: float, sx: float) -> float:
    """Marching-cubes (level 0.5) area of an a x b x c voxel box: faces, 45-degree edge strips, corner triangles."""
    A, B, C = a - 1, b - 1, c - 1
    faces = 2 * (B * sy * C * sx + A * sz * C * sx + A * sz * B * sy)
    edges = 4 * (C * sx * np.hypot(sy / 2, sz / 2) + B * sy * np.hypot(sx / 2, sz / 2) + A * sz * np.hypot(sx / 2, sy / 2))
    corners = 8 * 0.5 * np.sqrt((sy * sx / 4) ** 2 + (sz * sx / 4) ** 2 + (sz * sy / 4) ** 2)
    return faces + edges + corners


def test_3d_box_anisotropic_by_hand():
    lab = np.zeros((8, 9, 10), np.int32)
    lab[2:5, 1:5, 3:8] = 4  # 3 x 4 x 5 voxels
    sp = (2.0, 0.5, 0.25)
    t = measure(lab, spacing=sp, units="mm", translate=(1.0, 2.0, 3.0))
    r = t.iloc[0]
    assert r["n_pixels"] == 60
    assert r["volume_mm3"] == pytest.approx(60 * 2.0 * 0.5 * 0.25, abs=1e-12)
    assert (r["centroid_z"], r["centroid_y"], r["centroid_x"]) == pytest.approx((3.0, 2.5, 5.0))
    assert (r["centroid_z_mm"], r["centroid_y_mm"], r["centroid_x_mm"]) == pytest.approx(
        (1 + 3 * 2.0, 2 + 2.5 * 0.5, 3 + 5 * 0.25), abs=1e-12)
    assert [r["bbox_z0_mm"], r["bbox_z1_mm"]] == pytest.approx([1 + 1.5 * 2.0, 1 + 4.5 * 2.0])
    assert r["equivalent_diameter_mm"] == pytest.approx((6 * 15.0 / np.pi) ** (1 / 3), abs=1e-12)
    assert r["surface_area_mm2"] == pytest.approx(_box_surface(3, 4, 5, *sp), rel=1e-12)
    assert r["solidity"] == pytest.approx(1.0, abs=1e-12)
    assert "eccentricity" not in t.columns and "perimeter_mm" not in t.columns


def test_3d_single_voxel_surface_is_octahedron():
    lab = np.zeros((3, 3, 3), np.uint8)
    lab[1, 1, 1] = 1
    t = measure(lab)
    assert t["surface_area_px2"][0] == pytest.approx(np.sqrt(3), rel=1e-12)
    assert t["solidity"][0] == 1.0


def test_3d_sphere_surface_close_to_analytic():
    """Marching cubes on a binary ball overestimates the sphere of equal volume by a few per cent (as PyRadiomics)."""
    r = 12
    zz, yy, xx = np.mgrid[-16:17, -16:17, -16:17]
    lab = ((zz**2 + yy**2 + xx**2) <= r**2).astype(np.int32)
    t = measure(lab, spacing=(0.5, 0.5, 0.5), properties=("area", "perimeter"))
    r_eq = (3 * t["volume_um3"][0] / (4 * np.pi)) ** (1 / 3)
    ratio = t["surface_area_um2"][0] / (4 * np.pi * r_eq**2)
    assert 1.0 < ratio < 1.10


def test_3d_matches_regionprops_table():
    rng = np.random.default_rng(5)
    pairs = {"centroid_z_um": "centroid-0", "centroid_y_um": "centroid-1", "centroid_x_um": "centroid-2",
             "bbox_z0": "bbox-0", "bbox_y1": "bbox-4", "volume_um3": "area",
             "equivalent_diameter_um": "equivalent_diameter_area", "solidity": "solidity",
             "major_axis_length_um": "axis_major_length", "minor_axis_length_um": "axis_minor_length",
             "mean_intensity": "intensity_mean", "min_intensity": "intensity_min",
             "max_intensity": "intensity_max", "std_intensity": "intensity_std"}
    for _ in range(3):
        lab = _random_labels(rng, (18, 22, 20), sigma=1.5)
        img = rng.integers(0, 4000, lab.shape).astype(np.uint16)
        sp = (2.0, 0.7, 0.5)
        t = measure(lab, img, spacing=sp, units="um")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage warns on flat objects (empty convex hull)
            props_3d = tuple(p for p in SK_PROPS if p not in ("perimeter", "eccentricity"))  # 2D-only in skimage
            ref = regionprops_table(lab, img, spacing=sp, properties=props_3d)
        np.testing.assert_array_equal(t["label"], ref["label"])
        for ours, theirs in pairs.items():
            ok = np.isfinite(ref[theirs])  # skimage gives solidity inf for flat objects
            np.testing.assert_allclose(np.asarray(t[ours])[ok], ref[theirs][ok], rtol=1e-9, atol=1e-6, err_msg=ours)
        assert np.all(np.isfinite(t["solidity"])) and np.all(t["solidity"] <= 1 + 1e-12)


# ----------------------------------------------------------------------------- inputs and outputs


def test_channel_layouts_give_the_same_numbers():
    rng = np.random.default_rng(0)
    lab = _random_labels(rng, (30, 40))
    a, b = rng.random(lab.shape), rng.random(lab.shape) * 5
    last = measure(lab, np.stack([a, b], -1), channel_names=["a", "b"], properties=("intensity",))
    first = measure(lab, np.stack([a, b], 0), channel_names=["a", "b"], properties=("intensity",))
    pairs = measure(lab, [("a", a), ("b", b)], properties=("intensity",))
    mapping = measure(lab, {"a": a, "b": b}, properties=("intensity",))
    for other in (first, pairs, mapping):
        assert list(other.columns) == list(last.columns)
        np.testing.assert_array_equal(other.to_numpy(), last.to_numpy())
    assert list(last.columns) == ["label"] + [f"{s}_{c}" for c in "ab" for s in ("mean", "min", "max", "std")]
    unnamed = measure(lab, np.stack([a, b], -1), properties=("intensity",))
    assert "mean_ch1" in unnamed.columns
    rgb = measure(lab, [("he", np.stack([a, b, a], -1))], properties=("intensity",))
    assert "mean_he_ch2" in rgb.columns
    np.testing.assert_array_equal(rgb["mean_he_ch2"], last["mean_a"])


def test_ambiguous_or_mismatched_image_raises():
    lab = np.zeros((3, 3, 3), np.int32)
    lab[1, 1, 1] = 1
    with pytest.raises(ParameterError, match="channel_axis"):
        measure(lab, np.zeros((3, 3, 3, 3)))
    t = measure(lab, np.ones((3, 3, 3, 3)), channel_axis=0, properties=("intensity",))
    assert t["mean_ch2"][0] == 1.0
    # with channel_axis given, arrays of the labels' own shape are still single channels
    t = measure(lab, [("a", np.full((3, 3, 3), 2.0)), ("b", np.ones((2, 3, 3, 3)))], channel_axis=0,
                properties=("intensity",))
    assert (t["mean_a"][0], t["mean_b_ch1"][0]) == (2.0, 1.0)
    with pytest.raises(ParameterError, match="does not match"):
        measure(lab, np.zeros((4, 3, 3)))
    with pytest.raises(ParameterError, match="channel_names"):
        measure(lab, np.zeros((3, 3, 3)), channel_names=["a", "b"])


def test_units_and_column_names():
    lab = np.zeros((5, 5), np.int32)
    lab[1:3, 1:4] = 2
    assert "area_px2" in measure(lab).columns
    assert "area_um2" in measure(lab, spacing=0.5).columns  # spacing without units: µm
    cols = measure(lab, spacing=(1, 1), units=("mm", "millimeter")).columns
    assert {"area_mm2", "perimeter_mm", "centroid_x_mm", "bbox_y1_mm", "equivalent_diameter_mm"} <= set(cols)
    assert unit_suffix("µm", 2) == unit_suffix("μm", 2) == unit_suffix("micron", 2) == "um"
    assert unit_suffix(("pixel", "px"), 2) == "px"
    with pytest.raises(ParameterError, match="same unit"):
        measure(lab, spacing=(1, 1), units=("mm", "um"))


def test_properties_subset_and_dict_output():
    lab = np.zeros((6, 6), np.int32)
    lab[1:3, 1:3], lab[4:6, 2:6] = 5, 9
    t = measure(lab, properties=("area",))
    assert list(t.columns) == ["label", "n_pixels", "area_px2"]
    assert t["label"].tolist() == [5, 9] and t["n_pixels"].tolist() == [4, 8]
    d = measure(lab, spacing=0.5, as_dict=True)
    df = measure(lab, spacing=0.5)
    assert list(d) == list(df.columns) and all(isinstance(v, np.ndarray) for v in d.values())
    np.testing.assert_array_equal(d["area_um2"], df["area_um2"])
    f = features(df)
    assert list(f) == list(df.columns) and np.array_equal(f["label"], [5, 9])
    with pytest.raises(ParameterError, match="unknown properties"):
        measure(lab, properties=("area", "roundness"))
    assert set(PROPERTIES) >= {"area", "solidity", "intensity"}


def test_empty_labels_give_empty_table_with_all_columns():
    lab = np.zeros((10, 12), np.int32)
    t = measure(lab, np.ones((10, 12)), spacing=(0.5, 0.5))
    full = measure(np.pad(np.ones((2, 2), np.int32), 1), np.ones((4, 4)), spacing=(0.5, 0.5))
    assert len(t) == 0 and list(t.columns) == list(full.columns)
    t3 = measure(np.zeros((3, 4, 5), np.int32))
    assert len(t3) == 0 and "surface_area_px2" in t3.columns


def test_sparse_huge_ids_bool_and_dask_labels():
    import dask.array as da

    lab = np.zeros((20, 20), np.int64)
    lab[2:5, 2:5], lab[10:12, 10:16] = 3_000_000_000, 17
    t = measure(lab)
    assert t["label"].tolist() == [17, 3_000_000_000] and t["n_pixels"].tolist() == [12, 9]
    tb = measure(lab > 0)
    assert tb["label"].tolist() == [1] and tb["n_pixels"][0] == 21
    td = measure(da.from_array(lab, chunks=7), da.from_array(lab.astype(float), chunks=7))
    np.testing.assert_array_equal(td["mean_intensity"], t["label"].astype(float))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": np.zeros((4, 4), float)}, "integer"),
        ({"labels": -np.ones((4, 4), int)}, "negative"),
        ({"labels": np.zeros((2, 2, 2, 2), int)}, "2D"),
        ({"labels": np.zeros((4, 4), int), "spacing": (1, 1, 1)}, "spacing has 3"),
        ({"labels": np.zeros((4, 4), int), "spacing": (1, 0)}, "> 0"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        measure(**kwargs)


def test_pixel_units_have_no_duplicate_world_columns():
    """In pixels, centroid_y_px would equal centroid_y and bbox_y0_px be bbox_y0 - 0.5: they are left out."""
    lab = np.zeros((5, 6), int)
    lab[1:4, 1:5] = 7
    assert list(measure(lab).columns) == [
        "label", "centroid_y", "centroid_x", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "n_pixels", "area_px2",
        "equivalent_diameter_px", "perimeter_px", "eccentricity", "major_axis_length_px", "minor_axis_length_px",
        "solidity"]
    t = measure(lab, spacing=(2.0, 0.5), units="µm")
    assert t["centroid_y_um"].iloc[0] == 4.0 and t["bbox_y0_um"].iloc[0] == 1.0 and t["bbox_y0"].iloc[0] == 1
