"""Benchmark: ``napari_medseg.segment`` end to end, one commit against another, interleaved.

    python benchmarks/bench_ab_commits.py --commits d62de04 HEAD --size 4096 --tile-size 2048 1024 --rounds 3

Each commit is checked out once (``git worktree add --detach`` into a temporary
folder, removed at the end); every round runs each (commit, tile size) pair in
a fresh Python whose ``PYTHONPATH`` is that checkout's ``src``, in an order
that alternates between rounds, so a change in the machine's load hits both
sides alike.  The image is the synthetic 4096^2 nuclei image of
``bench_segment.py`` (the same array for every run, written once to a .npy
file), the model the shipped ``nuclei`` of each checkout.  One line per run::

    round=1 commit=d62de04 tile=2048 end_to_end_s=8.31 objects=16564 network_s=6.1 postprocess_s=1.4 write_s=0.6

then per (commit, tile) the median and the fastest, and the ratio of the
medians against the first commit.  Objects must be equal between commits
whenever a change is meant to keep results (the script says so when not).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
import torch
threads, tile, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
from napari_medseg.inference.segment import segment_iter
img = np.load(path)
list(segment_iter(img[:512, :512], "nuclei"))  # warm up: model load, oneDNN primitives
t = time.perf_counter()
gen = segment_iter(img, "nuclei", tile_size=tile)
try:
    while True:
        next(gen)
except StopIteration as stop:
    res = stop.value
dt = time.perf_counter() - t
tm = getattr(res, "timings", None) or {}
print(json.dumps({"end_to_end_s": dt, "objects": int(res.labels.max()),
                  **{f"{k}_s": round(float(v), 3) for k, v in tm.items() if k in ("network", "postprocess", "write")}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", nargs=2, default=["HEAD~1", "HEAD"], metavar="REV")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile-size", type=int, nargs="+", default=[2048])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "benchmarks"))
    import numpy as np
    from bench_segment import synthetic_nuclei

    with tempfile.TemporaryDirectory(prefix="medseg-ab-") as tmp:
        tmp = Path(tmp)
        img_path = tmp / "image.npy"
        np.save(img_path, synthetic_nuclei(args.size))
        trees = {}
        for rev in args.commits:
            sha = subprocess.check_output(["git", "-C", str(REPO), "rev-parse", "--short", rev], text=True).strip()
            wt = tmp / f"wt-{sha}"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(wt), sha], check=True,
                           capture_output=True)
            trees[rev] = (sha, wt)
        try:
            runs: dict[tuple[str, int], list[dict]] = {}
            pairs = [(rev, tile) for rev in args.commits for tile in args.tile_size]
            for r in range(args.rounds):
                for rev, tile in (pairs if r % 2 == 0 else pairs[::-1]):
                    sha, wt = trees[rev]
                    env = dict(os.environ, PYTHONPATH=str(wt / "src"), OMP_NUM_THREADS=str(args.threads))
                    out = subprocess.run([sys.executable, "-c", CHILD, str(args.threads), str(tile), str(img_path)],
                                         env=env, check=True, capture_output=True, text=True).stdout
                    rec = json.loads(out.strip().splitlines()[-1])
                    runs.setdefault((rev, tile), []).append(rec)
                    extra = " ".join(f"{k}={v}" for k, v in rec.items() if k not in ("end_to_end_s", "objects"))
                    print(f"round={r + 1} commit={sha} tile={tile} end_to_end_s={rec['end_to_end_s']:.2f} "
                          f"objects={rec['objects']} {extra}", flush=True)
        finally:
            for _, wt in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(wt)], check=False,
                               capture_output=True)
    first = args.commits[0]
    for tile in args.tile_size:
        base = statistics.median(x["end_to_end_s"] for x in runs[(first, tile)])
        for rev in args.commits:
            xs = [x["end_to_end_s"] for x in runs[(rev, tile)]]
            objs = sorted({x["objects"] for x in runs[(rev, tile)]})
            print(f"summary commit={trees[rev][0]} tile={tile} median_s={statistics.median(xs):.2f} "
                  f"fastest_s={min(xs):.2f} vs_{trees[first][0]}={base / statistics.median(xs):.3f}x objects={objs}")
        if len({x["objects"] for rev in args.commits for x in runs[(rev, tile)]}) > 1:
            print(f"note: object counts differ between commits at tile {tile}")


if __name__ == "__main__":
    main()
