#!/usr/bin/env python
"""Training throughput of the nuclei U-Net on this CPU: float32 vs bfloat16, memory layout, batch, patch, loader.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_throughput.py [--threads 1] [--steps 12] [--output distance] \
        [--loss-steps 40]

Every configuration runs :class:`napari_medseg.training.steps.StepRunner`
steps (forward, loss, backward, AdamW) of the shipped ``nuclei`` architecture
(base 16, depth 4) on the same pre-made batches of real ``dsb2018/train``
patches, interleaved in one run (the machine is shared and noisy: compare
rows, not runs).  ``before`` is the old set-up (float32, channels-last);
the other rows change one thing.  It also times the patch loader alone
(augmentation + targets per batch, one thread) and the whole loop with the
background loader, so a loader slower than the network shows up as
``loader-bound``.

Prints a markdown table: steps/s, images (patches)/s, training megapixels/s,
and the speed-up over ``before`` (in megapixels/s, so rows with other patch
sizes compare).  ``--loss-steps N`` then trains two identical networks
(same seed, same batches) for N steps, one in float32 and one under
bfloat16 autocast, and prints both loss curves side by side.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def make_net(channels_out: int):
    from napari_medseg.models.unet import UNet

    return UNet(1, channels_out, dims=2, base_channels=16, depth=4, norm="batch")


def time_steps(runner, batches, loss_of, steps: int) -> float:
    """Seconds per step (median of ``steps`` after 2 warm-up steps)."""
    times = []
    for i in range(steps + 2):
        b = batches[i % len(batches)]
        t = time.perf_counter()
        runner.step(b.image, loss_of(b))
        if i >= 2:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> int:
    import torch
    from train_default_models import DSB, load_split

    from napari_medseg.training.augment import AugmentConfig
    from napari_medseg.training.data import PatchSampler
    from napari_medseg.training.representations import representation_for
    from napari_medseg.training.steps import StepRunner, cpu_has_bf16

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--output", default="distance", help="instance representation: distance, contour or star")
    ap.add_argument("--loss-steps", type=int, default=0, help="also compare float32 and bfloat16 loss curves")
    args = ap.parse_args(argv)
    if not DSB.exists():
        print(f"dataset not found: {DSB}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rep = representation_for(args.output)
    samples = load_split("train", {"fluo": 0.6, "brightfield": 0.15, "histo": 0.25}, "grey")[:120]
    print(f"CPU bf16 (AVX-512 BF16 / AMX): {cpu_has_bf16()}; torch threads {torch.get_num_threads()}; "
          f"representation {rep.name} ({rep.n_channels} outputs)", flush=True)

    def sampler(patch: int) -> PatchSampler:
        return PatchSampler(samples, patch_size=patch, augment=AugmentConfig(p_invert=0.5), seed=0,
                            group_weights={"fluo": 0.6, "brightfield": 0.15, "histo": 0.25},
                            targets=rep.targets)

    rows = []
    # loader alone (one thread): seconds per batch of 8 patches of 192
    s = sampler(192)
    rng = np.random.default_rng(0)
    s.batch(2, rng)
    t = time.perf_counter()
    n_load = 6
    for _ in range(n_load):
        s.batch(8, rng)
    load_s = (time.perf_counter() - t) / n_load
    batches = {(8, 192): [s.batch(8, rng) for _ in range(4)]}
    for bp in ((16, 128), (4, 256), (8, 256)):
        batches[bp] = [sampler(bp[1]).batch(bp[0], rng) for _ in range(3)]

    def loss_of(runner):
        return lambda b: (lambda out: rep.loss(out, runner.tensor(b.targets), runner.tensor(b.weight)))

    configs = [  # name, batch, patch, amp, channels_last
        ("before: float32, channels-last", 8, 192, None, True),
        ("float32, contiguous (NCHW)", 8, 192, None, False),
        ("bfloat16 autocast, channels-last", 8, 192, torch.bfloat16, True),
        ("bfloat16, batch 16 x 128 px", 16, 128, torch.bfloat16, True),
        ("bfloat16, batch 4 x 256 px", 4, 256, torch.bfloat16, True),
        ("bfloat16, batch 8 x 256 px", 8, 256, torch.bfloat16, True),
    ]
    runners = {}
    for name, _b, _p, amp, cl in configs:
        torch.manual_seed(0)
        r = StepRunner.create(make_net(rep.n_channels), torch.device("cpu"), lr=1e-3, weight_decay=1e-4, amp_dtype=amp)
        if not cl:
            r.net.to(memory_format=torch.contiguous_format)
            r.channels_last = False
        r.net.train()
        runners[name] = r
    per_step: dict[str, list[float]] = {c[0]: [] for c in configs}
    for _ in range(2):  # two interleaved rounds
        for name, b, p, _amp, _cl in configs:
            per_step[name].append(time_steps(runners[name], batches[(b, p)], loss_of(runners[name]), args.steps // 2))
    base = None
    for name, b, p, _amp, _cl in configs:
        sec = float(np.median(per_step[name]))
        ips = b / sec
        mpx = ips * p * p / 1e6
        base = base or mpx
        rows.append((name, b, p, 1 / sec, ips, mpx, mpx / base))

    # the whole loop with the background loader (bf16, 8 x 192)
    name = "bfloat16 + background loader (whole loop)"
    r = runners["bfloat16 autocast, channels-last"]
    it = sampler(192).prefetch(8)
    next(it)
    t = time.perf_counter()
    n = args.steps
    for _ in range(n):
        b = next(it)
        r.step(b.image, loss_of(r)(b))
    sec = (time.perf_counter() - t) / n
    it.close()
    rows.append((name, 8, 192, 1 / sec, 8 / sec, 8 / sec * 192 * 192 / 1e6, 8 / sec * 192 * 192 / 1e6 / base))

    print(f"\nloader alone: {load_s:.3f} s per batch of 8 x 192 px ({8 / load_s:.1f} patches/s, one thread)")
    print("\n| configuration | batch | patch | steps/s | images/s | train MPx/s | vs before |")
    print("|---|---|---|---|---|---|---|")
    for name, b, p, sps, ips, mpx, rel in rows:
        print(f"| {name} | {b} | {p} | {sps:.3f} | {ips:.2f} | {mpx:.3f} | {rel:.2f}x |")
    if args.loss_steps:
        loss_curves(s, rep, args.loss_steps, loss_of)
    return 0


def loss_curves(sampler, rep, n: int, loss_of) -> None:
    """Train float32 and bfloat16 copies of one network on the same batches; print both losses every few steps."""
    import torch

    from napari_medseg.training.steps import StepRunner

    rng = np.random.default_rng(5)
    runners = {}
    for name, amp in (("float32", None), ("bfloat16", torch.bfloat16)):
        torch.manual_seed(0)
        runners[name] = StepRunner.create(make_net(rep.n_channels), torch.device("cpu"), lr=2e-3, weight_decay=1e-4,
                                          amp_dtype=amp)
        runners[name].net.train()
    losses: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(n):
        b = sampler.batch(8, rng)
        for name, r in runners.items():
            losses[name].append(r.step(b.image, loss_of(r)(b))[0])
    every = max(1, n // 8)
    print(f"\nloss curves, same seed and batches (mean of each {every} steps):")
    print("| steps | float32 | bfloat16 | difference |")
    print("|---|---|---|---|")
    for i in range(0, n, every):
        a, c = np.mean(losses["float32"][i:i + every]), np.mean(losses["bfloat16"][i:i + every])
        print(f"| {i + 1}-{min(i + every, n)} | {a:.4f} | {c:.4f} | {c - a:+.4f} |")


if __name__ == "__main__":
    sys.exit(main())
