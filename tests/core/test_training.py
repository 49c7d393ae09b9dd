"""Training: weighted loss exactness, a tiny run that learns, checkpoints, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.errors import ParameterError
from napari_medseg.models.spec import ModelCard, load_model
from napari_medseg.models.unet import UNet
from napari_medseg.progress import CancelToken, run
from napari_medseg.training.augment import AugmentConfig
from napari_medseg.training.data import Sample
from napari_medseg.training.loop import SegmentationTrainConfig, lr_factor, segment_with_net, train_iter
from napari_medseg.training.losses import instance_loss


def _card(base=4, depth=2):
    return ModelCard(
        name="tiny-nuclei",
        architecture={"type": "unet", "dims": 2, "in_channels": 1, "out_channels": 2, "base_channels": base,
                      "depth": depth, "norm": "batch"},
        input={"channels": 1, "color": "grey", "normalization": {"kind": "percentile", "low": 1.0, "high": 99.8},
               "pixel_size": None},
        output={"kind": "instance", "channels": ["foreground", "distance"], "postprocess": {"min_size": 4}},
    )


def _synthetic(n=3, shape=(48, 48), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    out = []
    for i in range(n):
        lab = np.zeros(shape, np.int32)
        for k in range(1, 6):
            cy, cx = rng.integers(6, shape[0] - 6, size=2)
            lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= 16) & (lab == 0)] = k
        img = np.where(lab > 0, 180, 30) + rng.normal(0, 10, shape)
        out.append(Sample(img.astype(np.float32), lab, name=f"s{i}"))
    return out


def test_zero_weight_pixels_give_exactly_zero_loss_and_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, generator=g, requires_grad=True)
    fg = (torch.rand(2, 8, 8, generator=g) > 0.5).float()
    dist = torch.rand(2, 8, 8, generator=g) * fg
    w = torch.ones(2, 8, 8)
    w[:, :, :4] = 0
    loss, parts = instance_loss(logits, fg, dist, w)
    loss.backward()
    assert torch.count_nonzero(logits.grad[:, :, :, :4]) == 0
    assert torch.count_nonzero(logits.grad[:, :, :, 4:]) > 0
    # changing logits or targets where the weight is 0 leaves the loss unchanged
    l2 = logits.detach().clone()
    l2[:, :, :, :4] = 50.0
    fg2, dist2 = fg.clone(), dist.clone()
    fg2[:, :, :4] = 1 - fg2[:, :, :4]
    dist2[:, :, :4] = 0.3
    loss2, _ = instance_loss(l2, fg2, dist2, w)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)
    assert set(parts) == {"bce", "dice", "dist"}


def test_lr_schedule():
    assert lr_factor(0.0, 0, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(0.0, 9, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(0.0, 10, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(0.5, 100, 10, 0.1) == pytest.approx(0.55)
    assert lr_factor(1.0, 100, 10, 0.1) == pytest.approx(0.1)


def test_tiny_training_decreases_loss_and_saves_loadable_model(tmp_path):
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=4, depth=2)
    cfg = SegmentationTrainConfig(steps=40, batch_size=4, patch_size=32, lr=1e-2, warmup_steps=2, val_every=20, seed=0,
                      num_threads=1, device="cpu", augment=AugmentConfig(rotate=False, zoom=(1.0, 1.0)))
    samples = _synthetic()
    losses = []
    res = run(train_iter(net, _card(), samples, samples[:1], cfg, out=tmp_path / "m"),
              lambda p: losses.append(p.info["loss"]))
    assert res.steps == 40 and not res.cancelled
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    assert [h["step"] for h in res.history] == [20, 40]
    assert res.best is not None and res.best["step"] in (20, 40)
    net2, card2 = load_model(tmp_path / "m")
    assert card2.training["steps_total"] == 40 and card2.metrics["val_during_training"]["ap50"] == res.best["ap50"]
    assert res.best["seed_threshold"] in (0.3, 0.4, 0.5, 0.6)
    assert card2.output["postprocess"] == {"min_size": 4, "seed_threshold": res.best["seed_threshold"]}
    x = torch.randn(1, 1, 48, 64)
    assert net2(x).shape == (1, 2, 48, 64)
    # the saved weights are the returned ones
    for (k, a), b in zip(res.net.state_dict().items(), net2.state_dict().values(), strict=False):
        assert torch.equal(a, b), k
    labels = segment_with_net(net2, card2, samples[0].image)
    assert labels.shape == (48, 48) and labels.dtype == np.int32


def test_cancel_keeps_best_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=4, depth=2)
    token = CancelToken()
    cfg = SegmentationTrainConfig(steps=100, batch_size=2, patch_size=32, val_every=3, num_threads=1, device="cpu")
    gen = train_iter(net, _card(), _synthetic(2), _synthetic(1, seed=1), cfg, out=tmp_path / "m", cancel=token)
    seen = []
    for p in gen_progress(gen, seen):
        if p.step == 4:
            token.cancel()
    res = seen[-1]
    assert res.cancelled and res.steps == 4
    assert res.best["step"] == 3
    _, card = load_model(tmp_path / "m")
    assert card.training["cancelled"] is True and card.training["best_step"] == 3


def gen_progress(gen, results):
    """Iterate a progress generator, appending its return value to ``results``."""
    while True:
        try:
            yield next(gen)
        except StopIteration as stop:
            results.append(stop.value)
            return


def test_bad_configs():
    with pytest.raises(ParameterError, match="steps"):
        SegmentationTrainConfig()
    net = UNet(1, 2, base_channels=4, depth=3)
    with pytest.raises(ParameterError, match="divisor"):
        next(train_iter(net, _card(depth=3), _synthetic(1), config=SegmentationTrainConfig(steps=1, patch_size=30)))


# ---- the shipped models --------------------------------------------------------

SHIPPED = ("nuclei", "nuclei-he")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_cards_are_complete(name):
    from napari_medseg.models.registry import shipped_models_dir

    folder = shipped_models_dir() / name
    net, card = load_model(folder)
    assert card.name == name and card.kind == "instance"
    from napari_medseg.inference.representations import representation_of

    rep = representation_of(card)  # foreground + distance (+ boundary for a contour model)
    assert rep.kind in ("distance", "contour") and card.output["channels"] == rep.channels
    assert set(card.output["postprocess"]) == set(rep.postprocess_defaults)
    assert card.input["normalization"] == {"kind": "percentile", "low": 1.0, "high": 99.8}
    assert card.input["pixel_size"] is None and card.training["typical_object_diameter_px"] > 5
    assert card.training["licence"] == "CC0" and "dsb2018" in card.training["data"]
    assert card.metrics["dsb2018_val"]["evaluated_with"] == "napari_medseg.api.segment"
    x = torch.zeros(1, card.in_channels, 64, 64)
    assert net(x).shape == (1, rep.n_channels, 64, 64)
    size = sum(f.stat().st_size for f in shipped_models_dir().glob("nuclei*/*"))
    assert size < 20 * 2**20


@pytest.mark.parametrize("name, modality, floor", [("nuclei", "fluo", 0.6), ("nuclei-he", "histo", 0.3)])
def test_shipped_model_scores_on_real_val_images(name, modality, floor):
    """Regression floor on 6 real dsb2018/val images, well below the card's figures."""
    import csv

    import tifffile
    from conftest import dataset

    from napari_medseg.analysis.metrics import average_precision
    from napari_medseg.api import segment

    root = dataset("dsb2018", "val")
    rows = [r for r in csv.DictReader((root / "index.csv").read_text().splitlines()) if r["modality"] == modality][:6]
    aps = []
    for r in rows:
        img = tifffile.imread(root / "images" / f"{r['id']}.tif")
        true = tifffile.imread(root / "masks" / f"{r['id']}.tif").astype(np.int64)
        pred = np.asarray(segment(img[..., :3] if img.ndim == 3 else img, name, device="cpu"))
        assert pred.shape == true.shape
        aps.append(average_precision(true, pred.astype(np.int64), 0.5))
    assert np.mean(aps) > floor


