"""The helpers shared by the training loops: patch centre / warped window, step budget, one step, the loop."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from napari_medseg.errors import ParameterError
from napari_medseg.progress import CancelToken
from napari_medseg.training import steps as steps_mod
from napari_medseg.training.augment import AugmentConfig
from napari_medseg.training.data import (
    TARGET_MARGIN,
    PatchSampler,
    Sample,
    patch_center,
)
from napari_medseg.training.semantic import SemanticPatchSampler
from napari_medseg.training.steps import StepBudget, StepLoop, StepRunner

# ---------------------------------------------------------------------------- patch sampling


def test_patch_center_anywhere_replays_two_uniform_draws_inside_the_image():
    for seed in range(50):
        got = patch_center(np.random.default_rng(seed), (10, 12), np.zeros(0, np.int64), 1.0, 2.0)
        ref = np.random.default_rng(seed)
        assert got == (ref.uniform(0, 9), ref.uniform(0, 11))  # no random() draw without objects
        assert 0 <= got[0] <= 9 and 0 <= got[1] <= 11


def test_patch_center_on_object_stays_within_jitter_of_a_labelled_pixel():
    fg = np.array([5 * 12 + 7])  # the single labelled pixel (5, 7) of a (10, 12) image
    centers = np.array([patch_center(np.random.default_rng(s), (10, 12), fg, 1.0, 2.0) for s in range(200)])
    assert np.all(np.abs(centers - [5, 7]) <= 2.0)
    assert centers[:, 0].min() < 4 and centers[:, 0].max() > 6  # the jitter is used
    # p_object 0: one random() is drawn (objects exist), then the centre is anywhere
    ref = np.random.default_rng(3)
    ref.random()
    assert patch_center(np.random.default_rng(3), (10, 12), fg, 0.0, 2.0) == (ref.uniform(0, 9), ref.uniform(0, 11))


def _ramp_sample(weight=None):
    yy, xx = np.indices((30, 30))
    image = (10.0 * yy + xx).astype(np.float32)  # linear: linear interpolation reproduces it exactly
    labels = np.zeros((30, 30), np.int32)
    labels[14:17, 14:17] = 3  # labelled pixels around (15, 15)
    return Sample(image, labels, weight)


def test_warped_patch_without_augmentation_is_the_window_around_the_drawn_centre():
    weight = np.zeros((30, 30), np.float32)
    weight[:, 15:] = 1
    sampler = PatchSampler([_ramp_sample(weight)], patch_size=8, normalization=None, augment=AugmentConfig.none(),
                           p_object=1.0)
    im, lab, wt = sampler.warped_patch(np.random.default_rng(4), 0)
    fg_index = np.flatnonzero(sampler.samples[0].labels.ravel() > 0)
    cy, cx = patch_center(np.random.default_rng(4), (30, 30), fg_index, 1.0, 8 / 4)
    rows = cy + np.arange(8)[:, None] - 3.5
    cols = cx + np.arange(8)[None, :] - 3.5
    assert im.shape == (1, 8, 8) and im.dtype == np.float32
    np.testing.assert_allclose(im[0], 10 * rows + cols, atol=1e-4)
    r, c = np.round(rows).astype(int), np.round(cols).astype(int)
    np.testing.assert_array_equal(lab, sampler.samples[0].labels[r, c])
    np.testing.assert_array_equal(wt, weight[r, c])
    assert lab.dtype == np.int32 and wt.dtype == np.float32
    assert 3 in lab  # centred on the object
    # a margin widens the window around the same centre; the same seed gives the same window
    big, big_lab, _ = sampler.warped_patch(np.random.default_rng(4), 0, margin=2)
    assert big.shape == (1, 12, 12)
    np.testing.assert_allclose(big[:, 2:10, 2:10], im, atol=1e-4)
    np.testing.assert_array_equal(big_lab[2:10, 2:10], lab)


def test_both_samplers_cut_their_patches_from_the_shared_window():
    sample = _ramp_sample()
    kw = {"patch_size": 8, "normalization": None, "augment": AugmentConfig.none(), "p_object": 1.0}
    window, labels, _ = PatchSampler([sample], **kw).warped_patch(np.random.default_rng(9), 0, margin=TARGET_MARGIN)
    im, fg, _dist, wt = PatchSampler([sample], **kw).patch(np.random.default_rng(9), 0)
    crop = (slice(TARGET_MARGIN, TARGET_MARGIN + 8),) * 2
    np.testing.assert_array_equal(im, window[(slice(None), *crop)])
    np.testing.assert_array_equal(fg, (labels[crop] > 0).astype(np.float32))
    np.testing.assert_array_equal(wt, np.ones((8, 8), np.float32))

    window, labels, _ = SemanticPatchSampler([sample], **kw).warped_patch(np.random.default_rng(9), 0)
    im, classes, wt = SemanticPatchSampler([sample], **kw).patch(np.random.default_rng(9), 0)
    np.testing.assert_array_equal(im, window)
    np.testing.assert_array_equal(classes, labels.astype(np.int64))
    b = SemanticPatchSampler([sample], seed=1, **kw).batch(2)
    assert type(b).__name__ == "SemanticBatch" and b.classes.shape == (2, 8, 8) and b.classes.dtype == np.int64


# ---------------------------------------------------------------------------- budget


def test_step_budget_fraction_and_estimate(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(steps_mod.time, "perf_counter", lambda: now[0])
    b = StepBudget(steps=4, t0=100.0)
    assert b.fraction(1) == 0.25 and b.fraction(4) == 1.0 and b.total_estimate(1) == 4
    t = StepBudget(minutes=1.0, t0=100.0)
    now[0] = 130.0  # half the minute spent
    assert t.fraction(0) == 0.5 and t.elapsed() == 30.0
    assert t.total_estimate(10) == 20  # 10 steps in 30 s -> 20 in 60 s
    both = StepBudget(steps=100, minutes=1.0, t0=100.0)
    assert both.fraction(10) == 0.5 and both.total_estimate(10) == 20
    assert both.fraction(60) == 0.6 and both.total_estimate(0) == 100
    for steps, minutes in ((None, None), (0, None), (None, 0.0)):
        with pytest.raises(ParameterError):
            StepBudget(steps, minutes)


# ---------------------------------------------------------------------------- one step and the loop


def _net():
    torch.manual_seed(0)
    return torch.nn.Conv2d(1, 2, 3, padding=1)


def _mse(target):
    def loss_fn(out):
        loss = ((out.float() - torch.from_numpy(target)) ** 2).mean()
        return loss, {"mse": float(loss.detach())}
    return loss_fn


@pytest.mark.parametrize("clip", [None, 1e-9])  # tiny: AdamW is scale-invariant above its eps
def test_step_is_exactly_one_adamw_update(clip):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 1, 6, 6)).astype(np.float32)
    target = rng.normal(size=(2, 2, 6, 6)).astype(np.float32)
    ref = _net()
    net = copy.deepcopy(ref)
    runner = StepRunner.create(net, torch.device("cpu"), "test", lr=0.1, weight_decay=0.01, clip_grad_norm=clip)
    assert runner.channels_last and runner.lr == 0.1
    loss, parts = runner.step(x, _mse(target))

    opt = torch.optim.AdamW(ref.parameters(), lr=0.1, weight_decay=0.01)
    ref_loss, _ = _mse(target)(ref(torch.from_numpy(x)))
    ref_loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(ref.parameters(), clip)
    opt.step()
    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-6) and parts == {"mse": loss}
    for a, b in zip(net.parameters(), ref.parameters(), strict=False):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert runner.release() is net and not net.training


def test_step_loop_schedule_budget_and_cancel():
    x = np.ones((1, 1, 4, 4), np.float32)
    target = np.zeros((1, 2, 4, 4), np.float32)
    runner = StepRunner.create(_net(), torch.device("cpu"), lr=1.0, weight_decay=0.0)
    seen = []

    def lr_at(f, step):
        seen.append((f, step))
        return 0.01 * (step + 1)

    loop = StepLoop(runner, StepBudget(steps=4), itertools.repeat(x), lambda b: (b, _mse(target)), lr_at)
    done = list(loop)
    assert [d.step for d in done] == [1, 2, 3, 4] and loop.step == 4 and not loop.cancelled
    assert seen == [(0.0, 0), (0.25, 1), (0.5, 2), (0.75, 3)]
    assert [d.lr for d in done] == [0.01, 0.02, 0.03, 0.04]
    assert done[-1].loss < done[0].loss  # it learns
    assert loop.running_loss == pytest.approx(np.mean([d.loss for d in done]))

    cancel = CancelToken()
    loop = StepLoop(runner, StepBudget(steps=10), itertools.repeat(x), lambda b: (b, _mse(target)), lr_at, cancel)
    for d in loop:
        if d.step == 2:
            cancel.cancel()
    assert loop.cancelled and loop.step == 2
    assert StepLoop(runner, StepBudget(steps=1), iter(()), lambda b: b, lr_at).running_loss is None
