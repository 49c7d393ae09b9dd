"""``medseg lesions`` and ``medseg evaluate --lesions`` end to end, on a tiny NIfTI and a DICOM series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_medseg.cli import main
from napari_medseg.io import read
from napari_medseg.io.radiology import read_nifti, write_labels_nifti
from tests.conftest import REPO

nib = pytest.importorskip("nibabel")
MR_SAMPLE = REPO / "sample_data" / "mr" / "mr_0004"


def _tiny_nifti(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A 12 x 40 x 48 voxel volume (2 x 0.8 x 0.8 mm, oblique) with two bright blobs and their mask."""
    c, s = np.cos(0.2), np.sin(0.2)
    ras = np.eye(4)
    ras[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.8, 0.8, 2.0])
    ras[:3, 3] = (-20.0, 35.0, 12.0)
    img = np.random.default_rng(0).normal(100, 5, (48, 40, 12)).astype(np.float32)  # (i, j, k)
    mask = np.zeros(img.shape, np.uint8)
    mask[10:20, 10:18, 3:7] = 1
    mask[30:34, 25:30, 8:10] = 1
    img[mask > 0] += 300
    ip, mp = tmp_path / "in" / "case1.nii.gz", tmp_path / "masks" / "case1.nii.gz"
    ip.parent.mkdir()
    mp.parent.mkdir()
    nib.save(nib.Nifti1Image(img, ras), str(ip))
    nib.save(nib.Nifti1Image(mask, ras), str(mp))
    return ip, mp, mask.transpose(2, 1, 0)


def test_lesions_from_labels_on_nifti_table_and_geometry(tmp_path, capsys) -> None:
    ip, mp, mask = _tiny_nifti(tmp_path)
    out = tmp_path / "out"
    assert main(["lesions", str(ip), "--labels", str(mp), "-o", str(out)]) == 0
    t = pd.read_csv(out / "case1_lesions.csv")
    g = read_nifti(ip)[0].spatial_geometry()
    from skimage.measure import label as cc_label

    lab = cc_label(mask > 0)
    assert len(t) == 1  # the mask is one label: both blobs are id 1
    assert t["volume_mm3"][0] == pytest.approx(int(mask.sum()) * 0.8 * 0.8 * 2.0, rel=1e-6)
    assert t["volume_ml"][0] == pytest.approx(t["volume_mm3"][0] / 1000)
    for col in ("long_axis_mm", "short_axis_mm", "max_diameter_mm", "score", "class", "centroid_z_mm", "n_slices"):
        assert col in t
    written = read(out / "case1_lesions.nii.gz")[0]
    assert written.spatial_geometry().allclose(g, atol=1e-4)
    np.testing.assert_array_equal(written.data, mask)
    assert int(lab.max()) == 2
    assert "1 lesions" in capsys.readouterr().out


def test_lesions_with_a_semantic_model_and_lesionwise_evaluation(tmp_path, capsys) -> None:
    from napari_medseg.models.testing import make_random_model

    ip, mp, mask = _tiny_nifti(tmp_path)
    model = make_random_model(tmp_path / "m", kind="semantic", n_classes=2, seed=3)
    out = tmp_path / "out"
    assert main(["lesions", str(ip), "--model", str(model), "-o", str(out), "-q", "--min-size", "0"]) == 0
    t = pd.read_csv(out / "case1_lesions.csv")
    lab = read(out / "case1_lesions.nii.gz")[0]
    assert sorted(np.unique(lab.data[lab.data > 0]).tolist()) == sorted(t["id"].tolist())
    assert ((t["score"] > 0) & (t["score"] <= 1)).all()
    # lesion-wise evaluation of the truth against itself: everything found, nothing false
    assert main(["evaluate", "--lesions", "--images", str(ip.parent), "--masks", str(mp.parent),
                 "--labels", str(mp.parent), "-o", str(tmp_path / "r.csv")]) == 0
    text = capsys.readouterr().out
    assert "sensitivity 1.000, 0.00 FP/case, mean Dice 1.000" in text and "CPM 1.000" in text
    rows = pd.read_csv(tmp_path / "r.csv")
    assert rows["detected"].tolist() == [2] and rows["false_positives"].tolist() == [0]


