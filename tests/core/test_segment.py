"""segment_iter / segment end to end: known per-pixel networks, random U-Nets, stitching, cancel, out."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

import napari_medseg as ms
from napari_medseg.errors import ModelError, ParameterError
from napari_medseg.inference import segment as seg_mod
from napari_medseg.inference.prepare import infer_axes
from napari_medseg.inference.segment import SegmentResult, segment_iter
from napari_medseg.inference.stitch import Block, LabelStore, stitch_block
from napari_medseg.models import registry
from napari_medseg.models.testing import make_random_model
from napari_medseg.progress import Cancelled, CancelToken, run

# ----------------------------------------------------------------- helpers


def disk_maps(shape, n, seed=0, rmin=4, rmax=9, gap=2):
    """Non-touching disks: ground-truth labels and their normalised distance map (1 at centres)."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.int32)
    dist = np.zeros(shape, np.float32)
    placed: list[tuple[float, float, float]] = []
    yy, xx = np.indices(shape)
    tries = 0
    while len(placed) < n and tries < 20000:
        tries += 1
        r = rng.uniform(rmin, rmax)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        if any((cy - y) ** 2 + (cx - x) ** 2 < (r + q + gap) ** 2 for y, x, q in placed):
            continue
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if mask.sum() < 20:
            continue
        placed.append((cy, cx, r))
        gt[mask] = len(placed)
        d = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        dist[mask] = d[mask] / d.max()
    return gt, dist


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images hold the same objects (pixel sets), whatever the ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    fg = a > 0
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[fg])) == len(np.unique(b[fg]))


def consecutive(labels) -> bool:
    u = np.unique(np.asarray(labels))
    return np.array_equal(u, np.arange(u[-1] + 1)) if u[0] == 0 else False


class PixelNet(torch.nn.Module):
    """Per-pixel stand-in for a U-Net: instance -> (fg, dist) logits, semantic -> class logits."""

    def __init__(self, kind="instance", divisor=4):
        super().__init__()
        self.kind = kind
        self.divisor = divisor
        self.depth = 3

    calls = 0  # forward passes of all copies (the engine runs a private copy of the network)

    def forward(self, x):
        type(self).calls += 1
        x = x[:, :1]
        if self.kind == "instance":
            return torch.cat([60 * (x - 0.05), 60 * (x - 0.45)], dim=1)
        return torch.cat([torch.zeros_like(x), 60 * (x - 0.5)], dim=1)


@pytest.fixture
def pixel_model(tmp_path, serve_network):
    """A model folder whose network is replaced by :class:`PixelNet` (no normalisation)."""

    def make(kind="instance", in_channels=1, dims=2, **card_extra):
        folder = make_random_model(tmp_path / f"pix-{kind}-{in_channels}-{dims}", name=f"pix-{kind}", kind=kind,
                                   in_channels=in_channels, dims=dims, depth=3)
        card = json.loads((folder / "model.json").read_text())
        card["input"]["normalization"] = {"kind": "none"}
        for k, v in card_extra.items():
            card[k.split("__")[0]][k.split("__")[1]] = v
        (folder / "model.json").write_text(json.dumps(card))
        net = PixelNet(kind)
        PixelNet.calls = 0
        serve_network(folder, net)
        return folder, net

    return make


@pytest.fixture(autouse=True)
def isolated_models(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user-models"))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")


# ----------------------------------------------------------------- tests


def test_infer_axes():
    assert infer_axes((5, 6)) == "YX"
    assert infer_axes((5, 6, 3)) == "YXS"
    assert infer_axes((5, 6, 4)) == "YXS"
    assert infer_axes((5, 6, 7)) == "ZYX"
    assert infer_axes((2, 5, 6, 3)) == "ZYXS"
    with pytest.raises(ParameterError, match="pass axes"):
        infer_axes((2, 3, 5, 6))


