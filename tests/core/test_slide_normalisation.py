"""Block-wise jobs normalise with the limits of the job level's tissue, whatever the slide's size or pyramid depth."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.analysis.metrics import match_instances
from napari_medseg.batch import blockwise as bw
from napari_medseg.batch.plan import SourceSpec
from napari_medseg.batch.sampling import normalization_sample
from napari_medseg.errors import ParameterError
from napari_medseg.progress import run
from tests.slide_data import GLASS, he_nuclei, write_window_slide

#: the tissue window (y, x) on both slides: inside block 0 (256 px), off the 32-px grid of the big slide's mask
CORNER = (48, 16)


def coarse_mask(path) -> np.ndarray:
    """Tissue on the slide's smallest level (256 x 256): pixels darker than the glass."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        return tf.series[0].levels[-1].asarray().min(axis=-1) < 225


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("slides")
    window = he_nuclei((200, 224), 40, seed=3)
    # 1024^2, 3 levels (mask pixel = 4 px) and 8192^2, 6 levels (mask pixel = 32 px): the same window
    return window, [write_window_slide(d / f"slide_{n}.ome.tif", n, window, CORNER) for n in (1024, 8192)]


def test_same_tissue_same_limits_and_objects_on_a_small_and_a_big_slide(slides, tmp_path):
    window, paths = slides
    jobs, labels = [], []
    for p in paths:
        mask = coarse_mask(p)
        out = tmp_path / p.stem
        opts = {"tissue": mask, "model": "nuclei-he", "block_size": 256, "chunk": 64, "device": "cpu"}
        jobs.append(bw.plan_job(SourceSpec(path=str(p)), str(out), **opts))
        res = run(bw.segment_blockwise_iter(SourceSpec(path=str(p)), str(out), **opts))
        assert res.summary["limits"] == {"low": list(jobs[-1].limits[0]), "high": list(jobs[-1].limits[1])}
        labels.append(np.asarray(res.labels[0][:256, :256]))
    small, big = jobs
    assert small.active == big.active == (0,)
    # the tissue's own limits: nuclei (75, 35, 125) to stroma (232, 165, 210) plus noise; not the glass (G 234)
    np.testing.assert_allclose(small.limits, big.limits, atol=1.0)
    assert big.limits[1][1] < GLASS[1] - 30 and big.limits[0][1] < 60
    # the same objects (limits within a grey level: a few border pixels may differ), on the tissue only
    assert labels[0].max() == labels[1].max() >= 15
    m = match_instances(labels[0], labels[1], 0.5)
    assert len(m.pairs) == labels[0].max() and min(m.ious) > 0.8
    assert np.mean((labels[0] > 0) != (labels[1] > 0)) < 1e-3
    y, x = CORNER
    inside = np.zeros((256, 256), bool)
    inside[y:y + window.shape[0], x:x + window.shape[1]] = True
    assert not (labels[1] > 0)[~inside].any()


def test_sample_is_bounded_deterministic_and_off_the_glass_at_mask_borders():
    rng = np.random.default_rng(0)
    img = np.full((600, 700, 3), 250, np.uint8)
    img[100:420, 130:530] = rng.integers(0, 200, (320, 400, 3))  # tissue, darker than the glass
    mask = np.zeros((30, 35), bool)  # 20 px per mask pixel; the tissue is not on its grid
    mask[5:21, 6:27] = True  # rows 100..420, cols 120..540: the border pixels are part glass
    s, axes = normalization_sample(img, "YXS", mask, n_pixels=50_000, patch=64)
    assert axes == "YXC" and s.shape == (1, 50_000, 3) and s.dtype == np.uint8
    assert s.max() < 200  # no glass: the mask was eroded (by 2 mask pixels: 40 >= 32 px)
    again, _ = normalization_sample(img, "YXS", mask, n_pixels=50_000, patch=64)
    np.testing.assert_array_equal(s, again)
    # the same tissue at the same place on a larger image (larger mask, same mask pixel size): the same sample
    big = np.full((1800, 2100, 3), 250, np.uint8)
    big[:600, :700] = img
    big_mask = np.zeros((90, 105), bool)
    big_mask[:30, :35] = mask
    np.testing.assert_array_equal(normalization_sample(big, "YXS", big_mask, n_pixels=50_000, patch=64)[0], s)
    # a mask too thin to erode is used as it is; no mask samples the whole image (channels first too)
    thin = np.zeros((30, 35), bool)
    thin[10, 10:20] = True
    t, _ = normalization_sample(img, "YXS", thin)
    assert t.shape[1] == 20 * 200
    whole, _ = normalization_sample(np.moveaxis(img, -1, 0), "CYX", None, n_pixels=10**7)
    assert whole.shape == (1, 600 * 700, 3)
    np.testing.assert_array_equal(np.sort(whole[0], axis=0), np.sort(img.reshape(-1, 3), axis=0))
    with pytest.raises(ParameterError, match="2D"):
        normalization_sample(img, "YXS", np.zeros((2, 3, 4), bool))
