"""``medseg export`` and ``medseg import`` end to end on a small random model (skip without the [export] extra)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from napari_medseg.cli import main  # noqa: E402
from napari_medseg.models.testing import make_random_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("m") / "tiny", name="tiny", base_channels=4, depth=2, seed=4)


def test_onnx_export_is_checked_against_torch_on_the_sample(model, tmp_path, capsys) -> None:
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(model), "--format", "onnx", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    m = re.search(r"checked against torch on 1 real image\(s\): max abs difference (\S+) \(raw outputs\)", text)
    assert m and float(m.group(1)) < 1e-3, text
    assert out.is_file() and "float32, opset 18" in text


def test_int8_export_calibrates_on_the_sample_by_default(model, tmp_path, capsys) -> None:
    out = tmp_path / "tiny.int8.onnx"
    assert main(["export", str(model), "--format", "onnx", "--int8", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "calibrating on the shipped sample only" in text and "calibrated on 8 crop(s) of 1 image(s)" in text
    assert out.is_file() and ", int8, " in text


def test_bioimageio_export_then_import(model, tmp_path, capsys) -> None:
    pytest.importorskip("bioimageio.spec")
    pkg = tmp_path / "tiny.zip"
    assert main(["export", str(model), "--format", "bioimageio", "-o", str(pkg)]) == 0
    assert "validated by bioimageio.spec" in capsys.readouterr().out
    dest = tmp_path / "back"
    assert main(["import", str(pkg), "--name", "tiny-back", "-o", str(dest)]) == 0
    text = capsys.readouterr().out
    assert "imported 'tiny-back'" in text and "max abs difference 0" in text
    assert (dest / "model.json").is_file() and (dest / "weights.safetensors").is_file()
    assert main(["import", str(pkg), "-o", str(dest)]) == 2  # never over a model
    assert "is not an empty folder" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--format", "bioimageio", "--int8"], "--int8, --calibrate and --check go with --format onnx"),
    (["--format", "onnx", "--test"], "--sample and --test go with --format bioimageio"),
    (["--format", "onnx", "--calibrate", "x.tif"], "--calibrate goes with --int8"),
])
def test_wrong_option_combinations_are_usage_errors(model, tmp_path, capsys, extra, message) -> None:
    assert main(["export", str(model), *extra, "-o", str(tmp_path / "x.onnx")]) == 2
    assert message in capsys.readouterr().err
