"""Benchmark: which CPU tile edge gets a 2D image through the network fastest.

Bigger tiles spend fewer pixels on halos, but a big tile's activations leave
the CPU caches, so its pixels can cost more each.  For every candidate tile
edge this plans the engine's tiles over a SIZE² image (``plan_tiles``, the
exact receptive-field halo), times the network on one such tile (the
engine's predictor: folded, channels-last, its precision and backend), and
predicts the network stage as ``tiles x seconds per tile``.  Rounds are
interleaved (edge A, B, C, ..., then again) so that a change in machine load
hits every edge alike; the median per edge is reported.  One line per edge::

    edge=1024 tiles=25 tile=(1208, 1208) network_mpx=36.5 s_per_tile=... predicted_network_s=... mpx_per_s=...

Run: ``python benchmarks/bench_tile_size.py [--size 4096] [--edges 768 1024 1536 2048] [--rounds 3] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--edges", type=int, nargs="+", default=[768, 1024, 1280, 1536, 2048])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--random-model", action="store_true")
    args = ap.parse_args()
    if args.threads:
        import os

        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from bench_segment import default_model, network_only

    from napari_medseg.inference.predictor import Predictor
    from napari_medseg.inference.prepare import plan_tiles
    from napari_medseg.models.cache import get_model
    from napari_medseg.models.device import select_device

    with tempfile.TemporaryDirectory() as tmp:
        path, desc = default_model(Path(tmp), random=args.random_model)
        dev, _ = select_device("auto")
        net, card = get_model(path, dev)
        pred = Predictor(path, net, card, dev, "", 1, 0, None, args.precision)
        print(f"model={desc} precision={pred.dtype_name} fused={pred.fused} threads={torch.get_num_threads()}")
        plans = {}
        for e in args.edges:
            grid, _ = plan_tiles((args.size, args.size), 2, net.divisor, int(card.architecture["depth"]), e)
            plans[e] = (tuple(grid.tile_shape), len(grid))
            network_only(pred.net, pred, plans[e][0], 1, 1)  # warm-up (kernel selection)
        times: dict[int, list[float]] = {e: [] for e in args.edges}
        for _ in range(args.rounds):
            for e in args.edges:
                times[e].append(network_only(pred.net, pred, plans[e][0], 1, 1))
        for e in args.edges:
            shape, n = plans[e]
            s = statistics.median(times[e])
            mpx = n * shape[0] * shape[1] / 1e6
            print(f"edge={e} tiles={n} tile={shape} network_mpx={mpx:.1f} s_per_tile={s:.3f} "
                  f"predicted_network_s={n * s:.2f} mpx_per_s={shape[0] * shape[1] / 1e6 / s:.3f} "
                  f"image_mpx_per_s={args.size ** 2 / 1e6 / (n * s):.3f}")


if __name__ == "__main__":
    main()
