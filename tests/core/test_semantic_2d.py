"""Semantic 2D lesion training: the region around a painted lesion, keep-largest / fill-holes post-processing
(engine and validation), colour jitter that leaves labels alone, the semantic 2D defaults."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import napari_medseg as ms
from napari_medseg.inference.classes import postprocess_classes, postprocess_planes, semantic_options
from napari_medseg.models import registry
from napari_medseg.models.testing import make_random_model
from napari_medseg.training.augment import AugmentConfig, color_jitter, color_matrix, pixel_augment
from napari_medseg.training.data import Sample
from napari_medseg.training.regions import DEFAULT_MARGIN, default_margin, find_region
from napari_medseg.training.semantic import SemanticPatchSampler


def _disc(shape, cy, cx, r):
    yy, xx = np.indices(shape)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# ----------------------------------------------------------------- post-processing
def test_keep_largest_and_fill_holes_on_a_synthetic_map():
    m = np.zeros((60, 80), np.uint8)
    m[_disc(m.shape, 30, 30, 15)] = 1  # the lesion (709 px)
    m[28:32, 28:32] = 0  # a 16 px hole in it
    m[_disc(m.shape, 10, 70, 4)] = 1  # a blob (49 px)
    m[55, 2] = 1  # a stray pixel
    lesion = _disc(m.shape, 30, 30, 15)

    out = postprocess_classes(m, keep_largest=True)
    assert out.dtype == m.dtype and m[55, 2] == 1  # a new array; the input is untouched
    np.testing.assert_array_equal(out > 0, lesion & (m > 0))  # only the lesion, hole still open
    out = postprocess_classes(m, keep_largest=True, fill_holes=True)
    np.testing.assert_array_equal(out, lesion.astype(np.uint8))
    # fill_holes alone keeps the blobs; min_size drops what is smaller
    out = postprocess_classes(m, fill_holes=True)
    assert out[55, 2] == 1 and out[30, 30] == 1
    out = postprocess_classes(m, min_size=10)
    assert out[55, 2] == 0 and out[10, 70] == 1 and out[30, 30] == 0
    # nothing asked, or no foreground: the input itself
    assert postprocess_classes(m) is m
    z = np.zeros((5, 5), np.uint8)
    assert postprocess_classes(z, keep_largest=True, fill_holes=True) is z


def test_keep_largest_counts_all_classes_together_and_holes_take_the_nearest_class():
    m = np.zeros((40, 40), np.uint8)
    m[5:35, 5:20] = 1
    m[5:35, 20:35] = 2  # one lesion of two classes (touching)
    m[18:22, 8:12] = 0  # hole inside the class-1 half
    m[18:22, 28:32] = 0  # hole inside the class-2 half
    m[0:2, 38:40] = 2  # a far blob of class 2
    out = postprocess_classes(m, keep_largest=True, fill_holes=True)
    assert out[0, 39] == 0
    assert (out[5:35, 5:20] == 1).all() and (out[5:35, 20:35] == 2).all()


def test_diagonal_neighbours_are_one_component_and_planes_are_separate():
    m = np.zeros((2, 10, 10), np.uint8)
    m[0, 1, 1] = m[0, 2, 2] = m[0, 3, 3] = 1  # a diagonal line: one component (8-connectivity)
    m[0, 8, 8] = 1
    m[1, 8, 8] = 1  # plane 1 keeps its own largest
    out = postprocess_planes(m.copy(), 2, {"keep_largest": True})
    assert out[0, 8, 8] == 0 and out[0, 1:4, 1:4].trace() == 3 and out[1, 8, 8] == 1


def test_semantic_options():
    assert semantic_options(None) == {}
    assert semantic_options({"fg_threshold": 0.5, "keep_largest": False, "min_size": 0}) == {}
    assert semantic_options({"keep_largest": 1, "fill_holes": True, "min_size": 4}) == {
        "keep_largest": True, "fill_holes": True, "min_size": 4.0}


class ThresholdNet(torch.nn.Module):
    """Semantic stand-in: class 1 where the (unnormalised) input is > 0.5."""

    divisor = 4
    depth = 3

    def forward(self, x):
        x = x[:, :1]
        return torch.cat([torch.zeros_like(x), 60 * (x - 0.5)], dim=1)


@pytest.fixture
def threshold_model(tmp_path, monkeypatch, serve_network):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user-models"))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")

    def make(postprocess=None, pixel_size=None):
        folder = make_random_model(tmp_path / "thr", name="thr", kind="semantic", depth=3, postprocess=postprocess)
        card = json.loads((folder / "model.json").read_text())
        card["input"]["normalization"] = {"kind": "none"}
        card["input"]["pixel_size"] = pixel_size
        (folder / "model.json").write_text(json.dumps(card))
        serve_network(folder, ThresholdNet())
        return folder

    return make


def _lesion_image(shape=(70, 90)):
    img = np.zeros(shape, np.float32)
    img[_disc(shape, 35, 40, 20)] = 1.0
    img[33:37, 38:42] = 0.0  # hole
    img[2:5, 80:86] = 1.0  # blob
    return img


def test_segment_applies_the_cards_semantic_postprocess(threshold_model):
    img = _lesion_image()
    lesion = _disc(img.shape, 35, 40, 20)
    folder = threshold_model()
    np.testing.assert_array_equal(ms.segment(img, str(folder), tile_size=32), (img > 0.5).astype(np.uint16))
    folder = threshold_model({"keep_largest": True, "fill_holes": True})
    labels = ms.segment(img, str(folder), tile_size=32)
    np.testing.assert_array_equal(labels, lesion.astype(np.uint16))
    # the caller's postprocess overrides the card
    np.testing.assert_array_equal(ms.segment(img, str(folder), tile_size=32, postprocess={"keep_largest": False,
                                                                                         "fill_holes": False}),
                                  (img > 0.5).astype(np.uint16))
    # a stack segmented plane by plane is cleaned plane by plane
    stack = np.stack([img, np.roll(img, 5, axis=1)])
    labels = ms.segment(stack, str(folder), tile_size=32)
    np.testing.assert_array_equal(labels[0], lesion)
    np.testing.assert_array_equal(labels[1], np.roll(lesion, 5, axis=1))


def test_semantic_min_size_is_in_model_pixels(threshold_model):
    img = _lesion_image()
    # model at 1 µm, image at 2 µm: the 18 px blob is 72 model pixels; min_size 60 keeps it, 80 drops it
    keep = ms.segment(img, str(threshold_model({"min_size": 60}, [1.0, 1.0])), scale=(2.0, 2.0), units="µm")
    drop = ms.segment(img, str(threshold_model({"min_size": 80}, [1.0, 1.0])), scale=(2.0, 2.0), units="µm")
    assert keep[3, 82] == 1 and drop[3, 82] == 0 and drop[35, 25] == 1


# ----------------------------------------------------------------- region
def test_semantic_2d_region_is_the_whole_image_or_grows_by_the_lesion_size(monkeypatch):
    from napari_medseg.training import regions

    lab = np.zeros((300, 400), np.uint8)
    lab[100:160, 150:230] = 1  # an 80 px wide lesion
    assert default_margin(lab, "instance") == DEFAULT_MARGIN
    assert default_margin(lab, "semantic") == 400
    assert find_region(lab, mode="semantic").box == (slice(0, 300), slice(0, 400))
    assert find_region(lab, mode="instance").box == (slice(84, 176), slice(134, 246))
    assert find_region(lab, mode="semantic", margin=16).box == (slice(84, 176), slice(134, 246))
    # 3D labels (CT / MR stacks): whole slices too, instance 3D keeps 16 px
    assert default_margin(lab[None].repeat(3, 0), "semantic") == 400
    assert default_margin(lab[None].repeat(3, 0), "instance") == DEFAULT_MARGIN
    assert default_margin(np.zeros((5, 5), np.uint8), "semantic") == DEFAULT_MARGIN
    # huge images: the lesion box's longer side, at least 16 px
    monkeypatch.setattr(regions, "SEMANTIC_2D_WHOLE_IMAGE_PX", 1000)
    assert default_margin(lab, "semantic") == 80
    assert find_region(lab, mode="semantic").box == (slice(20, 240), slice(70, 310))
    assert default_margin(lab[None].repeat(3, 0), "semantic") == 80
    tiny = np.zeros((50, 50), np.uint8)
    tiny[20:23, 20:25] = 1
    assert default_margin(tiny, "semantic") == DEFAULT_MARGIN


def test_semantic_3d_region_is_the_whole_painted_slices():
    """Every other slice painted (as users do): unpainted slices between them are not used, the painted ones whole."""
    from napari_medseg.training.regions import describe_region, split_validation

    lab = np.zeros((6, 40, 50), np.uint8)
    lab[1, 10:15, 10:20] = 1
    lab[3, 11:16, 12:20] = 1
    lab[4, 12:14, 12:14] = 1
    r = find_region(lab, mode="semantic")
    assert r.box == (slice(1, 5), slice(0, 40), slice(0, 50))
    assert r.mask[:, 0, 0].tolist() == [True, False, True, True] and r.mask[[0, 2, 3]].all()
    assert r.area == 3 * 40 * 50
    # a given margin keeps every slice of the box; instance labels keep the 16 px box
    assert find_region(lab, mode="semantic", margin=2).mask.all()
    assert find_region(lab, mode="semantic", margin=2).box == (slice(1, 5), slice(8, 18), slice(8, 22))
    assert find_region(lab, mode="instance").box == (slice(1, 5), slice(0, 32), slice(0, 36))
    text = describe_region(lab, mode="semantic", val_fraction=0)
    assert "slices 1-4, rows 0-39, cols 0-49; 3 of its 4 slices (the painted ones) (6000 px" in text
    # the held-out strips (at the slice edges) would hold no lesion: no validation rather than a Dice of 1
    # for predicting nothing
    text = split_validation([r], [lab], fraction=0.2, mode="semantic")
    assert r.val is None and "no painted class" in text
    # a lesion reaching an edge: a strip is held out, never on the unused slice
    lab[1, 30:40, 40:50] = 1
    r = find_region(lab, mode="semantic")
    split_validation([r], [lab], fraction=0.2, mode="semantic")
    assert r.val is not None and r.val.any() and not (r.val & ~r.mask).any()


# ----------------------------------------------------------------- colour jitter
def test_color_matrix_identity_and_grey_axis():
    np.testing.assert_allclose(color_matrix(0.0, 1.0, np.ones(3)), np.eye(3), atol=1e-12)
    m = color_matrix(25.0, 1.3, np.ones(3))
    np.testing.assert_allclose(m @ np.ones(3), np.ones(3), atol=1e-12)  # grey stays grey
    # a hue rotation keeps the saturation (distance from the grey axis); 120 degrees permutes R, G, B
    np.testing.assert_allclose(color_matrix(120.0, 1.0, np.ones(3)) @ np.array([1.0, 0, 0]), [0, 1.0, 0], atol=1e-12)
    np.testing.assert_allclose(color_matrix(0.0, 0.0, np.ones(3)) @ np.array([0.9, 0.3, 0.0]), [0.4] * 3, atol=1e-12)


def test_color_jitter_is_seeded_and_changes_colour_only():
    rng = np.random.default_rng(0)
    img = rng.random((3, 16, 16)).astype(np.float32)
    cfg = AugmentConfig(hue=20, saturation=(0.5, 1.5), channel_gain=0.2)
    a = color_jitter(img, np.random.default_rng(5), cfg)
    b = color_jitter(img, np.random.default_rng(5), cfg)
    assert a.dtype == np.float32 and a.shape == img.shape
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, img)
    # per pixel: a linear map of that pixel's colour only (no spatial change)
    m = np.linalg.lstsq(img.reshape(3, -1).T, a.reshape(3, -1).T, rcond=None)[0]
    np.testing.assert_allclose(img.reshape(3, -1).T @ m, a.reshape(3, -1).T, atol=1e-5)
    # grey images are not touched by pixel_augment's colour step
    grey = rng.random((1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(pixel_augment(grey, np.random.default_rng(1),
                                                replace(AugmentConfig.none(), p_color=1.0)), grey)


def test_colour_jitter_keeps_the_labels_of_semantic_patches():
    rng = np.random.default_rng(3)
    lab = np.zeros((64, 64), np.int64)
    lab[_disc(lab.shape, 32, 30, 14)] = 1
    img = np.stack([lab * 0.6 + rng.random(lab.shape) * 0.3] * 3, -1).astype(np.float32)
    s = [Sample(img, lab, np.ones(lab.shape, np.float32))]
    base = {"zoom": (0.8, 1.25), "rotate": True}
    plain = SemanticPatchSampler(s, patch_size=32, normalization={"kind": "none"}, augment=AugmentConfig(**base))
    jit = SemanticPatchSampler(s, patch_size=32, normalization={"kind": "none"},
                               augment=AugmentConfig(**base, p_color=1.0, hue=30, channel_gain=0.3))
    for k in range(5):  # same geometry draws first, so the same labels and weights; other colours
        (im0, c0, w0), (im1, c1, w1) = plain.patch(np.random.default_rng(k)), jit.patch(np.random.default_rng(k))
        np.testing.assert_array_equal(c0, c1)
        np.testing.assert_array_equal(w0, w1)
        assert set(np.unique(c1)) <= {0, 1}
        assert im1.shape == im0.shape and not np.allclose(im0, im1)


# ----------------------------------------------------------------- semantic 2D defaults of training
FAST = {"patch_size": 64, "batch_size": 2, "steps_per_epoch": 3, "threads": 1, "epochs": 1}


def _rgb_lesion(seed=0, shape=(72, 96)):
    rng = np.random.default_rng(seed)
    lab = _disc(shape, 36, 40 + 4 * seed, 14).astype(np.uint8)
    img = np.stack([np.where(lab > 0, v, 200.0) for v in (90.0, 60.0, 40.0)], -1) + rng.normal(0, 8, (*shape, 3))
    return np.clip(img, 0, 255).astype(np.uint8), lab


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path


def test_semantic_2d_lesion_defaults_go_into_the_card(user_models):
    from napari_medseg.models.spec import load_model
    from napari_medseg.training.finetune import train
    from napari_medseg.training.finetune.loop import SEMANTIC_2D_POSTPROCESS

    img, lab = _rgb_lesion()
    res = train(img, lab, mode="semantic", name="les", val_fraction=0, **FAST)
    _, card = load_model(res.model_path)
    assert card.output["postprocess"] == SEMANTIC_2D_POSTPROCESS == {"keep_largest": True, "fill_holes": True}
    assert "rows 0-71, cols 0-95" in res.region  # the whole image
    # off on request; two foreground classes: none by default; 3D labels: none (and the 16 px region)
    res = train(img, lab, mode="semantic", name="les-off", val_fraction=0, postprocess={}, **FAST)
    assert load_model(res.model_path)[1].output["postprocess"] == {}
    two = lab.copy()
    two[36:, :][two[36:, :] > 0] = 2
    res = train(img, two, mode="semantic", name="les-2", val_fraction=0, **FAST)
    assert load_model(res.model_path)[1].output["postprocess"] == {}
    vol, vlab = np.stack([img[..., 0]] * 3), np.stack([lab] * 3)
    res = train(vol, vlab, mode="semantic", name="les-3d", val_fraction=0, **FAST)
    assert load_model(res.model_path)[1].output["postprocess"] == {}
    assert "slices 0-2, rows 0-71, cols 0-95 (" in res.region  # whole slices


def test_train_at_a_pixel_size(user_models):
    from napari_medseg import segment
    from napari_medseg.errors import ParameterError
    from napari_medseg.models.spec import load_model
    from napari_medseg.training.finetune import finetune_iter, train

    img, lab = _rgb_lesion()
    with pytest.raises(ParameterError, match="known pixel size"):
        next(finetune_iter(img, lab, mode="semantic", pixel_size=2.0, name="x"))
    res = train(img, lab, mode="semantic", name="half", scale=(1.0, 1.0), pixel_size=2.0, val_fraction=0, **FAST)
    _, card = load_model(res.model_path)
    assert card.pixel_size == [2.0, 2.0] and card.input["pixel_unit"] == "µm"
    out = segment(img, res.model_path, scale=(1.0, 1.0), units="µm")
    assert out.shape == lab.shape
