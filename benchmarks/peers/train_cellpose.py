#!/usr/bin/env python
"""Train Cellpose 3 from scratch on our grey nuclei training split, for a wall-clock budget.

    /work/peers-venv/bin/python benchmarks/peers/train_cellpose.py --peer cellpose-grey --minutes 95

Runs in the peers' venv (torch 2.13 CPU + cellpose 3.1; see README.md).
Cellpose 3, not 4: Cellpose 4 (``cpsam``) is a ViT-L transformer that only
makes sense fine-tuned from its pretrained weights, which cannot be
downloaded here; Cellpose 3's residual U-Net (``CPnet``) is the network
its papers train from scratch.  ``CellposeModel(pretrained_model=None,
model_type=None)`` builds it with random weights: nothing is downloaded.

Data: exactly the images our ``nuclei`` model trains on
(``scripts/train_default_models.py``, hold-out included), grey
(``channels=[0, 0]``), each image drawn with the probability that gives
its modality our share (``train_probs``); ``min_train_masks=0`` so no image
is dropped.  Recipe: ``cellpose.train.train_seg`` defaults (AdamW 0.005,
weight decay 1e-5, batch 8, 224 px crops, its warm-up and final decay)
with ``rescale=False`` (no diameter model exists without pretrained
weights: train and run at the image's own scale, as our model and StarDist
do) but ``scale_range=0.5`` (Cellpose's default zoom augmentation).

Budget: ``--minutes`` covers the flow targets (Cellpose computes them
before training; ours computes targets inside its loop) and the training.
A first short epoch times one image; the number of epochs of 8 images is
chosen so that the schedule (and its decay) ends at the budget, and a
hard stop at the budget guards against a slower machine. Afterwards
``cellprob_threshold`` and ``flow_threshold`` are tuned on the held-out
train images with our matcher (mean AP@0.5, then mAP), like ours.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import peerdata

#: Thresholds searched on the held-out train images, and Cellpose's defaults.
GRID = {"cellprob_threshold": (-1.0, 0.0, 1.0), "flow_threshold": (0.4, 0.6, 0.8)}
DEFAULTS = {"cellprob_threshold": 0.0, "flow_threshold": 0.4}


class BudgetReached(Exception):
    """Raised inside Cellpose's loop when the wall-clock budget is spent."""


def flows_and_probs(model, select):
    """Cellpose's network outputs (dP, cellprob) for each held-out image (grey, own scale)."""
    out = []
    for s in select:
        _, flows, _ = model.eval(s.image, channels=[0, 0], rescale=1.0, compute_masks=False)
        out.append((flows[1], flows[2]))
    return out


def tune(model, select) -> dict:
    """Grid-search :data:`GRID` on the held-out images with our matcher (mean AP@0.5, then mAP)."""
    from cellpose import dynamics

    from napari_medseg.analysis.metrics import MAP_THRESHOLDS, average_precision

    cached = flows_and_probs(model, select)

    def aps_for(kw):
        return [average_precision(s.labels, np.asarray(dynamics.resize_and_compute_masks(
                    dp, cellprob, niter=200, min_size=15, **kw)).astype(np.int64), MAP_THRESHOLDS)
                for s, (dp, cellprob) in zip(select, cached, strict=True)]

    return peerdata.best_on_grid(GRID, aps_for)