def test_instance_labels_are_the_objects(pixel_model):
    folder, net = pixel_model("instance")
    gt, img = disk_maps((230, 301), 60)
    res = run(segment_iter(img, str(folder), tile_size=64, return_probabilities=True))
    assert isinstance(res, SegmentResult)
    assert res.labels.dtype == np.uint16 and res.labels.shape == gt.shape
    assert consecutive(res.labels) and res.info["n_labels"] == gt.max() == res.labels.max()
    assert same_objects(res.labels, gt)
    assert res.info["tiles"] > 1 and net.calls == res.info["tiles"]
    assert res.probabilities.dtype == np.float16 and res.probabilities.shape == (2, *gt.shape)
    assert res.model_name == "pix-instance" and res.device == "cpu" and res.device_reason
    assert {"load", "normalize", "read", "network", "postprocess", "write", "total"} <= set(res.timings)


def test_blockwise_postprocessing_matches_whole_image(pixel_model):
    folder, _ = pixel_model("instance")
    gt, img = disk_maps((230, 301), 60, seed=1)
    whole = run(segment_iter(img, str(folder), tile_size=64))
    blocks = run(segment_iter(img, str(folder), tile_size=64,
                              postprocess={"block_size": 50, "max_object_size": 24}))
    assert whole.info["blocks"] == 1 and blocks.info["blocks"] == 5 * 7
    assert same_objects(blocks.labels, gt) and same_objects(whole.labels, gt)
    assert consecutive(blocks.labels)


@pytest.mark.parametrize("seeds", [{}, {"seed_h": 0.3, "seed_threshold": 0.0}], ids=["threshold", "h-maxima"])
def test_blocks_with_touching_objects(pixel_model, seeds):
    # touching disks: watershed splits; objects away from block borders must equal the unblocked result
    folder, _ = pixel_model("instance")
    gt, dist = disk_maps((200, 260), 120, seed=2, gap=-3)  # the image is its own distance map
    pp = {"min_size": 5, "max_object_size": 24, **seeds}
    one = run(segment_iter(dist, str(folder), tile_size=64, postprocess=pp))
    many = run(segment_iter(dist, str(folder), tile_size=64, postprocess={**pp, "block_size": 64}))
    assert one.info["blocks"] == 1 and many.info["blocks"] == 4 * 5
    assert one.info["postprocess"]["seed_h"] == many.info["postprocess"]["seed_h"] == seeds.get("seed_h", 0.0)
    whole, tiled = one.labels, many.labels
    assert np.array_equal(whole > 0, gt > 0)  # every disk pixel is foreground (distance >= 1/9 > 0.05)
    assert consecutive(tiled) and tiled.max() >= 0.95 * whole.max()
    border = np.zeros(gt.shape, bool)
    for y in range(0, 200, 50):  # plan_blocks: 4 x 5 balanced blocks -> edges every 50 / 52 px
        border[max(0, y - 1):y + 1] = True
    for x in np.linspace(0, 260, 6).round().astype(int):
        border[:, max(0, x - 1):x + 1] = True
    cross = np.unique(whole[border])
    inner = ~np.isin(whole, cross)
    assert inner.sum() > 0.5 * (whole > 0).sum()
    sel = inner & (whole > 0)
    pairs = np.unique(np.stack([whole[sel], tiled[sel]]), axis=1)
    assert pairs.shape[1] == len(np.unique(whole[sel])) == len(np.unique(tiled[sel]))
    assert (tiled[sel] > 0).all()
    # and every tiled object inside those is the whole object
    for w, t in pairs.T:
        assert np.array_equal(whole == w, tiled == t)


def test_semantic_labels_and_probabilities(pixel_model):
    folder, _ = pixel_model("semantic")
    img = np.random.default_rng(0).random((70, 90)).astype(np.float32)
    # float32: bfloat16 (auto on CPUs with native BF16) moves pixels within ~0.004 of 0.5
    labels, probs = ms.segment(img, str(folder), tile_size=32, return_probabilities=True, precision="float32")
    assert np.array_equal(labels, (img > 0.5).astype(np.uint16))
    assert probs.shape == (2, 70, 90) and np.allclose(probs.sum(0), 1, atol=2e-3)


