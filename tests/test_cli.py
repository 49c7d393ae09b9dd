"""The ``medseg`` command line: segment and models subcommands, exit codes, output files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_medseg.cli import main
from napari_medseg.io import read
from napari_medseg.models import registry
from napari_medseg.models.testing import make_random_model


@pytest.fixture
def models(tmp_path, monkeypatch):
    user = tmp_path / "user-models"
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(user))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")
    make_random_model(user / "g", name="grey-one", seed=1)
    make_random_model(user / "c", name="rgb-one", in_channels=3, kind="semantic", n_classes=3)
    return user


def _tiff(path, shape=(70, 90), rgb=False, px=0.25):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (*shape, 3) if rgb else shape).astype(np.uint8)
    tifffile.imwrite(path, data, imagej=not rgb, photometric="rgb" if rgb else "minisblack",
                     resolution=(1 / px, 1 / px), metadata={"unit": "um"} if not rgb else None)
    return path


def test_segment_writes_labels_with_pixel_size(tmp_path, models, capsys):
    a = _tiff(tmp_path / "a.tif")
    b = _tiff(tmp_path / "b.ome.tif", shape=(40, 33))
    rc = main(["segment", str(a), str(b), "-o", str(tmp_path / "out"), "--model", "grey-one",
               "--tile-size", "64", "--batch-size", "2", "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "a_labels.tif" in out and "b_labels.tif" in out
    va = read(tmp_path / "out" / "a_labels.tif")[0]
    assert va.shape == (70, 90) and va.axes == "YX"
    assert np.issubdtype(np.asarray(va.data).dtype, np.unsignedinteger)
    assert va.scale == pytest.approx((0.25, 0.25)) and va.units == ("µm", "µm")
    assert read(tmp_path / "out" / "b_labels.tif")[0].shape == (40, 33)


def test_segment_rgb_semantic_and_auto(tmp_path, models):
    rgb = _tiff(tmp_path / "rgb.tif", rgb=True)
    assert main(["segment", str(rgb), "-o", str(tmp_path / "o"), "-q"]) == 0  # auto -> the RGB model
    lab = tifffile.imread(tmp_path / "o" / "rgb_labels.tif")
    assert lab.shape == (70, 90) and lab.max() <= 2


def test_bad_input_exits_2_without_traceback(tmp_path, models, capsys):
    good = _tiff(tmp_path / "a.tif")
    cases = [
        ["segment", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o")],
        ["segment", str(good), "-o", str(tmp_path / "o"), "--model", "no-such-model"],
        ["segment", str(good), "-o", str(tmp_path / "o"), "--model", "rgb-one"],  # grey image, RGB model
        ["segment", str(good), "-o", str(tmp_path / "o"), "--channel", "1"],
        ["segment", str(good), "-o", str(tmp_path / "o"), "--tile-size", "0"],
        ["segment", str(good)],  # no -o
        ["frobnicate"],
        [],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and "error" in err, (argv, err)
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    assert main(["segment", str(tmp_path / "junk.tif"), "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o" / "junk_labels.tif").exists()


def test_unexpected_error_exits_1(tmp_path, models, monkeypatch, capsys):
    import napari_medseg.inference.segment as seg

    def boom(*a, **k):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(seg, "segment_iter", boom)
    assert main(["segment", str(_tiff(tmp_path / "a.tif")), "-o", str(tmp_path / "o"), "-q"]) == 1
    assert "ZeroDivisionError" in capsys.readouterr().err


def test_models_lists_name_source_kind_input_path(models, capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "KIND", "INPUT", "FOR", "DEFAULTS", "PATH"]
    rows = {ln.split()[0]: ln for ln in lines[1:]}  # listed in folder order: c, g
    assert list(rows) == ["rgb-one", "grey-one"]
    assert rows["grey-one"].split()[1:3] == ["user", "instance"] and "2D grey 1ch" in rows["grey-one"]
    assert rows["rgb-one"].split()[1:3] == ["user", "semantic"] and rows["rgb-one"].endswith(str(models / "c"))


def test_console_script_help():
    exe = subprocess.run([sys.executable, "-m", "napari_medseg.cli", "--help"], capture_output=True, text=True)
    assert exe.returncode == 0 and "segment" in exe.stdout and "models" in exe.stdout
    bad = subprocess.run([sys.executable, "-m", "napari_medseg.cli", "segment"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_segment_tta_flag_reaches_the_engine(tmp_path, models, monkeypatch):
    from napari_medseg.inference import segment as seg_mod

    seen = {}
    real = seg_mod.segment_iter

    def spy(*a, **k):
        seen["tta"] = k.get("tta")
        return real(*a, **k)

    monkeypatch.setattr(seg_mod, "segment_iter", spy)
    a = _tiff(tmp_path / "a.tif")
    assert main(["segment", str(a), "-o", str(tmp_path / "out"), "--model", "grey-one", "--tta", "-q"]) == 0
    assert seen["tta"] is True
    assert read(tmp_path / "out" / "a_labels.tif")[0].shape == (70, 90)


def test_segment_3d_flag_labels_a_stack_in_3d(tmp_path, models, monkeypatch, capsys):
    from napari_medseg.inference import ortho3d

    seen = {}
    real = ortho3d.segment_3d_from_2d_iter

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(ortho3d, "segment_3d_from_2d_iter", spy)
    rng = np.random.default_rng(0)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, rng.integers(0, 255, (6, 40, 50)).astype(np.uint8), imagej=True,
                     resolution=(4.0, 4.0), metadata={"unit": "um", "spacing": 0.5, "axes": "ZYX"})
    assert main(["segment", str(stack), "-o", str(tmp_path / "out"), "--model", "grey-one", "--3d", "-q"]) == 0
    assert seen["scale"] == pytest.approx([0.5, 0.25, 0.25])  # from the file: Z spacing 2x the pixel size
    out = read(tmp_path / "out" / "stack_labels.tif")[0]
    assert out.shape == (6, 40, 50) and out.axes == "ZYX"
    # a 2D image has no Z axis to build 3D objects along
    assert main(["segment", str(_tiff(tmp_path / "flat.tif")), "-o", str(tmp_path / "o2"), "--model", "grey-one",
                 "--3d", "-q"]) == 2
    assert "need a Z axis" in capsys.readouterr().err
