"""Bad model cards, weights and training settings: our error, never a traceback, never in the way of others."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from napari_medseg.errors import ModelError, ParameterError, TrainingError
from napari_medseg.models.registry import list_broken_models, list_models, resolve_model, shipped_models_dir
from napari_medseg.models.spec import ModelCard, load_model, save_model, unet_parameters, valid_model_name
from napari_medseg.models.testing import make_random_model


@pytest.fixture
def user_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "user_models"
    d.mkdir()
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(d))
    return d


def _card(**changes) -> dict:
    d = json.loads((shipped_models_dir() / "nuclei" / "model.json").read_text())
    d["name"] = "bad"
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if not sub:
            d[section] = value
        elif value is None:
            d[section].pop(sub, None)
        else:
            d[section][sub] = value
    return d


BAD_CARDS = {
    "list": "[1, 2]", "string": '"nuclei"', "null": "null", "number": "3",
    "deep": "[" * 200_000 + "]" * 200_000, "not_json": "{oops",
    "wrong_type_depth": json.dumps(_card(architecture__depth="four")),
    "float_base": json.dumps(_card(architecture__base_channels=1e9)),
    "huge_base": json.dumps(_card(architecture__base_channels=100000)),
    "depth_64": json.dumps(_card(architecture__depth=64)),
    "bool_channels": json.dumps(_card(architecture__in_channels=True)),
    "unknown_arch_key": json.dumps(_card(architecture__dropout=0.5)),
    "no_output_kind": json.dumps(_card(output__kind=None)),
    "output_kind_junk": json.dumps(_card(output__kind="magic")),
    "name_newline": json.dumps(_card(name="evil\n")),
    "name_slash": json.dumps(_card(name="a/b")),
    "name_300": json.dumps(_card(name="a" * 300)),
    "pixel_size_nan": json.dumps(_card(input__pixel_size=[float("nan"), 1.0])),
    "channels_mismatch": json.dumps(_card(input__channels=3)),
    "output_channels_mismatch": json.dumps(_card(output__channels=["a", "b", "c", "d", "e"])),
    "format": json.dumps(_card(format="other/2")),
}


@pytest.mark.parametrize("label", sorted(BAD_CARDS))
def test_bad_card_is_a_model_error_naming_the_card(tmp_path: Path, label: str) -> None:
    p = tmp_path / "model.json"
    p.write_text(BAD_CARDS[label])
    with pytest.raises(ModelError, match="model.json|model card"):
        ModelCard.from_json(p)


def test_card_that_is_not_a_regular_file_or_text(tmp_path: Path) -> None:
    (tmp_path / "dir" / "model.json").mkdir(parents=True)
    with pytest.raises(ModelError, match="not a regular file"):
        ModelCard.from_json(tmp_path / "dir" / "model.json")
    os.mkfifo(tmp_path / "fifo.json")  # would block forever if opened
    with pytest.raises(ModelError, match="not a regular file"):
        ModelCard.from_json(tmp_path / "fifo.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(ModelError, match="UTF-8"):
        ModelCard.from_json(tmp_path / "bin.json")


def test_bounds_hold_before_any_tensor_is_made() -> None:
    nuclei = json.loads((shipped_models_dir() / "nuclei" / "model.json").read_text())
    from napari_medseg.models.unet import UNet

    arch = {k: v for k, v in nuclei["architecture"].items() if k != "type"}
    assert unet_parameters(nuclei["architecture"]) == sum(p.numel() for p in UNet(**arch).parameters())
    big = _card(architecture__base_channels=256, architecture__depth=8)  # each bound alone is allowed
    with pytest.raises(ModelError, match="parameters"):
        ModelCard.from_dict(big)


def test_names_use_fullmatch_and_a_length_bound() -> None:
    assert valid_model_name("nuclei-v2.1+x")
    for bad in ("evil\n", "", ".hidden", "../x", "a/b", "a" * 65, "a b", None, 3):
        assert not valid_model_name(bad), bad


@pytest.mark.parametrize("label", ["list", "deep", "depth_64", "no_output_kind", "name_newline", "not_json"])
def test_one_bad_user_model_never_breaks_the_others(user_dir: Path, label: str) -> None:
    make_random_model(user_dir / "good", name="good")
    (user_dir / "bad").mkdir()
    (user_dir / "bad" / "model.json").write_text(BAD_CARDS[label])
    names = {m.name for m in list_models()}
    assert {"good", "nuclei"} <= names and "bad" not in names
    broken = {b.name: b.reason for b in list_broken_models()}
    assert "bad" in broken and broken["bad"]
    assert resolve_model("nuclei").source == "shipped"
    assert resolve_model("good").source == "user"
    with pytest.raises(ModelError, match="broken"):
        resolve_model("bad")


def test_fifo_card_in_the_user_folder_does_not_hang(user_dir: Path) -> None:
    (user_dir / "pipe").mkdir()
    os.mkfifo(user_dir / "pipe" / "model.json")
    assert "nuclei" in {m.name for m in list_models()}
    assert "pipe" in {b.name for b in list_broken_models()}


def test_nan_weights_are_refused_at_load_and_at_save(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = make_random_model(tmp_path / "m", name="m")
    state = load_file(str(folder / "weights.safetensors"))
    next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = math.nan
    save_file(state, str(folder / "weights.safetensors"))
    with pytest.raises(ModelError, match="NaN"):
        load_model(folder)
    good = make_random_model(tmp_path / "g", name="g")
    net, card = load_model(good)
    next(iter(net.parameters())).data.view(-1)[0] = math.inf
    with pytest.raises(ModelError, match="NaN or infinite"):
        save_model(tmp_path / "out", net, card)
    assert not (tmp_path / "out").exists()


def test_shipped_models_cannot_be_written_by_any_path(tmp_path: Path) -> None:
    from napari_medseg.training.finetune import model_folder

    shipped = shipped_models_dir()
    (tmp_path / "link").symlink_to(shipped)
    for out in (shipped / "nuclei", shipped / "new", tmp_path / "link" / "nuclei", shipped / "x" / ".." / "nuclei"):
        with pytest.raises(ParameterError, match="shipped"):
            model_folder(out, "mine", overwrite=True)
    net, card = load_model(shipped / "nuclei")
    with pytest.raises(ModelError, match="shipped"):
        save_model(tmp_path / "link" / "nuclei", net, card)


@pytest.mark.parametrize("name", ["evil\n", "a" * 300, "../x", "a/b", ""])
def test_bad_model_names_are_refused(tmp_path: Path, name: str) -> None:
    from napari_medseg.training.finetune import model_folder

    with pytest.raises(ParameterError, match="model name|empty"):
        if name:
            model_folder(tmp_path / "m", name)
        else:
            model_folder("", None)  # an empty --out, not the current folder


@pytest.mark.parametrize("kwargs", [{"lr": math.inf}, {"lr": math.nan}, {"lr": 1e6}, {"minutes": math.inf},
                                    {"epochs": 10**9}, {"patch_size": 100000}, {"batch_size": 100000},
                                    {"patch_size": 1024, "batch_size": 512}])
def test_training_settings_are_bounded(kwargs: dict) -> None:
    from napari_medseg.training.finetune.loop import check_settings

    with pytest.raises(ParameterError):
        check_settings(**kwargs)


def test_non_finite_loss_stops_training_and_saves_nothing(tmp_path: Path, user_dir: Path) -> None:
    from napari_medseg.training.finetune import train

    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    img[::2] = np.nan  # NaN pixels: the normalised input, then the loss, are NaN
    lab = np.zeros((64, 64), np.uint16)
    lab[10:20, 10:20], lab[40:50, 30:40] = 1, 2
    with pytest.raises(TrainingError, match="loss became nan.*no model was saved"):
        train(img, lab, out=tmp_path / "m", epochs=1, device="cpu", val_fraction=0.0, patch_size=64, batch_size=2,
              steps_per_epoch=2, augment=False)
    assert not (tmp_path / "m" / "model.json").exists()
