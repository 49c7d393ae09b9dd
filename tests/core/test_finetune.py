"""Fine-tuning on painted labels: learning, exact partial-annotation masking, cancel, regions, 3D/semantic.

Runs train on tiny synthetic images with one torch thread (the CI's 2 cores
are shared) and ``MEDSEG_MODELS_DIR`` in a temporary folder.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_medseg.errors import ModelError, ParameterError
from napari_medseg.models.registry import list_models
from napari_medseg.models.spec import load_model
from napari_medseg.models.testing import make_random_model
from napari_medseg.progress import CancelToken, run
from napari_medseg.training.augment import AugmentConfig
from napari_medseg.training.data import PatchSampler
from napari_medseg.training.finetune import finetune_iter, train
from napari_medseg.training.finetune.data import build_units
from napari_medseg.training.finetune.inputs import TrainingPair
from napari_medseg.training.finetune.loop import StepLoss
from napari_medseg.training.losses import instance_loss
from napari_medseg.training.regions import describe_region, find_region, roi_mask, split_validation
from napari_medseg.training.semantic import SemanticPatchSampler, semantic_loss

FAST = {"patch_size": 64, "batch_size": 2, "steps_per_epoch": 5, "threads": 1}


@pytest.fixture(autouse=True)
def models_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(d))
    return d


def blobs(shape=(64, 64), n=8, seed=0, radius=4):
    """Bright discs on a dark noisy background and their instance labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    lab = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        cy, cx = rng.integers(radius + 2, np.array(shape) - radius - 2)
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (lab == 0)] = k
    img = np.where(lab > 0, 180.0, 30.0) + rng.normal(0, 10, shape)
    return img.astype(np.float32), lab


# ----------------------------------------------------------------------------- regions
def test_default_region_is_the_painted_bounding_box_plus_margin():
    lab = np.zeros((100, 120), np.int32)
    lab[40:50, 30:45] = 1
    lab[60:62, 70:75] = 2
    r = find_region(lab, margin=16)
    assert r.source == "labels"
    assert r.box == (slice(24, 78), slice(14, 91))
    assert r.area == 54 * 77 and r.n_objects == 2
    text = describe_region(lab, val_fraction=0)
    assert "rows 24-77, cols 14-90" in text and "2 painted objects" in text
    assert "unpainted pixels count as background" in text


def test_roi_polygons_union_and_3d_slice_shapes():
    rect = np.array([[10, 10], [10, 29], [29, 29], [29, 10]], float)  # 20 x 20 px, corners included
    tri = np.array([[50, 50], [50, 60], [60, 50]], float)
    box, mask = roi_mask((80, 80), [rect, tri])
    from skimage.draw import polygon2mask

    want = polygon2mask((80, 80), rect) | polygon2mask((80, 80), tri)
    assert mask.sum() == want.sum() and np.array_equal(mask, want[box])
    # a (z, y, x) shape drawn on slice 2 covers that slice only; (y, x) shapes cover every slice
    box3, mask3 = roi_mask((5, 40, 40), [np.c_[np.full(4, 2.0), rect]])
    assert box3[0] == slice(2, 3) and mask3.sum() == polygon2mask((40, 40), rect).sum()
    box3, mask3 = roi_mask((5, 40, 40), [rect])
    assert box3[0] == slice(0, 5) and mask3.sum() == 5 * polygon2mask((40, 40), rect).sum()
    with pytest.raises(ParameterError, match="one slice"):
        roi_mask((5, 40, 40), [np.array([[0, 1, 1], [1, 1, 9], [1, 9, 9]], float)])


