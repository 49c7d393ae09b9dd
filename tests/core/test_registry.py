"""Model registry (shipped + user models), model cards round trip, and the model cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medseg.errors import ModelError
from napari_medseg.models import cache, registry
from napari_medseg.models.registry import (
    ModelInfo,
    default_model_for,
    list_models,
    resolve_model,
    shipped_models_dir,
    user_models_dir,
)
from napari_medseg.models.spec import ModelCard, load_model
from napari_medseg.models.testing import make_random_model


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    d = tmp_path / "user-models"
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(d))
    # isolate from whatever is shipped in the package right now
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")
    return d


def test_user_dir_from_environment(user_dir):
    assert user_models_dir() == user_dir
    assert list_models() == []


def test_platform_user_dir(monkeypatch):
    monkeypatch.delenv("MEDSEG_MODELS_DIR", raising=False)
    assert user_models_dir().name == "models"
    assert "napari-medseg" in str(user_models_dir())


def test_shipped_dir_is_in_the_package():
    assert shipped_models_dir().parent.name == "models"
    assert (shipped_models_dir().parent / "spec.py").is_file()


def test_list_and_resolve(user_dir, tmp_path):
    make_random_model(tmp_path / "shipped" / "nuclei", name="nuclei")
    make_random_model(user_dir / "a", name="mine-rgb", in_channels=3)
    make_random_model(user_dir / "b", name="mine-sem", kind="semantic", n_classes=3)
    models = list_models()
    assert [(m.name, m.source) for m in models] == [("nuclei", "shipped"), ("mine-rgb", "user"), ("mine-sem", "user")]
    info = resolve_model("mine-sem")
    assert isinstance(info, ModelInfo) and info.path == user_dir / "b" and info.card.kind == "semantic"
    # by path: folder, card file, weights file
    for p in (user_dir / "a", user_dir / "a" / "model.json", user_dir / "a" / "weights.safetensors"):
        got = resolve_model(str(p))
        assert got.name == "mine-rgb" and got.source == "path"
    with pytest.raises(ModelError, match=r"unknown model 'nope'.*nuclei \(shipped\).*mine-rgb \(user\)"):
        resolve_model("nope")


def test_default_model(user_dir, tmp_path):
    assert default_model_for(False) is None
    make_random_model(user_dir / "x", name="some-grey")
    assert default_model_for(False) == "some-grey"  # first compatible
    assert default_model_for(True) is None
    make_random_model(tmp_path / "shipped" / "nuclei", name="nuclei")
    make_random_model(tmp_path / "shipped" / "nuclei-he", name="nuclei-he", in_channels=3)
    assert default_model_for(False) == "nuclei"
    assert default_model_for(True) == "nuclei-he"


def test_broken_models_are_listed_apart_with_their_reason(user_dir):
    from napari_medseg.models.registry import list_broken_models

    make_random_model(user_dir / "good", name="good")
    (user_dir / "bad").mkdir()
    (user_dir / "bad" / "model.json").write_text("{not json")
    (user_dir / "noweights").mkdir()
    (user_dir / "noweights" / "model.json").write_text((user_dir / "good" / "model.json").read_text())
    assert [m.name for m in list_models()] == ["good"]
    broken = {b.name: b.reason for b in list_broken_models()}
    assert set(broken) == {"bad", "noweights"}
    assert "not valid JSON" in broken["bad"] and "weights.safetensors" in broken["noweights"]


def test_card_round_trip(tmp_path):
    import torch

    path = make_random_model(tmp_path / "m", name="rt", in_channels=3, dims=3, depth=2, base_channels=2,
                             pixel_size=[1.0, 0.5, 0.5], seed=3)
    card = ModelCard.from_json(path / "model.json")
    assert card.dims == 3 and card.in_channels == 3 and card.pixel_size == [1.0, 0.5, 0.5]
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    net, card2 = load_model(path)
    assert card2 == card and not net.training
    # same seed -> same weights; other seed -> other weights
    again, _ = load_model(make_random_model(tmp_path / "m2", in_channels=3, dims=3, depth=2, base_channels=2, seed=3))
    other, _ = load_model(make_random_model(tmp_path / "m3", in_channels=3, dims=3, depth=2, base_channels=2, seed=4))
    sd, sa, so = net.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], sa[k]) for k in sd)
    assert not all(torch.equal(sd[k], so[k]) for k in sd)


def test_cache_loads_once_and_sees_new_weights(tmp_path):
    import os

    cache.clear()
    path = make_random_model(tmp_path / "m", seed=1)
    a, _ = cache.get_model(path, "cpu")
    b, _ = cache.get_model(str(path), "cpu")
    assert a is b and cache.cache_size() == 1
    w = path / "weights.safetensors"
    st = w.stat()
    make_random_model(path, seed=2)  # fine-tuning overwrites the weights
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c, _ = cache.get_model(path, "cpu")
    assert c is not a and cache.cache_size() == 1
    p0 = next(a.parameters()).detach().numpy()
    p1 = next(c.parameters()).detach().numpy()
    assert not np.array_equal(p0, p1)
    cache.clear()
    assert cache.cache_size() == 0


def test_api_facade(user_dir):
    import napari_medseg as ms

    make_random_model(user_dir / "t", name="t")
    assert [m.name for m in ms.list_models()] == ["t"]
    net, card = ms.load_model("t", device="cpu")
    assert card.name == "t" and net.divisor == 2
