#!/usr/bin/env python
"""Train StarDist 2D from scratch on our nuclei training split, for a wall-clock budget.

    /work/peers-venv/bin/python benchmarks/peers/train_stardist.py --peer stardist-grey --minutes 43
    /work/peers-venv/bin/python benchmarks/peers/train_stardist.py --peer stardist-he --minutes 17

Runs in the peers' venv (TensorFlow + stardist + csbdeep; see README.md).
Data: exactly the images our ``nuclei`` (``stardist-grey``) or ``nuclei-he``
(``stardist-he``) model trains on (``scripts/train_default_models.py``,
hold-out included), in the same colour; each modality is repeated so that
it gets the share of batches our training gives it (``train_groups``).
The held-out train images (our selection modalities) are StarDist's
validation data: best weights by validation loss and
``optimize_thresholds`` (probability / NMS), as StarDist does.

Recipe: StarDist's own for DSB2018 (its example notebook): 32 rays,
grid (2, 2), 256 px patches, batch 4, Adam 3e-4, ReduceLROnPlateau;
percentile normalisation 1-99.8 (RGB channels jointly); random flips,
90-degree rotations, intensity scale/shift and noise; grey images are also
inverted with our ``p_invert`` (either polarity, as our grey model).
Training stops at the first batch past ``--minutes`` (threshold tuning
after that is reported apart). Model: ``ROOT/<peer>/model`` with
``peer.json`` (split, budget, steps, versions, command).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import peerdata


def augmenter_for(p_invert: float):
    """StarDist-style augmenter ``(x, y) -> (x, y)``; ``x`` (Y, X[, C]) normalised float, ``y`` (Y, X) labels."""

    def augment(x, y):
        perm = tuple(np.random.permutation(2))
        x = x.transpose(perm + tuple(range(2, x.ndim)))
        y = y.transpose(perm)
        for ax in (0, 1):
            if np.random.rand() < 0.5:
                x, y = np.flip(x, ax), np.flip(y, ax)
        if np.random.rand() < p_invert:
            x = 1.0 - x
        x = x * np.random.uniform(0.6, 2.0) + np.random.uniform(-0.2, 0.2)
        x = x + 0.02 * np.random.uniform() * np.random.normal(size=x.shape)
        return x.astype(np.float32), y

    return augment


def main(argv=None) -> int:
    ap = peerdata.train_parser(__doc__, "stardist", "wall-clock budget of the training loop")
    ap.add_argument("--steps-per-epoch", type=int, default=100, help="StarDist default 100; validation every epoch")
    args = ap.parse_args(argv)

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from csbdeep.utils import normalize
    from stardist import fill_label_holes
    from stardist.models import Config2D, StarDist2D

    peer = peerdata.PEERS[args.peer]
    spec = peerdata.model_spec(peer.ours)
    t_load = time.time()
    train, select = peerdata.training_split(peer.ours, args.datasets)
    train = peerdata.smoke_subset(train, args.smoke_subset)
    rgb = spec["color"] == "rgb"
    axis_norm = (0, 1, 2) if rgb else (0, 1)
    prep = lambda s: normalize(s.image.astype(np.float32), 1, 99.8, axis=axis_norm)  # noqa: E731
    copies = peerdata.replication([s.group for s in train], spec["train_groups"])
    X, Y = [], []
    for s, k in zip(train, copies, strict=True):
        x, y = prep(s), fill_label_holes(s.labels)
        X += [x] * k
        Y += [y] * k
    X_val = [prep(s) for s in select]
    Y_val = [fill_label_holes(s.labels) for s in select]
    load_s = time.time() - t_load
    shares = {g: round(sum(k for s, k in zip(train, copies, strict=True) if s.group == g) / len(X), 3)
              for g in spec["train_groups"]}
    print(f"[{args.peer}] {len(train)} train images ({len(X)} with repeats, shares {shares}), "
          f"{len(select)} held-out for validation; loaded in {load_s:.0f}s", flush=True)

    conf = Config2D(n_rays=32, grid=(2, 2), n_channel_in=3 if rgb else 1, use_gpu=False,
                    train_patch_size=(256, 256), train_batch_size=4, train_epochs=100000,
                    train_steps_per_epoch=args.steps_per_epoch, train_tensorboard=False)
    out = Path(args.root) / args.peer
    out.mkdir(parents=True, exist_ok=True)
    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)
    model = StarDist2D(conf, name="model", basedir=str(out))
    model.prepare_for_training()

    budget = args.minutes * 60.0
    progress = {"steps": 0, "epochs": 0}

    class TimeBudget(tf.keras.callbacks.Callback):
        """Stop at the first batch past the budget."""

        def on_train_begin(self, logs=None):
            self.t0 = time.time()

        def on_train_batch_end(self, batch, logs=None):
            progress["steps"] += 1
            if time.time() - self.t0 >= budget:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            progress["epochs"] = epoch + 1
            print(f"[{args.peer}] epoch {epoch + 1} step {progress['steps']} {time.time() - self.t0:.0f}s "
                  f"loss {logs.get('loss', float('nan')):.4f} val_loss {logs.get('val_loss', float('nan')):.4f}",
                  flush=True)

    model.callbacks.append(TimeBudget())
    t0 = time.time()
    model.train(X, Y, validation_data=(X_val, Y_val), augmenter=augmenter_for(spec["augment"].get("p_invert", 0.0)),
                seed=args.seed)
    train_s = time.time() - t0
    t1 = time.time()
    if args.tune_images == 0:  # smoke runs: an undertrained model makes the low-threshold NMS trials crawl
        thresholds = dict(model.thresholds._asdict())
    else:
        thresholds = model.optimize_thresholds(X_val[:args.tune_images], Y_val[:args.tune_images])
    tune_s = time.time() - t1
    peerdata.write_card(
        out / "model", args, train, select, versions=peerdata.versions("stardist", "csbdeep", "tensorflow-cpu", "keras"),
        train_seconds=round(train_s, 1), tune_seconds=round(tune_s, 1), load_seconds=round(load_s, 1),
        steps=progress["steps"], epochs_completed=progress["epochs"], batch_size=conf.train_batch_size,
        patch_size=list(conf.train_patch_size), n_train_with_repeats=len(X), modality_shares=shares,
        thresholds={k: float(v) for k, v in thresholds.items()})
    print(f"[{args.peer}] trained {train_s / 60:.1f} min ({progress['steps']} steps), thresholds {thresholds} "
          f"tuned in {tune_s:.0f}s -> {out / 'model'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