@pytest.mark.parametrize("kind", ["dask", "zarr", "memmap"])
def test_array_likes_give_the_same_result(pixel_model, kind, tmp_path):
    folder, _ = pixel_model("instance")
    gt, img = disk_maps((120, 150), 25, seed=3)
    if kind == "dask":
        import dask.array as da

        data = da.from_array(img, chunks=(50, 50))
    elif kind == "zarr":
        import zarr

        data = zarr.create_array(store=str(tmp_path / "img.zarr"), shape=img.shape, chunks=(40, 40), dtype=img.dtype)
        data[:] = img
    else:
        data = np.memmap(tmp_path / "img.raw", dtype=img.dtype, mode="w+", shape=img.shape)
        data[:] = img
    labels = ms.segment(data, str(folder), tile_size=48)
    assert same_objects(labels, gt)


def test_out_memmap_and_disk_staging(pixel_model, tmp_path, monkeypatch):
    folder, _ = pixel_model("instance")
    gt, img = disk_maps((150, 170), 30, seed=4)
    ref = ms.segment(img, str(folder), tile_size=64)
    out = np.memmap(tmp_path / "labels.raw", dtype=np.uint32, mode="w+", shape=img.shape)
    got = ms.segment(img, str(folder), tile_size=64, out=out)
    assert got is out and np.array_equal(np.asarray(out), ref)
    # force the on-disk (zarr) staging used for huge images; its temp folder is removed
    monkeypatch.setattr(seg_mod, "DISK_STAGING_BYTES", 1000)
    before = set(Path(tempfile.gettempdir()).glob("medseg-labels-*"))
    out2 = np.zeros(img.shape, np.uint16)
    ms.segment(img, str(folder), tile_size=64, out=out2, postprocess={"block_size": 60, "max_object_size": 24})
    assert same_objects(out2, gt)
    assert set(Path(tempfile.gettempdir()).glob("medseg-labels-*")) == before
    with pytest.raises(ParameterError, match="out has shape"):
        ms.segment(img, str(folder), out=np.zeros((3, 3), np.uint16))
    with pytest.raises(ParameterError, match="integer dtype"):
        ms.segment(img, str(folder), out=np.zeros(img.shape, np.float32))


def test_cancel_after_first_batch_leaves_out_untouched(pixel_model):
    folder, net = pixel_model("instance")
    _, img = disk_maps((200, 200), 30, seed=5)
    out = np.full(img.shape, 7, np.uint16)
    token = CancelToken()
    seen = []

    def on_progress(p):
        seen.append(p)
        token.cancel()

    with pytest.raises(Cancelled):
        ms.segment(img, str(folder), tile_size=48, batch_size=2, out=out, cancel=token, progress=on_progress)
    assert len(seen) == 1 and seen[0].info["stage"] == "network"
    assert net.calls == 1  # stopped within one tile batch
    assert (out == 7).all()
    # a worker that stops listening (napari's worker.quit) closes the generator: out untouched too
    gen = segment_iter(img, str(folder), tile_size=48, out=out)
    for _ in range(3):
        next(gen)
    gen.close()
    assert (out == 7).all()
    # the final "writing labels" report still comes before out is written
    gen = segment_iter(img, str(folder), tile_size=48, out=out)
    reports = []
    with pytest.raises(StopIteration):
        while True:
            reports.append(next(gen))
            if reports[-1].info["stage"] == "write":
                assert (out == 7).all()
    assert reports[-1].step == reports[-1].total and (out != 7).any()
    assert all(a.step < b.step for a, b in zip(reports, reports[1:], strict=False))


def test_cancel_before_start():
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run(segment_iter(np.zeros((10, 10)), "whatever", cancel=token))


