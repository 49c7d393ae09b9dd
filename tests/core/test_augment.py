"""Augmentation and targets: shapes, label integrity, exact geometry, determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_medseg.training.augment import AugmentConfig, pixel_augment, random_matrix, stain_jitter, warp
from napari_medseg.training.data import PatchSampler, Sample, prepare_image
from napari_medseg.training.targets import instance_targets, normalized_distance


def _blobs(shape=(64, 80), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    lab = np.zeros(shape, np.int32)
    for k in range(1, 9):
        cy, cx = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6)
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= 25) & (lab == 0)] = k
    img = (lab > 0) * 200.0 + rng.normal(20, 3, shape)
    return img.astype(np.float32), lab


def test_normalized_distance_exact_and_touching_objects():
    lab = np.zeros((5, 8), np.int32)
    lab[1:4, 1:4] = 1
    lab[1:4, 4:7] = 2  # touches object 1
    d = normalized_distance(lab)
    square = np.array([[0.5, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 0.5]], np.float32)
    np.testing.assert_array_equal(d[1:4, 1:4], square)
    np.testing.assert_array_equal(d[1:4, 4:7], square)
    assert d[lab == 0].max() == 0
    fg, dist = instance_targets(lab)
    assert fg.dtype == dist.dtype == np.float32
    np.testing.assert_array_equal(fg, (lab > 0).astype(np.float32))
    # an object cut by the array edge ends there
    edge = np.ones((1, 3), np.int32)
    np.testing.assert_array_equal(normalized_distance(edge), np.ones((1, 3), np.float32))


def test_warp_identity_is_a_crop_and_mirrors_beyond_edges():
    img, lab = _blobs()
    # patch of 16 centred on (31.5, 39.5) with the identity: exactly img[24:40, 32:48]
    out_img, out_lab = warp([(img, 1), (lab, 0)], (31.5, 39.5), np.eye(2), 16)
    np.testing.assert_array_equal(out_img, img[24:40, 32:48])
    np.testing.assert_array_equal(out_lab, lab[24:40, 32:48])
    # patch hanging over the top-left corner: numpy 'reflect' padding
    out = warp([(lab, 0)], (3.5, 3.5), np.eye(2), 16)[0]
    np.testing.assert_array_equal(out, np.pad(lab, 4, mode="reflect")[0:16, 0:16])


def test_flip_rot90_are_exact_and_keep_labels():
    img, lab = _blobs((40, 40))
    cfg = AugmentConfig(rotate=False, zoom=(1.0, 1.0))
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(12):
        m = random_matrix(rng, cfg)
        out_img, out_lab = warp([(img, 1), (lab, 0)], (19.5, 19.5), m, 40)
        # the output is one of the 8 exact symmetries of the input
        candidates = [np.rot90(f, k) for f in (lab, lab[:, ::-1]) for k in range(4)]
        hits = [i for i, c in enumerate(candidates) if np.array_equal(out_lab, c)]
        assert len(hits) >= 1
        seen.add(hits[0])
        imgs = [np.rot90(f, k) for f in (img, img[:, ::-1]) for k in range(4)]
        np.testing.assert_array_equal(out_img, imgs[hits[0]])
        assert sorted(np.bincount(out_lab.ravel())) == sorted(np.bincount(lab.ravel()))
    assert len(seen) >= 4  # several symmetries were drawn


def test_rotation_zoom_keeps_image_and_labels_aligned():
    img, lab = _blobs((96, 96), seed=2)
    cfg = AugmentConfig(zoom=(0.7, 1.5))
    rng = np.random.default_rng(5)
    for _ in range(5):
        m = random_matrix(rng, cfg)
        out_img, out_lab = warp([(img, 1), (lab, 0)], (47.5, 47.5), m, 64)
        assert out_img.dtype == np.float32 and out_lab.dtype == np.int32
        assert set(np.unique(out_lab)) <= set(np.unique(lab))  # nearest neighbour: no new ids
        agree = ((out_img > 110) == (out_lab > 0)).mean()
        assert agree > 0.97


def test_pixel_augment_shapes_and_effects():
    rng = np.random.default_rng(0)
    grey = rng.random((1, 32, 32)).astype(np.float32)
    inv = pixel_augment(grey, np.random.default_rng(0), replace(AugmentConfig.none(), p_invert=1.0))
    np.testing.assert_allclose(inv, 1.0 - grey, atol=1e-6)
    np.testing.assert_array_equal(pixel_augment(grey, rng, AugmentConfig.none()), grey)
    out = pixel_augment(grey, np.random.default_rng(3), AugmentConfig(p_blur=1.0, p_noise=1.0))
    assert out.shape == grey.shape and out.dtype == np.float32 and not np.allclose(out, grey)
    rgb = np.stack([np.full((8, 8), v, np.float32) for v in (0.8, 0.5, 0.7)])
    j = stain_jitter(rgb, np.random.default_rng(0), 0.1, 0.02)
    assert j.shape == (3, 8, 8) and j.dtype == np.float32
    assert np.abs(j - rgb).max() > 1e-3
    # zero-strength stain jitter is the identity (up to the HED round trip)
    np.testing.assert_allclose(stain_jitter(rgb, np.random.default_rng(0), 0.0, 0.0), rgb, atol=1e-4)


def test_sampler_determinism_shapes_and_weights():
    img, lab = _blobs()
    weight = np.ones(lab.shape, np.float32)
    weight[:, :40] = 0
    samples = [Sample(img, lab, weight=weight, name="a"), Sample(img[::-1].copy(), lab[::-1].copy(), name="b")]
    a = PatchSampler(samples, patch_size=32, seed=7).batch(3)
    b = PatchSampler(samples, patch_size=32, seed=7).batch(3)
    c = PatchSampler(samples, patch_size=32, seed=8).batch(3)
    for x, y in zip(vars(a).values(), vars(b).values(), strict=False):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (3, 1, 32, 32) and a.fg.shape == a.dist.shape == a.weight.shape == (3, 32, 32)
    assert a.image.dtype == a.fg.dtype == a.dist.dtype == a.weight.dtype == np.float32
    assert set(np.unique(a.weight)) <= {0.0, 1.0}
    assert a.dist.min() >= 0 and a.dist.max() <= 1
    assert np.all(a.dist[a.fg == 0] == 0)


def test_prepare_image_matches_percentiles():
    img = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)
    x = prepare_image(img, {"kind": "percentile", "low": 1.0, "high": 99.8})
    lo, hi = np.percentile(img, [1.0, 99.8])
    assert x.shape == (1, 100, 100) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], (img - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    rgb = np.stack([img, img // 2, img // 4], -1)
    assert prepare_image(rgb, {"kind": "percentile"}).shape == (3, 100, 100)
    with pytest.raises(ValueError, match="channels"):
        PatchSampler([Sample(img, np.zeros((100, 100), np.int32)), Sample(rgb, np.zeros((100, 100), np.int32))])