def test_checkpoint_resume_goes_on_from_the_saved_step(tmp_path):
    from napari_medseg.training.checkpoint import load_checkpoint

    ckpt = tmp_path / "ck" / "tiny.pt"
    kw = {"batch_size": 2, "patch_size": 32, "lr": 1e-2, "warmup_steps": 2, "val_every": 0, "seed": 0,
          "num_threads": 1, "device": "cpu", "precision": "float32", "checkpoint": ckpt}
    torch.manual_seed(0)
    first = run(train_iter(UNet(1, 2, base_channels=4, depth=2), _card(), _synthetic(), None,
                           SegmentationTrainConfig(steps=3, **kw)), lambda p: None)
    saved = load_checkpoint(ckpt)
    assert saved.step == 3 and saved.elapsed_s > 0 and len(saved.info["sittings"]) == 1
    for k, v in first.net.state_dict().items():
        assert torch.equal(saved.model[k], v), k
    steps_seen = []
    net = UNet(1, 2, base_channels=4, depth=2)
    res = run(train_iter(net, _card(), _synthetic(), None, SegmentationTrainConfig(steps=5, resume=ckpt, **kw)),
              lambda p: steps_seen.append(p.step))
    assert steps_seen == [4, 5] and res.steps == 5
    again = load_checkpoint(ckpt)
    assert again.step == 5 and again.elapsed_s > saved.elapsed_s and len(again.info["sittings"]) == 2
    assert int(again.optimizer["state"][0]["step"]) == 5  # AdamW's own count went on too
    # a total budget already spent: no step, the weights are the checkpoint's
    same = run(train_iter(UNet(1, 2, base_channels=4, depth=2), _card(), _synthetic(), None,
                          SegmentationTrainConfig(steps=5, resume=ckpt, **kw)), lambda p: None)
    for k, v in same.net.state_dict().items():
        assert torch.equal(again.model[k], v), k
    with pytest.raises(ParameterError, match="not a napari-medseg training checkpoint"):
        torch.save({"x": 1}, tmp_path / "bad.pt")
        load_checkpoint(tmp_path / "bad.pt")


def test_training_precision_follows_the_cpu(monkeypatch):
    from napari_medseg.training import steps

    cpu = torch.device("cpu")
    monkeypatch.setattr(steps, "cpu_has_bf16", lambda: True)
    assert steps.training_amp_dtype(cpu) is torch.bfloat16
    assert steps.training_amp_dtype(cpu, "float32") is None
    monkeypatch.setattr(steps, "cpu_has_bf16", lambda: False)
    assert steps.training_amp_dtype(cpu) is None
    with pytest.raises(ParameterError, match="precision"):
        steps.training_amp_dtype(cpu, "int8")