def test_random_unet_end_to_end_is_tile_independent(tmp_path):
    path = make_random_model(tmp_path / "m", depth=3, base_channels=4, seed=1)
    img = np.random.default_rng(6).random((97, 140)).astype(np.float32)
    img = ndi.gaussian_filter(img, 3)
    a = run(segment_iter(img, str(path), tile_size=64, return_probabilities=True, precision="float32",
                         postprocess={"min_size": 0}))
    b = run(segment_iter(img, str(path), tile_size=256, return_probabilities=True, precision="float32",
                         postprocess={"min_size": 0}))
    assert a.info["tiles"] > 1 and b.info["tiles"] == 1
    assert np.abs(a.probabilities.astype(np.float32) - b.probabilities).max() <= 1e-3
    assert np.array_equal(a.labels, b.labels) and consecutive(a.labels)
    assert a.info["precision"] == "float32"


def test_auto_model_and_rgb(tmp_path):
    user = tmp_path / "user-models"
    with pytest.raises(ModelError, match="no installed model"):
        ms.segment(np.zeros((20, 20)))
    make_random_model(user / "g", name="grey-one")
    make_random_model(user / "c", name="rgb-one", in_channels=3)
    rgb = np.random.default_rng(7).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((40, 50, 1), 255, np.uint8)], axis=-1)
    res = run(segment_iter(rgb))
    assert res.model_name == "rgb-one" and res.labels.shape == (40, 50)
    res4 = run(segment_iter(rgba))  # alpha dropped
    assert res4.model_name == "rgb-one" and np.array_equal(res4.labels, res.labels)
    assert run(segment_iter(rgb[..., 0])).model_name == "grey-one"
    with pytest.raises(ModelError, match="takes 1-channel"):
        ms.segment(rgb, "grey-one")
    with pytest.raises(ModelError, match="2-channel image"):
        ms.segment(np.zeros((2, 30, 30)), "grey-one", axes="CYX")
    assert ms.segment(np.zeros((3, 30, 30)), "rgb-one", axes="CYX").shape == (30, 30)
    with pytest.raises(ParameterError, match="one time point"):
        ms.segment(np.zeros((2, 30, 30)), "grey-one", axes="TYX")
    with pytest.raises(ParameterError, match="scale"):
        ms.segment(np.zeros((30, 30)), "grey-one", scale=(1.0,))


def test_2d_model_on_a_stack_labels_each_plane(pixel_model):
    folder, _ = pixel_model("instance")
    planes = [disk_maps((90, 110), 12, seed=s) for s in (10, 11, 12)]
    img = np.stack([p[1] for p in planes])
    res = run(segment_iter(img, str(folder), tile_size=64, scale=(2.0, 0.5, 0.5)))
    assert res.labels.shape == img.shape and consecutive(res.labels)
    assert res.info["tile_shape"][0] == 1
    for z, (gt, _) in enumerate(planes):
        assert same_objects(res.labels[z], gt)
    # ids are unique across planes
    assert sum(p[0].max() for p in planes) == res.labels.max()


def test_3d_model(tmp_path):
    path = make_random_model(tmp_path / "m3", dims=3, depth=2, base_channels=2)
    vol = np.random.default_rng(8).random((9, 40, 37)).astype(np.float32)
    res = run(segment_iter(vol, str(path), tile_size=24, return_probabilities=True, precision="float32"))
    assert res.labels.shape == vol.shape and res.probabilities.shape == (2, *vol.shape)
    assert res.info["tiles"] > 1 and consecutive(res.labels)
    with pytest.raises(ModelError, match="3D"):
        ms.segment(vol[0], str(path))


def test_resampling_to_the_model_pixel_size(pixel_model):
    folder, net = pixel_model("semantic", input__pixel_size=[0.5, 0.5])
    yy, xx = np.indices((120, 150))
    img = np.exp(-((yy - 60.3) ** 2 + (xx - 80.7) ** 2) / (2 * 25.0**2)).astype(np.float32)  # smooth blob
    res = run(segment_iter(img, str(folder), scale=(1.0, 1.0), tile_size=128, return_probabilities=True))
    assert res.info["resampled"] and res.info["zoom"] == [2.0, 2.0]
    expected = img > 0.5
    agree = (res.labels.astype(bool) == expected).mean()
    assert agree > 0.995, agree
    # within 5 %: no resampling, exact per-pixel result (float32: auto is bfloat16 on CPUs with native BF16)
    same = run(segment_iter(img, str(folder), scale=(0.51, 0.49), tile_size=128, precision="float32"))
    assert not same.info["resampled"] and np.array_equal(same.labels.astype(bool), expected)