def test_validation_split_strip_slices_and_whole_images():
    _, lab = blobs((64, 96), n=10)
    regs = [find_region(lab, index=0)]
    text = split_validation(regs, [lab], fraction=0.2)
    r = regs[0]
    assert "strip" in text and r.val is not None
    assert r.val.sum() > 0 and (r.train & r.val).sum() == 0 and (r.train | r.val).sum() == r.area
    assert 0.1 < r.val.sum() / r.area < 0.35
    # 3D region of >= 5 annotated slices: the last block of slices with paint on both sides
    vol = np.zeros((10, 32, 32), np.int32)
    vol[2:9, 8:20, 8:20] = 1
    vol[2:9, 22:28, 22:28] = 2
    vol[5, 2:5, 2:5] = 3
    vol[6, 25:30, 2:6] = 4
    r3 = [find_region(vol, index=0)]
    split_validation(r3, [vol], fraction=0.2)
    assert r3[0].box[0] == slice(2, 9)
    assert r3[0].val[-1].all() and not r3[0].val[:-1].any()  # round(0.2 * 7) = 1 slice: z = 8
    assert "slice 8 held out" in r3[0].val_note
    # every other slice annotated (ROI per slice), paint on 12-16 only: the block keeps paint on both sides
    sparse = np.zeros((25, 16, 16), np.int32)
    sparse[12:17, 4:8, 4:8] = 1
    rect = np.array([[0, 0], [0, 15], [15, 15], [15, 0]], float)
    r4 = [find_region(sparse, [np.c_[np.full(4, float(z)), rect] for z in range(0, 25, 2)], mode="semantic")]
    split_validation(r4, [sparse], fraction=0.2, mode="semantic")
    assert r4[0].val_note == "slices 16, 18, 20 held out"
    # five images: the last one is held out whole (1 of 5 = 20 %); with three, strips (1 of 3 would be 33 %)
    labs = [blobs(seed=i)[1] for i in range(5)]
    regs = [find_region(lab_i, index=i, name=f"im{i}") for i, lab_i in enumerate(labs)]
    text = split_validation(regs, labs, fraction=0.2)
    assert "im4" in text and regs[4].val.all() and all(r.val is None for r in regs[:4])
    regs = regs[:3]
    assert "strip" in split_validation(regs, labs[:3], fraction=0.2) and all(0 < r.val.sum() < r.area for r in regs)
    # too few objects: no validation
    tiny = np.zeros((20, 20), np.int32)
    tiny[5:8, 5:8] = 1
    regs = [find_region(tiny)]
    assert "no validation" in split_validation(regs, [tiny], fraction=0.2) and regs[0].val is None


# ----------------------------------------------------------------------------- exact masking
def _pair(img, lab):
    return TrainingPair(img, lab, "a", 1, False, None)


def _roi_case(mode):
    img, lab = blobs((96, 96), n=12, seed=3)
    if mode == "semantic":
        lab = np.where(lab > 0, 1 + lab % 2, 0).astype(np.int32)
    from skimage.draw import polygon2mask

    roi = [np.array([[20, 20], [20, 69], [69, 69], [69, 20]], float)]
    inside = polygon2mask(lab.shape, roi[0])
    rng = np.random.default_rng(7)
    changed = lab.copy()
    noise = rng.integers(0, 3, lab.shape).astype(np.int32) * (1 if mode == "semantic" else 50)
    changed[~inside] = noise[~inside]  # repaint everything outside the ROI (objects cut by the edge too)
    assert (changed != lab).sum() > 1000 and np.array_equal(changed[inside], lab[inside])
    return img, lab, changed, roi, inside


def _units(img, lab, roi, mode):
    reg = [find_region(lab, roi, mode=mode)]
    split_validation(reg, [lab], fraction=0.0, mode=mode)
    train_s, _ = build_units([_pair(img, lab)], reg, {"kind": "percentile", "low": 1, "high": 99.8}, None, mode)
    return train_s


