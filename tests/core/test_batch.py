"""Batches on a real dask LocalCluster (2 worker processes): a corrupt file among good ones, one table, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_medseg.batch import store as st
from napari_medseg.batch.runner import InlineExecutor, make_executor, run_batch_iter
from napari_medseg.errors import ParameterError
from napari_medseg.progress import run
from tests.core.synthetic_nuclei import nuclei_image

OPTS = {"model": "nuclei", "block_size": 128, "chunk": 64, "max_object_size": 32, "device": "cpu"}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for k in range(2):
        tifffile.imwrite(d / f"good{k}.tif", nuclei_image((200, 240), 30, seed=k),
                         resolution=(2.0, 2.0), resolutionunit="NONE", metadata={"unit": "um"}, imagej=True)
    (d / "broken.tif").write_bytes(b"II*\x00" + b"\xff" * 64)  # a TIFF header and a damaged directory
    return d


def test_local_cluster_batch_reports_the_corrupt_file_and_merges_the_tables(folder, tmp_path):
    files = sorted(folder.iterdir())
    out = tmp_path / "out"
    ex = make_executor(2)
    try:
        assert ex.workers == 2
        steps = []
        res = run(run_batch_iter(files, out, executor=ex, **OPTS), steps.append)
    finally:
        ex.close()
    rep = res.report.set_index("file")
    assert rep.loc["good0", "status"] == rep.loc["good1", "status"] == "done"
    assert rep.loc["broken", "status"] == "failed" and "broken.tif" in rep.loc["broken", "error"]
    assert res.failed == ["broken"]
    assert steps[-1].step == steps[-1].total and steps[-1].info["failed"] == 1 and steps[-1].info["done"] == 2
    # one merged table: each good file's objects with its name, ids as in its labels
    merged = pd.read_csv(out / "objects.csv")
    assert list(merged.columns[:3]) == ["file", "id", "class"]
    for name in ("good0", "good1"):
        lab = st.open_labels(out / f"{name}.zarr")[0][0][:]
        rows = merged[merged["file"] == name]
        assert len(rows) == rep.loc[name, "objects"] == lab.max() > 5
        assert sorted(rows["id"]) == list(range(1, lab.max() + 1))
        # pixel size from the file (0.5 µm): areas in µm²
        np.testing.assert_allclose(rows["area_um2"], 0.25 * rows["n_pixels"])
    assert pd.read_csv(out / "batch_report.csv")["status"].tolist() == ["failed", "done", "done"]

    # a re-run (here in this process) skips the finished files and reports the broken one again
    again = run(run_batch_iter(files, out, executor=InlineExecutor(), **OPTS))
    assert again.report["status"].tolist() == ["failed", "skipped", "skipped"]
    assert again.report["objects"].tolist()[1:] == res.report["objects"].tolist()[1:]
    assert len(pd.read_csv(out / "objects.csv")) == len(merged)


def test_a_failing_block_fails_its_file_only(folder, tmp_path, monkeypatch):
    import napari_medseg.batch.blockwise as bw

    real = bw.segment_block

    def flaky(job, i):
        if job.name == "good1" and i == 2:
            raise RuntimeError("disk went away")
        return real(job, i)

    monkeypatch.setattr(bw, "segment_block", flaky)
    files = [folder / "good0.tif", folder / "good1.tif"]
    res = run(run_batch_iter(files, tmp_path / "out", **{**OPTS, "detect": False}))
    assert res.report["status"].tolist() == ["done", "failed"]
    assert res.report["error"].tolist()[1] == "RuntimeError: disk went away"
    assert res.objects is None and not (tmp_path / "out" / "objects.csv").exists()
    # the finished blocks of the failed file stay for the next run
    assert len(list((tmp_path / "out" / ".good1.parts").glob("b*.json"))) == 3


def test_batch_arguments_are_checked(tmp_path):
    with pytest.raises(ParameterError, match="no input files"):
        run(run_batch_iter([], tmp_path))
    with pytest.raises(ParameterError, match="unique"):
        run(run_batch_iter(["a.tif", "b.tif"], tmp_path, names=["x", "x"]))
    with pytest.raises(ParameterError, match="tissue"):
        run(run_batch_iter(["a.tif"], tmp_path, tissue=np.ones((2, 2), bool)))
    with pytest.raises(ParameterError, match="workers"):
        make_executor(-1)