def test_label_store_promotes_to_uint32():
    n = 400
    checker = (np.add.outer(np.arange(n), np.arange(n)) % 2 == 0)
    lab, count = ndi.label(checker)  # face connectivity: every pixel its own object
    assert count > 65534
    store = LabelStore(lab.shape)
    blk = Block(0, (slice(0, n), slice(0, n)), (slice(0, n), slice(0, n)))
    nxt = stitch_block(store, blk, lab, 1)
    assert nxt == count + 1 and store.array.dtype == np.uint32
    out = store.commit(None, count, (n, n))
    assert out.dtype == np.uint32 and consecutive(out)


def test_units_decide_resampling(pixel_model):
    folder, _ = pixel_model("semantic", input__pixel_size=[0.5, 0.5])
    img = np.random.default_rng(9).random((40, 48)).astype(np.float32)

    def info(**kw):
        return run(segment_iter(img, str(folder), tile_size=64, **kw)).info

    assert info(scale=(0.001, 0.001), units="mm")["zoom"] == pytest.approx([2.0, 2.0])
    assert info(scale=(500.0, 500.0), units=["nm", "nm"])["resampled"] is False
    assert info(scale=(1.0, 1.0), units="pixel")["resampled"] is False  # uncalibrated image
    with pytest.raises(ParameterError, match="cannot compare"):
        info(scale=(1.0, 1.0), units="s")
    with pytest.raises(ParameterError, match="check the image's scale"):
        info(scale=(100.0, 100.0), units="µm")


