"""Whole-image block-wise segmentation: exact stitching across block borders, tissue, pyramid, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medseg.analysis.metrics import match_instances
from napari_medseg.batch import blockwise as bw
from napari_medseg.batch import store as st
from napari_medseg.batch.plan import BlockGrid, SourceSpec, tissue_blocks
from napari_medseg.errors import ParameterError
from napari_medseg.geometry import Geometry
from napari_medseg.progress import run
from tests.core.synthetic_nuclei import nuclei_image

#: small blocks so that a 300 x 380 image has 3 x 3 of them and many objects cross their borders
OPTS = {"model": "nuclei", "block_size": 128, "chunk": 64, "max_object_size": 32, "device": "cpu"}


def canonical(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered by each object's first pixel in raster order (so two numberings compare equal)."""
    labels = np.asarray(labels)
    ids, first = np.unique(labels.ravel(), return_index=True)
    lut = np.zeros(int(labels.max()) + 1, np.int64)
    lut[ids] = first + 1
    lut[0] = 0
    return lut[labels]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return nuclei_image()


@pytest.fixture(scope="module")
def whole(image):
    from napari_medseg.analysis.objects import detect

    return detect(image, "nuclei", device="cpu")


def test_stitched_objects_are_the_whole_images_objects(image, whole, tmp_path):
    res = run(bw.segment_blockwise_iter(image, str(tmp_path), **OPTS))
    lab = np.asarray(res.labels[0])
    assert res.summary["blocks"] == 9 and res.summary["active_blocks"] == 9
    # objects that cross a core border (rows/columns 128 and 256): the case stitching is for
    ref = np.asarray(whole.labels)
    crossing = set()
    for b in (128, 256):
        crossing |= set(np.unique(ref[b - 1][ref[b - 1] == ref[b]])) | set(np.unique(ref[:, b - 1][ref[:, b - 1] == ref[:, b]]))
    crossing.discard(0)
    assert len(crossing) >= 10
    # the same objects, pixel for pixel: none split, none duplicated, none lost
    assert lab.max() == ref.max() == len(res.table)
    np.testing.assert_array_equal(canonical(lab), canonical(ref))
    # ids 1..n, and the table's rows are the labels' objects, at their whole-image positions
    assert sorted(res.table["id"]) == list(range(1, lab.max() + 1))
    row = res.table.set_index("id").loc[int(lab[tuple(np.argwhere(lab > 0)[0])])]
    ys, xs = np.nonzero(lab == row.name)
    assert row["n_pixels"] == len(ys)
    assert row["centroid_y"] == pytest.approx(ys.mean()) and row["centroid_x"] == pytest.approx(xs.mean())
    assert sorted(res.table["n_pixels"]) == sorted(whole.table["n_pixels"])
    assert sorted(np.round(res.table["score"], 4)) == pytest.approx(sorted(np.round(whole.table["score"], 4)), abs=1e-3)


def test_tissue_mask_runs_only_the_blocks_it_touches(image, whole, tmp_path):
    tissue = np.zeros((30, 38), bool)  # 10x coarser than the image
    tissue[:10, :10] = True  # inside core 0 (rows/cols 0..127)
    import napari_medseg as ms

    steps = []
    res = ms.segment_blockwise(image, tmp_path, tissue=tissue, progress=steps.append, **OPTS)
    assert res.summary["active_blocks"] == 1 and steps[-1].step == steps[-1].total
    lab = np.asarray(res.labels[0])
    ref = np.asarray(whole.labels)
    # the objects whose centroid lies in core 0 and on the tissue (its mask grown by one mask pixel, 10 image
    # pixels: rows and columns 0..109), whole (also where they reach into the next cores); the others in core 0
    # lie off the tissue and are dropped.  The normalisation comes from the tissue's pixels, so a few pixels
    # may differ from the whole image's run
    cents = {i: np.argwhere(ref == i).mean(0) for i in range(1, ref.max() + 1)}
    owned = [i for i, c in cents.items() if (c < 110).all()]
    off = [i for i, c in cents.items() if (c < 128).all() and not (c < 110).all()]
    m = match_instances(np.where(np.isin(ref, owned), ref, 0), lab, 0.9)
    assert lab.max() == len(owned) == len(m.pairs) >= 3
    assert res.summary["off_tissue_objects"] == len(off) >= 1


