"""ONNX export: dynamic batch and spatial size, same output as torch (skips without the [export] extra)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

import torch  # noqa: E402

from napari_medseg.models.export.onnx import export_onnx, onnx_session, read_card, run_onnx  # noqa: E402
from napari_medseg.models.spec import load_model  # noqa: E402
from napari_medseg.models.testing import make_random_model  # noqa: E402


@pytest.mark.parametrize(("dims", "in_channels"), [(2, 3), (3, 1)])
def test_onnx_matches_torch_at_other_sizes(tmp_path, dims, in_channels) -> None:
    net, card = load_model(make_random_model(tmp_path / "m", in_channels=in_channels, dims=dims, base_channels=4,
                                             depth=2, seed=3))
    path = export_onnx(net, tmp_path / "m.onnx", in_channels=in_channels, dims=dims, card=card)
    session = onnx_session(path, threads=1)
    names = session.get_inputs()[0].shape
    assert names == ["batch", in_channels, *("z", "y", "x")[3 - dims:]]
    rng = np.random.default_rng(0)
    sizes = [(1, 6, 10, 4), (3, 4, 2, 8)] if dims == 3 else [(1, 24, 40), (2, 66, 18)]  # none is the tracing size
    for n, *spatial in sizes:
        x = rng.normal(size=(n, in_channels, *spatial)).astype(np.float32)
        got = run_onnx(session, x)
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape == (n, 2, *x.shape[2:])
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert read_card(path)["name"] == card.name
    assert not net.training  # the caller's network is left as it was


def test_int8_file_is_quantised_smaller_and_close(tmp_path) -> None:
    import onnx

    from napari_medseg.models.export.quantize import calibration_crops, quantize_onnx

    net, card = load_model(make_random_model(tmp_path / "m", base_channels=8, depth=2, seed=1))
    f32 = export_onnx(net, tmp_path / "m.onnx", in_channels=1, dims=2, card=card)
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(1, 40, 56)).astype(np.float32) for _ in range(4)]
    crops = calibration_crops(images, 32, net.divisor, per_image=2, seed=0)
    assert len(crops) == 8 and all(c.shape == (1, 32, 32) for c in crops)
    i8 = quantize_onnx(f32, tmp_path / "m8.onnx", crops)
    ops = {n.op_type for n in onnx.load(str(i8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert i8.stat().st_size < f32.stat().st_size
    assert read_card(i8)["name"] == card.name  # the card travels into the int8 file
    x = images[0][None, :, :40, :56]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = run_onnx(onnx_session(i8), x)
    assert got.shape == want.shape
    # int8 rounding: close to float32 relative to the outputs' spread, not equal
    assert 0 < np.mean(np.abs(got - want)) < 0.1 * np.std(want)


def test_missing_extra_names_the_package_and_the_install_command() -> None:
    from napari_medseg.errors import MedsegError
    from napari_medseg.models.export import MissingDependencyError, require

    with pytest.raises(MissingDependencyError, match=r"'no_such_pkg_xyz'.*pip install \"napari-medseg\[export\]\""):
        require("no_such_pkg_xyz", "ONNX export")
    assert issubclass(MissingDependencyError, MedsegError)  # the CLI prints it as one line, exit 2