@pytest.mark.parametrize("mode", ["instance", "semantic"])
def test_pixels_outside_the_roi_get_zero_weight_and_cannot_change_the_gradient(mode):
    img, lab, changed, roi, inside = _roi_case(mode)
    (sa,), (sb,) = _units(img, lab, roi, mode), _units(img, changed, roi, mode)
    # the weight map is exactly 1 inside the ROI and 0 outside (the 48 px context crop is the whole image here)
    assert sa.weight.shape == lab.shape and sa.weight.dtype == np.float32
    assert set(np.unique(sa.weight)) == {0.0, 1.0} and np.array_equal(sa.weight > 0, inside)
    assert not sa.labels[~inside].any()
    assert np.array_equal(sa.labels, sb.labels) and np.array_equal(sa.weight, sb.weight)

    def grads(sample, seed=0):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(8, 2 if mode == "instance" else 3, 3, padding=1))
        cls = PatchSampler if mode == "instance" else SemanticPatchSampler
        sampler = cls([sample], patch_size=48, normalization={"kind": "none"}, augment=AugmentConfig(), seed=1)
        b = sampler.batch(4, np.random.default_rng(seed))
        logits = net(torch.from_numpy(b.image))
        if mode == "instance":
            loss, _ = instance_loss(logits, torch.from_numpy(b.fg), torch.from_numpy(b.dist),
                                    torch.from_numpy(b.weight))
        else:
            loss, _ = semantic_loss(logits, torch.from_numpy(b.classes), torch.from_numpy(b.weight))
        loss.backward()
        return [p.grad.clone() for p in net.parameters()]

    ga, gb = grads(sa), grads(sb)
    assert all(torch.equal(a, b) for a, b in zip(ga, gb, strict=False))
    # without the ROI the outside pixels are used: the same change now changes the gradient
    (fa,), (fb,) = _units(img, lab, None, mode), _units(img, changed, None, mode)
    assert not all(torch.equal(a, b) for a, b in zip(grads(fa), grads(fb), strict=False))


def test_semantic_loss_ignores_zero_weight_pixels_exactly():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    cls = torch.randint(0, 3, (2, 8, 8), generator=g)
    w = torch.ones(2, 8, 8)
    w[:, :, :3] = 0
    loss, _ = semantic_loss(logits, cls, w)
    loss.backward()
    assert torch.count_nonzero(logits.grad[..., :3]) == 0 and torch.count_nonzero(logits.grad[..., 3:]) > 0
    cls2 = cls.clone()
    cls2[..., :3] = (cls2[..., :3] + 1) % 3
    l2, _ = semantic_loss(logits, cls2, w)
    assert torch.equal(loss.detach(), l2.detach())


def test_step_loss_recovers_each_step_from_the_running_mean():
    rng = np.random.default_rng(0)
    values = rng.uniform(0.1, 3.0, 137)
    rec, running = StepLoss(), []
    for i, v in enumerate(values, 1):
        running = [*running[-49:], float(v)]
        rec.update(i, {"loss": float(np.mean(running))})
    np.testing.assert_allclose(rec.values, values, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- training
def test_training_from_scratch_lowers_the_loss_and_saves_a_loadable_model(models_dir):
    pairs = [blobs(seed=i) for i in range(2)]
    seen = []
    res = train([p[0] for p in pairs], [p[1] for p in pairs], epochs=4, augment=False, name="blobs",
                progress=seen.append, **{**FAST, "batch_size": 4})
    assert res.model_path == models_dir / "blobs"
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    losses = [h["loss"] for h in res.history]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)) and losses[-1] < 0.93 * losses[0]
    assert "region" in seen[0].info and seen[0].info["region"] == res.region
    steps = [p for p in seen[1:] if p.step > 0]
    assert [p.step for p in steps] == list(range(1, 21))
    assert all({"epoch", "loss", "val_score", "best", "device", "eta_s"} <= set(p.info) for p in steps)
    assert sum(bool(p.info.get("epoch_end")) for p in steps) == 4
    net, card = load_model(res.model_path)
    assert card.name == "blobs" and card.kind == "instance" and card.training["base_model"] is None
    assert card.training["finished"] is True and card.training["epochs"] == 4
    assert card.training["data"][0]["shape"] == [64, 64]
    assert card.architecture["base_channels"] == 16 and card.architecture["depth"] == 4
    assert res.best is not None and card.metrics["val_ap50"] == round(res.best["val_score"], 4)
    assert any(m.name == "blobs" and m.source == "user" for m in list_models())
    from napari_medseg.api import segment

    out = segment(pairs[0][0], "blobs", device="cpu")
    assert out.shape == (64, 64)


