"""The engine's speed paths: fused U-Net pass, CPU bfloat16 choice, backends, thread sharing, block plan."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from napari_medseg.errors import ParameterError
from napari_medseg.inference import predictor as P
from napari_medseg.inference.fused import FusedUNet, build_fused, fusable
from napari_medseg.inference.segment import overlap_block_shape
from napari_medseg.models.unet import UNet


def _folded(dims=2, norm="batch", depth=3, base=4, seed=0):
    torch.manual_seed(seed)
    net = UNet(1, 2, dims=dims, base_channels=base, depth=depth, norm=norm).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return P.fold_batchnorm(net)


def test_fused_pass_equals_the_folded_network():
    net = _folded().to(memory_format=torch.channels_last)
    fused = build_fused(net)
    assert isinstance(fused, FusedUNet) and fused.divisor == net.divisor
    x = torch.from_numpy(np.random.default_rng(0).random((2, 1, 40, 24), dtype=np.float32))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref, got = net(x), fused(x)
    assert got.shape == ref.shape == (2, 2, 40, 24)
    assert float((got - ref).abs().max()) < 1e-4 * float(ref.abs().max())


def test_only_2d_conv_relu_unets_are_fused():
    assert fusable(_folded())
    assert not fusable(_folded(dims=3))
    assert not fusable(_folded(norm="group"))  # conv -> GroupNorm -> ReLU stays eager
    assert build_fused(_folded(norm="instance")) is None


def test_cpu_auto_precision_is_bfloat16_exactly_with_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    assert P.inference_dtype(cpu, "float32") is None
    assert P.inference_dtype(cpu, "bfloat16") is torch.bfloat16
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)
    assert P.inference_dtype(cpu, "auto") is torch.bfloat16
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: False)
    assert P.inference_dtype(cpu, "auto") is None


def test_backend_choice_is_checked():
    cpu = torch.device("cpu")
    assert P.resolve_backend("auto", cpu, torch.bfloat16) == "torch"
    with pytest.raises(ParameterError, match="backend must be one of"):
        P.resolve_backend("tensorrt", cpu, None)
    with pytest.raises(ParameterError, match="CPU only"):
        P.resolve_backend("onnxruntime", torch.device("cuda"), None)
    with pytest.raises(ParameterError, match="float32 only"):
        P.resolve_backend("onnxruntime", cpu, torch.bfloat16)


def _predictor(tmp_path, precision, backend="torch"):
    from napari_medseg.models.spec import load_model
    from napari_medseg.models.testing import make_random_model

    path = make_random_model(tmp_path / "m", depth=2, base_channels=4)
    net, card = load_model(path)
    return P.Predictor(path, net, card, torch.device("cpu"), "t", 1, 0, None, precision, backend=backend), net


def test_cpu_bfloat16_predictor_casts_the_network_not_autocast(tmp_path):
    pred, net = _predictor(tmp_path, "bfloat16")
    assert pred.cast_weights and pred.fused and next(pred.net.parameters()).dtype is torch.bfloat16
    assert next(net.parameters()).dtype is torch.float32  # the loaded network is left as it is
    ref, _ = _predictor(tmp_path, "float32")
    x = np.random.default_rng(1).random((1, 1, 32, 48)).astype(np.float32)
    crop = (slice(None), slice(None))
    a, b = pred(x, crop), ref(x, crop)
    assert a.dtype == np.float32 and a.shape == b.shape == (1, 2, 32, 48)
    assert np.abs(a - b).max() < 0.05  # probabilities, bfloat16 rounding


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
                    reason="needs the [export] extra (onnxruntime, onnxscript)")
def test_onnxruntime_backend_gives_the_torch_float32_output(tmp_path):
    ort, _ = _predictor(tmp_path, "float32", "onnxruntime")
    ref, _ = _predictor(tmp_path, "float32")
    assert ort.backend == "onnxruntime" and not ort.channels_last
    x = np.random.default_rng(2).random((2, 1, 24, 40)).astype(np.float32)
    crop = (slice(4, 20), slice(4, 36))
    assert np.abs(ort(x, crop) - ref(x, crop)).max() < 1e-5


def test_big_images_get_at_least_three_blocks_per_side():
    assert overlap_block_shape([2048, 2048], [4096, 4096], [64, 64], False) == [1366, 1366]
    assert overlap_block_shape([2048, 2048], [4096, 4096], [64, 64], True) == [2048, 2048]  # chosen by the caller
    assert overlap_block_shape([2048, 2048], [1000, 1000], [64, 64], False) == [2048, 2048]  # small: one block
    assert overlap_block_shape([1, 2048, 2048], [5, 4096, 300], [0, 64, 64], False) == [1, 1366, 2048]


def test_huge_images_bound_the_heap_blocks_stay():
    """Past LARGE_IMAGE_PIXELS (8192^2 over the block axes) the engine fixes glibc's heap thresholds;
    the block plan (and so the labels) does not change."""
    from napari_medseg.inference.segment import bound_heap, is_large_image

    assert not is_large_image([2048, 2048], [8192, 8192])
    assert is_large_image([2048, 2048], [8192, 8193])
    assert is_large_image([1, 2048, 2048], [3, 12000, 9000]) and not is_large_image([1, 2048, 2048], [9, 8000, 8000])
    assert overlap_block_shape([2048, 2048], [16384, 16384], [64, 64], False) == [2048, 2048]
    assert bound_heap(None) is False
