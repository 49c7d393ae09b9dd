"""Benchmark: the network's inference backends side by side on one tile (CPU).

Each variant is the network as the engine would run it (a
:class:`~napari_medseg.inference.predictor.Predictor`), on the same
``--tile`` x ``--tile`` input, rounds interleaved, the fastest of ``--rounds``
kept:

* ``torch-eager-<precision>``: folded batch norms, channels_last, no fusion;
* ``torch-fused-<precision>``: the engine's torch path (oneDNN conv+ReLU and
  conv+add+ReLU, :mod:`napari_medseg.inference.fused`);
* ``onnxruntime-float32``: ONNX Runtime CPU (the ``[export]`` extra), with
  its one-off export time.

``torch.compile`` is not a candidate: its CPU backend (inductor) compiles
C++ at run time and needs a system C++ compiler, which a fresh
``pip install`` does not bring.  One figure per line::

    <variant>_s=...  <variant>_mpx_s=...  <variant>_vs_best=...
    onnx_export_s=...

Run: ``python benchmarks/bench_backends.py [--tile 1024] [--threads 2] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--random-model", action="store_true")
    args = ap.parse_args()

    import torch
    from bench_segment import default_model

    import napari_medseg.inference.predictor as P
    from napari_medseg.models.cache import get_model
    from napari_medseg.models.device import configure_cpu_threads

    configure_cpu_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path, desc = default_model(Path(tmp), random=args.random_model)
        net, card = get_model(path, cpu)
        cin = int(card.architecture.get("in_channels", 1))
        x = torch.rand(1, cin, args.tile, args.tile)
        precisions = ["float32", "bfloat16"] if P.cpu_has_native_bf16() else ["float32"]
        runners = {}
        for prec in precisions:
            runners[f"torch-fused-{prec}"] = P.Predictor(path, net, card, cpu, "", 1, 0, None, prec, backend="torch")
            eager = P.Predictor(path, net, card, cpu, "", 1, 0, None, prec, backend="torch")
            eager.net = P.inference_network(net, True, eager.dtype if eager.cast_weights else None, fuse=False)
            runners[f"torch-eager-{prec}"] = eager
        try:
            t = time.perf_counter()
            runners["onnxruntime-float32"] = P.Predictor(path, net, card, cpu, "", 1, 0, None, "float32",
                                                         backend="onnxruntime")
            print(f"onnx_export_s={time.perf_counter() - t:.1f}")
        except ImportError as e:
            print(f"onnxruntime: skipped ({e})")

        def once(pred) -> float:
            xi = x.contiguous(memory_format=torch.channels_last) if pred.channels_last else x
            with torch.inference_mode():
                t = time.perf_counter()
                pred.network(xi)
                return time.perf_counter() - t

        for pred in runners.values():
            once(pred)  # warm-up
        best = {k: float("inf") for k in runners}
        for _ in range(args.rounds):
            for k, pred in runners.items():
                best[k] = min(best[k], once(pred))
        print(f"model={desc}")
        print(f"tile={args.tile} threads={torch.get_num_threads()} rounds={args.rounds} "
              f"native_bf16={P.cpu_has_native_bf16()}")
        top = min(best.values())
        for k, v in sorted(best.items(), key=lambda kv: kv[1]):
            print(f"{k}_s={v:.4f} {k}_mpx_s={args.tile ** 2 / v / 1e6:.3f} {k}_vs_best={v / top:.2f}")


if __name__ == "__main__":
    main()
