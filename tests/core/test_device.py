"""Device selection (CUDA -> MPS -> CPU) and the GPU out-of-memory fallbacks, without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.errors import ParameterError
from napari_medseg.models import device as dev_mod
from napari_medseg.models.device import available_devices, configure_cpu_threads, select_device


@pytest.fixture
def fake_hw(monkeypatch):
    """Set which accelerators PyTorch reports."""

    def set_hw(cuda: bool, mps: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(dev_mod, "_cuda_name", lambda: "FakeGPU (80 GiB)")

    return set_hw


@pytest.mark.parametrize(
    "cuda,mps,expected,reason",
    [(True, True, "cuda", "CUDA: FakeGPU"), (False, True, "mps", "MPS"), (False, False, "cpu", "CPU: no CUDA or MPS")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(fake_hw, cuda, mps, expected, reason):
    fake_hw(cuda, mps)
    d, why = select_device("auto")
    assert d.type == expected
    assert why.startswith(reason)


def test_available_devices(fake_hw):
    fake_hw(False, False)
    assert available_devices() == ["auto", "cpu"]
    fake_hw(True, True)
    assert available_devices() == ["auto", "cpu", "cuda", "mps"]


def test_forced_devices(fake_hw):
    fake_hw(True, False)
    assert select_device("cpu") == (torch.device("cpu"), "CPU: chosen by the user")
    d, why = select_device("CUDA")
    assert d == torch.device("cuda") and "chosen by the user" in why
    with pytest.raises(ParameterError, match="does not exist"):
        select_device("cuda:3")
    with pytest.raises(ParameterError, match="mps.*not available"):
        select_device("mps")
    fake_hw(False, False)
    with pytest.raises(ParameterError, match="no CUDA GPU"):
        select_device("cuda")
    with pytest.raises(ParameterError, match="unknown device 'tpu'"):
        select_device("tpu")


def test_broken_cuda_driver_means_cpu(monkeypatch):
    def boom():
        raise RuntimeError("driver too old")

    monkeypatch.setattr(torch.cuda, "is_available", boom)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device()[0].type == "cpu"


def test_cpu_threads_follow_physical_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(dev_mod, "physical_cores", lambda: 1)
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert configure_cpu_threads() == 2  # the user's environment wins
    finally:
        torch.set_num_threads(before)


def _predictor(tmp_path, batch):
    from napari_medseg.inference.predictor import Predictor
    from napari_medseg.models.spec import load_model
    from napari_medseg.models.testing import make_random_model

    path = make_random_model(tmp_path / "m")
    net, card = load_model(path)
    return Predictor(path, net, card, torch.device("cuda"), "CUDA: FakeGPU", batch, 0, None, "float32")


def test_cuda_oom_halves_the_batch_then_falls_back_to_cpu(tmp_path, monkeypatch):
    pred = _predictor(tmp_path, batch=4)
    calls = []
    real_forward = type(pred)._forward

    def forward(self, x, crop):
        calls.append((self.device.type, len(x)))
        if self.device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, x, crop)

    monkeypatch.setattr(type(pred), "_forward", forward)
    x = np.random.default_rng(0).random((4, 1, 16, 16)).astype(np.float32)
    crop = (slice(2, 14), slice(2, 14))
    with pytest.warns(RuntimeWarning) as rec:
        y = pred(x, crop)
    assert [c for c in calls if c[0] == "cuda"] == [("cuda", 4), ("cuda", 2), ("cuda", 1)]
    assert [c for c in calls if c[0] == "cpu"] == [("cpu", 1)] * 4
    assert pred.device.type == "cpu"
    assert "fell back to CPU" in pred.reason
    assert any("continuing on the CPU" in str(w.message) for w in rec)
    assert y.shape == (4, 2, 12, 12)
    assert ((y >= 0) & (y <= 1)).all()  # sigmoid outputs


def test_non_oom_errors_are_not_swallowed(tmp_path, monkeypatch):
    pred = _predictor(tmp_path, batch=2)

    def forward(self, x, crop):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")

    monkeypatch.setattr(type(pred), "_forward", forward)
    with pytest.raises(RuntimeError, match="CUDNN_STATUS"):
        pred(np.zeros((2, 1, 8, 8), np.float32), (slice(None), slice(None)))
