"""Benchmark: this machine's convolution peak for the U-Net's own layer shapes, and the network's share of it.

Every convolution (and transposed convolution) the network runs on one
``--tile`` x ``--tile`` tile is listed with hooks (channel counts, kernel,
stride, the spatial size it meets at its level).  Each distinct layer shape
is then timed alone (``F.conv2d`` / ``F.conv_transpose2d`` with bias,
channels_last; float32, and bfloat16 when ``--bf16`` is not ``no``), and the
engine's network (the :class:`~napari_medseg.inference.predictor.Predictor`
a segmentation would build: folded, fused, channels_last, its precision)
runs on the same tile; rounds are interleaved and the fastest of
``--rounds`` is kept for every item, so load on the machine hits both sides.

The *peak* is the time the network's convolutions would take if each ran at
the best speed measured for its own shape, in the best dtype
(``peak_s = sum over layers of min(float32, bfloat16) time``); the
network's efficiency is ``peak_s / network_s`` (FLOP-weighted: 1.0 means
the network costs no more than its convolutions alone at their best).
One figure per line::

    layer <kind> <cin>-><cout> k<k> s<stride> @<H>x<W> gflop=... f32_gflops=... bf16_gflops=...
    conv_gflop=...            (multiply-adds x 2 of one tile's convolutions)
    peak_f32_s=... peak_bf16_s=... peak_s=... peak_gflops=...
    network_s=... network_gflops=... efficiency=...   (goal >= 0.6)
    eager_<precision>_s=...   (the folded channels_last network without fusion, for comparison)

Run: ``python benchmarks/bench_conv_peak.py [--tile 1024] [--threads 2] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path


def layer_shapes(net, in_channels: int, tile: int) -> list[tuple]:
    """``(kind, cin, cout, k, stride, padding, H, W)`` of every conv the folded network runs on a tile (in order)."""
    import torch
    from torch import nn

    shapes = []

    def hook(mod, inp, _out):
        kind = "convT" if isinstance(mod, nn.ConvTranspose2d) else "conv"
        shapes.append((kind, mod.in_channels, mod.out_channels, mod.kernel_size[0], mod.stride[0], mod.padding[0],
                       int(inp[0].shape[2]), int(inp[0].shape[3])))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.inference_mode():
            net(torch.zeros(1, in_channels, tile, tile))
    finally:
        for h in handles:
            h.remove()
    return shapes


def flops(shape: tuple) -> float:
    """Floating-point operations (2 x multiply-adds) of one layer on one tile."""
    kind, cin, cout, k, s, _p, h, w = shape
    if kind == "convT":
        return 2.0 * cin * cout * k * k * h * w
    return 2.0 * cin * cout * k * k * (h // s) * (w // s)


class LayerTimer:
    """One layer shape, alone, in a dtype, channels_last; ``__call__`` returns seconds of one pass."""

    def __init__(self, shape: tuple, dtype) -> None:
        import torch

        kind, cin, cout, k, s, p, h, w = shape
        g = torch.Generator().manual_seed(0)
        cl = torch.channels_last
        self.kind, self.s, self.p = kind, s, p
        self.x = torch.rand(1, cin, h, w, generator=g).to(dtype).contiguous(memory_format=cl)
        wshape = (cin, cout, k, k) if kind == "convT" else (cout, cin, k, k)
        self.w = (torch.rand(wshape, generator=g) - 0.5).to(dtype).contiguous(memory_format=cl)
        self.b = torch.rand(cout, generator=g).to(dtype)

    def __call__(self) -> float:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            t = time.perf_counter()
            if self.kind == "convT":
                F.conv_transpose2d(self.x, self.w, self.b, stride=self.s, padding=self.p)
            else:
                F.conv2d(self.x, self.w, self.b, stride=self.s, padding=self.p)
            return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the engine's choice)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="auto", help="the engine network's precision")
    ap.add_argument("--bf16", default="auto", choices=("auto", "yes", "no"),
                    help="time bfloat16 layers too (auto: when the CPU has native BF16)")
    ap.add_argument("--random-model", action="store_true")
    args = ap.parse_args()

    import torch
    from bench_segment import default_model

    from napari_medseg.inference.predictor import Predictor, cpu_has_native_bf16, fold_batchnorm
    from napari_medseg.models.cache import get_model
    from napari_medseg.models.device import configure_cpu_threads

    configure_cpu_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        path, desc = default_model(Path(tmp), random=args.random_model)
        cpu = torch.device("cpu")
        net, card = get_model(path, cpu)
        cin = int(card.architecture.get("in_channels", 1))
        folded = fold_batchnorm(net)
        shapes = layer_shapes(folded, cin, args.tile)
        distinct = sorted(set(shapes), key=shapes.index)
        use_bf16 = args.bf16 == "yes" or (args.bf16 == "auto" and cpu_has_native_bf16())
        dtypes = {"f32": torch.float32, **({"bf16": torch.bfloat16} if use_bf16 else {})}
        timers = {(sh, d): LayerTimer(sh, dt) for sh in distinct for d, dt in dtypes.items()}
        pred = Predictor(path, net, card, cpu, "", 1, 0, None, args.precision)
        x = torch.rand(1, cin, args.tile, args.tile).contiguous(memory_format=torch.channels_last)
        eager = {"float32": folded.to(memory_format=torch.channels_last)}
        if use_bf16:
            eager["bfloat16"] = copy.deepcopy(eager["float32"]).to(torch.bfloat16)

        def run_net() -> float:
            with torch.inference_mode():
                t = time.perf_counter()
                pred.network(x)
                return time.perf_counter() - t

        def run_eager(name) -> float:
            m = eager[name]
            xe = x.to(next(m.parameters()).dtype)
            with torch.inference_mode():
                t = time.perf_counter()
                m(xe)
                return time.perf_counter() - t

        items = {**{("layer", k): v for k, v in timers.items()}, ("net", "engine"): run_net,
                 **{("eager", n): (lambda n=n: run_eager(n)) for n in eager}}
        for fn in items.values():  # warm-up: oneDNN primitive creation
            fn()
        best = {k: float("inf") for k in items}
        for _ in range(args.rounds):
            for k, fn in items.items():
                best[k] = min(best[k], fn())

        print(f"model={desc}")
        print(f"tile={args.tile} threads={torch.get_num_threads()} engine_precision={pred.dtype_name} "
              f"fused={pred.fused} backend={pred.backend} bf16_layers={use_bf16} rounds={args.rounds}")
        total_flop, peak = 0.0, dict.fromkeys(dtypes, 0.0)
        peak_best = 0.0
        for sh in distinct:
            n = shapes.count(sh)
            f = flops(sh)
            total_flop += n * f
            ts = {d: best[("layer", (sh, d))] for d in dtypes}
            for d in dtypes:
                peak[d] += n * ts[d]
            peak_best += n * min(ts.values())
            rates = " ".join(f"{d}_gflops={f / ts[d] / 1e9:.1f}" for d in dtypes)
            kind, ci, co, k, s, _p, h, w = sh
            print(f"layer {kind} {ci}->{co} k{k} s{s} @{h}x{w} x{n} gflop={f / 1e9:.3f} {rates}")
        t_net = best[("net", "engine")]
        print(f"conv_gflop={total_flop / 1e9:.2f}")
        print(" ".join(f"peak_{d}_s={v:.4f}" for d, v in peak.items()) + f" peak_s={peak_best:.4f} "
              f"peak_gflops={total_flop / peak_best / 1e9:.1f}")
        print(f"network_s={t_net:.4f} network_gflops={total_flop / t_net / 1e9:.1f} "
              f"network_mpx_s={args.tile ** 2 / t_net / 1e6:.2f}")
        print(f"efficiency={peak_best / t_net:.3f}")
        for name in eager:
            t = best[("eager", name)]
            print(f"eager_{name}_s={t:.4f} eager_{name}_efficiency={peak_best / t:.3f}")


if __name__ == "__main__":
    main()
