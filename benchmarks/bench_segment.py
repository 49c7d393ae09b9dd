"""Benchmark: end-to-end ``segment`` throughput vs the network's forward passes alone.

A synthetic 4096x4096 grey uint8 image of ~25k blurred nuclei-like disks
with noise is segmented with the default model (``nuclei`` when shipped;
otherwise a random-weight U-Net with the default architecture:
base_channels=32, depth=4, in=1, out=2, instance).  Then the same network
runs alone (same device, precision, memory format, tile shape, batch size and
number of tiles: just the forward passes on a constant tile), half of the tiles
before and half after the end-to-end run; their sum is the baseline.  One figure per line::

    model=random(unet base32 depth4)
    tiles=25 tile=(936, 936) batch=1 precision=bfloat16 threads=2
    end_to_end_s=...
    end_to_end_mpx_s=...
    network_only_s=...
    network_only_mpx_s=...
    ratio=...            (goal >= 0.9)
    floor_s=...          (the network once over the image: non-overlapping --floor-tile tiles)
    floor_ratio=...      (floor_s / end_to_end_s, goal >= 0.9)
    stage_<name>_s=...   (load, normalize, read, network, postprocess, write)

Run: ``python benchmarks/bench_segment.py [--size 4096] [--precision auto]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_nuclei(size: int | tuple[int, int], seed: int = 0, density: float = 1.5e-3) -> np.ndarray:
    """uint8 image of blurred bright disks (radius 4-10 px) on a dark noisy background."""
    from scipy import ndimage as ndi

    shape = (size, size) if np.isscalar(size) else tuple(size)
    rng = np.random.default_rng(seed)
    n = int(shape[0] * shape[1] * density)
    canvas = np.zeros(shape, np.float32)
    cy = rng.integers(0, shape[0], n)
    cx = rng.integers(0, shape[1], n)
    r = rng.uniform(4, 10, n)
    for y, x, rr in zip(cy, cx, r, strict=False):
        ri = int(np.ceil(rr))
        y0, y1, x0, x1 = max(0, y - ri), min(shape[0], y + ri + 1), max(0, x - ri), min(shape[1], x + ri + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        canvas[y0:y1, x0:x1][(yy - y) ** 2 + (xx - x) ** 2 <= rr * rr] = rng.uniform(0.5, 1.0)
    canvas = ndi.gaussian_filter(canvas, 1.5)
    canvas += rng.normal(0.05, 0.03, shape).astype(np.float32)
    return (np.clip(canvas, 0, 1) * 255).astype(np.uint8)


def default_model(tmp: Path, base_channels: int = 32, depth: int = 4, random: bool = False) -> tuple[str, str]:
    """Path of the shipped grey default model, else (or if ``random``) of a random one with base 32, depth 4."""
    from napari_medseg.models.registry import list_models
    from napari_medseg.models.testing import make_random_model

    for m in list_models():
        if m.source == "shipped" and m.name == "nuclei" and not random:
            return str(m.path), f"shipped nuclei ({m.card.architecture})"
    path = make_random_model(tmp / "random-default", name="random-default", base_channels=base_channels,
                             depth=depth, seed=0)
    return str(path), f"random(unet base{base_channels} depth{depth})"


def network_only(net, predictor, tile_shape, n_tiles: int, batch: int, in_channels: int = 1) -> float:
    """Seconds for the forward passes alone over ``n_tiles`` tiles of ``tile_shape``."""
    import torch

    x = torch.full((batch, in_channels, *tile_shape), 0.3).to(predictor.device)
    if predictor.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    done = 0
    t = time.perf_counter()
    with torch.inference_mode():
        while done < n_tiles:
            n = min(batch, n_tiles - done)
            predictor.network(x[:n], native=True)  # the bare forward passes
            done += n
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--random-model", action="store_true",
                    help="a random-weight U-Net (base 32, depth 4) instead of the shipped nuclei model")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the engine's choice)")
    ap.add_argument("--floor-tile", type=int, default=1024,
                    help="the floor: the same network once over the image in non-overlapping tiles of this edge")
    args = ap.parse_args()
    if args.threads:
        import os

        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # configure_cpu_threads keeps it
        import torch

        torch.set_num_threads(args.threads)

    from napari_medseg.inference.predictor import Predictor
    from napari_medseg.inference.prepare import default_tile_size, plan_tiles
    from napari_medseg.inference.segment import segment_iter
    from napari_medseg.models.cache import get_model
    from napari_medseg.models.device import select_device
    from napari_medseg.progress import run

    img = synthetic_nuclei(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path, desc = default_model(Path(tmp), random=args.random_model)
        print(f"model={desc}")
        dev, _ = select_device(args.device)
        net, card = get_model(path, dev)  # load once, as in a session
        kw = {"device": args.device, "tile_size": args.tile_size, "batch_size": args.batch_size, "precision": args.precision}
        # warm-up on a small image (oneDNN / cuDNN kernel selection), not timed
        run(segment_iter(img[:512, :512], path, **kw))

        pred = Predictor(path, net, card, dev, "", 1, 0, None, args.precision)
        tile = args.tile_size or default_tile_size(2, dev.type)
        grid, _ = plan_tiles(img.shape, 2, net.divisor, int(card.architecture["depth"]), tile)
        tile_shape, n_tiles = grid.tile_shape, len(grid)
        batch = args.batch_size or (1 if dev.type == "cpu" else 4)
        ft = args.floor_tile
        n_floor = -(-img.shape[0] // ft) * -(-img.shape[1] // ft)
        # network alone over the same number of tiles, and the floor (the network once over the
        # image, no halos): half before, half after the end-to-end run (interleaved, so that a
        # change in machine load hits both sides)
        half, fhalf = n_tiles // 2, n_floor // 2
        t_net = [network_only(pred.net, pred, tile_shape, half, batch)]
        t_floor = [network_only(pred.net, pred, (ft, ft), fhalf, 1)]
        t = time.perf_counter()
        res = run(segment_iter(img, path, **kw))
        t_e2e = time.perf_counter() - t
        assert tuple(res.info["tile_shape"]) == tuple(tile_shape) and res.info["tiles"] == n_tiles
        t_floor.append(network_only(pred.net, pred, (ft, ft), n_floor - fhalf, 1))
        t_net.append(network_only(pred.net, pred, tile_shape, n_tiles - half, batch))
        mpx = img.size / 1e6
        t_n = float(sum(t_net))
        print(f"image={img.shape[0]}x{img.shape[1]} objects={res.info['n_labels']}")
        print(f"tiles={n_tiles} tile={tuple(tile_shape)} batch={batch} precision={res.info['precision']} "
              f"threads={res.info['threads']} device={res.device}")
        print(f"end_to_end_s={t_e2e:.2f}")
        print(f"end_to_end_mpx_s={mpx / t_e2e:.3f}")
        print(f"network_only_s={t_n:.2f} ({half} tiles before: {t_net[0]:.2f} s, {n_tiles - half} after: {t_net[1]:.2f} s)")
        print(f"network_only_mpx_s={mpx / t_n:.3f}")
        print(f"ratio={t_n / t_e2e:.3f}")
        t_f = float(sum(t_floor))
        print(f"floor_s={t_f:.2f} ({n_floor} non-overlapping {ft}^2 tiles, {pred.dtype_name}, fused={pred.fused})")
        print(f"floor_ratio={t_f / t_e2e:.3f}")
        for k, v in res.timings.items():
            print(f"stage_{k}_s={v:.2f}")


if __name__ == "__main__":
    main()
