"""Every ``medseg`` verb's output is the next verb's input: segment -> evaluate / detect / train."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_medseg.analysis.evaluation import file_stem, match_by_stem, read_array, score_image
from napari_medseg.cli import main
from napari_medseg.errors import ParameterError
from napari_medseg.geometry import LPS, Geometry
from napari_medseg.io.radiology import write_labels_nifti
from napari_medseg.models import registry


@pytest.fixture
def model(tmp_path, monkeypatch):
    """The shipped grey nuclei model: random-weight test models give constant maps (0 or 1 object)."""
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user-models"))
    return registry.resolve_model("nuclei").path


def _blobs(shape, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape[-2:])
    lab = np.zeros(shape[-2:], np.uint16)
    for k in range(1, 7):
        cy, cx = rng.integers(6, np.array(shape[-2:]) - 6)
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= 12) & (lab == 0)] = k
    img = (np.where(lab > 0, 200, 20) + rng.normal(0, 5, lab.shape)).clip(0, 255).astype(np.uint8)
    if len(shape) == 3:
        img, lab = np.stack([img] * shape[0]), np.stack([lab] * shape[0])
    return img, lab


def _rows(path):
    return {r["image"]: r for r in csv.DictReader(path.open()) if not r["image"].startswith("OVERALL")}


def test_segment_then_evaluate_detect_and_train(tmp_path, model, capsys):
    imgs, masks, seg = tmp_path / "images", tmp_path / "masks", tmp_path / "seg"
    imgs.mkdir()
    masks.mkdir()
    truth = {}
    for i, name in enumerate(("a", "b")):
        img, lab = _blobs((48, 56), i)
        tifffile.imwrite(imgs / f"{name}.tif", img)
        tifffile.imwrite(masks / f"{name}.tif", lab)
        truth[name] = lab
    assert main(["segment", str(imgs / "a.tif"), str(imgs / "b.tif"), "-o", str(seg), "--model", str(model),
                 "--device", "cpu", "-q"]) == 0
    assert sorted(p.name for p in seg.iterdir()) == ["a_labels.tif", "b_labels.tif"]
    pred = {n: tifffile.imread(seg / f"{n}_labels.tif") for n in ("a", "b")}
    assert all(len(np.unique(p)) - 1 >= 4 for p in pred.values())  # real objects (6 blobs per image)

    # evaluate pairs a.tif with seg/a_labels.tif
    report = tmp_path / "r.csv"
    assert main(["evaluate", "--images", str(imgs), "--masks", str(masks), "--labels", str(seg), "-o", str(report),
                 "-q"]) == 0
    rows = _rows(report)
    assert sorted(rows) == ["a", "b"]
    for n in ("a", "b"):
        want = score_image(truth[n], pred[n], n)
        assert int(rows[n]["n_pred"]) == want["n_pred"] == len(np.unique(pred[n])) - 1
        assert int(rows[n]["n_true"]) == want["n_true"] == 6
        assert float(rows[n]["ap50"]) == round(want["ap50"], 4)
        assert (rows[n]["tp50"], rows[n]["fp50"], rows[n]["fn50"]) == tuple(
            str(want[k]) for k in ("tp50", "fp50", "fn50"))
    # ... and gives exactly what evaluating the model itself gives
    report2 = tmp_path / "r2.csv"
    assert main(["evaluate", "--images", str(imgs), "--masks", str(masks), "--model", str(model), "--device", "cpu",
                 "-o", str(report2), "-q"]) == 0
    rows2 = _rows(report2)
    for n in ("a", "b"):
        assert {k: rows2[n][k] for k in ("n_pred", "ap50", "map", "dice")} == \
            {k: rows[n][k] for k in ("n_pred", "ap50", "map", "dice")}

    # detect --labels measures segment's output (one folder, paired by stem)
    det = tmp_path / "det"
    assert main(["detect", str(imgs / "a.tif"), str(imgs / "b.tif"), "--labels", str(seg), "-o", str(det),
                 "-q"]) == 0
    assert sorted(p.name for p in det.iterdir()) == ["a_objects.csv", "b_objects.csv"]
    for n in ("a", "b"):
        table = list(csv.DictReader((det / f"{n}_objects.csv").open()))
        assert sorted(int(r["id"]) for r in table) == sorted(int(v) for v in np.unique(pred[n]) if v)
    capsys.readouterr()

    # train --labels takes segment's labels as annotation
    out_model = tmp_path / "retrained"
    assert main(["train", "--images", str(imgs / "a.tif"), "--labels", str(seg / "a_labels.tif"), "--base",
                 str(model), "--out", str(out_model), "--epochs", "1", "--threads", "1", "--batch-size", "2",
                 "--patch-size", "32", "--device", "cpu", "-q"]) == 0
    assert (out_model / "model.json").is_file()
    assert main(["segment", str(imgs / "a.tif"), "-o", str(tmp_path / "seg2"), "--model", str(out_model),
                 "--device", "cpu", "-q"]) == 0
    assert tifffile.imread(tmp_path / "seg2" / "a_labels.tif").shape == (48, 56)


def test_segment_nifti_then_evaluate(tmp_path, model):
    """A radiology volume: segment writes <stem>_labels.nii.gz, evaluate reads it back on the same grid."""
    imgs, masks, seg = tmp_path / "images", tmp_path / "masks", tmp_path / "seg"
    imgs.mkdir()
    masks.mkdir()
    img, lab = _blobs((3, 40, 44), 5)
    g = Geometry("ZYX", np.diag([-2.0, 0.8, 0.8, 1.0]) + np.c_[np.zeros((4, 3)), [10.0, -3.0, 4.0, 0.0]],
                 ("mm",) * 3, LPS)
    write_labels_nifti(imgs / "vol.nii.gz", img.astype(np.int16), g)
    write_labels_nifti(masks / "vol.nii.gz", lab, g)
    assert main(["segment", str(imgs / "vol.nii.gz"), "-o", str(seg), "--model", str(model), "--device", "cpu",
                 "-q"]) == 0
    assert [p.name for p in seg.iterdir()] == ["vol_labels.nii.gz"]
    pred = read_array(seg / "vol_labels.nii.gz")
    assert pred.shape == (3, 40, 44)
    report = tmp_path / "r.csv"
    assert main(["evaluate", "--images", str(imgs), "--masks", str(masks), "--labels", str(seg), "-o", str(report),
                 "-q"]) == 0
    row = _rows(report)["vol"]
    want = score_image(lab, pred, "vol")
    assert int(row["n_true"]) == 6 and int(row["n_pred"]) == want["n_pred"] >= 4
    assert float(row["dice"]) == round(want["dice"], 4)


def test_stems_and_pairing(tmp_path) -> None:
    assert [file_stem(n) for n in ("a.ome.tif", "a.nii.gz", "a.tif", "a_labels.nii.gz", "a.nrrd")] == \
        ["a", "a", "a", "a_labels", "a"]
    files = [tmp_path / n for n in ("a_labels.tif", "b.nii.gz", "c_labels.nii.gz", "c.png")]
    assert match_by_stem(["a", "b"], files, "labels") == files[:2]
    with pytest.raises(ParameterError, match=r"c\.png, c_labels\.nii\.gz all go with image 'c'"):
        match_by_stem(["c"], files, "labels")
    with pytest.raises(ParameterError, match=r"no file named like 1 image\(s\), e\.g\. 'd'.*<stem>_labels"):
        match_by_stem(["a", "d"], files, "labels")
