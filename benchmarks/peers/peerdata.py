"""What the peer benchmarks share: the peers, our training split, predictions on disk.

The peer scripts (``train_stardist.py``, ``train_cellpose.py``, ``predict.py``)
run in their own virtual environment (TensorFlow, StarDist, Cellpose are
benchmark-only dependencies; see ``README.md``), where napari-medseg is not
installed: this module puts the repository's ``src/`` and ``scripts/`` on
``sys.path`` so that they use *our* sample loading and hold-out split
(``scripts/train_default_models.py``: ``MODELS``, ``load_split``,
``split_holdout``) and our matcher, never a copy.

Only the standard library and numpy are imported at module level, so
``benchmarks/bench_nuclei_accuracy.py`` (in the project's venv) imports it
for :data:`PEERS` and the prediction reader.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
for _p in (REPO / "src", REPO / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

#: Where peer models and predictions live (outside the repository).
DEFAULT_ROOT = Path(os.environ.get("MEDSEG_PEERS_ROOT", "/work/peers"))
#: The peers' Python (a venv with TensorFlow + StarDist and torch + Cellpose).
DEFAULT_PYTHON = Path(os.environ.get("MEDSEG_PEERS_PYTHON", "/work/peers-venv/bin/python"))
#: The hold-out of ``scripts/train_default_models.py``: its ``--holdout`` default and the fixed seed
#: ``train_one`` passes to ``split_holdout`` (recorded in the shipped cards' ``training.holdout``;
#: ``tests/core/test_peers.py`` checks the two agree).
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 1234


@dataclass(frozen=True)
class Peer:
    """One peer model of the benchmark.

    Attributes
    ----------
    name : str
        Folder name under the peers root: ``ROOT/name/model``, ``ROOT/name/pred``.
    tool : str
        ``"stardist"`` or ``"cellpose"``.
    ours : str
        The model of ``scripts/train_default_models.py`` whose training split, hold-out, colour
        (grey or RGB) and val modalities this peer takes: ``"nuclei"`` or ``"nuclei-he"``.
    label : str
        Row label in the benchmark table.
    """

    name: str
    tool: str
    ours: str
    label: str


PEERS = {
    p.name: p
    for p in (
        Peer("stardist-grey", "stardist", "nuclei", "StarDist (grey, trained here)"),
        Peer("stardist-he", "stardist", "nuclei-he", "StarDist (H&E RGB, trained here)"),
        Peer("cellpose-grey", "cellpose", "nuclei", "Cellpose 3 (grey, trained here)"),
    )
}


def train_parser(doc: str, tool: str, minutes_help: str):
    """The arguments every peer training script takes (``--peer`` of ``tool``, budget, folders, threads...)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", choices=[n for n, p in PEERS.items() if p.tool == tool], required=True)
    ap.add_argument("--minutes", type=float, required=True, help=minutes_help)
    ap.add_argument("--root", default=str(DEFAULT_ROOT), help="peers folder (outside the repository)")
    ap.add_argument("--datasets", default=None, help="folder holding dsb2018/ (default: the training script's)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of the framework (default: its own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tune-images", type=int, default=None,
                    help="tune thresholds on only the first N held-out images (smoke runs; 0: the tool's defaults; "
                         "default: all)")
    ap.add_argument("--smoke-subset", type=int, default=None,
                    help="SMOKE RUNS ONLY, not the comparison: train on about N of the training images, the first of "
                         "each modality in proportion (default: all, the exact split)")
    return ap


def smoke_subset(train, n: int | None):
    """The first ``n * share`` images of each modality of ``train`` (``None``: all of them, unchanged)."""
    if n is None or n >= len(train):
        return train
    groups = [s.group for s in train]
    keep = {g: max(1, round(n * groups.count(g) / len(train))) for g in set(groups)}
    seen = dict.fromkeys(keep, 0)
    out = []
    for s in train:
        if seen[s.group] < keep[s.group]:
            out.append(s)
            seen[s.group] += 1
    return out


def _tdm(datasets: str | os.PathLike | None = None):
    """``scripts/train_default_models.py`` as a module, pointed at ``datasets`` when given."""
    import train_default_models as tdm

    if datasets is not None:
        tdm.DSB = Path(datasets) / "dsb2018"
    if not tdm.DSB.exists():
        raise SystemExit(f"dataset not found: {tdm.DSB} (give --datasets, the folder holding dsb2018/)")
    return tdm


def best_on_grid(grid: dict, aps_for, what: str = "") -> dict:
    """Our tuning rule (``train_default_models.best_on_grid``: mean AP@0.5, then mAP), for a peer's thresholds."""
    return _tdm().best_on_grid(grid, aps_for, what)


