"""``--kind`` and the wrong-kind warnings of ``medseg segment`` / ``medseg detect``."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_medseg.cli import main
from napari_medseg.geometry import LPS, Geometry
from napari_medseg.io.radiology import write_labels_nifti

ON_RADIOLOGY = ("medseg segment: warning: the nuclei model was made for fluorescence microscopy, brightfield "
                "microscopy and H&E histology images; this image is a radiology volume (patient coordinates): "
                "results are unlikely to mean anything")


def _nifti(path):
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 400, (2, 32, 36)).astype(np.int16)
    g = Geometry("ZYX", np.diag([3.0, 0.9, 0.9, 1.0]), ("mm",) * 3, LPS)
    return write_labels_nifti(path, vol, g)


def test_radiology_auto_refuses_named_model_warns(tmp_path, capsys) -> None:
    vol = _nifti(tmp_path / "brain.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(vol), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medseg segment: error: no installed model is made for radiology (CT, MR...) "
                          "images (installed: nuclei (") and "nothing was run" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())

    assert main(["segment", str(vol), "-o", str(out), "--model", "nuclei", "--device", "cpu", "-q"]) == 0
    cap = capsys.readouterr()
    assert cap.err.splitlines() == [ON_RADIOLOGY]  # once, although the stack has two planes
    assert "brain_labels.nii.gz" in cap.out

    # the user says what it is: no refusal, no warning
    assert main(["segment", str(vol), "-o", str(out), "--kind", "fluorescence", "--device", "cpu", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_detect_kind_picks_the_smear_detector(tmp_path, capsys) -> None:
    rng = np.random.default_rng(1)
    img = tmp_path / "smear.tif"
    tifffile.imwrite(img, rng.integers(120, 255, (64, 80, 3)).astype(np.uint8), photometric="rgb")
    out = tmp_path / "out"
    assert main(["detect", str(img), "-o", str(out), "--device", "cpu", "-q"]) == 0
    cap = capsys.readouterr()
    assert "model nuclei-he" in cap.out
    assert cap.err.splitlines() == [("medseg detect: note: an RGB image is taken for H&E histology (nuclei-he); "
                                     "for blood smears give --kind blood_smear (the bccd detector)")]
    assert main(["detect", str(img), "-o", str(out), "--kind", "blood_smear", "--device", "cpu", "-q"]) == 0
    cap = capsys.readouterr()
    assert "model bccd" in cap.out and cap.err == ""
    assert main(["detect", str(img), "-o", str(out), "--kind", "smear", "--model", "nuclei-he", "--device", "cpu",
                 "-q"]) == 0
    assert capsys.readouterr().err.splitlines() == [(
        "medseg detect: warning: the nuclei-he model was made for H&E histology images; this image is a blood smear: "
        "results are unlikely to mean anything")]
    assert main(["detect", str(img), "-o", str(out), "--kind", "xray-ish", "-q"]) == 2
    assert "unknown image kind 'xray-ish'" in capsys.readouterr().err
