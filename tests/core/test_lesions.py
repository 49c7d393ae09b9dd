"""Lesions: RECIST axes, 3D diameter and volume on analytic shapes in oblique geometries; FROC on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.analysis.lesion_eval import case_summary, froc, match_lesions
from napari_medseg.analysis.lesions import lesion_table, lesions_from_probabilities, recist_axes_2d
from napari_medseg.errors import ParameterError
from napari_medseg.geometry import LPS, Geometry


def _rot(axis: int, t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    r = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _grid(spacing, angles=(0.3, 0.2)) -> Geometry:
    rot = _rot(0, angles[0]) @ _rot(1, angles[1])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = (10.0, -20.0, 30.0)
    return Geometry("ZYX", a, ("mm",) * 3, LPS)


def _ellipsoid(g: Geometry, shape, centre_idx, semi) -> np.ndarray:
    """Voxels whose centres lie inside an ellipsoid with axes along the grid's Y, X and slice directions (mm)."""
    idx = np.indices(shape).reshape(3, -1).T
    d = g.index_to_world(idx) - g.index_to_world(centre_idx)
    dirs = g.direction  # columns: world directions of the Z, Y, X index axes
    a, b, c = semi
    inside = ((d @ dirs[:, 1]) / a) ** 2 + ((d @ dirs[:, 2]) / b) ** 2 + ((d @ dirs[:, 0]) / c) ** 2 <= 1
    return inside.reshape(shape)


@pytest.mark.parametrize("spacing", [(2.5, 0.7, 0.7), (5.0, 0.5703125, 0.5703125), (1.0, 1.0, 1.0)])
def test_recist_and_volume_of_an_oblique_ellipsoid(spacing) -> None:
    g = _grid(spacing)
    semi = (20.0, 12.0, 15.0)  # in-plane long, in-plane short, along the slice normal
    shape = (int(2 * semi[2] / spacing[0]) + 5, int(2 * semi[0] / spacing[1]) + 8, int(2 * semi[0] / spacing[2]) + 8)
    centre = [s // 2 for s in shape]
    lab = np.zeros(shape, np.uint16)
    lab[_ellipsoid(g, shape, centre, semi)] = 3
    t = lesion_table(lab, g)
    assert t["id"].tolist() == [3] and t["class"].tolist() == ["lesion"]
    px = spacing[1]
    assert abs(t["long_axis_mm"][0] - 2 * semi[0]) <= px + 1e-9  # half a pixel at each end
    assert abs(t["short_axis_mm"][0] - 2 * semi[1]) <= px + 1e-9
    assert t["recist_slice"][0] == centre[0]
    assert abs(t["max_diameter_mm"][0] - 2 * semi[0]) <= px + 1e-9
    true_vol = 4 / 3 * np.pi * np.prod(semi)
    assert t["volume_mm3"][0] == pytest.approx(int(lab.astype(bool).sum()) * g.voxel_size)
    assert t["volume_mm3"][0] == pytest.approx(true_vol, rel=0.04)
    assert t["volume_ml"][0] == pytest.approx(t["volume_mm3"][0] / 1000)
    np.testing.assert_allclose([t[f"centroid_{a}_mm"][0] for a in "zyx"], g.index_to_world(centre), atol=spacing[0] / 4)
    assert t["slice_last"][0] - t["slice_first"][0] + 1 == t["n_slices"][0]
    # true sphericity of this ellipsoid is 0.967; the marching-cubes surface is larger on coarse slices
    assert 0.7 < t["sphericity"][0] <= 1.0
    assert t["elongation"][0] == pytest.approx(12 / 20, abs=0.05)


def test_digital_ellipses_within_a_pixel() -> None:
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(120):
        a = rng.uniform(3, 25)
        b = a * rng.uniform(0.3, 1.0)
        th = rng.uniform(0, np.pi)
        c = rng.uniform(0, 1, 2) + 30
        yy, xx = np.mgrid[0:64, 0:64]
        u = np.array([np.cos(th), np.sin(th)])
        dy, dx = yy - c[0], xx - c[1]
        m = ((dy * u[0] + dx * u[1]) / a) ** 2 + ((-dy * u[1] + dx * u[0]) / b) ** 2 <= 1
        la, sa, _ = recist_axes_2d(np.argwhere(m), np.eye(2))
        errs.append((la - 2 * a, sa - 2 * b))
    e = np.array(errs)
    assert np.abs(e[:, 0]).max() <= 1.0 + 1e-9  # long axis: each end within half a pixel
    assert np.abs(e[:, 1]).max() <= 1.1  # short axis: plus the tilt of a one-pixel strip
    assert 0.0 < e[:, 0].mean() < 0.75  # a calliper reads a little long on average


def test_2d_lesion_table_in_mm_on_an_anisotropic_slice() -> None:
    g = Geometry.from_scale("YX", (0.5, 0.25), units="mm")
    lab = np.zeros((40, 80), np.uint8)
    lab[10:20, 20:60] = 1  # 5 mm x 10 mm
    t = lesion_table(lab, g, classes=["melanoma"])
    assert t["class"].tolist() == ["melanoma"] and t["area_mm2"][0] == pytest.approx(50.0)
    # corner-to-corner centres: |(4.5, 9.75)| + the width of the inscribed ellipse (0.25 x 0.125 semi-axes)
    d = np.array([4.5, 9.75])
    u = d / np.linalg.norm(d)
    assert t["long_axis_mm"][0] == pytest.approx(np.hypot(*d) + np.hypot(u[0] * 0.5, u[1] * 0.25))
    assert "volume_mm3" not in t and "max_diameter_mm" not in t


def test_lesions_from_probabilities_min_size_score_and_classes() -> None:
    g = Geometry.from_scale("ZYX", (2.0, 1.0, 1.0), units="mm")
    p = np.zeros((3, 6, 30, 30), np.float32)
    p[0] = 1.0
    p[:, 1:4, 2:8, 2:8] = np.array([0.1, 0.8, 0.1])[:, None, None, None]  # class 1, 3*6*6*2 = 216 mm3
    p[:, 2, 20:22, 20:22] = np.array([0.3, 0.1, 0.6])[:, None, None]  # class 2, 4 voxels = 8 mm3
    p[2, 2, 20, 20], p[0, 2, 20, 20] = 0.9, 0.0
    les = lesions_from_probabilities(p, g, ["bg", "tumour", "cyst"])
    assert len(les) == 2 and les.classes.tolist() == ["tumour", "cyst"]
    np.testing.assert_allclose(les.max_probability, [0.8, 0.9], rtol=1e-6)
    np.testing.assert_allclose(les.scores, [0.8, (0.6 * 3 + 0.9) / 4], rtol=1e-6)  # the mean: the ranking score
    small = lesions_from_probabilities(p, g, ["bg", "tumour", "cyst"], min_size=10.0)
    assert small.classes.tolist() == ["tumour"] and int(small.labels.max()) == 1
    t = lesion_table(les.labels, g, lesions=les)
    assert t["volume_mm3"].tolist() == pytest.approx([216.0, 8.0])
    assert {"p_bg", "p_tumour", "p_cyst"} <= set(t.columns)
    assert lesion_table(les.labels, g, lesions=les, properties=("area",))["n_slices"].tolist() == [3, 1]
    with pytest.raises(ParameterError, match="class names"):
        lesions_from_probabilities(p, g, ["bg", "x"])


def test_lesion_defaults_of_a_card() -> None:
    from napari_medseg.analysis.lesions import lesion_defaults
    from napari_medseg.errors import ModelError
    from napari_medseg.models.spec import ModelCard

    def card(lesions=None) -> ModelCard:
        out = {"kind": "semantic", **({"lesions": lesions} if lesions is not None else {})}
        return ModelCard("m", {"type": "unet", "in_channels": 1, "out_channels": 2}, {}, out)

    assert lesion_defaults(card()) == {"threshold": None, "min_size": 0.0, "score_threshold": 0.0, "tta": False}
    assert lesion_defaults(card({"min_size": 3, "threshold": 0.7, "tta": True})) == {
        "threshold": 0.7, "min_size": 3.0, "score_threshold": 0.0, "tta": True}
    for bad in ({"threshold": 1.0}, {"min_size": -1}, {"score_threshold": "high"}, {"minsize": 3}, [3],
                {"tta": "yes"}):
        with pytest.raises(ModelError, match="'m': output.lesions"):
            lesion_defaults(card(bad))


def test_split_touching_lesions() -> None:
    g = Geometry.from_scale("YX", (1.0, 1.0), units="mm")
    yy, xx = np.mgrid[0:40, 0:70]
    m = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 121) | ((yy - 20) ** 2 + (xx - 41) ** 2 <= 121)
    p = np.stack([~m, m]).astype(np.float32)
    assert len(lesions_from_probabilities(p, g)) == 1
    assert len(lesions_from_probabilities(p, g, split_touching=True)) == 2


