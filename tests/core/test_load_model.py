"""The public ``napari_medseg.load_model``: a network of one's own, in eval mode, with its card."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import napari_medseg as ms
from napari_medseg.errors import ModelError, ParameterError
from napari_medseg.models.cache import get_model
from napari_medseg.models.registry import resolve_model
from napari_medseg.models.testing import make_random_model


def test_shipped_model_by_name() -> None:
    net, card = ms.load_model("nuclei")
    assert card.name == "nuclei" and card.in_channels == 1
    assert isinstance(net, torch.nn.Module) and not net.training
    assert {p.device.type for p in net.parameters()} == {"cpu"}
    with torch.no_grad():
        out = net(torch.zeros(2, 1, 3 * net.divisor, 5 * net.divisor))
    assert out.shape == (2, card.architecture["out_channels"], 24, 40) and out.shape[1] == len(card.output["channels"])
    # a copy of one's own: changing it leaves the network segment() caches untouched
    cached, _ = get_model(resolve_model("nuclei").path, torch.device("cpu"))
    assert net is not cached
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    assert not torch.equal(next(net.parameters()), next(cached.parameters()))


def test_folder_and_errors(tmp_path) -> None:
    folder = make_random_model(tmp_path / "mine", name="mine", in_channels=3, base_channels=4, depth=2)
    net, card = ms.load_model(folder, device="auto")
    assert card.name == "mine" and card.in_channels == 3 and not net.training
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        ms.load_model("no-such-model")
    with pytest.raises(ParameterError, match="unknown device"):
        ms.load_model("nuclei", device="tpu")


def test_top_level_name_stays_lazy() -> None:
    code = "import napari_medseg, sys; napari_medseg.load_model; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
