"""``medseg segment`` knobs: --voxel-size, --diameter, --prob-threshold, --seed-threshold (card values by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_medseg.cli import main
from napari_medseg.errors import ParameterError
from napari_medseg.inference import dispatch
from napari_medseg.inference.prepare import card_object_diameter, diameter_in_pixels, zoom_for_diameter
from napari_medseg.io import read
from napari_medseg.models.registry import resolve_model


@pytest.fixture
def engine_calls(monkeypatch):
    """Every segment_any_iter call's keyword arguments and result info (the real engine still runs)."""
    calls = []
    real = dispatch.segment_any_iter

    def spy(image, model, **kw):
        res = yield from real(image, model, **kw)
        calls.append((kw, res.info))
        return res

    monkeypatch.setattr(dispatch, "segment_any_iter", spy)
    return calls


def _blobs(shape, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape[-2:])
    img = np.full(shape[-2:], 20.0)
    for _ in range(5):
        cy, cx = rng.integers(8, np.array(shape[-2:]) - 8)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 30] = 200
    img = (img + rng.normal(0, 4, img.shape)).clip(0, 255).astype(np.uint8)
    return np.stack([img] * shape[0]) if len(shape) == 3 else img


def test_card_diameters_and_zoom() -> None:
    nuclei, he, bccd = (resolve_model(n).card for n in ("nuclei", "nuclei-he", "bccd"))
    # the median equivalent diameter of the DSB2018 train nuclei each model was trained on
    assert card_object_diameter(nuclei) == 20.06 and card_object_diameter(he) == 20.06
    assert card_object_diameter(bccd) is None
    assert zoom_for_diameter(nuclei, 40.12, 2) == pytest.approx([0.5, 0.5])
    assert zoom_for_diameter(nuclei, [10.03, 20.06], 2) == pytest.approx([2.0, 1.0])
    assert diameter_in_pixels(12, None, None, None) == [12.0, 12.0]
    assert diameter_in_pixels(6, "µm", [2.0, 0.5, 0.25], "µm") == pytest.approx([12.0, 24.0])
    assert diameter_in_pixels(3000, "nm", [0.5, 0.5], ["µm", "µm"]) == pytest.approx([6.0, 6.0])
    with pytest.raises(ParameterError, match="needs the image's pixel size, and this image has none"):
        diameter_in_pixels(6, "µm", None, None)
    with pytest.raises(ParameterError, match="does not say how large its objects were"):
        zoom_for_diameter(bccd, 10, 2)
    with pytest.raises(ParameterError, match="more than 16x away from the 20.06 px"):
        zoom_for_diameter(nuclei, 1.0, 2)


def test_voxel_size_diameter_and_thresholds_reach_the_engine(tmp_path, engine_calls, capsys) -> None:
    img = tmp_path / "plain.tif"
    tifffile.imwrite(img, _blobs((60, 72)))  # no pixel size in the file
    out = tmp_path / "out"
    assert main(["segment", str(img), "-o", str(out), "--device", "cpu", "-q"]) == 0
    kw, info = engine_calls[-1]
    assert kw["scale"] is None and "diameter" not in kw and "postprocess" not in kw
    from napari_medseg.models.registry import resolve_model
    from napari_medseg.models.spec import ModelCard

    pp = ModelCard.from_json(Path(resolve_model("nuclei").path) / "model.json").output["postprocess"]
    fg, seed = pp["fg_threshold"], pp["seed_threshold"]
    assert (info["postprocess"]["fg_threshold"], info["postprocess"]["seed_threshold"]) == (fg, seed)
    assert f"model nuclei (prob {fg:g}, seed {seed:g}), " in capsys.readouterr().out  # the card's values, shown

    assert main(["segment", str(img), "-o", str(out), "--voxel-size", "0.5", "--diameter", "5um",
                 "--prob-threshold", "0.3", "--seed-threshold", "0.6", "--device", "cpu", "-q"]) == 0
    kw, info = engine_calls[-1]
    assert kw["scale"] == [0.5, 0.5] and kw["units"] == ["µm", "µm"] and kw["diameter"] == [10.0, 10.0]
    assert kw["postprocess"] == {"fg_threshold": 0.3, "seed_threshold": 0.6}
    assert info["resampled"] and info["zoom"] == pytest.approx([2.006, 2.006])
    assert info["postprocess"]["fg_threshold"] == 0.3 and info["postprocess"]["seed_threshold"] == 0.6
    assert "(prob 0.3, seed 0.6, zoom 2.01x2.01)" in capsys.readouterr().out
    (lab,) = read(out / "plain_labels.tif")  # the labels carry the given pixel size
    assert lab.scale == pytest.approx((0.5, 0.5)) and lab.units == ("µm", "µm")

    assert main(["segment", str(img), "-o", str(out), "--diameter", "40", "--device", "cpu", "-q"]) == 0
    assert engine_calls[-1][1]["zoom"] == pytest.approx([20.06 / 40] * 2)


def test_3d_uses_the_voxel_size(tmp_path, engine_calls, capsys) -> None:
    img = tmp_path / "stack.tif"
    tifffile.imwrite(img, _blobs((6, 40, 40), seed=2))  # a Z stack without metadata
    out = tmp_path / "out"
    assert main(["segment", str(img), "-o", str(out), "--3d", "--voxel-size", "2", "0.5", "0.5", "--device", "cpu",
                 "-q"]) == 0
    kw, info = engine_calls[-1]
    assert kw["do_3d"] and kw["scale"] == [2.0, 0.5, 0.5]
    assert info["anisotropy"] == 4.0 and info["work_shape"] == (24, 40, 40)
    assert main(["segment", str(img), "-o", str(out), "--3d", "--device", "cpu", "-q"]) == 0
    assert engine_calls[-1][1]["anisotropy"] == 1.0  # without it: isotropic, as before


def test_knob_errors_exit_2(tmp_path, capsys) -> None:
    img = tmp_path / "plain.tif"
    tifffile.imwrite(img, _blobs((40, 40)))
    cases = [
        (["--diameter", "5um"], "a diameter of 5 µm needs the image's pixel size"),
        (["--voxel-size", "1", "2", "3"], "--voxel-size has 3 values for the 2 spatial axes YX"),
        (["--voxel-size", "1", "--unit", "s"], "--unit 's' is not a length unit"),
        (["--prob-threshold", "1.5"], "expected a number in [0, 1]"),
        (["--diameter", "big"], "expected a size such as 12, 12px or 6um"),
    ]
    for extra, msg in cases:
        assert main(["segment", str(img), "-o", str(tmp_path / "o"), "-q", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (extra, err)


def test_voxel_size_refused_for_radiology(tmp_path, capsys) -> None:
    from napari_medseg.geometry import LPS, Geometry
    from napari_medseg.io.radiology import write_labels_nifti

    vol = write_labels_nifti(tmp_path / "v.nii.gz", np.zeros((2, 20, 20), np.int16),
                             Geometry("ZYX", np.diag([3.0, 1.0, 1.0, 1.0]), ("mm",) * 3, LPS))
    assert main(["segment", str(vol), "-o", str(tmp_path / "o"), "--voxel-size", "1", "--model", "nuclei",
                 "-q"]) == 2
    assert "carries its voxel spacing in its header (3, 1, 1 mm); --voxel-size is for files that carry none" in \
        capsys.readouterr().err
