"""predict_whole: one padded whole-image forward pass, for a network or a Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.errors import ParameterError
from napari_medseg.inference.predictor import Predictor, autocast_dtype, predict_whole
from napari_medseg.models.spec import load_model
from napari_medseg.models.testing import make_random_model


def _net(dims=2, seed=0):
    from napari_medseg.models.unet import UNet

    torch.manual_seed(seed)
    net = UNet(1, 2, dims=dims, base_channels=4, depth=2).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as in a trained network
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net


def _by_hand(net, x, m, activation=None):
    """The padded forward pass the training code used to write out: reflect-pad, forward, (activate,) crop."""
    d = net.divisor
    p = np.pad(x, [(0, 0)] + [(m, m + (-n) % d) for n in x.shape[1:]], mode="reflect")
    with torch.inference_mode():
        y = net(torch.from_numpy(np.ascontiguousarray(p))[None]).float()
        if activation is not None:
            y = activation(y)
    return y[(0, slice(None), *(slice(m, m + n) for n in x.shape[1:]))].numpy()


@pytest.mark.parametrize("dims,shape", [(2, (1, 37, 50)), (3, (1, 9, 13, 11))])
def test_network_pass_is_the_hand_written_one(dims, shape):
    net = _net(dims)
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    ref = _by_hand(net, x, 16)
    got = predict_whole(net, x, margin=16)
    assert got.dtype == np.float32 and got.shape == (2, *shape[1:])
    assert np.array_equal(got, ref)
    assert np.array_equal(predict_whole(net, x, margin=16, activation="sigmoid"), _by_hand(net, x, 16, torch.sigmoid))
    if dims == 2:  # channels_last: the same to float rounding
        assert np.abs(predict_whole(net, x, margin=16, channels_last=True) - ref).max() < 1e-5


def test_uncropped_output_keeps_the_padded_grid():
    net = _net()
    x = np.random.default_rng(1).random((1, 21, 30)).astype(np.float32)
    full = predict_whole(net, x, crop=False)
    assert net.divisor == 2 and full.shape == (2, 22, 30)  # up to multiples of the divisor
    assert np.array_equal(full[:, :21, :30], predict_whole(net, x))

    def heat_only(t):  # a callable activation may change the tensor in place
        t[:, :1] = torch.sigmoid(t[:, :1])
        return t

    part = predict_whole(net, x, activation=heat_only, crop=False)
    assert np.array_equal(part[1], full[1])
    assert np.abs(part[0] - torch.sigmoid(torch.from_numpy(full[0])).numpy()).max() < 1e-6


def test_predictor_pass_is_the_activated_network_pass(tmp_path):
    path = make_random_model(tmp_path / "m", depth=2, base_channels=4)
    net, card = load_model(path)
    pred = Predictor(path, net, card, torch.device("cpu"), "test", 1, 0, None, "float32")
    x = np.random.default_rng(2).random((1, 40, 33)).astype(np.float32)
    got = predict_whole(pred, x, margin=8)
    ref = predict_whole(net, x, margin=8, activation="sigmoid")
    assert got.shape == ref.shape == (2, 40, 33)
    assert np.abs(got - ref).max() < 1e-5  # folded batch norms, channels_last
    with pytest.raises(ParameterError, match="own activation"):
        predict_whole(pred, x, activation="sigmoid")
    with pytest.raises(ParameterError, match="n_extra=0"):
        predict_whole(Predictor(path, net, card, torch.device("cpu"), "", 1, 1, None, "float32"), x)
    with pytest.raises(ParameterError, match="activation must be"):
        predict_whole(net, x, activation="relu")


def test_autocast_dtype_follows_the_precision():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "float32") is None
    assert autocast_dtype(cpu, "bfloat16") is torch.bfloat16
    assert autocast_dtype(cpu, "float16") is torch.float16
    assert autocast_dtype(cpu, "auto") in (None, torch.bfloat16)  # bfloat16 only with AMX tiles


def test_as_float16_rounds_exactly_as_numpy():
    """Every float16 value, the float32 values halfway between neighbours (ties) and just off them,
    overflow, subnormals, NaN and random probabilities: the same bits as ``astype(np.float16)``
    (NaN: NaN, whatever its payload)."""
    from napari_medseg.inference.predictor import as_float16

    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.sort(every[np.isfinite(every)].astype(np.float32))
    mid = (finite[:-1].astype(np.float64) + finite[1:]) / 2
    mid32 = mid.astype(np.float32)
    near = np.concatenate([np.nextafter(mid32, np.float32(np.inf)), np.nextafter(mid32, np.float32(-np.inf))])
    special = np.array([65504.0, 65519.0, 65520.0, 1e6, -1e6, np.inf, -np.inf, np.nan, 1e-8, -1e-8, 6e-8, 0.0, -0.0],
                       np.float32)
    rng = np.random.default_rng(0)
    probs = rng.random((2, 37, 53), dtype=np.float32)
    for a in (every.astype(np.float32), mid32, near, special, probs, probs[:, ::2, 3:]):
        want = a.astype(np.float16)
        got = as_float16(a)
        assert got.dtype == np.float16 and got.shape == a.shape
        nan = np.isnan(want)
        assert np.array_equal(np.isnan(got), nan)  # NaN payloads may differ, NaN stays NaN
        assert np.array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan]), a[:5]
