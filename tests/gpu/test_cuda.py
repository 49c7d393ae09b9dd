"""Tests that need a CUDA GPU (``-m cuda``); they skip without one.

``benchmarks/gpu_check.sh`` runs them on a GPU machine.  With
``MEDSEG_CUDA_TESTS_ON_CPU=1`` (its ``--dry-run``) they run on the CPU
instead, so their own code is checked on machines without a GPU; the test
that needs real GPU memory limits still skips there.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_medseg.api import segment  # noqa: E402
from napari_medseg.inference.predictor import Predictor  # noqa: E402
from napari_medseg.models.cache import get_model  # noqa: E402
from napari_medseg.models.registry import resolve_model  # noqa: E402

pytestmark = pytest.mark.cuda
ON_CPU = os.environ.get("MEDSEG_CUDA_TESTS_ON_CPU") == "1"


@pytest.fixture(scope="module")
def device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if ON_CPU:
        return "cpu"
    pytest.skip("needs a CUDA GPU (set MEDSEG_CUDA_TESTS_ON_CPU=1 to run these on the CPU)")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """The shipped fluorescence sample (real dsb2018 val image, 520 x 696 uint8)."""
    import tifffile

    from napari_medseg.io.samples import NUCLEI_IMAGE, sample_path

    return tifffile.imread(sample_path(NUCLEI_IMAGE))


def _ap50(a: np.ndarray, b: np.ndarray) -> float:
    from napari_medseg.analysis.metrics import average_precision

    return float(average_precision(a, b, 0.5))


def test_cuda_float32_matches_cpu(device, image) -> None:
    lab_dev, p_dev = segment(image, "nuclei", device=device, precision="float32", return_probabilities=True)
    lab_cpu, p_cpu = segment(image, "nuclei", device="cpu", precision="float32", return_probabilities=True)
    assert np.max(np.abs(p_dev.astype(np.float32) - p_cpu.astype(np.float32))) < 2e-3  # float16 maps
    assert _ap50(lab_cpu, lab_dev) >= 0.99


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_amp_output_is_close_to_float32(device, image, precision) -> None:
    if device == "cpu" and precision == "float16":
        pytest.skip("float16 autocast is a GPU precision")
    lab32, p32 = segment(image, "nuclei", device=device, precision="float32", return_probabilities=True)
    lab16, p16 = segment(image, "nuclei", device=device, precision=precision, return_probabilities=True)
    diff = np.abs(p16.astype(np.float32) - p32.astype(np.float32))
    assert diff.max() < 0.1 and diff.mean() < 5e-3, (diff.max(), diff.mean())
    assert _ap50(lab32, lab16) >= 0.97


def test_real_out_of_memory_halves_the_batch_or_falls_back(device, image) -> None:
    if device != "cuda":
        pytest.skip("needs real CUDA memory limits")
    info = resolve_model("nuclei")
    net, card = get_model(info.path, torch.device("cuda"))
    x = np.random.default_rng(0).random((16, 1, 1024, 1024), dtype=np.float32)
    pred = Predictor(info.path, net, card, torch.device("cuda"), "CUDA", 16, 0, None, "float32")
    crop = (slice(None), slice(None))
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    fraction = min(1.0, (torch.cuda.memory_allocated() + 600 * 2**20) / total)  # ~600 MiB for 16 MPx: too little
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = pred(x, crop)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    msgs = [str(w.message) for w in caught]
    assert any("out of memory" in m for m in msgs), msgs
    assert pred.max_batch < 16
    ref = Predictor(info.path, *get_model(info.path, "cpu"), torch.device("cpu"), "CPU", 1, 0, None, "float32")
    np.testing.assert_allclose(y[:1], ref(x[:1], crop), atol=2e-3)


def test_training_steps_on_the_device(device) -> None:
    from napari_medseg.models.unet import UNet
    from napari_medseg.training.losses import instance_loss

    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=16, depth=4).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x = torch.rand(4, 1, 128, 128, device=device)
    fg = (x[:, 0] > 0.5).float()
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss, _ = instance_loss(net(x), fg, fg)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
