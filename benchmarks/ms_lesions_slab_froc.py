"""FROC / CPM of MS lesion models on held-out slabs of a training case, with and without test-time flips.

Chooses the engine's test-time flips for the ``ms-lesions`` card without looking at the unseen case: the
candidates (components above p = 0.25, as in :mod:`bench_ms_lesions`) of each held-out slab (a separate little
volume, lesions cut at its ends) are ranked by their score and pooled into one FROC (false positives per slab).

Run::

    python benchmarks/ms_lesions_slab_froc.py --model /tmp/ms-lesions-loo /tmp/ms25d/loo \\
        --slabs patient19:62-69,patient19:112-119 --cache /tmp/ms25d/cache

``--cache`` is :func:`bench_ms_lesions.predict`'s (probabilities kept per model, case and flips).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ms_lesions import DATASETS, predict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", nargs="+", required=True, help="model names or folders")
    ap.add_argument("--slabs", required=True, metavar="CASE:Z0-Z1,...", help="held-out slabs of one case")
    ap.add_argument("--data", type=Path, default=DATASETS / "ms_lesions")
    ap.add_argument("--min-size", type=float, nargs="+", default=[0.0, 3.0], help="smallest candidates (mm³)")
    ap.add_argument("--candidate-threshold", type=float, default=0.25)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from skimage.measure import label as cc_label

    from napari_medseg.analysis.lesion_eval import froc, match_lesions
    from napari_medseg.analysis.lesions import lesions_from_probabilities

    torch.set_num_threads(args.threads)
    cases = {part.split(":")[0] for part in args.slabs.split(",")}
    if len(cases) != 1:
        ap.error("--slabs: slabs of one case")
    case = cases.pop()
    slabs = [tuple(int(v) for v in part.split(":")[1].split("-")) for part in args.slabs.split(",")]
    for model in args.model:
        m = Path(model) if Path(model).is_dir() else model
        for tta in (False, True):
            probs, geo, gold, _ = predict(m, args.data / case, tta, args.cache)
            for ms in args.min_size:
                per_slab = []
                for a, b in slabs:
                    p = np.asarray(probs[:, a:b + 1], np.float32)
                    cand = lesions_from_probabilities(p, geo, ["background", "ms_lesion"],
                                                      threshold=args.candidate_threshold, min_size=ms)
                    per_slab.append(match_lesions(cc_label(gold[a:b + 1], connectivity=3), cand.labels,
                                                  cand.scores))
                fr = froc(per_slab)
                print(f"{model} tta={tta} min_size_mm3={ms:g}: FROC {np.round(fr['sensitivity'], 3).tolist()} "
                      f"CPM {fr['cpm']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
