"""Benchmark: ``read_dicom(folder)`` against SimpleITK's ``ImageSeriesReader`` on a 300-slice CT.

The series is made in a temporary folder from the three real 512x512 slices in
``../shared/datasets/dicom_ct_seg/ct-3slice``: each written slice is a copy of
one of them with a new SOPInstanceUID, one shared new SeriesInstanceUID, an
ImagePositionPatient every 1.0 mm along the slice normal and a shuffled
InstanceNumber, under a random file name (so neither name nor instance number
gives the order).  Both readers are warmed up once, then timed ``--repeats``
times each, interleaved; the medians are printed, one figure per line::

    dicom_read_s=...
    sitk_read_s=...
    ratio=...
    dicom_cpu_s=...
    sitk_cpu_s=...

Run: ``python benchmarks/bench_dicom_read.py [--slices 300] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))
SOURCE = DATASETS / "dicom_ct_seg" / "ct-3slice"


def write_series(folder: Path, n_slices: int, seed: int = 0) -> None:
    """Write an ``n_slices`` CT series, 1.0 mm apart, into ``folder``."""
    sources = [pydicom.dcmread(p) for p in sorted(SOURCE.glob("*.dcm"))]
    if not sources:
        sys.exit(f"no DICOM files in {SOURCE}")
    rng = random.Random(seed)
    series_uid = generate_uid()
    numbers = list(range(1, n_slices + 1))
    rng.shuffle(numbers)
    first = sources[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    origin = np.asarray(first.ImagePositionPatient, dtype=float)
    for k in range(n_slices):
        ds = copy.deepcopy(sources[k % len(sources)])
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = numbers[k]
        pos = origin - k * 1.0 * normal
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.SliceLocation = f"{float(pos @ normal):.4f}"
        ds.save_as(folder / f"{uid}.dcm", enforce_file_format=True)


def time_ours(folder: Path) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``read_dicom(folder)``."""
    from napari_medseg.io.dicom import read_dicom

    c0, t0 = time.process_time(), time.perf_counter()
    vols = read_dicom(folder)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    assert len(vols) == 1 and vols[0].data.shape[0] > 0
    return dt, dc


def time_sitk(folder: Path) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of GetGDCMSeriesFileNames + Execute."""
    import SimpleITK as sitk

    c0, t0 = time.process_time(), time.perf_counter()
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    img = reader.Execute()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    assert img.GetSize()[2] == len(names)
    return dt, dc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_dicom_") as tmp:
        folder = Path(tmp)
        write_series(folder, args.slices)
        time_ours(folder)  # warm-up (page cache, imports)
        time_sitk(folder)
        ours, sitk_t = [], []
        for _ in range(args.repeats):
            ours.append(time_ours(folder))
            sitk_t.append(time_sitk(folder))
        a, b = statistics.median(t for t, _ in ours), statistics.median(t for t, _ in sitk_t)
        ac, bc = statistics.median(c for _, c in ours), statistics.median(c for _, c in sitk_t)
        print(f"slices={args.slices} repeats={args.repeats} shape=({args.slices}, 512, 512) cpus={os.cpu_count()}")
        print(f"dicom_read_s={a:.3f}")
        print(f"sitk_read_s={b:.3f}")
        print(f"ratio={a / b:.3f}")
        # CPU seconds (all threads) help to read the wall times on a busy machine
        print(f"dicom_cpu_s={ac:.3f}")
        print(f"sitk_cpu_s={bc:.3f}")


if __name__ == "__main__":
    main()
