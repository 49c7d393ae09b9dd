"""instances_from_maps: exact outcomes on synthetic maps.

Speed (measured, not asserted: the CI machine varies): a 4096x4096 map of
~17,800 discs (r = 5-12 px, 32 % foreground, 3,600 clusters of touching
discs) takes ~2.0 s on one core; see the commit message for the command.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_medseg.errors import ParameterError
from napari_medseg.inference.instances import instances_from_maps


def _targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Perfect maps for a label image: fg in {0, 1}, dist normalised per object."""
    fg = (labels > 0).astype(np.float32)
    dist = np.zeros(labels.shape, np.float32)
    for i in np.unique(labels[labels > 0]):
        d = ndi.distance_transform_edt(labels == i)
        dist += (d / d.max()).astype(np.float32) * (labels == i)
    return fg, dist


def _discs(shape, centres, radius):
    yy, xx = np.indices(shape)
    lab = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, 1):
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (lab == 0)] = k
    return lab


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b are the same labelling up to renumbering."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b)) and np.array_equal(a == 0, b == 0)


def test_two_touching_discs_give_two_labels():
    truth = _discs((40, 60), [(20, 20), (20, 36)], 10)  # overlap: centres 16 px apart
    fg, dist = _targets(truth)
    out = instances_from_maps(fg, dist, min_size=1)
    assert out.dtype == np.int32
    assert sorted(np.unique(out)) == [0, 1, 2]
    assert np.array_equal(out > 0, truth > 0)
    assert _same_partition(out, truth)


def test_labels_are_consecutive_and_small_objects_removed():
    truth = _discs((50, 50), [(10, 10), (35, 35)], 6)
    truth[2, 45] = 3  # a 1-pixel speck
    fg, dist = _targets(truth)
    out = instances_from_maps(fg, dist, min_size=5)
    assert sorted(np.unique(out)) == [0, 1, 2]
    assert out[2, 45] == 0
    assert out[10, 10] == 1 and out[35, 35] == 2


def test_min_size_in_physical_units_with_spacing():
    truth = _discs((30, 30), [(15, 15)], 3)  # 29 pixels
    fg, dist = _targets(truth)
    n_px = int((truth > 0).sum())
    assert n_px == 29
    # 29 px x 0.25 um^2 = 7.25 um^2
    assert instances_from_maps(fg, dist, min_size=7.0, spacing=(0.5, 0.5)).max() == 1
    assert instances_from_maps(fg, dist, min_size=7.5, spacing=(0.5, 0.5)).max() == 0
    assert instances_from_maps(fg, dist, min_size=29).max() == 1
    assert instances_from_maps(fg, dist, min_size=30).max() == 0


def test_foreground_without_seed_is_kept_as_one_object():
    truth = _discs((30, 30), [(15, 15)], 5)
    fg, _ = _targets(truth)
    out = instances_from_maps(fg, np.zeros_like(fg), min_size=1)
    assert np.array_equal(out, (truth > 0).astype(np.int32))


def test_thresholds_apply_to_probabilities():
    fg = np.zeros((20, 20), np.float32)
    fg[2:8, 2:8] = 0.7
    fg[12:18, 12:18] = 0.4
    dist = np.zeros_like(fg)
    dist[4:6, 4:6] = 0.9
    out = instances_from_maps(fg, dist, fg_threshold=0.5, min_size=1)
    assert out.max() == 1 and (out == 1).sum() == 36
    out = instances_from_maps(fg, dist, fg_threshold=0.3, min_size=1)
    assert out.max() == 2 and (out > 0).sum() == 72


def test_3d_two_touching_balls():
    zz, yy, xx = np.indices((20, 30, 40))
    truth = np.zeros((20, 30, 40), np.int32)
    truth[(zz - 10) ** 2 + (yy - 15) ** 2 + (xx - 12) ** 2 <= 49] = 1
    truth[((zz - 10) ** 2 + (yy - 15) ** 2 + (xx - 24) ** 2 <= 49) & (truth == 0)] = 2
    fg, dist = _targets(truth)
    out = instances_from_maps(fg, dist, min_size=1)
    assert out.max() == 2 and _same_partition(out, truth)


def test_matches_global_skimage_watershed():
    """The per-cluster shortcut gives exactly the plain global watershed."""
    from skimage.segmentation import watershed

    rng = np.random.default_rng(3)
    truth = _discs((200, 200), [tuple(c) for c in rng.integers(10, 190, size=(60, 2))], 9)
    fg, dist = _targets(truth)
    dist = np.clip(dist + rng.uniform(0, 1e-3, dist.shape).astype(np.float32), 0, 1)  # no ties
    out = instances_from_maps(fg, dist, seed_threshold=0.6, min_size=0)
    mask = fg > 0.5
    seeds, _ = ndi.label(mask & (dist > 0.6))
    ref = watershed(-dist, seeds, mask=mask)
    assert out.max() > 10
    assert _same_partition(out, ref)


def test_float16_maps_are_thresholded_as_float32():
    """The engine's float16 block maps give the labels of the same values in float32.

    float16(0.3) = 0.30005 > 0.3: above the threshold in float32, but not in a
    plain float16 comparison (numpy rounds the threshold to float16 too).
    """
    rng = np.random.default_rng(5)
    truth = _discs((120, 120), [tuple(c) for c in rng.integers(10, 110, size=(25, 2))], 8)
    fg, dist = _targets(truth)
    fg = np.where(truth > 0, np.float16(0.3), fg).astype(np.float16)  # every object pixel exactly at float16(0.3)
    dist = dist.astype(np.float16)
    for thr in (0.3, 0.45, 0.5):
        a = instances_from_maps(fg, dist, fg_threshold=0.3, seed_threshold=thr, min_size=0)
        b = instances_from_maps(fg.astype(np.float32), dist.astype(np.float32), fg_threshold=0.3,
                                seed_threshold=thr, min_size=0)
        assert a.dtype == b.dtype == np.int32
        assert a.max() > 10 and np.array_equal(a, b)


