"""The peer benchmark's plumbing (benchmarks/peers): split, sampling weights, predictions, skipping.

StarDist, Cellpose and TensorFlow are not needed: these parts run in the project's venv.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "peers"))
import peerdata  # noqa: E402


def test_holdout_is_the_one_of_the_shipped_nuclei_model():
    card = json.loads((REPO / "src/napari_medseg/models/shipped/nuclei/model.json").read_text())
    assert card["training"]["holdout"]["fraction"] == peerdata.HOLDOUT_FRACTION
    assert card["training"]["holdout"]["seed"] == peerdata.HOLDOUT_SEED


def test_image_weights_give_each_modality_its_share():
    groups = ["fluo"] * 30 + ["brightfield"] * 2 + ["histo"] * 8
    w = peerdata.image_weights(groups, {"fluo": 0.6, "brightfield": 0.15, "histo": 0.25})
    assert w.sum() == pytest.approx(1.0)
    g = np.array(groups)
    assert w[g == "fluo"].sum() == pytest.approx(0.6)
    assert w[g == "brightfield"].sum() == pytest.approx(0.15)
    assert w[g == "histo"].sum() == pytest.approx(0.25)
    assert np.allclose(w[g == "histo"], 0.25 / 8)


def test_replication_approximates_the_weights():
    groups = ["fluo"] * 341 + ["brightfield"] * 10 + ["histo"] * 67
    k = np.array(peerdata.replication(groups, {"fluo": 0.6, "brightfield": 0.15, "histo": 0.25}))
    g = np.array(groups)
    assert set(k[g == "fluo"]) == {1} and set(k[g == "brightfield"]) == {9} and set(k[g == "histo"]) == {2}
    assert k[g == "fluo"].sum() / k.sum() == pytest.approx(0.6, abs=0.01)


def _fake_dsb(root: Path, n_per_modality: int) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        d = root / "dsb2018" / split
        (d / "images").mkdir(parents=True)
        (d / "masks").mkdir()
        rows = []
        for mod in ("fluo", "brightfield", "histo"):
            for i in range(n_per_modality):
                name = f"{split}-{mod}-{i}"
                img = rng.integers(0, 255, (16, 16, 3) if mod == "histo" else (16, 16), dtype=np.uint8)
                lab = np.zeros((16, 16), np.uint16)
                lab[2:6, 2:6] = 1
                tifffile.imwrite(d / "images" / f"{name}.tif", img)
                tifffile.imwrite(d / "masks" / f"{name}.tif", lab)
                rows.append({"id": name, "modality": mod, "height": 16, "width": 16, "n_nuclei": 1})
        with open(d / "index.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return root


def test_training_split_is_the_training_scripts(tmp_path, monkeypatch):
    import train_default_models as tdm

    monkeypatch.setattr(tdm, "DSB", tdm.DSB)  # restored after the test
    root = _fake_dsb(tmp_path, 10)
    train, select = peerdata.training_split("nuclei", root)
    assert len(train) == 27 and len(select) == 2  # 1 of 10 held out per modality; histo is not selected on
    assert {s.group for s in select} == {"fluo", "brightfield"}
    assert not {s.name for s in train} & {s.name for s in select}
    assert all(s.image.ndim == 2 for s in train)  # grey model: H&E converted to grey
    ref_train, ref_hold = tdm.split_holdout(tdm.load_split("train", tdm.MODELS["nuclei"]["train_groups"], "grey"),
                                            0.1, seed=1234)
    assert [s.name for s in train] == [s.name for s in ref_train]
    he_train, _ = peerdata.training_split("nuclei-he", root)
    assert all(s.image.shape == (16, 16, 3) for s in he_train)
    assert [s.group for s in peerdata.val_samples("nuclei-he", root)] == ["histo"] * 10


def test_predictions_round_trip(tmp_path):
    lab = np.zeros((8, 9), np.int32)
    lab[1:3, 1:4] = 70000  # more than uint16 holds
    peerdata.write_prediction(tmp_path, "a", lab)
    peerdata.write_json(tmp_path / "times.json", {"images": {"a": {"seconds": 0.5, "pixels": 72}}})
    preds, times = peerdata.read_predictions(tmp_path)
    assert np.array_equal(preds["a"], lab) and times["images"]["a"]["pixels"] == 72


def _bench():
    spec = importlib.util.spec_from_file_location("bench_nuclei_accuracy", REPO / "benchmarks/bench_nuclei_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_skips_peers_without_venv_or_model(tmp_path, capsys):
    bench = _bench()
    args = Namespace(peers_root=str(tmp_path), peers_python=str(tmp_path / "no-venv" / "python"), threads=None,
                     per_modality=None, datasets=str(tmp_path))

    def never(*a):
        raise AssertionError("a skipped peer was scored")

    notes = bench.run_peers(args, never)
    assert len(notes) == len(peerdata.PEERS) and all("skipped (no peer Python" in n for n in notes)
    python = tmp_path / "python"
    python.write_text("")
    notes = bench.run_peers(Namespace(**{**vars(args), "peers_python": str(python)}), never)
    assert all("skipped (no trained model" in n for n in notes)
    assert "peer stardist-grey skipped" in capsys.readouterr().err