def test_cancel_keeps_the_best_checkpoint_as_a_valid_model(models_dir):
    pairs = [blobs(seed=i) for i in range(2)]
    token = CancelToken()
    gen = finetune_iter([p[0] for p in pairs], [p[1] for p in pairs], epochs=50, name="cut", cancel=token, **FAST)
    t_cancel = None
    try:
        while True:
            p = next(gen)
            if p.info.get("epoch_end") and p.info["epoch"] == 2:
                token.cancel()
                t_cancel = time.perf_counter()
    except StopIteration as stop:
        res = stop.value
    assert time.perf_counter() - t_cancel < 5.0
    assert res.cancelled and len(res.history) == 2
    net, card = load_model(models_dir / "cut")
    assert card.training["cancelled"] is True and card.training["steps"] <= 11
    best = max(res.history, key=lambda h: (h["val_score"], h["dice"], h["epoch"]))  # ties: the later epoch
    assert res.best["epoch"] == best["epoch"] and card.training["best_epoch"] == best["epoch"]
    # closing the generator (what napari's worker.quit() does) also leaves a valid model
    gen = finetune_iter([p[0] for p in pairs], [p[1] for p in pairs], epochs=50, name="closed", **FAST)
    for p in gen:
        if p.step == 3:
            break
    gen.close()
    net, card = load_model(models_dir / "closed")
    assert card.training["cancelled"] is True and card.training["steps"] == 3


def test_semantic_3d_from_an_instance_base_reinitialises_the_head(models_dir, tmp_path):
    base = make_random_model(tmp_path / "base", name="tinybase", base_channels=4, depth=2)
    rng = np.random.default_rng(0)
    vol = rng.normal(20, 5, (8, 48, 48)).astype(np.float32)
    lab = np.zeros(vol.shape, np.int32)
    lab[1:7, 10:22, 10:22] = 1
    lab[1:7, 28:36, 26:40] = 2
    vol[lab == 1] += 60
    vol[lab == 2] += 120
    res = train(vol, lab, base=str(base), mode="semantic", class_names=["tumour", "oedema"], epochs=2,
                name="lesions", **FAST)
    net, card = load_model(res.model_path)
    assert card.kind == "semantic" and card.architecture["out_channels"] == 3
    assert card.output["class_names"] == ["background", "tumour", "oedema"]
    assert card.training["head_reinitialised"] is True and card.training["base_model"].endswith("base")
    assert "slice 6 held out" in res.region  # region z 1-6, 6 slices -> round(1.2) = 1 slice
    assert "val_dice" in card.metrics
    from napari_medseg.api import segment

    out = segment(vol, str(res.model_path), device="cpu")
    assert out.shape == vol.shape and set(np.unique(out)) <= {0, 1, 2}


def test_bad_inputs_fail_fast_with_clear_messages(models_dir, tmp_path):
    img, lab = blobs()
    with pytest.raises(ParameterError, match="does not match its labels"):
        next(finetune_iter(img[:50], lab))
    with pytest.raises(ParameterError, match="nothing is painted"):
        next(finetune_iter(img, np.zeros_like(lab)))
    base = make_random_model(tmp_path / "grey", name="grey", base_channels=4, depth=2)
    with pytest.raises(ModelError, match="RGB"):
        next(finetune_iter(np.stack([img] * 3, -1), lab, base=str(base)))
    with pytest.raises(ParameterError, match="class 2 but only 1 class name"):
        next(finetune_iter(img, np.minimum(lab, 2), mode="semantic", class_names=["a"]))
    (models_dir / "taken").mkdir(parents=True)
    make_random_model(models_dir / "taken", name="taken")
    with pytest.raises(ParameterError, match="already exists"):
        next(finetune_iter(img, lab, name="taken"))
    with pytest.raises(ParameterError, match="model name"):
        next(finetune_iter(img, lab, name="a b/c"))


