"""``medseg detect``: objects CSV + labels TIFF per input, pictures, box models, exit codes."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_medseg.cli import detect as cli_detect
from napari_medseg.cli import main
from napari_medseg.io import read
from napari_medseg.models import registry
from napari_medseg.models.testing import make_random_model

pytest.importorskip("torch")


@pytest.fixture
def medseg():
    """``medseg``'s main (``detect`` is in its registry)."""
    return main


@pytest.fixture
def models(tmp_path, monkeypatch):
    user = tmp_path / "user-models"
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(user))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")
    make_random_model(user / "g", name="grey-one", seed=1, postprocess={"min_size": 4})
    return user


def _blobs(shape=(60, 80), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(20, 4, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy, cx in ((15, 15), (40, 60), (45, 20)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 50] += 120
    return np.clip(img, 0, 255).astype(np.uint8)


def _tiff(path, data, px=0.25):
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / px, 1 / px), metadata={"unit": "um"})
    return path


def test_detect_writes_objects_csv_and_labels(tmp_path, models, medseg, capsys):
    a = _tiff(tmp_path / "a.tif", _blobs())
    b = _tiff(tmp_path / "b.ome.tif", _blobs((40, 50), seed=1))
    out = tmp_path / "out"
    assert medseg(["detect", str(a), str(b), "-o", str(out), "--model", "grey-one", "--device", "cpu", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "a_objects.csv + a_labels.tif" in printed and "b_objects.csv + b_labels.tif" in printed
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.tif", "a_objects.csv", "b_labels.tif",
                                                     "b_objects.csv"]
    lab = read(out / "a_labels.tif")[0]
    assert lab.shape == (60, 80) and lab.scale == pytest.approx((0.25, 0.25)) and lab.units == ("µm", "µm")
    labels = np.asarray(lab.data)
    t = pd.read_csv(out / "a_objects.csv")
    assert list(t.columns[:3]) == ["id", "class", "score"]
    for col in ("centroid_y", "centroid_x", "centroid_y_um", "centroid_x_um", "bbox_y0", "bbox_x1",
                "bbox_y0_um", "bbox_x1_um", "n_pixels", "area_um2", "mean_intensity"):
        assert col in t.columns, col
    ids = np.unique(labels)
    assert t["id"].tolist() == ids[ids > 0].tolist() and len(t) > 0
    counts = np.bincount(labels.ravel())
    assert t["n_pixels"].tolist() == counts[t["id"]].tolist()
    np.testing.assert_allclose(t["area_um2"], t["n_pixels"] * 0.0625)
    assert ((t["score"] > 0) & (t["score"] <= 1)).all() and set(t["class"]) == {"object"}
    assert pd.read_csv(out / "b_objects.csv")["id"].tolist() == sorted(set(np.unique(tifffile.imread(
        out / "b_labels.tif")).tolist()) - {0})


def test_detect_picture_with_box_model(tmp_path, models, medseg, capsys):
    torch = pytest.importorskip("torch")
    from skimage.io import imsave

    from napari_medseg.models.spec import build_network, save_model
    from napari_medseg.training.detection import detection_card

    card = detection_card("boxy", ["WBC", "RBC"], base_channels=4, depth=2, downsample=2, max_detections=7)
    torch.manual_seed(0)
    save_model(models / "boxy", build_network(card), card)
    rgb = np.random.default_rng(2).integers(0, 255, (48, 64, 3)).astype(np.uint8)
    imsave(tmp_path / "smear.png", rgb)
    out = tmp_path / "o"
    rc = medseg(["detect", str(tmp_path / "smear.png"), "-o", str(out), "--model", "boxy",
                 "--score-threshold", "0", "-q"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["smear_objects.csv"]  # no labels for a box model
    t = pd.read_csv(out / "smear_objects.csv")
    assert t["id"].tolist() == list(range(1, 8)) and set(t["class"]) <= {"WBC", "RBC"}
    assert {"bbox_y0", "area_px2", "mean_red", "centroid_x"} <= set(t.columns)
    assert not {"bbox_y0_px", "centroid_x_px"} & set(t.columns)  # pixel units: no duplicate world columns
    assert (t["score"].diff().dropna() <= 0).all()  # sorted by decreasing score
    assert "smear: 7 objects" in capsys.readouterr().out


def test_read_inputs_pictures(tmp_path):
    from skimage.io import imsave

    grey = (np.arange(12, dtype=np.uint8).reshape(3, 4) * 20)
    imsave(tmp_path / "g.png", grey, check_contrast=False)
    (vol,) = cli_detect.read_inputs(tmp_path / "g.png")
    assert vol.axes == "YX" and np.array_equal(vol.data, grey) and vol.name == "g"


def test_bad_input_exits_2(tmp_path, models, medseg, capsys):
    good = _tiff(tmp_path / "a.tif", _blobs())
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "file").write_text("x")
    cases = [
        ["detect", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o")],
        ["detect", str(good), "-o", str(tmp_path / "o"), "--model", "no-such-model"],
        ["detect", str(good), "-o", str(tmp_path / "o"), "--channel", "1"],
        ["detect", str(tmp_path / "junk.jpg"), "-o", str(tmp_path / "o")],
        ["detect", str(good), "-o", str(tmp_path / "file")],
        ["detect", str(good), "-o", str(tmp_path / "o"), "--score-threshold", "2"],
        ["detect", str(good)],
    ]
    for argv in cases:
        assert medseg(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and "error" in err, (argv, err)
        assert sum("error" in line for line in err.splitlines()) == 1, err
    assert not (tmp_path / "o" / "junk_objects.csv").exists()


def test_add_parser_standalone():
    p = argparse.ArgumentParser(prog="x")
    sub = p.add_subparsers(dest="command")
    cli_detect.add_parser(sub)
    args = p.parse_args(["detect", "a.tif", "b.tif", "-o", "out", "--model", "m", "--channel", "0"])
    assert args._run is cli_detect.run and args.inputs == ["a.tif", "b.tif"] and args.model == "m"
    assert args.channel == 0 and args.device == "auto" and args.score_threshold is None
