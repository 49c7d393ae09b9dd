#!/usr/bin/env python
"""Run a trained peer on dsb2018/val and write its label images and timings.

    /work/peers-venv/bin/python benchmarks/peers/predict.py --peer stardist-grey [--threads 2]

Runs in the peers' venv; ``benchmarks/bench_nuclei_accuracy.py`` calls it in
the same run as our models, then scores the labels with our matcher.
Images: the ``val`` modalities of the peer's counterpart among our models,
in its colour (``peerdata.val_samples``), exactly as our model gets them.
Writes ``ROOT/<peer>/pred/<id>.tif`` (uint16 labels) and
``ROOT/<peer>/pred/times.json``: per image the seconds of the whole
prediction (normalisation, network, post-processing: StarDist's polygon
NMS, Cellpose's flow dynamics) and the pixel count. One untimed warm-up
prediction runs first (TensorFlow builds its graph on the first call).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import peerdata


def stardist_predictor(model_dir: Path, card: dict, threads: int | None):
    """``image -> labels`` for a StarDist model folder (its ``thresholds.json`` applies)."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from csbdeep.utils import normalize
    from stardist.models import StarDist2D

    model = StarDist2D(None, name=model_dir.name, basedir=str(model_dir.parent))
    axis = (0, 1, 2) if card["color"] == "rgb" else (0, 1)

    th = card["thresholds"]  # StarDist's own names: prob, nms

    def predict(image: np.ndarray) -> np.ndarray:
        x = normalize(image.astype(np.float32), 1, 99.8, axis=axis)
        return model.predict_instances(x, prob_thresh=th["prob"], nms_thresh=th["nms"], verbose=False)[0]

    return predict


def cellpose_predictor(model_dir: Path, card: dict, threads: int | None):
    """``image -> labels`` for a Cellpose model trained by ``train_cellpose.py`` (tuned thresholds)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from cellpose import models

    model = models.CellposeModel(gpu=False, pretrained_model=str(model_dir / "cellpose_model"),
                                 diam_mean=card["diam_mean"], nchan=2)
    th = card["thresholds"]

    def predict(image: np.ndarray) -> np.ndarray:
        return model.eval(image.astype(np.float32), channels=[0, 0], rescale=1.0, min_size=15, **th)[0]

    return predict


PREDICTORS = {"stardist": stardist_predictor, "cellpose": cellpose_predictor}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", choices=list(peerdata.PEERS), required=True)
    ap.add_argument("--root", default=str(peerdata.DEFAULT_ROOT))
    ap.add_argument("--datasets", default=None, help="folder holding dsb2018/ (default: the training script's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--per-modality", type=int, default=None, help="only the first N images of each modality")
    args = ap.parse_args(argv)
    peer = peerdata.PEERS[args.peer]
    model_dir = Path(args.root) / peer.name / "model"
    card = json.loads((model_dir / "peer.json").read_text())
    predict = PREDICTORS[peer.tool](model_dir, card, args.threads)
    val = peerdata.val_samples(peer.ours, args.datasets)
    if args.per_modality:
        val = [s for i, s in enumerate(val) if [v.group for v in val[:i + 1]].count(s.group) <= args.per_modality]
    out = Path(args.root) / peer.name / "pred"
    if out.exists():
        shutil.rmtree(out)
    predict(val[0].image)  # warm-up, not timed
    times = {}
    for s in val:
        t = time.perf_counter()
        labels = predict(s.image)
        times[s.name] = {"seconds": time.perf_counter() - t, "pixels": int(np.prod(s.labels.shape)),
                         "modality": s.group}
        peerdata.write_prediction(out, s.name, labels)
    total_s = sum(v["seconds"] for v in times.values())
    total_px = sum(v["pixels"] for v in times.values())
    peerdata.write_json(out / "times.json", {"peer": peer.name, "threads": args.threads, "images": times,
                                             "model": card})
    print(f"[{peer.name}] {len(val)} val images in {total_s:.1f}s: {total_px / total_s / 1e6:.3f} MPx/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