def main(argv=None) -> int:
    ap = peerdata.train_parser(__doc__, "cellpose", "wall-clock budget: flow targets + training")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from cellpose import dynamics, models
    from cellpose import train as cp_train

    if not callable(getattr(cp_train, "_get_batch", None)):
        raise SystemExit(f"cellpose {peerdata.versions('cellpose')['cellpose']}: cellpose.train._get_batch not "
                         "found; this script needs cellpose 3.1 (pip install cellpose==3.1.1.3)")
    peer = peerdata.PEERS[args.peer]
    spec = peerdata.model_spec(peer.ours)
    t_load = time.time()
    train, select = peerdata.training_split(peer.ours, args.datasets)
    train = peerdata.smoke_subset(train, args.smoke_subset)
    images = [s.image.astype(np.float32) for s in train]
    probs = peerdata.image_weights([s.group for s in train], spec["train_groups"])
    load_s = time.time() - t_load
    print(f"[{args.peer}] {len(train)} train images, {len(select)} held-out; loaded in {load_s:.0f}s", flush=True)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    model = models.CellposeModel(gpu=False, pretrained_model=None, model_type=None, diam_mean=17.0, nchan=2)
    out = Path(args.root) / args.peer / "model"
    out.mkdir(parents=True, exist_ok=True)
    budget = args.minutes * 60.0
    t0 = time.time()
    flows = dynamics.labels_to_flows([s.labels for s in train], device=model.device)
    flows_s = time.time() - t0
    print(f"[{args.peer}] flow targets in {flows_s:.0f}s", flush=True)

    counter = {"batches": 0, "starts": []}
    real_get_batch = cp_train._get_batch

    def timed_get_batch(*a, **k):
        now = time.time()
        if now - t0 >= budget:
            raise BudgetReached
        counter["batches"] += 1
        counter["starts"].append(now)
        return real_get_batch(*a, **k)

    cp_train._get_batch = timed_get_batch
    batch, per_epoch = 8, 8
    common = {"train_data": images, "train_labels": flows, "train_probs": probs.copy(), "channels": [0, 0],
              "normalize": True, "batch_size": batch, "rescale": False, "scale_range": 0.5, "min_train_masks": 0,
              "save_path": str(out), "model_name": "cellpose_model", "save_every": 10 ** 9}
    # nimg_per_epoch must differ from the image count, else Cellpose ignores train_probs
    per_epoch = per_epoch if per_epoch != len(images) else per_epoch + 1
    stopped, n_epochs = False, 0
    try:
        # calibration: one epoch of 3 batches (learning rate 0: Cellpose's warm-up starts at 0) times a batch
        # and the set-up of a train_seg call (normalisation, diameters)
        t1 = time.time()
        cp_train.train_seg(model.net, n_epochs=1, nimg_per_epoch=3 * batch, **common)
        setup_s = counter["starts"][0] - t1
        sec_per_batch = (time.time() - counter["starts"][1]) / 2
        n_epochs = max(1, int((budget - (time.time() - t0) - setup_s) / (sec_per_batch * per_epoch / batch)))
        print(f"[{args.peer}] {sec_per_batch:.2f} s/batch, set-up {setup_s:.0f}s -> {n_epochs} epochs of "
              f"{per_epoch} images", flush=True)
        cp_train.train_seg(model.net, n_epochs=n_epochs, nimg_per_epoch=per_epoch, **common)
    except BudgetReached:
        stopped = True
    finally:
        cp_train._get_batch = real_get_batch
    train_s = time.time() - t0
    model.net.save_model(str(out / "cellpose_model"))
    t2 = time.time()
    # --tune-images 0 (smoke runs): Cellpose's defaults
    thresholds = tune(model, select[:args.tune_images]) if args.tune_images != 0 else DEFAULTS
    tune_s = time.time() - t2
    peerdata.write_card(
        out, args, train, select, versions=peerdata.versions("cellpose", "torch"), train_seconds=round(train_s, 1),
        flow_target_seconds=round(flows_s, 1), tune_seconds=round(tune_s, 1), load_seconds=round(load_s, 1),
        epochs_planned=n_epochs, images_per_epoch=per_epoch, batches=counter["batches"], stopped_by_budget=stopped,
        batch_size=batch, crop_px=224, thresholds=thresholds, diam_mean=17.0)
    print(f"[{args.peer}] trained {train_s / 60:.1f} min ({counter['batches']} batches of {batch}), "
          f"thresholds {thresholds} tuned in {tune_s:.0f}s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
