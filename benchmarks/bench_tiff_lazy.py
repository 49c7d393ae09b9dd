"""Benchmark: opening a ~4 GB TIFF stack with ``read_tiff`` must not read its pixels.

Writes (once) a uint16 multi-page TIFF of ``--gb`` GB (2048 x 2048 pages,
axes ZYX, 0.5 µm pixels in the resolution tags) into ``--folder`` (default: a
new temporary folder under /tmp), flushes it and asks the kernel to drop it
from the page cache (``posix_fadvise(DONTNEED)``) so that reads are cold, then
measures, with this process's ``/proc/self/io`` counters (``rchar``: bytes
returned by read calls, cached or not; ``read_bytes``: bytes fetched from the
block device):

* the lazy open ``read_tiff(path)``: time, bytes read, fraction of the file
  (after importing dask and zarr, whose one-off import time is printed apart);
* one plane (what napari shows first): time and bytes;
* the whole stack, streamed through dask (``data.sum()``), i.e. a lower bound
  for what an eager open would cost;

and prints one figure per line::

    file_bytes=4194304000
    open_s=0.004
    open_rchar=1179648
    open_fraction_of_file=0.000281
    ...

The file is deleted at the end unless ``--keep``.

Run: ``python benchmarks/bench_tiff_lazy.py [--gb 4] [--folder DIR] [--keep] [--no-full]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_medseg.io.tiff import read_tiff

PAGE = (2048, 2048)


def io_counters() -> dict[str, int]:
    """This process's I/O counters from /proc/self/io (Linux)."""
    out = {}
    with open("/proc/self/io") as fh:
        for line in fh:
            key, value = line.split(":")
            out[key.strip()] = int(value)
    return out


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def write_stack(path: Path, n_pages: int) -> float:
    """Write ``n_pages`` uint16 pages; return seconds taken."""
    ramp = np.arange(PAGE[0] * PAGE[1], dtype=np.uint16).reshape(PAGE)

    def pages():
        for k in range(n_pages):
            yield ramp + np.uint16(k)  # distinct planes; values wrap, never mind

    t0 = time.perf_counter()
    tifffile.imwrite(path, pages(), shape=(n_pages, *PAGE), dtype=np.uint16, photometric="minisblack",
                     metadata={"axes": "ZYX"}, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    return time.perf_counter() - t0


def measure(fn):
    before = io_counters()
    t0 = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t0
    after = io_counters()
    return result, dt, after["rchar"] - before["rchar"], after["read_bytes"] - before["read_bytes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=4.0, help="file size in GB (1e9 bytes), default 4")
    ap.add_argument("--folder", type=Path, default=None, help="where to write (default: new folder in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the file (and reuse it on the next run)")
    ap.add_argument("--no-full", action="store_true", help="skip streaming the whole stack")
    args = ap.parse_args()
    if not Path("/proc/self/io").exists():
        sys.exit("needs Linux /proc/self/io for the I/O counters")

    made_folder = args.folder is None
    folder = Path(tempfile.mkdtemp(prefix="bench_tiff_lazy_", dir="/tmp")) if made_folder else args.folder
    folder.mkdir(parents=True, exist_ok=True)
    n_pages = max(1, round(args.gb * 1e9 / (PAGE[0] * PAGE[1] * 2)))
    path = folder / f"stack_{n_pages}x{PAGE[0]}x{PAGE[1]}_u16.tif"
    try:
        if not path.exists():
            free = shutil.disk_usage(folder).free
            need = n_pages * PAGE[0] * PAGE[1] * 2
            if free < need * 1.2:
                sys.exit(f"not enough space in {folder}: {free / 1e9:.1f} GB free, {need / 1e9:.1f} GB needed")
            print(f"write_s={write_stack(path, n_pages):.2f}", flush=True)
        size = path.stat().st_size
        print(f"file_bytes={size}")
        drop_from_page_cache(path)

        # dask and zarr are imported on the first lazy open (napari has them
        # loaded already); time that once, apart from the open itself
        t0 = time.perf_counter()
        import dask.array  # noqa: F401
        import zarr  # noqa: F401

        print(f"import_dask_zarr_s={time.perf_counter() - t0:.2f}")
        vols, open_s, open_rchar, open_disk = measure(lambda: read_tiff(path))
        (vol,) = vols
        assert vol.axes == "ZYX" and vol.shape == (n_pages, *PAGE), (vol.axes, vol.shape)
        assert vol.metadata["lazy"] is True and vol.scale == (1.0, 0.5, 0.5)
        print(f"open_s={open_s:.4f}")
        print(f"open_rchar={open_rchar}")
        print(f"open_read_bytes={open_disk}")
        print(f"open_fraction_of_file={open_rchar / size:.6f}")
        print(f"dask_chunks={vol.data.npartitions}")

        mid = n_pages // 2
        plane, plane_s, plane_rchar, plane_disk = measure(lambda: vol.data[mid].compute())
        expected = (np.arange(PAGE[0] * PAGE[1], dtype=np.uint16).reshape(PAGE) + np.uint16(mid))
        assert np.array_equal(plane, expected), "plane content differs from what was written"
        print(f"plane_s={plane_s:.4f}")
        print(f"plane_rchar={plane_rchar}")
        print(f"plane_read_bytes={plane_disk}")

        if not args.no_full:
            drop_from_page_cache(path)
            _, full_s, full_rchar, full_disk = measure(lambda: vol.data.sum(dtype=np.uint64).compute())
            print(f"full_read_s={full_s:.2f}")
            print(f"full_rchar={full_rchar}")
            print(f"full_read_bytes={full_disk}")
            print(f"open_over_full_ratio={open_s / full_s:.6f}")
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
            if made_folder:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
