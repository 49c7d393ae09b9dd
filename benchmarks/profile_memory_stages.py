"""Peak resident memory per stage of ``segment_iter`` on a zarr image (what :mod:`bench_memory` measures as a whole).

Wraps the engine's leaf stages (one tile batch, assembling a block's maps,
labelling it, stitching it, the final commit) and, around each call, resets
the process's peak RSS (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)
and reads ``VmHWM`` afterwards, so each stage's own peak is known; with
``--tracemalloc`` it also records the stage's peak of numpy/Python
allocations (tracemalloc sees numpy buffers, not torch's or Blosc's).  Same
input, model and settings as ``bench_memory.py``.  One line per stage::

    stage=instances calls=64 rss_peak_mb=... traced_peak_mb=...

Run: ``python benchmarks/profile_memory_stages.py --size 16384 [--tracemalloc]`` (Linux only).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _smaps_top(n: int = 12) -> list:
    """The ``n`` mappings with the most resident memory: (rss MB, size MB, name)."""
    rows, cur = [], None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            cur = [0.0, (hi - lo) / 2**20, parts[5] if len(parts) > 5 else "[anon]"]
            rows.append(cur)
        elif parts and parts[0] == "Rss:" and cur is not None:
            cur[0] = int(parts[1]) / 1024
    anon = sum(r[0] for r in rows if r[2] in ("[anon]", "[heap]"))
    return [round(anon, 1)] + [[round(r[0], 1), round(r[1], 1), r[2]] for r in sorted(rows, reverse=True)[:n]]


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(folder: Path, size: int, model: str, tile: int, traced: bool, timeline: bool,
          settings: list[str]) -> None:
    import numpy as np
    import torch  # noqa: F401
    import zarr

    import napari_medseg.inference.segment as seg
    import napari_medseg.inference.stitch as st
    from napari_medseg.progress import run

    for item in settings:  # engine constants, e.g. LARGE_IMAGE_PIXELS=0
        name, value = item.split("=", 1)
        v = json.loads(value)
        setattr(seg, name, v if v is None else type(getattr(seg, name))(v))
    stats: dict[str, dict] = {}
    active: dict[str, int] = {}
    samples: list = []
    stop = threading.Event()

    def sampler() -> None:  # RSS every ~2 ms with the stages running then
        while not stop.is_set():
            samples.append((_vm("VmRSS"), tuple(sorted(k for k, v in active.items() if v)),
                            tracemalloc.get_traced_memory()[0] / 2**20 if traced else 0.0))
            time.sleep(0.002)

    def wrap(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def inner(*a, **k):
            active[label] = active.get(label, 0) + 1
            before = _vm("VmRSS")
            if not timeline:
                _reset_peak()
            if traced:
                tracemalloc.reset_peak()
                t0 = tracemalloc.get_traced_memory()[0]
            try:
                return fn(*a, **k)
            finally:
                active[label] -= 1
                peak = _vm("VmHWM")
                s = stats.setdefault(label, {"calls": 0, "rss_peak_mb": 0.0, "rss_before_mb": 0.0,
                                             "traced_peak_mb": 0.0})
                s["calls"] += 1
                if peak > s["rss_peak_mb"]:
                    s["rss_peak_mb"], s["rss_before_mb"] = peak, before
                if traced:
                    s["traced_peak_mb"] = max(s["traced_peak_mb"], (tracemalloc.get_traced_memory()[1] - t0) / 2**20)

        setattr(owner, name, inner)

    img = zarr.open_array(str(folder / f"img{size}.zarr"), mode="r")
    out = zarr.open_array(str(folder / f"lab{size}.zarr"), mode="r+")
    run(seg.segment_iter(np.asarray(img[:256, :256]), model, tile_size=tile))
    base = _vm("VmHWM")
    smaps = {"baseline": _smaps_top()}
    orig_commit = st.LabelStore.commit

    def commit(self, *a, **k):
        smaps["before_commit"] = _smaps_top()
        seg.release_memory()
        smaps["before_commit_trimmed"] = _smaps_top()
        return orig_commit(self, *a, **k)

    st.LabelStore.commit = commit
    wrap(seg, "_run_tile_batch", "tile_batch")
    wrap(seg, "_assemble", "assemble")
    wrap(seg, "_instances", "instances")
    wrap(seg, "stitch_block", "stitch")
    wrap(st.LabelStore, "commit", "commit")
    if traced:
        tracemalloc.start()
    th = threading.Thread(target=sampler, daemon=True)
    if timeline:
        th.start()
    t_run = time.perf_counter()
    res = run(seg.segment_iter(img, model, out=out, tile_size=tile))
    t_run = time.perf_counter() - t_run
    stop.set()
    top = {}
    if samples:
        i = max(range(len(samples)), key=lambda j: samples[j][0])
        top = {"rss_mb": samples[i][0], "stages": samples[i][1], "traced_mb": samples[i][2],
               "idle_rss_mb_median": float(np.median([s[0] for s in samples if not s[1]] or [0])),
               "by_stages": {}}
        for r, st_, tr in samples:
            key = "+".join(st_) or "-"
            d = top["by_stages"].setdefault(key, [0, 0.0, 0.0])
            d[0] += 1
            d[1] = max(d[1], r)
            d[2] = max(d[2], tr)
    print(json.dumps({"size": size, "baseline_mb": base, "peak_mb": _vm("VmHWM"), "seconds": t_run,
                      "timings": {k: round(v, 1) for k, v in res.timings.items()}, "blocks": res.info["blocks"], "tiles": res.info["tiles"],
                      "cache_mb": res.info["max_cache_mb"], "cached_tiles": res.info["max_cached_tiles"],
                      "stages": stats, "timeline": top,
                      "smaps": smaps, "engine": seg.__file__}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs="+", default=[2048, 16384])
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--timeline", action="store_true",
                    help="sample RSS every ~2 ms with the stages running then (no per-stage peak resets)")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="set constants of napari_medseg.inference.segment first (JSON values)")
    ap.add_argument("--child", nargs=3, metavar=("FOLDER", "SIZE", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), args.child[2], args.tile_size, args.tracemalloc,
              args.timeline, args.set)
        return
    sys.path.insert(0, str(HERE))
    from bench_memory import make_input

    from napari_medseg.models.testing import make_random_model

    with tempfile.TemporaryDirectory(prefix="medseg-prof-mem-") as tmp:
        folder = Path(tmp)
        model = str(make_random_model(folder / "small-random", name="small-random", base_channels=4, depth=2))
        for size in args.size:
            make_input(folder, size, "zarr")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--tile-size", str(args.tile_size),
                   *(["--tracemalloc"] if args.tracemalloc else []),
                   *(["--timeline"] if args.timeline else []), *(["--set", *args.set] if args.set else []), "--child", str(folder), str(size), model]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
            if proc.returncode != 0:
                sys.exit(f"size {size} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"size={size} baseline_mb={r['baseline_mb']:.0f} peak_mb={r['peak_mb']:.0f} "
                  "(true peak with --timeline; else that of the last stage) "
                  f"seconds={r['seconds']:.0f} timings={r['timings']} tiles={r['tiles']} blocks={r['blocks']} "
                  f"cached_tiles={r['cached_tiles']} cache_mb={r['cache_mb']}")
            for name, s in r["stages"].items():
                print(f"  stage={name} calls={s['calls']} rss_peak_mb={s['rss_peak_mb']:.0f} "
                      f"(rss before it {s['rss_before_mb']:.0f}) traced_peak_mb={s['traced_peak_mb']:.1f}")
            print(f"  engine={r['engine']}")
            for k, v in r["smaps"].items():
                print(f"  smaps {k}: anonymous+heap rss {v[0]} MB; top mappings (rss, size MB, name) {v[1:]}")
            tl = r["timeline"]
            if tl:
                print(f"  timeline: max rss {tl['rss_mb']:.0f} MB while {tl['stages']} (traced {tl['traced_mb']:.0f} MB); "
                      f"median rss with no stage running {tl['idle_rss_mb_median']:.0f} MB")
                for k, (n, mx, tr) in sorted(tl["by_stages"].items(), key=lambda kv: -kv[1][1]):
                    print(f"    while {k}: {n} samples, max rss {mx:.0f} MB, max traced {tr:.0f} MB")


if __name__ == "__main__":
    main()