def test_cached_tiles_stay_within_one_tile_row(pixel_model):
    # memory grows with the tile and the image width, not the image area
    folder, _ = pixel_model("instance")
    gt, img = disk_maps((400, 400), 150, seed=13)
    res = run(segment_iter(img, str(folder), tile_size=48, postprocess={"block_size": 100, "max_object_size": 24}))
    ny, nx = [int(v) for v in res.info["grid"].split("tiles=(")[1].split(")")[0].split(",")]
    assert ny * nx == res.info["tiles"] and ny >= 10 and res.info["blocks"] == 16
    core = int(res.info["grid"].split("core=(")[1].split(",")[0])
    shared_rows = -(-2 * 24 // core) + 1  # tile rows two block rows share (their halos)
    per_block = -(-(100 + 2 * 24) // core) + 1  # tiles along one axis of a block region
    assert res.info["max_cached_tiles"] <= shared_rows * nx + per_block**2 < res.info["tiles"] / 2
    assert same_objects(res.labels, gt)


@pytest.mark.parametrize("compress", [False, True])
def test_tile_cache_round_trip(compress):
    from napari_medseg.inference.segment import TileCache

    cache = TileCache(compress=compress)
    rng = np.random.default_rng(14)
    arrs = {i: rng.random((2, 30 + i, 41)).astype(np.float16) for i in range(3)}
    for i, a in arrs.items():
        cache.put(i, a)
    assert len(cache) == 3 and cache.nbytes == cache.max_nbytes > 0
    for i, a in arrs.items():
        got = cache.get(i)
        assert got.dtype == np.float16 and np.array_equal(got, a)  # lossless
    del cache[1]
    assert len(cache) == 2 and cache.nbytes < cache.max_nbytes
    smooth = np.zeros((2, 200, 200), np.float16)
    cache.put(9, smooth)
    if compress:
        assert cache.nbytes - sum(arrs[i].nbytes for i in (0, 2)) < smooth.nbytes / 10 or cache.nbytes < smooth.nbytes


def test_postprocessing_in_a_worker_thread(pixel_model, monkeypatch):
    # pretend a core is free so blocks are post-processed in the worker thread
    import threading

    monkeypatch.setattr(seg_mod.os, "cpu_count", lambda: 64)
    threads = set()
    real = seg_mod._instances

    def spy(*a, **k):
        threads.add(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(seg_mod, "_instances", spy)
    folder, _ = pixel_model("instance")
    gt, img = disk_maps((230, 301), 60, seed=1)
    out = np.full(gt.shape, 5, np.uint16)
    res = run(segment_iter(img, str(folder), tile_size=64, out=out,
                           postprocess={"block_size": 50, "max_object_size": 24}))
    assert threads and all(t.startswith("medseg-postprocess") for t in threads)
    assert res.labels is out and same_objects(out, gt) and consecutive(out)
    # cancelling while blocks are queued in the worker: Cancelled, out untouched, worker stopped
    out[:] = 5
    token = CancelToken()
    seen = []

    def on_progress(p):
        seen.append(p.info["stage"])
        if p.info["stage"] == "postprocess":
            token.cancel()

    with pytest.raises(Cancelled):
        ms.segment(img, str(folder), tile_size=64, out=out, cancel=token, progress=on_progress,
                   postprocess={"block_size": 50, "max_object_size": 24})
    assert "postprocess" in seen and (out == 5).all()
    assert not any(t.name.startswith("medseg-postprocess") for t in threading.enumerate())


def test_tta_averages_the_mirror_images(tmp_path):
    """tta=True equals the mean of the probabilities of the 4 mirror images, flipped back; tiling-independent."""
    path = make_random_model(tmp_path / "m", depth=3, base_channels=4, seed=3)
    card = json.loads((path / "model.json").read_text())
    card["input"]["normalization"] = {"kind": "none"}  # same limits for every mirror image
    (path / "model.json").write_text(json.dumps(card))
    img = ndi.gaussian_filter(np.random.default_rng(8).random((90, 121)).astype(np.float32), 2)
    img = (img - img.mean()) / img.std() * 3  # contrast a random network responds to
    kw = {"return_probabilities": True, "precision": "float32", "postprocess": {"min_size": 0}}
    tta = run(segment_iter(img, str(path), tta=True, tile_size=256, **kw))
    tta_tiled = run(segment_iter(img, str(path), tta=True, tile_size=64, **kw))
    manual = np.zeros(tta.probabilities.shape, np.float64)
    for axes in ((), (1,), (0,), (0, 1)):
        p = run(segment_iter(np.ascontiguousarray(np.flip(img, axes)), str(path), tile_size=256, **kw))
        manual += np.flip(p.probabilities.astype(np.float64), tuple(a + 1 for a in axes))
    manual /= 4
    plain = run(segment_iter(img, str(path), tile_size=256, **kw))
    assert tta.info["tta"] is True and plain.info["tta"] is False
    assert np.abs(tta.probabilities - manual).max() <= 2e-3
    assert np.abs(tta.probabilities.astype(np.float32) - tta_tiled.probabilities).max() <= 1e-3
    # a random network is not mirror-symmetric: the averaging did change the maps
    assert np.abs(tta.probabilities.astype(np.float32) - plain.probabilities).max() > 1e-2


def test_labels_false_gives_the_same_maps_and_no_objects(tmp_path):
    path = make_random_model(tmp_path / "m", depth=3, base_channels=4, seed=1)
    img = ndi.gaussian_filter(np.random.default_rng(6).random((97, 140)).astype(np.float32), 3)
    kw = {"tile_size": 64, "return_probabilities": True, "precision": "float32"}
    full = run(segment_iter(img, str(path), **kw))
    maps = run(segment_iter(img, str(path), labels=False, **kw))
    assert np.array_equal(maps.probabilities, full.probabilities)
    assert maps.info["blocks"] == 0 and maps.info["n_labels"] == 0 and not maps.labels.any()
    with pytest.raises(ParameterError, match="return_probabilities=True"):
        run(segment_iter(img, str(path), labels=False))
