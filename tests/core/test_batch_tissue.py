"""Whole-image jobs find the tissue of RGB slides themselves and segment only the blocks that touch it."""

from __future__ import annotations

import numpy as np
import pytest

import napari_medseg as ms
from napari_medseg.batch import blockwise as bw
from napari_medseg.batch import store as st
from napari_medseg.batch.plan import SourceSpec
from napari_medseg.batch.tissue import job_tissue
from napari_medseg.errors import ParameterError
from tests.slide_data import DEBRIS_FROM, TISSUE_SQUARE, write_ome_pyramid, write_tissue_and_debris_slide

OPTS = {"model": "nuclei-he", "block_size": 512, "chunk": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return write_tissue_and_debris_slide(tmp_path_factory.mktemp("slide") / "debris.ome.tif")


def test_auto_skips_the_glass_blocks_and_the_debris_on_them(slide, tmp_path):
    res = ms.segment_blockwise(SourceSpec(path=str(slide)), tmp_path / "auto", **OPTS)  # tissue="auto" by default
    s = res.summary
    y0, x0, edge = TISSUE_SQUARE
    assert s["tissue"] == "detected" and abs(s["tissue_fraction"] - edge**2 / 1024**2) < 0.02
    assert (s["blocks"], s["active_blocks"], s["skipped_blocks"]) == (4, 1, 3)
    assert st.read_record(tmp_path / "auto" / "debris.zarr")["summary"]["skipped_blocks"] == 3
    lab = np.asarray(res.labels[0][:])
    assert not lab[DEBRIS_FROM:, DEBRIS_FROM:].any()  # the debris on the glass is not segmented
    assert len(np.unique(lab[y0:y0 + edge, x0:x0 + edge])) - 1 >= 50  # the tissue's nuclei are
    assert s["objects"] == len(res.table) == lab.max()


def test_objects_on_glass_inside_a_tissue_block_are_dropped_and_counted(slide, tmp_path, monkeypatch):
    """One block holds the tissue square and the eight specks of debris on the glass beside it."""
    opts = {**OPTS, "block_size": 1024}
    res = ms.segment_blockwise(SourceSpec(path=str(slide)), tmp_path / "one", **opts)
    s = res.summary
    assert (s["tissue"], s["blocks"], s["active_blocks"]) == ("detected", 1, 1)
    lab = np.asarray(res.labels[0][:])
    assert not lab[DEBRIS_FROM:, DEBRIS_FROM:].any()  # the specks were segmented, then dropped
    assert s["off_tissue_objects"] == 8
    y0, x0, edge = TISSUE_SQUARE
    # the same job without the glass filter: it keeps exactly the eight specks more
    monkeypatch.setattr(bw, "_centroids_on", lambda mask, cent, shape: np.ones(len(cent), bool))
    whole = ms.segment_blockwise(SourceSpec(path=str(slide)), tmp_path / "unfiltered", **opts)
    assert whole.summary["off_tissue_objects"] == 0
    assert s["objects"] == whole.summary["objects"] - 8 == len(res.table) == lab.max()
    assert np.array_equal(lab[y0:y0 + edge, x0:x0 + edge] > 0,
                          np.asarray(whole.labels[0][:])[y0:y0 + edge, x0:x0 + edge] > 0)


def test_none_runs_every_block_as_before(slide, tmp_path):
    res = ms.segment_blockwise(SourceSpec(path=str(slide)), tmp_path / "none", tissue="none", **OPTS)
    s = res.summary
    assert (s["tissue"], s["tissue_fraction"], s["active_blocks"], s["skipped_blocks"]) == ("none", None, 4, 0)
    lab = np.asarray(res.labels[0][:])
    assert len(np.unique(lab[DEBRIS_FROM:, DEBRIS_FROM:])) - 1 == 8  # every speck of debris is an object
    # "none" is the old whole-image job: the same settings key as without a mask (its outputs resume)
    old = bw.plan_job(SourceSpec(path=str(slide)), str(tmp_path / "none"), tissue=None, **OPTS)
    assert old.key == bw.plan_job(SourceSpec(path=str(slide)), str(tmp_path / "none"), tissue="none", **OPTS).key
    assert bw.is_complete(old)


def test_auto_leaves_grey_and_small_images_whole_and_bad_modes_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    small_rgb = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    assert job_tissue(SourceSpec(array=small_rgb)).mode == "none"  # a flat RGB crop: all tissue
    grey = np.zeros((512, 512), np.uint8)
    grey[100:300, 100:300] = 200  # fluorescence-like: bright tissue on a dark background
    grey_pyramid = write_ome_pyramid(tmp_path / "grey.ome.tif", grey, mpp=1.0, factors=(2, 4), tile=128)
    assert job_tissue(SourceSpec(path=str(grey_pyramid))).mode == "none"  # grey / fluorescence: whole
    on = job_tissue(SourceSpec(path=str(grey_pyramid)), "on")  # forced: Otsu on intensity, tissue bright
    assert on.mode == "detected" and abs(on.fraction - 200**2 / 512**2) < 0.03
    assert job_tissue(SourceSpec(array=small_rgb), "none").mask is None
    given = job_tissue(SourceSpec(array=small_rgb), np.eye(4, dtype=bool))
    assert (given.mode, given.fraction) == ("given", 0.25)
    with pytest.raises(ParameterError, match="tissue must be one of auto, on, none"):
        job_tissue(SourceSpec(array=small_rgb), "yes")
    with pytest.raises(ParameterError, match="axes 'CYX'"):
        job_tissue(SourceSpec(array=np.zeros((2, 64, 64), np.uint8), axes="CYX"), "on")


def test_a_slide_of_glass_runs_no_block(tmp_path):
    rng = np.random.default_rng(0)
    glass = np.clip(np.array((222, 226, 240), float) + rng.normal(0, 3, (1024, 1024, 3)), 0, 255).astype(np.uint8)
    path = write_ome_pyramid(tmp_path / "glass.ome.tif", glass, mpp=0.5, factors=(2, 4, 8))
    found = job_tissue(SourceSpec(path=str(path)))
    assert found.mode == "empty" and found.fraction == 0.0 and found.mask is not None and not found.mask.any()
    job = bw.plan_job(SourceSpec(path=str(path)), str(tmp_path / "o"), **OPTS)
    assert job.active == () and job.tissue == {"tissue": "empty", "tissue_fraction": 0.0}
