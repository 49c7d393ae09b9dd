"""Box detector: target encoding <-> decoding, window planning, tiling invariance, training, shipped model."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.analysis.box_detection import decode, detect, find_peaks, plan_windows
from napari_medseg.analysis.boxes import box_iou, read_voc
from napari_medseg.errors import ModelError
from napari_medseg.training.detection import (
    DetectionAugment,
    DetectionSample,
    DetectionTrainConfig,
    augment_sample,
    detection_card,
    encode_targets,
    train_detector_iter,
)

torch = pytest.importorskip("torch")


def _tests_conftest():
    try:
        from conftest import dataset
    except ImportError:  # pragma: no cover - rootdir layouts differ
        from tests.conftest import dataset
    return dataset


# ---------------------------------------------------------------------------- encode / decode


def test_targets_decode_round_trip():
    d = 3  # image pixels per network pixel
    boxes = np.array([[10.5, 4.0, 70.25, 50.0],   # class 0
                      [90.0, 90.0, 121.0, 130.5],  # class 1
                      [3.0, 100.0, 40.0, 139.0],   # class 0
                      [150.0, 0.0, 189.0, 30.0]])  # class 2, at the left edge
    ids = np.array([0, 1, 0, 2])
    t = encode_targets((64, 48), boxes / d, ids, 3)
    assert t.heat.shape == (3, 64, 48) and t.heat.max() == 1.0
    assert int((t.heat == 1).sum()) == 4 and int(t.center.sum()) == 4
    got, k, s = decode(t.heat, t.log_size, t.offset, score_threshold=0.99, downsample=d)
    assert len(got) == 4 and np.all(s == 1.0)
    # same boxes, same classes (order of equal scores is raster order within a class)
    order = np.lexsort((boxes[:, 1], boxes[:, 0], ids))
    got_order = np.lexsort((got[:, 1], got[:, 0], k))
    np.testing.assert_array_equal(k[got_order], ids[order])
    np.testing.assert_allclose(got[got_order], boxes[order], atol=1e-4)


def test_gaussian_peaks_are_strict_maxima_and_weights():
    boxes = np.array([[10, 10, 30, 20], [12, 40, 18, 46]], float)
    t = encode_targets((40, 60), boxes, np.array([1, 1]), 2, uncertain=[1], uncertain_weight=0.25,
                       ignore_boxes=np.array([[0, 0, 5, 5]]), ignore_ids=np.array([0]))
    k, iy, ix, s = find_peaks(t.heat, 0.5)
    assert sorted(zip(iy.tolist(), ix.tolist(), strict=False)) == [(15, 43), (20, 15)]
    assert np.all(k == 1)
    assert t.heat[0].max() == 0.0
    # class 1 negatives: full weight inside annotated boxes, 0.25 outside; class 0 ignored in its box
    assert t.weight[1, 25, 15] == 1.0 and t.weight[1, 35, 5] == 0.25 and t.weight[1, 20, 15] == 1.0
    assert t.weight[0, 2, 2] == 0.0 and t.weight[0, 35, 5] == 1.0
    np.testing.assert_allclose(np.exp(t.log_size[:, 20, 15]), [20, 10], rtol=1e-6)
    np.testing.assert_allclose(t.offset[:, 20, 15], [0.0, 0.0])
    np.testing.assert_allclose(t.offset[:, 15, 43], [0.0, 0.0])


def test_find_peaks_region_and_threshold():
    heat = np.zeros((2, 8, 8), np.float32)
    heat[0, 1, 1] = 0.9
    heat[0, 1, 2] = 0.8  # not a peak: its neighbour is higher
    heat[0, 6, 6] = 0.4
    heat[1, 7, 0] = 0.7  # at the border: outside pixels do not count
    k, iy, ix, s = find_peaks(heat, 0.3)
    assert list(zip(k.tolist(), iy.tolist(), ix.tolist(), strict=False)) == [(0, 1, 1), (0, 6, 6), (1, 7, 0)]
    k, iy, ix, s = find_peaks(heat, 0.5, region=(slice(0, 4), slice(0, 8)))
    assert list(zip(k.tolist(), iy.tolist(), ix.tolist(), strict=False)) == [(0, 1, 1)]
    np.testing.assert_allclose(s, [0.9])


def test_decode_origin_threshold_max_detections():
    heat = np.zeros((1, 10, 10), np.float32)
    heat[0, 2, 3], heat[0, 7, 7] = 0.6, 0.9
    log_size = np.full((2, 10, 10), np.log(4.0), np.float32)
    b, k, s = decode(heat, log_size, None, score_threshold=0.5, downsample=2, origin=(10, 20))
    # highest first; centre (7.5 + 10, 7.5 + 20) * 2, size 4 * 2
    np.testing.assert_allclose(b, [[31, 51, 39, 59], [21, 43, 29, 51]])
    np.testing.assert_allclose(s, [0.9, 0.6])
    b, k, s = decode(heat, log_size, None, score_threshold=0.5, max_detections=1)
    assert len(b) == 1 and s[0] == pytest.approx(0.9)


# ---------------------------------------------------------------------------- windows


@pytest.mark.parametrize("shape,max_tile,halo", [((160, 214), 1024, 56), ((700, 333), 256, 56), ((90, 1000), 200, 48)])
def test_plan_windows_cover_once(shape, max_tile, halo):
    div = 8
    win, windows = plan_windows(shape, max_tile, halo, div)
    owner = np.zeros(shape, np.int32)
    padded = [-(-s // div) * div for s in shape]
    for start, core in windows:
        assert all(st % div == 0 and st >= 0 and st + w <= p for st, w, p in zip(start, win, padded, strict=False))
        owner[start[0] + core[0].start:start[0] + core[0].stop, start[1] + core[1].start:start[1] + core[1].stop] += 1
        for ax in range(2):  # a core is at least `halo` from the window edge unless the window is at the border
            lo, hi = core[ax].start, win[ax] - core[ax].stop
            assert lo >= halo or start[ax] == 0
            assert hi >= halo or start[ax] + win[ax] == padded[ax]
    assert np.all(owner == 1)
    assert all(w % div == 0 and w <= max(max_tile, 0) for w in win)


# ---------------------------------------------------------------------------- augmentation


def test_augment_keeps_boxes_on_their_pixels():
    rng = np.random.default_rng(1)
    img = np.zeros((3, 64, 80), np.float32)
    boxes = np.array([[10, 12, 26, 30], [40, 50, 56, 60]], float)
    img[:, 10:26, 12:30] = 1.0
    img[:, 40:56, 50:60] = 1.0
    cfg = DetectionAugment(crop=64, scale=(0.8, 1.25), hue=0, saturation=0, value=0, contrast=0, noise=0)
    for _ in range(20):
        x, kb, kid, ib, iid = augment_sample(img, boxes, np.array([0, 1]), rng, cfg)
        assert x.shape == (3, 64, 64)
        for b in kb:  # the box interior is bright, a ring just outside it is dark (background fill = median = 0)
            y0, x0, y1, x1 = b
            inner = x[0, int(np.ceil(y0)) + 1:int(y1) - 1, int(np.ceil(x0)) + 1:int(x1) - 1]
            assert inner.size and inner.min() > 0.99
            assert np.all(b >= 0) and np.all(b <= 64)


# ---------------------------------------------------------------------------- tiny model: training, loading, tiling


def _synthetic_samples():
    rng = np.random.default_rng(0)
    out = []
    for n in range(2):
        img = np.full((96, 96, 3), 230, np.uint8)
        boxes, ids = [], []
        for _ in range(4):
            y, x = rng.integers(4, 70, 2)
            img[y:y + 20, x:x + 20] = (200, 30, 30)  # red squares: class 0
            boxes.append([y, x, y + 20, x + 20])
            ids.append(0)
        for _ in range(3):
            y, x = rng.integers(4, 84, 2)
            img[y:y + 8, x:x + 8] = (40, 40, 200)  # small blue squares: class 1
            boxes.append([y, x, y + 8, x + 8])
            ids.append(1)
        out.append(DetectionSample(img, np.array(boxes, float), np.array(ids), f"syn{n}"))
    return out


@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("det") / "tiny-det"
    samples = _synthetic_samples()
    cfg = DetectionTrainConfig(name="tiny-det", base_channels=4, depth=2, downsample=1, batch_size=2, lr=1e-2,
                      warmup_steps=1, minutes=None, max_steps=40, eval_every_s=1e9, seed=0, threads=1,
                      device="cpu", precision="float32", uncertain_classes=(),
                      augment=DetectionAugment(crop=64, scale=(0.9, 1.1)))
    gen = train_detector_iter(samples, ["red", "blue"], folder, holdout=samples, config=cfg)
    losses = []
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if p.info and "loss" in p.info:
            losses.append(p.info["loss"])
    return folder, samples, losses, result


def test_tiny_training_lowers_loss_and_saves_model(tiny_trained):
    from napari_medseg.models.spec import load_model

    folder, samples, losses, result = tiny_trained
    assert len(losses) == 40 and result["steps"] == 40
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert result["best"]["AP_red"] > 0.3  # the large red squares are found on the training images
    net, card = load_model(folder)
    assert card.kind == "detection" and card.output["class_names"] == ["red", "blue"]
    assert card.architecture["out_channels"] == 6 and card.input["downsample"] == 1
    assert set(result["best"]) >= {"AP_red", "AP_blue", "mAP"}
    assert card.metrics["holdout"]["mAP"] == pytest.approx(result["best"]["mAP"])


def test_detect_boxes_inside_image_and_tiling_invariant(tiny_trained):
    folder, samples, _, _ = tiny_trained
    img = np.concatenate([np.concatenate([s.image, s.image[::-1]], 1) for s in samples], 0)  # 192 x 192
    kw = {"device": "cpu", "precision": "float32"}
    full = detect(img, folder, score_threshold=0.05, max_detections=10**6, **kw)
    assert full.info["windows"] == 1
    h, w = img.shape[:2]
    assert len(full) > 0
    assert np.all(full.boxes[:, [0, 2]] >= 0) and np.all(full.boxes[:, [0, 2]] <= h)
    assert np.all(full.boxes[:, [1, 3]] >= 0) and np.all(full.boxes[:, [1, 3]] <= w)
    assert np.all(np.diff(full.scores) <= 0)
    from napari_medseg.inference.tiling import unet_receptive_radius

    small = 2 * unet_receptive_radius(2) + 16 + 8  # several windows
    tiled = detect(img, folder, score_threshold=0.05, tile_size=small, max_detections=10**6, **kw)
    assert tiled.info["windows"] > 1
    # pair each box with its nearest tiled box (same class); a sort on coordinates is not a total
    # order when two boxes share (y0, x0) and float noise differs between CPUs
    assert len(full) == len(tiled)
    diff = np.abs(full.boxes[:, None, :] - tiled.boxes[None, :, :]).max(axis=2)
    diff[full.class_ids[:, None] != tiled.class_ids[None, :]] = np.inf
    b = diff.argmin(axis=1)
    assert sorted(b.tolist()) == list(range(len(tiled)))  # a one-to-one pairing
    np.testing.assert_array_equal(full.class_ids, tiled.class_ids[b])
    np.testing.assert_allclose(full.boxes, tiled.boxes[b], atol=1e-3)
    np.testing.assert_allclose(full.scores, tiled.scores[b], atol=1e-5)
    top = detect(img, folder, score_threshold=0.05, tile_size=small, max_detections=5, **kw)
    np.testing.assert_allclose(top.scores, full.scores[:5], atol=1e-5)
    table = full.to_table()
    assert list(table["id"]) == list(range(1, len(full) + 1))
    assert sum(full.counts().values()) == len(full)


def test_detect_rejects_wrong_model_or_image(tiny_trained, tmp_path):
    from napari_medseg.models.testing import make_random_model

    folder, samples, _, _ = tiny_trained
    with pytest.raises(ModelError, match="3-channel"):
        detect(samples[0].image[..., 0], folder, device="cpu")
    seg = make_random_model(tmp_path / "seg", in_channels=3)
    with pytest.raises(ModelError, match="detection"):
        detect(samples[0].image, seg, device="cpu")


def test_detection_card_layout():
    card = detection_card("x", ["a", "b", "c"], downsample=3)
    assert card.architecture["out_channels"] == 7
    assert card.output["channels"] == ["heat:a", "heat:b", "heat:c", "log_height", "log_width", "offset_y", "offset_x"]
    assert card.input["normalization"] == {"kind": "fixed", "low": 0.0, "high": 255.0}


# ---------------------------------------------------------------------------- the shipped model


def test_shipped_bccd_model_on_a_val_image():
    from napari_medseg.models.registry import shipped_models_dir

    if not (shipped_models_dir() / "bccd" / "weights.safetensors").is_file():
        pytest.skip("the bccd model is not shipped in this checkout")
    dataset = _tests_conftest()
    val = dataset("bccd", "val")
    from skimage.io import imread

    xml = sorted((val / "annotations").glob("*.xml"))[0]
    img = imread(val / "images" / (xml.stem + ".jpg"))
    res = detect(img, "bccd", device="cpu")
    h, w = img.shape[:2]
    assert res.class_names == ["WBC", "RBC", "Platelets"]
    assert len(res) > 0
    assert np.all(res.boxes[:, [0, 2]] >= 0) and np.all(res.boxes[:, [0, 2]] <= h)
    assert np.all(res.boxes[:, [1, 3]] >= 0) and np.all(res.boxes[:, [1, 3]] <= w)
    gt, classes = read_voc(xml)
    wbc = gt[[c == "WBC" for c in classes]]
    found = res.boxes[res.class_ids == 0]
    assert len(wbc) and len(found)
    assert box_iou(wbc, found).max(axis=1).min() >= 0.5  # every annotated white cell is found
