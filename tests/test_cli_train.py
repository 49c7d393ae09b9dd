"""``medseg train`` round trip: train one epoch on tiny TIFFs, then ``medseg segment --model DIR``."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import tifffile

from napari_medseg.cli import main
from napari_medseg.cli.train import add_parser, run
from napari_medseg.errors import ParameterError
from napari_medseg.models.spec import load_model


def _train_main(argv: list[str]) -> int:
    """``medseg train ARGV...`` through ``medseg``'s main."""
    return main(["train", *argv])


def _train_run(argv: list[str]) -> int:
    """``train``'s ``run`` on arguments parsed by the module's own parser (errors raise, as they do under main)."""
    parser = argparse.ArgumentParser(prog="medseg")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *argv])
    return args._run(args)


def _write_pair(folder, i: int, shape=(64, 64)):
    rng = np.random.default_rng(i)
    yy, xx = np.indices(shape)
    lab = np.zeros(shape, np.uint16)
    for k in range(1, 9):
        cy, cx = rng.integers(7, np.array(shape) - 7)
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= 16) & (lab == 0)] = k
    img = (np.where(lab > 0, 180, 30) + rng.normal(0, 8, shape)).clip(0, 255).astype(np.uint8)
    ip, lp = folder / f"im{i}.tif", folder / f"im{i}_lab.tif"
    tifffile.imwrite(ip, img)
    tifffile.imwrite(lp, lab)
    return ip, lp


def test_train_then_segment_with_the_written_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user-models"))
    (a, la), (b, lb) = _write_pair(tmp_path, 0), _write_pair(tmp_path, 1)
    model_dir = tmp_path / "mymodel"
    rc = _train_main(["--images", str(a), str(b), "--labels", str(la), str(lb), "--out", str(model_dir),
                      "--epochs", "1", "--threads", "1", "--batch-size", "2", "--precision", "float32", "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    assert str(model_dir) in out and "1 epoch(s)" in out
    net, card = load_model(model_dir)
    assert card.name == "mymodel" and card.kind == "instance" and card.training["epochs"] == 1
    assert card.training["precision"] == "float32"  # as asked, also on a CPU where auto is bfloat16
    assert [d["name"] for d in card.training["data"]] == ["im0.tif", "im1.tif"]
    rc = main(["segment", str(a), "-o", str(tmp_path / "seg"), "--model", str(model_dir), "--device", "cpu",
               "-q"])
    assert rc == 0
    seg = tifffile.imread(tmp_path / "seg" / "im0_labels.tif")
    assert seg.shape == (64, 64) and np.issubdtype(seg.dtype, np.integer)


def test_semantic_classes_and_usage_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user-models"))
    a, la = _write_pair(tmp_path, 0)
    sem = (tifffile.imread(la) > 0).astype(np.uint8)
    sem[:32] *= 2
    tifffile.imwrite(tmp_path / "sem.tif", sem)
    rc = _train_main(["--images", str(a), "--labels", str(tmp_path / "sem.tif"), "--mode", "semantic",
                      "--classes", "left,right", "--name", "halves", "--epochs", "1", "--threads", "1", "--batch-size", "2", "-q"])
    assert rc == 0
    _, card = load_model(tmp_path / "user-models" / "halves")
    assert card.output["class_names"] == ["background", "left", "right"] and card.architecture["out_channels"] == 3
    # the same name again without --overwrite is refused
    args = ["--images", str(a), "--labels", str(la), "--name", "halves", "--epochs", "1", "-q"]
    assert main(["train", *args]) == 2
    with pytest.raises(ParameterError, match="already exists"):
        _train_run(args)
    with pytest.raises(ParameterError, match="2 --images but 1 --labels"):
        run(argparse.Namespace(images=[a, a], labels=[la]))  # checked before anything is read


def test_roi_boxes_parse_and_rasterise_exactly():
    from napari_medseg.cli.train import box_polygons, roi_box
    from napari_medseg.training.regions import find_region

    assert roi_box("8:40,4:30") == ((8, 40), (4, 30)) and roi_box("all") is None
    assert roi_box("1:3,8:40,4:30") == ((1, 3), (8, 40), (4, 30))
    for bad in ("8:40", "40:8,0:5", "a:b,0:5", "0:5,0:5,0:5,0:5", "-1:5,0:5"):
        with pytest.raises(argparse.ArgumentTypeError):
            roi_box(bad)
    lab = np.zeros((64, 64), np.int32)
    lab[50:55, 50:55] = 1  # painted outside the box: not used
    r = find_region(lab, box_polygons(roi_box("8:40,4:30")))
    used = np.zeros(lab.shape, bool)
    used[r.box] = r.mask if r.mask is not None else True
    expect = np.zeros(lab.shape, bool)
    expect[8:40, 4:30] = True
    assert r.source == "roi" and np.array_equal(used, expect)
    lab3 = np.zeros((5, 64, 64), np.int32)
    r3 = find_region(lab3, box_polygons(roi_box("1:3,8:40,4:30")))
    used3 = np.zeros(lab3.shape, bool)
    used3[r3.box] = r3.mask if r3.mask is not None else True
    expect3 = np.zeros(lab3.shape, bool)
    expect3[1:3, 8:40, 4:30] = True
    assert np.array_equal(used3, expect3)


def test_train_with_roi(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "user-models"))
    (a, la), (b, lb) = _write_pair(tmp_path, 0), _write_pair(tmp_path, 1)
    rc = _train_main(["--images", str(a), str(b), "--labels", str(la), str(lb), "--out", str(tmp_path / "m"),
                      "--roi", "0:48,0:64", "all", "--epochs", "1", "--threads", "1", "--batch-size", "2", "-q"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "ROI" in err
    assert main(["train", "--images", str(a), str(b), "--labels", str(la), str(lb), "--roi", "0:8,0:8", "all",
                 "all", "--epochs", "1", "-q"]) == 2
    assert "3 --roi boxes for 2 images" in capsys.readouterr().err
    assert main(["train", "--images", str(a), "--labels", str(la), "--roi", "0:1,0:8,0:8", "--epochs", "1",
                 "-q"]) == 2
    assert "has 3 ranges but labels" in capsys.readouterr().err
