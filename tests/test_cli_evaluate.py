"""``medseg evaluate`` over folders, with existing labels (no model needed)."""

from __future__ import annotations

import csv

import numpy as np
import tifffile

from napari_medseg.cli import main


def _write(folder, name, arr):
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / f"{name}.tif", arr)


def test_evaluate_labels_exact_scores(tmp_path, capsys) -> None:
    true = np.zeros((20, 20), np.uint16)
    true[2:6, 2:6] = 1
    true[10:14, 10:14] = 2
    pred = np.zeros_like(true)
    pred[2:6, 2:6] = 7  # perfect match, other id
    pred[15:18, 1:4] = 3  # false positive; object 2 is missed
    _write(tmp_path / "img", "a", np.zeros((20, 20), np.uint8))
    _write(tmp_path / "masks", "a", true)
    _write(tmp_path / "pred", "a", pred)
    out = tmp_path / "r.csv"
    rc = main(["evaluate", "--images", str(tmp_path / "img"), "--masks", str(tmp_path / "masks"),
               "--labels", str(tmp_path / "pred"), "-o", str(out), "-q"])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["image"] == "a"
    # TP=1, FP=1, FN=1 at every threshold -> AP = 1/3
    assert float(rows[0]["ap50"]) == round(1 / 3, 4)
    assert (rows[0]["tp50"], rows[0]["fp50"], rows[0]["fn50"]) == ("1", "1", "1")
    # Dice of foreground: overlap 16 px, |true| 32, |pred| 25
    assert float(rows[0]["dice"]) == round(2 * 16 / (32 + 25), 4)
    assert "mean over 1 images" in capsys.readouterr().out


def test_evaluate_missing_folder_is_a_usage_error(tmp_path, capsys) -> None:
    rc = main(["evaluate", "--images", str(tmp_path / "nope"), "--masks", str(tmp_path), "-q"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "not a folder" in err and "Traceback" not in err