def test_pyramid_levels_multiscale_metadata_and_world_columns(image, tmp_path, monkeypatch):
    monkeypatch.setattr(st, "SMALLEST_LEVEL", 100)
    g = Geometry.from_scale("YX", (0.25, 0.5), (100.0, -3.0), units="µm")
    res = run(bw.segment_blockwise_iter(SourceSpec(array=image, geometry=g), str(tmp_path),
                                        **{**OPTS, "block_size": 192}))
    levels = res.labels
    assert [lv.shape for lv in levels] == [(300, 380), (150, 190), (75, 95)]
    np.testing.assert_array_equal(levels[1][:], levels[0][::2, ::2])
    np.testing.assert_array_equal(levels[2][:], levels[0][::4, ::4])
    meta = json.loads((tmp_path / "image.zarr" / "zarr.json").read_text())["attributes"]
    ms = meta["ome"]["multiscales"][0]
    assert [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]] == [[0.25, 0.5], [0.5, 1.0],
                                                                                     [1.0, 2.0]]
    assert ms["datasets"][2]["coordinateTransformations"][1]["translation"] == [100.0, -3.0]
    assert ms["axes"][0] == {"name": "y", "type": "space", "unit": "micrometer"}
    lv, geom, rec = st.open_labels(tmp_path / "image.zarr")
    assert geom.allclose(g) and rec["complete"] and rec["summary"]["objects"] == int(levels[0][:].max())
    assert not (tmp_path / ".image.parts").exists()
    t = res.table  # world columns from the geometry, at whole-image positions
    np.testing.assert_allclose(t["centroid_y_um"], 100.0 + 0.25 * t["centroid_y"])
    np.testing.assert_allclose(t["centroid_x_um"], -3.0 + 0.5 * t["centroid_x"])
    np.testing.assert_allclose(t["area_um2"], 0.125 * t["n_pixels"])


def test_resume_skips_finished_blocks_and_finished_jobs(image, tmp_path, monkeypatch):
    import napari_medseg.inference.segment as seg

    opts = {**OPTS, "block_size": 192, "detect": False}
    job = bw.plan_job(SourceSpec(array=image), str(tmp_path), **opts)
    assert len(job.active) == 4
    for i in job.active[:2]:
        bw.segment_block(job, i)
    calls = []
    real = seg.segment_iter

    def counting(*a, **k):
        calls.append(1)
        return (yield from real(*a, **k))

    monkeypatch.setattr(seg, "segment_iter", counting)
    first = run(bw.segment_blockwise_iter(image, str(tmp_path), **opts))
    assert len(calls) == 2
    calls.clear()
    again = run(bw.segment_blockwise_iter(image, str(tmp_path), **opts))
    assert calls == [] and again.summary["objects"] == first.summary["objects"]
    np.testing.assert_array_equal(again.labels[0][:], first.labels[0][:])
    # other settings start over
    other = run(bw.segment_blockwise_iter(image, str(tmp_path), **{**opts, "max_object_size": 40}))
    assert len(calls) == 4 and other.summary["blocks"] == 4
    np.testing.assert_array_equal(canonical(other.labels[0][:]), canonical(first.labels[0][:]))


def test_block_grid_boxes_neighbours_and_tissue():
    g = BlockGrid((500, 700), 256, 64, 64)
    assert g.counts == (2, 3) and len(g) == 6
    assert g.core(4) == (slice(256, 500), slice(256, 512))
    assert g.keep_box(4) == (slice(192, 500), slice(192, 576))
    assert g.read_box(4) == (slice(128, 500), slice(128, 640))
    assert g.neighbours(4) == [4, 0, 1, 2, 3, 5] and g.neighbours(0) == [0, 1, 3, 4]
    mask = np.zeros((50, 70), bool)
    mask[30, 65] = True  # image pixel (300..310, 650..660): block 5
    assert tissue_blocks(g, mask) == [5] and tissue_blocks(g, None) == list(range(6))
    with pytest.raises(ParameterError, match="larger than the largest object"):
        BlockGrid((100, 100), 64, 64, 16)
    with pytest.raises(ParameterError, match="2D"):
        tissue_blocks(g, np.zeros((2, 3, 4), bool))


def test_bad_sources_are_refused_with_clear_messages(tmp_path):
    with pytest.raises(ParameterError, match="not both or neither"):
        SourceSpec()
    with pytest.raises(ParameterError, match="2D images"):
        bw.plan_job(SourceSpec(array=np.zeros((4, 64, 64), np.uint8), axes="ZYX"), str(tmp_path), model="nuclei")
    with pytest.raises(ParameterError, match="instance models"):
        bw.plan_job(SourceSpec(array=np.zeros((64, 64), np.uint8)), str(tmp_path), model="ms-lesions")
    with pytest.raises(ParameterError, match="not a labels store"):
        st.open_labels(tmp_path / "nothing.zarr")
