"""``medseg`` with bad paths, numbers and models: exit 2 and one line, checked before any work, no traceback.

The whole set (86 command lines, one process each) is ``python benchmarks/fuzz_cli.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_medseg.cli import main


def _img(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    img = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    for cy, cx in rng.integers(8, 56, (6, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 20] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, img)
    return path


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.mark.parametrize("out", ["file", "under_file", "empty", "proc"])
def test_bad_output_folder_is_refused_before_any_work(tmp_path: Path, capsys, out: str) -> None:
    img = _img(tmp_path / "a.tif")
    (tmp_path / "f.txt").write_text("x")
    target = {"file": str(tmp_path / "f.txt"), "under_file": str(tmp_path / "f.txt" / "o"), "empty": "",
              "proc": "/proc/medseg-out"}[out]
    code, err = _run(capsys, "segment", str(img), "-o", target, "--device", "cpu", "-q")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("medseg segment: error:")  # argparse prints its usage first


def test_every_input_is_checked_before_the_first_is_segmented(tmp_path: Path, capsys) -> None:
    img = _img(tmp_path / "a.tif")
    code, err = _run(capsys, "segment", str(img), str(tmp_path / "missing.tif"), "-o", str(tmp_path / "out"), "-q")
    assert code == 2 and "missing.tif" in err
    assert not (tmp_path / "out").exists()
    os.mkfifo(tmp_path / "pipe.tif")
    code, err = _run(capsys, "segment", str(tmp_path / "pipe.tif"), "-o", str(tmp_path / "out"), "-q")
    assert code == 2 and "not a regular file" in err


def test_inputs_sharing_a_stem_get_distinct_outputs(tmp_path: Path, capsys) -> None:
    a, b = _img(tmp_path / "a" / "same.tif", 1), _img(tmp_path / "b" / "same.tif", 2)
    code, _ = _run(capsys, "segment", str(a), str(b), "-o", str(tmp_path / "out"), "--device", "cpu", "-q")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["same_2_labels.tif", "same_labels.tif"]


@pytest.mark.parametrize("extra", [["--lr", "inf"], ["--lr", "1e6"], ["--minutes", "inf"], ["--patch-size", "100000"],
                                   ["--batch-size", "100000"], ["--name", "evil\n"], ["--name", "a" * 300],
                                   ["--classes", "a,b"], ["--out", ""]])
def test_train_settings_are_refused_up_front(tmp_path: Path, capsys, monkeypatch, extra: list[str]) -> None:
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    img = _img(tmp_path / "img.tif")
    lab = tmp_path / "lab.tif"
    tifffile.imwrite(lab, (tifffile.imread(img) > 0).astype(np.uint16))
    code, err = _run(capsys, "train", "--images", str(img), "--labels", str(lab), "--epochs", "1", "--device", "cpu",
                     "-q", *(extra if "--out" in extra or "--name" in extra else [*extra, "--out",
                                                                                 str(tmp_path / "m")]))
    assert code == 2, err
    assert not (tmp_path / "m").exists() and not (tmp_path / "models").exists()


def test_medseg_models_lists_broken_ones_and_still_uses_the_others(tmp_path: Path, capsys, monkeypatch) -> None:
    from napari_medseg.models.testing import make_random_model

    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(tmp_path / "models"))
    make_random_model(tmp_path / "models" / "good", name="good")
    (tmp_path / "models" / "bad").mkdir()
    (tmp_path / "models" / "bad" / "model.json").write_text(json.dumps([1, 2, 3]))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "nuclei" in out and "broken" in out and "bad" in out
    code, err = _run(capsys, "segment", str(_img(tmp_path / "a.tif")), "-o", str(tmp_path / "o"), "--model", "bad",
                     "-q")
    assert code == 2 and "broken" in err


def test_models_dir_of_an_unknown_user(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MEDSEG_MODELS_DIR", "~nosuchuser-medseg/models")
    assert main(["models"]) == 0
    assert "nuclei" in capsys.readouterr().out