def test_lesion_matching_and_froc_on_known_cases() -> None:
    true = np.zeros((1, 20, 20), int)
    true[0, 2:5, 2:5] = 1
    true[0, 10:14, 10:14] = 2
    pred = np.zeros_like(true)
    pred[0, 3:6, 3:6] = 1  # hits lesion 1
    pred[0, 16:18, 16:18] = 2  # a false positive
    pred[0, 11:13, 11:13] = 3  # hits lesion 2 (IoU 4/16)
    case = match_lesions(true, pred, [0.9, 0.8, 0.4])
    s = case_summary(case)
    assert (s["detected"], s["missed"], s["false_positives"]) == (2, 0, 1)
    assert s["dice"] == pytest.approx(2 * (4 + 4) / (9 + 16 + 9 + 4 + 4))
    s_high = case_summary(case, 0.5)
    assert (s_high["detected"], s_high["false_positives"]) == (1, 1)
    # IoU of lesion 1 with its hit: 4 / (9 + 9 - 4) = 0.286; of lesion 2: 4 / 16 = 0.25
    assert case_summary(match_lesions(true, pred, [0.9, 0.8, 0.4], min_iou=0.28))["detected"] == 1
    assert case_summary(match_lesions(true, pred, [0.9, 0.8, 0.4], min_iou=0.3))["detected"] == 0
    empty = match_lesions(np.zeros_like(true), np.zeros_like(true))
    f = froc([case, empty])
    # thresholds 0.9: 1 det, 0 FP; 0.8: 1 det, 1 FP (0.5 per case); 0.4: 2 det, 1 FP
    assert f["sensitivity"] == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert f["cpm"] == pytest.approx((0.5 + 0.5 + 5.0) / 7)