def test_images_are_resampled_to_the_base_models_pixel_size(models_dir, tmp_path):
    base = make_random_model(tmp_path / "fine", name="fine", base_channels=4, depth=2, pixel_size=[0.5, 0.5])
    img, lab = blobs((48, 48), n=6)
    reg = [find_region(lab)]
    split_validation(reg, [lab], fraction=0.0)
    pair = TrainingPair(img, lab, "a", 1, False, (1.0, 1.0))
    (s,), _ = build_units([pair], reg, {"kind": "none"}, [0.5, 0.5], "instance")
    assert s.image.shape == (96, 96) and s.labels.shape == (96, 96)  # 1.0 µm pixels -> 0.5 µm: twice as many
    assert set(np.unique(s.labels)) == set(np.unique(lab)) and s.weight.shape == (96, 96)
    res = train(img, lab, base=str(base), scale=(1.0, 1.0), epochs=1, name="resampled", **FAST)
    assert res.card.pixel_size == [0.5, 0.5]
    res = train(img, lab, base=str(base), epochs=1, name="unknown-size", **FAST)
    assert res.card.pixel_size is None  # trained at the images' own, unknown, pixel size


def test_postprocess_tuning_never_lowers_the_held_out_score(tmp_path):
    from napari_medseg.training.finetune.data import TUNE_FG, TUNE_SEED, tune_postprocess, val_item

    net, _ = load_model(make_random_model(tmp_path / "r", base_channels=4, depth=2, seed=3))
    items = []
    for seed in range(2):
        img, lab = blobs(seed=seed)
        x = ((img - img.min()) / np.ptp(img))[..., None].astype(np.float32)
        mask = np.zeros(lab.shape, bool)
        mask[8:56, 8:56] = True
        items.append(val_item(x, lab, mask))
    given = {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_size": 4}
    pp, before, after = tune_postprocess(net, items, given)
    assert after >= before and pp["min_size"] == 4
    assert pp["fg_threshold"] in TUNE_FG and pp["seed_threshold"] in TUNE_SEED
    if after == before:
        assert pp == given


def test_base_model_is_epoch_zero_and_kept_when_no_epoch_beats_it(models_dir, tmp_path, monkeypatch):
    """Fine-tuning never ends worse than the base on the held-out annotation: the base is scored first."""
    from safetensors.numpy import load_file

    import napari_medseg.training.finetune.loop as ft

    base = make_random_model(tmp_path / "base", name="tinybase", base_channels=4, depth=2)
    img, lab = blobs((64, 64), n=8)
    scores = iter([0.9, 0.5, 0.6, 0.7])  # base 0.9, then three epochs that never reach it
    real = ft.validate

    def fake_validate(net, mode, items, pp):
        r = real(net, mode, items, pp)
        s = next(scores)
        return {**r, "score": s, "key": (s, 0.0)}

    monkeypatch.setattr(ft, "validate", fake_validate)
    monkeypatch.setattr(ft, "tune_postprocess", lambda net, items, pp: (pp, 0.0, 0.0))
    progress = []
    res = run(finetune_iter(img, lab, base=str(base), epochs=3, early_stopping=False, name="kept", **FAST),
              progress.append)
    assert [p.info["base_val_score"] for p in progress if "base_val_score" in (p.info or {})] == [0.9]
    assert [h["val_score"] for h in res.history] == [0.5, 0.6, 0.7]
    assert res.best["epoch"] == 0 and res.card.training["kept_base_weights"] is True
    saved = load_file(str(res.model_path / "weights.safetensors"))
    orig = load_file(str(base / "weights.safetensors"))
    assert set(saved) == set(orig) and all(np.array_equal(saved[k], orig[k]) for k in orig)

    # an epoch at least as good as the base replaces it
    scores = iter([0.5, 0.4, 0.5, 0.3])
    res = run(finetune_iter(img, lab, base=str(base), epochs=3, early_stopping=False, name="trained", **FAST))
    assert res.best["epoch"] == 2 and res.card.training["kept_base_weights"] is False
