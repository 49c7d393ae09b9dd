#!/usr/bin/env python
"""GPU figures for ``benchmarks/gpu_check.sh``: AMP vs float32, inference throughput and training step rate vs CPU.

    python benchmarks/gpu_check.py [--device cuda] [--size 2048] [--steps 20] [--cpu-steps 3]

Prints one figure per line, each measured side by side in this run:

- AMP: largest and mean absolute difference of the probability maps of
  ``segment(..., precision=P)`` from float32 on the shipped nuclei sample, and
  AP@0.5 of the AMP labels against the float32 ones, for the device's AMP
  precisions (bfloat16 and float16 on CUDA);
- inference: ``napari_medseg.segment`` with the shipped ``nuclei`` model on a
  ``--size`` square image (the sample tiled), MPx/s on the device (float32
  and auto precision) and on the CPU;
- training: steps/s of the nuclei U-Net (base 16, depth 4) on batches of 8
  patches of 192 px with the instance loss and Adam, on the device and on the
  CPU, and the ratio.

``--device cpu`` (the shell script's ``--dry-run``) runs everything on the
CPU with small sizes, to check the script itself.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def timed(fn, reps: int = 1) -> float:
    """Best wall time of ``reps`` calls (seconds), CUDA work included."""
    import torch

    best = float("inf")
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def train_rate(device: str, steps: int) -> float:
    """Training steps per second of the nuclei U-Net on ``device`` (batch 8 x 192 px, AMP on CUDA)."""
    import torch

    from napari_medseg.models.unet import UNet
    from napari_medseg.training.losses import instance_loss

    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=16, depth=4).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x = torch.rand(8, 1, 192, 192, device=device)
    fg = (x[:, 0] > 0.5).float()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        opt.zero_grad(set_to_none=True)
        with amp:
            out = net(x)
        loss, _ = instance_loss(out.float(), fg, fg)
        loss.backward()
        opt.step()

    step()  # warm-up (cuDNN autotuning, allocator)
    t = timed(lambda: [step() for _ in range(steps)])
    return steps / t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=2048, help="side of the inference image (pixels)")
    ap.add_argument("--steps", type=int, default=20, help="training steps timed on the device")
    ap.add_argument("--cpu-steps", type=int, default=3, help="training steps timed on the CPU")
    args = ap.parse_args(argv)
    import tifffile
    import torch

    import napari_medseg as ms
    from napari_medseg.analysis.metrics import average_precision
    from napari_medseg.io.samples import NUCLEI_IMAGE, sample_path

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu (dry run)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (dry run)"
    print(f"device: {name}; torch {torch.__version__}; CUDA {torch.version.cuda}; CPU threads {torch.get_num_threads()}")
    image = tifffile.imread(sample_path(NUCLEI_IMAGE))

    lab32, p32 = ms.segment(image, "nuclei", device=args.device, precision="float32", return_probabilities=True)
    precisions = ["bfloat16", "float16"] if args.device == "cuda" else ["bfloat16"]
    for prec in precisions:
        lab, p = ms.segment(image, "nuclei", device=args.device, precision=prec, return_probabilities=True)
        diff = np.abs(p.astype(np.float32) - p32.astype(np.float32))
        print(f"AMP {prec} vs float32 ({image.shape[0]}x{image.shape[1]} sample): max |dp| {diff.max():.4f}, "
              f"mean |dp| {diff.mean():.2e}, AP@0.5 of labels vs float32 {float(average_precision(lab32, lab, 0.5)):.4f}")

    big = np.tile(image, (args.size // image.shape[0] + 1, args.size // image.shape[1] + 1))[:args.size, :args.size]
    mpx = big.size / 1e6
    runs = [(args.device, "float32"), (args.device, "auto")] + ([("cpu", "auto")] if args.device != "cpu" else [])
    rates = {}
    for dev, prec in runs:
        ms.segment(big[:512, :512], "nuclei", device=dev, precision=prec)  # warm-up: load, cuDNN autotuning
        t = timed(lambda dev=dev, prec=prec: ms.segment(big, "nuclei", device=dev, precision=prec))
        rates[(dev, prec)] = mpx / t
        print(f"inference {dev} {prec}: {args.size}x{args.size} in {t:.2f} s = {mpx / t:.2f} MPx/s (end to end)")
    if args.device != "cpu":
        print(f"inference speed-up {args.device} auto vs cpu: {rates[(args.device, 'auto')] / rates[('cpu', 'auto')]:.1f}x")

    dev_rate = train_rate(args.device, args.steps)
    print(f"training {args.device}: {dev_rate:.2f} steps/s (batch 8 x 192 px)")
    if args.device != "cpu":
        cpu_rate = train_rate("cpu", args.cpu_steps)
        print(f"training cpu: {cpu_rate:.2f} steps/s; {args.device} / cpu = {dev_rate / cpu_rate:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