def test_empty_and_bad_input():
    z = np.zeros((8, 8), np.float32)
    out = instances_from_maps(z, z)
    assert out.dtype == np.int32 and out.shape == (8, 8) and out.max() == 0
    with pytest.raises(ParameterError, match="same shape"):
        instances_from_maps(z, np.zeros((8, 9)))
    with pytest.raises(ParameterError, match="2D"):
        instances_from_maps(np.zeros(8), np.zeros(8))
    with pytest.raises(ParameterError, match="seed_threshold"):
        instances_from_maps(z, z, seed_threshold=2)


def test_float16_threshold_on_bit_patterns_equals_float32_comparison():
    """Every float16 value (all 65,536 patterns: subnormals, -0, infinities, NaNs) at many thresholds."""
    from napari_medseg.inference.instances import _above

    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    wide = every.astype(np.float32)
    for t in [*np.linspace(0, 1, 201).tolist(), 0.3, 0.45, float(np.float16(0.3)), 1e-8, 0.99999, 2.0, 70000.0, -0.5]:
        with np.errstate(invalid="ignore"):
            assert np.array_equal(_above(every, t), wide > np.float32(t)), t


def _cones(shape, cones):
    """Network-like maps: dist = max of cones ``peak * (1 - r / radius)``, fg = their union; disc labels."""
    yy, xx = np.indices(shape)
    dist = np.zeros(shape, np.float32)
    owner = np.zeros(shape, np.int32)
    for k, (cy, cx, radius, peak) in enumerate(cones, 1):
        d = (peak * np.clip(1 - np.hypot(yy - cy, xx - cx) / radius, 0, None)).astype(np.float32)
        owner[d > dist] = k
        dist = np.maximum(dist, d)
    return (dist > 0).astype(np.float32), dist, owner


def test_h_maxima_seeds_split_touching_discs_that_no_threshold_splits():
    """Small neighbour below a high valley: no one threshold fits every pair, the peaks' height over the valley does.

    Pair A: a big disc (peak 1) and a small one (peak 0.5) meeting at 0.15:
    a threshold must lie in (0.15, 0.5).  Pair B: two discs (peak 1) meeting
    at 0.6: it must lie above 0.6.  Disc C has a bump of height ~0.1 over its
    slope that must not split it.  ``seed_h=0.25`` separates A and B and
    keeps C whole.
    """
    cones = [(20, 20, 12, 1.0), (20, 35, 7, 0.5),  # A
             (60, 20, 10, 1.0), (60, 28, 10, 1.0),  # B
             (100, 25, 10, 1.0), (100, 30, 3, 0.62)]  # C: main cone + bump
    fg, dist, owner = _cones((120, 60), cones)
    centres = [(20, 20), (20, 35), (60, 20), (60, 28), (100, 25)]
    for t in np.arange(0.05, 1.0, 0.05):  # the old seeds: none gives the five objects
        out = instances_from_maps(fg, dist, seed_threshold=float(t), min_size=1)
        assert not (out.max() == 5 and len({out[c] for c in centres}) == 5), t
    out = instances_from_maps(fg, dist, seed_threshold=0.0, seed_h=0.25, min_size=1)
    assert out.max() == 5 and len({out[c] for c in centres}) == 5
    assert np.array_equal(out > 0, fg > 0)
    # each object is mostly its own disc (the watershed line follows the valley)
    for c in centres[:4]:
        k = owner[c]
        assert ((out == out[c]) & (owner == k)).sum() >= 0.9 * (owner == k).sum()
    assert (out[owner >= 5] == out[100, 25]).all()  # C and its bump: one object


@pytest.mark.parametrize("shape", [(90, 110), (14, 30, 34)])
def test_h_maxima_seeds_match_skimage_h_maxima(shape):
    """Seeds from skimage.morphology.h_maxima, flooded the same way, give the same objects (2D and 3D)."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    rng = np.random.default_rng(4)
    dist = ndi.gaussian_filter(rng.random(shape), 2.0).astype(np.float32)
    dist = (dist - dist.min()) / (dist.max() - dist.min())
    fg = (dist > 0.35).astype(np.float32)
    mask = fg > 0.5
    for h in (0.05, 0.15):
        out = instances_from_maps(fg, dist, seed_threshold=0.0, seed_h=h, min_size=0)
        full = ndi.generate_binary_structure(dist.ndim, dist.ndim)
        markers, _ = ndi.label(h_maxima(np.where(mask, dist, 0), np.float32(h)).astype(bool) & mask, structure=full)
        ref = watershed(-dist, markers, mask=mask)
        rest, _ = ndi.label(mask & (ref == 0), structure=ndi.generate_binary_structure(dist.ndim, 1))
        ref[rest > 0] = rest[rest > 0] + ref.max()
        assert out.max() > 3 and _same_partition(out, ref), h


def test_seed_h_is_checked():
    z = np.zeros((8, 8), np.float32)
    with pytest.raises(ParameterError, match="seed_h"):
        instances_from_maps(z, z, seed_h=-0.1)
