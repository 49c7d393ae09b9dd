#!/usr/bin/env python
"""BioImage Model Zoo round trip of the shipped models: export, bioimageio.core on real images, import back.

    python benchmarks/bench_export.py [--datasets ../shared/datasets] [--models nuclei nuclei-he] [--images 5]

For each model: writes the zoo package (:func:`napari_medseg.zoo.package.export_bioimageio`,
validated by bioimageio.spec), runs ``bioimageio.core.test_model`` on it (status per weight
format), then predicts ``--images`` dsb2018/val images of the model's kind (centre crops of
at most 512 px, sides multiples of 8) with ``bioimageio.core.predict`` and each weight format
(the package's own preprocessing, weights and postprocessing) and prints the largest absolute
difference from napari-medseg's own output for them (card normalisation, torch network,
sigmoid); last, imports the package back (:func:`napari_medseg.zoo.importer.import_bioimageio`)
and prints the imported model's difference on the package's test tensors.  Needs the
``[export]`` extra.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--models", nargs="+", default=["nuclei", "nuclei-he"])
    ap.add_argument("--images", type=int, default=5)
    args = ap.parse_args(argv)
    root = Path(args.datasets) / "dsb2018" / "val"
    if not root.exists():
        print(f"dataset not found: {root}", file=sys.stderr)
        return 2
    import tifffile
    import torch
    from bioimageio.core import create_prediction_pipeline, predict, test_model
    from bioimageio.spec import load_description

    from napari_medseg.api import load_model
    from napari_medseg.zoo.importer import import_bioimageio
    from napari_medseg.zoo.package import export_bioimageio, reference_output

    torch.set_num_threads(1)
    rows = list(csv.DictReader((root / "index.csv").read_text().splitlines()))
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for name in args.models:
            net, card = load_model(name)
            t = time.perf_counter()
            pkg = export_bioimageio(net, card, Path(tmp) / f"{name}.zip")
            print(f"## {name}: package {pkg.stat().st_size / 1e6:.2f} MB written and validated in "
                  f"{time.perf_counter() - t:.1f} s")
            summary = test_model(str(pkg))
            repro = [f"{d.name.split('(')[-1].rstrip(')')} {d.status}" for d in summary.details
                     if d.name.startswith("Reproduce")]
            print(f"bioimageio.core test_model: {summary.status} ({', '.join(repro)})")
            descr = load_description(str(pkg), format_version="latest")
            images = []
            for r in rows:
                a = tifffile.imread(root / "images" / f"{r['id']}.tif")
                if card.in_channels == 3:
                    if r["modality"] != "histo":
                        continue
                    a = a[..., :3]
                elif a.ndim == 3:
                    continue
                sides = [min(512, s) // 8 * 8 for s in a.shape[:2]]
                y0, x0 = ((s - c) // 2 for s, c in zip(a.shape[:2], sides, strict=True))
                a = a[y0:y0 + sides[0], x0:x0 + sides[1]]
                x = (a[None, None] if a.ndim == 2 else np.moveaxis(a, -1, 0)[None]).astype(np.float32)
                images.append((r["id"], x))
                if len(images) >= args.images:
                    break
            for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
                pipeline = create_prediction_pipeline(descr, weight_format=fmt, devices=["cpu"])
                worst = 0.0
                for _, x in images:
                    out = predict(model=pipeline, inputs={"input": x})
                    got = out.members["output"].data.to_numpy()
                    worst = max(worst, float(np.max(np.abs(got - reference_output(net, card, x)))))
                print(f"bioimageio.core predict, {fmt}, {len(images)} dsb2018/val images (<= 512 px): "
                      f"max abs difference from napari-medseg {worst:.2e}")
            folder, diff = import_bioimageio(pkg, Path(tmp) / f"{name}-back", name=f"{name}-back")
            net2, _ = load_model(folder)
            same = all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values(),
                                                          strict=True))
            print(f"import back: test output reproduced to {diff:.2e}; weights identical: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
