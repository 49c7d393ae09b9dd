"""The CNN classifier: learns discs vs squares, calibrates, looks at the object, transfers encoders, CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_medseg.analysis.image_classify import classify_items, gradcam
from napari_medseg.errors import ParameterError
from napari_medseg.progress import run
from napari_medseg.training.classifier import (
    balanced_cross_entropy,
    expected_calibration_error,
    fit_temperature,
    roc_auc,
    softmax,
    stratified_split,
    train_classifier_iter,
)


def _shape_image(kind: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    img = rng.normal(40, 8, (size, size))
    r = int(rng.integers(7, 12))
    cy, cx = rng.integers(r + 2, size - r - 2, 2)
    yy, xx = np.mgrid[:size, :size]
    if kind == "disc":
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        m = (abs(yy - cy) <= r * 0.8) & (abs(xx - cx) <= r * 0.8)
    img[m] += 120
    return np.clip(img, 0, 255).astype(np.uint8)


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    kinds = ["disc", "square"] * (n // 2)
    return [_shape_image(k, rng) for k in kinds], kinds


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    items, classes = _data(64, 0)
    out = tmp_path_factory.mktemp("cls") / "shapes"
    res = run(train_classifier_iter(items, classes, size=32, depth=4, base_channels=8, epochs=25, minutes=None,
                                    batch_size=16, patience=25, seed=0, device="cpu", out=out, name="shapes"))
    assert res.model_path == out and (out / "model.json").exists()
    assert res.class_names == ["disc", "square"]
    return out


def test_learns_discs_vs_squares_and_generalises(trained: Path) -> None:
    items, classes = _data(40, 1)  # new images
    probs, names = classify_items(items, trained)
    pred = [names[i] for i in probs.argmax(axis=1)]
    acc = float(np.mean([p == c for p, c in zip(pred, classes, strict=True)]))
    assert acc >= 0.9
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    # an ensemble of the same model twice is the model
    p2, _ = classify_items(items, [trained, trained])
    np.testing.assert_allclose(p2, probs, atol=1e-12)


def test_saliency_peaks_on_the_object(trained: Path) -> None:
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(10):
        img = _shape_image("disc", rng)
        cam = gradcam([img], trained)[0]
        assert cam.shape == img.shape and cam.min() >= 0.0 and cam.max() <= 1.0
        obj = img > 100
        hits += cam[obj].mean() > cam[~obj].mean()
    assert hits >= 8


def test_temperature_scaling_lowers_ece_of_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    # logits 5x too large: right 75 % of the time but ~99 % confident
    clean = np.where(rng.random(2000) < 0.75, y, 1 - y)
    logits = np.stack([np.where(clean == 0, 1.0, -1.0), np.where(clean == 1, 1.0, -1.0)], 1) * 2.5
    before = expected_calibration_error(softmax(logits), y)
    t = fit_temperature(logits, y)
    after = expected_calibration_error(softmax(logits, t), y)
    assert t > 1.5 and after < before / 3 and after < 0.03


def test_balanced_held_out_loss_does_not_move_with_the_class_prior() -> None:
    # a constant prediction p(class 1) = 0.8 on held-out sets of different class ratios
    logits = np.log(np.array([[0.2, 0.8]]))
    ce = {}
    for n1 in (5, 50):
        y = np.array([0] * 50 + [1] * n1)
        z = np.repeat(logits, len(y), axis=0)
        ce[n1] = balanced_cross_entropy(z, y)
        plain = float(-np.log(np.where(y == 1, 0.8, 0.2)).mean())
        assert ce[n1] == pytest.approx((-np.log(0.2) - np.log(0.8)) / 2)
        assert (plain > ce[n1]) == (n1 == 5)  # the plain loss punishes the prior shift, the balanced one does not
    y = np.array([0, 0, 1, 1])
    z = np.array([[2.0, 0.0], [0.5, 0.1], [0.0, 1.0], [1.0, 0.0]])
    p = softmax(z)
    assert balanced_cross_entropy(z, y) == pytest.approx(float(-np.log(p[np.arange(4), y]).mean()))  # balanced set


def test_auc_split_and_bad_parameters() -> None:
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == 0.75
    tr, va = stratified_split(np.array([0] * 10 + [1] * 5), 0.2, seed=0)
    assert len(va) == 3 and len(set(tr) & set(va)) == 0 and len(tr) + len(va) == 15
    # groups (copies of one original) stay whole on one side, about val_fraction of each class held out
    y = np.repeat([0, 1, 2], 100)
    groups = [f"{c}_{i // 5}" for c, i in zip(y, range(300), strict=True)]  # 20 groups of 5 per class
    tr, va = stratified_split(y, 0.2, seed=1, groups=groups)
    assert not {groups[i] for i in tr} & {groups[i] for i in va} and len(tr) + len(va) == 300
    assert [int((y[va] == c).sum()) for c in range(3)] == [20, 20, 20]
    assert len(stratified_split(y, 0.2, seed=1, groups=groups)[1]) == 60
    with pytest.raises(ParameterError, match="groups"):
        stratified_split(y, 0.2, seed=1, groups=groups[:10])
    items, classes = _data(4, 0)
    with pytest.raises(ParameterError, match="two classes"):
        run(train_classifier_iter(items, ["a"] * 4, epochs=1, minutes=None))
    with pytest.raises(ParameterError, match="lr"):
        run(train_classifier_iter(items, classes, epochs=1, minutes=None, lr=float("inf")))


def test_transfer_from_a_unet_encoder(tmp_path: Path) -> None:
    from napari_medseg.models.classifier import EncoderClassifier, load_encoder
    from napari_medseg.models.spec import load_model
    from napari_medseg.models.testing import make_random_model

    unet_dir = make_random_model(tmp_path / "u", in_channels=1, base_channels=8, depth=3)
    unet, _ = load_model(unet_dir)
    net = EncoderClassifier(in_channels=1, n_classes=2, base_channels=8, depth=4)
    assert load_encoder(net, unet.state_dict()) == len([k for k in unet.state_dict() if k.startswith("down.")])
    np.testing.assert_array_equal(net.state_dict()["down.0.0.weight"].numpy(),
                                  unet.state_dict()["down.0.0.weight"].numpy())
    items, classes = _data(16, 2)
    res = run(train_classifier_iter(items, classes, base=str(unet_dir), size=32, depth=4, base_channels=8, epochs=1,
                                    minutes=None, device="cpu", out=tmp_path / "c"))
    from napari_medseg.models.spec import ModelCard

    assert ModelCard.from_json(res.model_path / "model.json").training["base"] == "tiny"
    # without width/depth the base's are taken (the CLI's --base): its encoder fits, nothing to match by hand
    res = run(train_classifier_iter(items, classes, base=str(unet_dir), size=32, epochs=1, minutes=None,
                                    device="cpu", out=tmp_path / "c2"))
    arch = ModelCard.from_json(res.model_path / "model.json").architecture
    assert (arch["base_channels"], arch["depth"]) == (8, 3)
    with pytest.raises(ParameterError, match="shares no encoder weights"):
        run(train_classifier_iter(items, classes, base=str(unet_dir), size=32, base_channels=16, epochs=1,
                                  minutes=None, device="cpu", out=tmp_path / "c3"))


def test_training_precision_auto_follows_the_cpu_and_is_recorded(tmp_path: Path) -> None:
    from napari_medseg.models.spec import ModelCard
    from napari_medseg.training.steps import cpu_has_bf16

    items, classes = _data(8, 3)
    auto = "bfloat16" if cpu_has_bf16() else "float32"
    for precision, expected in (("auto", auto), ("float32", "float32"), ("bfloat16", "bfloat16")):
        res = run(train_classifier_iter(items, classes, size=32, depth=4, base_channels=8, epochs=1, minutes=None,
                                        device="cpu", precision=precision, out=tmp_path / precision))
        card = ModelCard.from_json(res.model_path / "model.json")
        assert card.training["precision"] == expected
        assert res.metrics["images_seen"] > 0 and res.metrics["cpu_seconds"] > 0
        assert 0 <= res.history[0]["val_auc"] <= 1
    with pytest.raises(ParameterError, match="precision"):
        run(train_classifier_iter(items, classes, epochs=1, minutes=None, precision="int4"))


def test_cli_train_classify_end_to_end(tmp_path: Path, capsys) -> None:
    import pandas as pd
    from skimage.io import imsave

    from napari_medseg.cli import main

    items, classes = _data(24, 3)
    rows = []
    for i, (img, c) in enumerate(zip(items, classes, strict=True)):
        imsave(tmp_path / f"img{i}.png", img, check_contrast=False)
        rows.append({"file": f"img{i}.png", "class": c})
    pd.DataFrame(rows).assign(group=[f"g{i // 2}" for i in range(len(rows))]).to_csv(tmp_path / "train.csv",
                                                                                       index=False)
    model = tmp_path / "model"
    assert main(["train", "--mode", "classify", "--table", str(tmp_path / "train.csv"), "--out", str(model),
                 "--epochs", "2", "--threads", "1", "--precision", "float32", "-q"]) == 0
    assert "val accuracy" in capsys.readouterr().out
    written = json.loads((model / "model.json").read_text())
    assert written["metrics"]["n_val_groups"] == 3  # 6 items, 2 per group
    assert written["training"]["precision"] == "float32"  # --precision reaches the classifier
    out = tmp_path / "pred.csv"
    assert main(["classify", str(tmp_path / "img0.png"), str(tmp_path / "img1.png"), "--model", str(model),
                 "-o", str(out), "--saliency", str(tmp_path / "sal")]) == 0
    t = pd.read_csv(out)
    assert list(t.columns) == ["file", "class", "p_disc", "p_square"] and len(t) == 2
    np.testing.assert_allclose(t["p_disc"] + t["p_square"], 1.0, atol=1e-9)
    assert (tmp_path / "sal" / "img0_saliency.tif").exists()
    assert main(["train", "--mode", "classify", "--out", str(model)]) == 2  # no --table: a clear error


def test_object_crops_fixed_physical_size_and_cnn_classes_of_lesions(trained: Path) -> None:
    import pandas as pd

    from napari_medseg.analysis.crop_classify import CropSpec, object_centres, sample_crops
    from napari_medseg.analysis.image_classify import classify_objects
    from napari_medseg.geometry import Geometry

    rng = np.random.default_rng(9)
    canvas = np.zeros((3, 200, 200), np.uint8)
    lab = np.zeros((3, 200, 200), np.uint16)
    truth = {}
    for k, (kind, (cy, cx)) in enumerate([("disc", (40, 40)), ("square", (40, 150)), ("disc", (150, 60)),
                                          ("square", (150, 150))], start=1):
        tile = _shape_image(kind, rng)
        canvas[1, cy - 24:cy + 24, cx - 24:cx + 24] = tile
        lab[1, cy - 24:cy + 24, cx - 24:cx + 24][tile > 100] = k
        truth[k] = kind
    g = Geometry.from_scale("ZYX", (5.0, 0.5, 0.5), units="mm")
    centres, ids = object_centres(lab)
    # 24 mm = 48 pixels of 0.5 mm, on the centroid's plane, sampled at 48 points: the pixels themselves
    crops = sample_crops(canvas, centres, g, CropSpec(24.0, "mm", "2d", 48))
    assert ids.tolist() == [1, 2, 3, 4] and all(c.shape == (48, 48) and c.dtype == np.uint8 for c in crops)
    table = pd.DataFrame({"id": ids})
    out = classify_objects(table, canvas, lab, trained, g, size=24.0)
    assert out["cnn_class"].tolist() == [truth[i] for i in ids]
    np.testing.assert_allclose(out["cnn_p_disc"] + out["cnn_p_square"], 1.0, atol=1e-9)
    with pytest.raises(ParameterError, match="not in the labels"):
        object_centres(lab, ids=[7])


def test_early_stopping_waits_for_half_the_budget(monkeypatch, tmp_path: Path) -> None:
    import napari_medseg.training.classifier as tc

    monkeypatch.setattr(tc, "PATIENCE_ITEMS", 1)  # only the epochs count here
    rng = np.random.default_rng(0)
    items = [rng.random((16, 16)).astype(np.float32) for _ in range(40)]
    classes = rng.choice(["a", "b"], 40).tolist()  # noise: the held-out loss hardly improves after the start
    res = run(train_classifier_iter(items, classes, size=16, depth=2, base_channels=4, epochs=20, minutes=None,
                                    batch_size=8, patience=1, seed=0, device="cpu", out=tmp_path / "m"))
    best = res.metrics["best_epoch"]
    assert len(res.history) >= tc.EARLY_STOP_AFTER * 20 > best + 1  # patience 1 alone would have stopped sooner
    res = run(train_classifier_iter(items, classes, size=16, depth=2, base_channels=4, epochs=20, minutes=None,
                                    batch_size=8, patience=1, seed=0, device="cpu", out=tmp_path / "m2",
                                    early_stopping=False))  # medseg train --no-early-stopping
    assert len(res.history) == 20


def test_a_time_budget_trains_to_its_end_unless_early_stopping_is_asked_for(monkeypatch, tmp_path: Path) -> None:
    """early_stopping=None: off with ``minutes`` (the budget is the user's; the best epoch is kept), on with epochs."""
    import napari_medseg.training.classifier as tc
    from napari_medseg.models.spec import ModelCard

    monkeypatch.setattr(tc, "PATIENCE_ITEMS", 1)
    monkeypatch.setattr(tc, "EARLY_STOP_AFTER", 0.0)
    rng = np.random.default_rng(0)
    items = [rng.random((16, 16)).astype(np.float32) for _ in range(40)]
    classes = rng.choice(["a", "b"], 40).tolist()  # noise: the held-out loss stops improving at once
    kw = {"size": 16, "depth": 2, "base_channels": 4, "batch_size": 8, "patience": 1, "seed": 0, "device": "cpu"}
    budget = run(train_classifier_iter(items, classes, minutes=0.05, epochs=12, out=tmp_path / "b", **kw))
    counted = run(train_classifier_iter(items, classes, minutes=None, epochs=12, out=tmp_path / "e", **kw))
    asked = run(train_classifier_iter(items, classes, minutes=0.05, epochs=12, early_stopping=True,
                                      out=tmp_path / "a", **kw))
    flags = [ModelCard.from_json(r.model_path / "model.json").training["early_stopping"] for r in (budget, counted, asked)]
    assert flags == [False, True, True]
    assert len(counted.history) < 12 and len(asked.history) < 12  # patience 1 stopped them
    assert len(budget.history) == 12 or budget.history[-1]["seconds"] >= 0.05 * 60 * 0.9  # ran to its budget
