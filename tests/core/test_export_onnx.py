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
