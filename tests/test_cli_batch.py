"""``medseg batch``: a folder with a corrupt file, the report, resume, and its options."""

from __future__ import annotations

import pandas as pd
import tifffile

from napari_medseg.cli import main
from tests.core.synthetic_nuclei import nuclei_image

ARGS = ["--model", "nuclei", "--block-size", "128", "--max-object-size", "32", "--device", "cpu", "-q"]


def test_batch_folder_with_a_corrupt_file_then_resume(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "cells.tif", nuclei_image((160, 200), 25))
    (d / "zz_broken.tif").write_bytes(b"II*\x00" + b"\xff" * 64)
    (d / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["batch", str(d), "-o", str(out), "--workers", "0", *ARGS]) == 2
    cap = capsys.readouterr()
    assert "2 inputs on this process: 1 done, 0 skipped (finished before), 1 failed" in cap.out
    assert "medseg batch: error: zz_broken: ReaderError" in cap.err and "zz_broken.tif" in cap.err
    rep = pd.read_csv(out / "batch_report.csv")
    assert rep["file"].tolist() == ["cells", "zz_broken"] and rep["status"].tolist() == ["done", "failed"]
    n = int(rep["objects"][0])
    assert n > 5 and len(pd.read_csv(out / "objects.csv")) == n and (out / "cells.zarr" / "0").is_dir()

    (d / "zz_broken.tif").unlink()
    assert main(["batch", str(d), "-o", str(out), "--workers", "0", "--job", "segment", *ARGS]) == 0
    assert "1 inputs on this process: 1 done" in capsys.readouterr().out  # other job: labels only, redone
    assert main(["batch", str(d), "-o", str(out), "--workers", "0", "--job", "segment", *ARGS]) == 0
    assert f"0 done, 1 skipped (finished before), 0 failed; {n} objects" in capsys.readouterr().out
    assert not (out / "objects.csv").exists() or pd.read_csv(out / "batch_report.csv")["status"][0] == "skipped"


def test_batch_options_are_checked(tmp_path, capsys):
    img = tmp_path / "a.tif"
    tifffile.imwrite(img, nuclei_image((64, 64), 3))
    assert main(["batch", str(img), "-o", str(tmp_path / "o"), "--workers", "3", "--scheduler", "tcp://x:1"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["batch", str(img), "-o", str(tmp_path / "o"), "--workers", "-1"]) == 2
    assert "expected an integer >= 0, got -1" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["batch", str(empty), "-o", str(tmp_path / "o")]) == 2
    assert "holds no image files" in capsys.readouterr().err
    assert main(["batch", str(img), "-o", str(tmp_path / "o"), "--model", "no-such-model", "--workers", "0"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_batch_finds_the_tissue_of_a_slide_and_checks_the_flag(tmp_path, capsys):
    from tests.slide_data import write_tissue_and_debris_slide

    slide = write_tissue_and_debris_slide(tmp_path / "debris.ome.tif")
    args = [str(slide), "-o", str(tmp_path / "o"), "--workers", "0", "--model", "nuclei-he", "--block-size", "512",
            "--device", "cpu", "-q"]
    assert main(["batch", *args, "--tissue", "glass"]) == 2
    assert "argument --tissue: invalid choice: 'glass'" in capsys.readouterr().err
    assert main(["batch", *args, "--job", "segment"]) == 0  # --tissue auto by default
    rep = pd.read_csv(tmp_path / "o" / "batch_report.csv")
    # blocks are whole 1024-px chunks: the one block touches the tissue (the API test skips glass blocks)
    assert rep["tissue"][0] == "detected" and (rep["active_blocks"][0], rep["skipped_blocks"][0]) == (1, 0)
    assert 0.13 < rep["tissue_fraction"][0] < 0.17


def test_batch_of_a_glass_slide_segments_nothing_and_says_why(tmp_path, capsys):
    import numpy as np

    from tests.slide_data import write_ome_pyramid

    rng = np.random.default_rng(0)
    glass = np.clip(np.array((222, 226, 240), float) + rng.normal(0, 3, (1024, 1024, 3)), 0, 255).astype(np.uint8)
    slide = write_ome_pyramid(tmp_path / "glass.ome.tif", glass, mpp=0.5, factors=(2, 4, 8))
    assert main(["batch", str(slide), "-o", str(tmp_path / "o"), "--workers", "0", "--model", "nuclei-he",
                 "--block-size", "512", "--device", "cpu", "-q", "--job", "segment"]) == 0
    assert "note: glass: no tissue found (glass only?), nothing segmented; --tissue none" in capsys.readouterr().err
    rep = pd.read_csv(tmp_path / "o" / "batch_report.csv")
    assert (rep["tissue"][0], rep["active_blocks"][0], rep["objects"][0]) == ("empty", 0, 0)