def training_split(ours: str, datasets=None, holdout: float = HOLDOUT_FRACTION, seed: int = HOLDOUT_SEED):
    """The training images and the selection hold-out of one of our models, exactly as its training uses them.

    Parameters
    ----------
    ours : str
        ``"nuclei"`` (grey) or ``"nuclei-he"`` (RGB): a key of ``train_default_models.MODELS``.
    datasets : path, optional
        Folder holding ``dsb2018/``; default: the training script's.
    holdout, seed : float, int
        Hold-out fraction per modality and its seed (the training script's).

    Returns
    -------
    train, select : list of ``napari_medseg.training.data.Sample``
        ``train``: what the model trains on; ``select``: the held-out train images of the
        modalities it selects checkpoints and tunes post-processing on (``select_groups``).
        Images are (Y, X) grey float32/uint8 or (Y, X, 3) RGB uint8; labels (Y, X) int32.
    """
    tdm = _tdm(datasets)
    spec = tdm.MODELS[ours]
    train = tdm.load_split("train", spec["train_groups"], spec["color"])
    train, hold = tdm.split_holdout(train, holdout, seed=seed)
    select = [s for s in hold if s.group in spec["select_groups"]]
    return train, select


def val_samples(ours: str, datasets=None):
    """``dsb2018/val`` images of the modalities ``ours`` is scored on, in its colour (see :func:`training_split`)."""
    tdm = _tdm(datasets)
    spec = tdm.MODELS[ours]
    return tdm.load_split("val", spec["val_groups"], spec["color"])


def model_spec(ours: str) -> dict:
    """``train_default_models.MODELS[ours]`` (colour, group weights, augmentation)."""
    import train_default_models as tdm

    return tdm.MODELS[ours]


def image_weights(groups, group_weights: dict[str, float]) -> np.ndarray:
    """Per-image sampling probability that gives each modality its share of ``group_weights``.

    Our training draws patches by modality with these weights
    (``SegmentationTrainConfig.group_weights``), then an image uniformly within it.

    Parameters
    ----------
    groups : sequence of str
        Modality of each training image.
    group_weights : dict
        Modality -> weight (need not sum to 1).

    Returns
    -------
    ndarray of float64, (n_images,)
        Sums to 1.
    """
    groups = list(groups)
    n = {g: groups.count(g) for g in set(groups)}
    w = np.array([group_weights[g] / n[g] for g in groups], np.float64)
    return w / w.sum()


def replication(groups, group_weights: dict[str, float]) -> list[int]:
    """Integer copies per image approximating :func:`image_weights` (for loaders that draw uniformly).

    The image with the smallest weight gets one copy; the others ``round(weight / smallest)``.
    """
    w = image_weights(groups, group_weights)
    return [max(1, int(round(x / w.min()))) for x in w]


def versions(*packages: str) -> dict[str, str]:
    """Installed version of each distribution (``"absent"`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "absent"
    return out


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


def write_card(folder: Path, args, train, select, **fields) -> None:
    """Write ``folder/peer.json``: what any peer's training records, then the tool's own ``fields``.

    ``args``: the training script's arguments (``peer``, ``minutes``, ``threads``, ``tune_images``);
    ``train``, ``select``: the samples of :func:`training_split`.
    """
    import platform

    peer = PEERS[args.peer]
    write_json(folder / "peer.json", {
        "peer": peer.name, "tool": peer.tool, "ours": peer.ours, "color": model_spec(peer.ours)["color"],
        "budget_min": args.minutes, "threads": args.threads, "smoke_subset": args.smoke_subset, **fields,
        "n_train_images": len(train), "n_holdout": len(select), "n_tuned_on": len(select[:args.tune_images]),
        "holdout": {"fraction": HOLDOUT_FRACTION, "seed": HOLDOUT_SEED},
        "train_ids": sorted(s.name for s in train), "holdout_ids": sorted(s.name for s in select),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    })


def write_prediction(folder: Path, name: str, labels: np.ndarray) -> None:
    """Save one predicted (Y, X) label image as ``folder/name.tif`` (uint16 or uint32)."""
    import tifffile

    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 65536 else np.uint32
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / f"{name}.tif", labels.astype(dtype))


def read_predictions(folder: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Predicted label images of a peer and its ``times.json`` (seconds and pixels per image)."""
    import tifffile

    times = json.loads((folder / "times.json").read_text())
    preds = {name: tifffile.imread(folder / f"{name}.tif") for name in times["images"]}
    return preds, times


def stop_reason(peer: Peer, root: Path, python: Path) -> str | None:
    """Why ``peer`` cannot run here (no venv, no trained model), or None."""
    if not python.exists():
        return f"no peer Python at {python} (see benchmarks/peers/README.md)"
    card = root / peer.name / "model" / "peer.json"
    if not card.exists():
        return f"no trained model at {card.parent} (train it with benchmarks/peers/train_{peer.tool}.py)"
    return None