def test_lesions_start_from_the_cards_operating_point(tmp_path, serve_network) -> None:
    """A card's output.lesions (min size, lowest score, flips) is what `medseg lesions` uses unless told otherwise."""
    import torch

    from napari_medseg.models.spec import CARD_NAME, ModelCard
    from napari_medseg.models.testing import make_random_model

    class BrightNet(torch.nn.Module):
        """Semantic stand-in: lesion logit 60 * (input - 0.5), background 0."""

        divisor = 4
        depth = 3
        calls = 0

        def forward(self, x):
            BrightNet.calls += 1
            x = x[:, :1]
            return torch.cat([torch.zeros_like(x), 60 * (x - 0.5)], dim=1)

    img = np.zeros((40, 40, 8), np.float32)  # (i, j, k), 1 mm
    img[5:9, 5:9, 2:4] = 1.0  # 32 mm³, score ~1
    img[20, 20, 2:4] = 1.0  # 2 mm³, score ~1
    img[30:34, 30:34, 2:4] = 0.52  # 32 mm³, score ~0.77
    ip = tmp_path / "case1.nii.gz"
    nib.save(nib.Nifti1Image(img, np.eye(4)), str(ip))
    model = make_random_model(tmp_path / "m", kind="semantic", n_classes=2, depth=3)
    card = ModelCard.from_json(model / CARD_NAME)
    card.input = {**card.input, "normalization": {"kind": "none"}, "pixel_size": None}
    card.to_json(model / CARD_NAME)
    serve_network(model, BrightNet())

    def lesions(out: str, *extra: str) -> tuple[pd.DataFrame, int]:
        before = BrightNet.calls
        assert main(["lesions", str(ip), "--model", str(model), "-o", str(tmp_path / out), "-q", *extra]) == 0
        return pd.read_csv(tmp_path / out / "case1_lesions.csv"), BrightNet.calls - before

    every, calls = lesions("none")
    assert sorted(every["volume_mm3"].round().tolist()) == [2, 32, 32] and calls > 0  # no operating point: all
    card.output = {**card.output, "lesions": {"min_size": 3.0, "score_threshold": 0.9, "tta": True}}
    card.to_json(model / CARD_NAME)
    kept, calls_tta = lesions("card")
    assert kept["volume_mm3"].round().tolist() == [32] and kept["score"].tolist()[0] > 0.99
    assert calls_tta == 4 * calls  # the identity and 3 flips of every tile
    again, calls_cli = lesions("cli", "--min-size", "0", "--score-threshold", "0", "--no-tta")
    assert len(again) == 3 and calls_cli == calls  # the command line wins


def test_lesions_on_a_dicom_series_write_nifti_on_its_grid(tmp_path) -> None:
    series = read(MR_SAMPLE)[0]
    lab = np.zeros(series.shape[1:], np.uint8)
    lab[5:9, 20:30, 20:32] = 1
    labp = write_labels_nifti(tmp_path / "mr_0004_labels.nii.gz", lab, series.spatial_geometry())
    # a 4D series needs one time point: the CLI says so
    assert main(["lesions", str(MR_SAMPLE), "--labels", str(labp), "-o", str(tmp_path / "o")]) == 2
    # one time point, as NIfTI, measured on the series geometry
    one = tmp_path / "t0"
    one.mkdir()
    from napari_medseg.io.radiology import write_labels_nifti as write

    write(one / "mr_0004.nii.gz", np.asarray(series.data[0], np.int16).clip(0), series.spatial_geometry())
    assert main(["lesions", str(one / "mr_0004.nii.gz"), "--labels", str(labp), "-o", str(tmp_path / "o")]) == 0
    t = pd.read_csv(tmp_path / "o" / "mr_0004_lesions.csv")
    assert t["volume_mm3"][0] == pytest.approx(4 * 10 * 12 * series.spatial_geometry().voxel_size, rel=1e-5)
