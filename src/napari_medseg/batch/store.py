"""On-disk results of a whole-image job: a multiscale labels store and the per-block parts.

``OUT/<name>.zarr`` is a Zarr v3 group laid out as OME-NGFF 0.5 multiscale
labels: arrays ``0`` (the job's level), ``1`` (every second pixel), ``2``...
down to a level of at most :data:`SMALLEST_LEVEL` pixels a side, uint32,
chunked, compressed; chunks that hold only background are not stored.  The
group's ``ome.multiscales`` gives each level's pixel size (and unit), so a
viewer opens it lazily as a multiscale Labels layer (:func:`open_labels`).
Its ``medseg`` attribute holds the job's settings and, once finished,
``complete: true`` and a summary.

``OUT/.<name>.parts/`` holds what the blocks made before they are pasted:
per block a compressed crop of the objects it owns (``bNNNNN.bin``), their
table (``bNNNNN.csv``) and a marker (``bNNNNN.json``, written last) that lets
a re-run skip the block.  It is removed when the job completes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..geometry import Geometry
from ..io.atomic import atomic_write

#: The smallest pyramid level has at most this many pixels along its longest side.
SMALLEST_LEVEL = 1024
#: Chunk edge of the labels arrays.
DEFAULT_CHUNK = 1024
#: zarr.json key that holds napari-medseg's job record.
ATTR = "medseg"


def settings_key(settings: dict) -> str:
    """A short stable hash of a job's settings (JSON-serialisable), to tell whether a re-run may resume."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def level_shapes(shape: Sequence[int]) -> list[tuple[int, int]]:
    """Shapes of the labels pyramid: ``shape``, then halved (rounded up) until <= :data:`SMALLEST_LEVEL`."""
    shapes = [tuple(int(s) for s in shape)]
    while max(shapes[-1]) > SMALLEST_LEVEL:
        shapes.append(tuple(math.ceil(s / 2) for s in shapes[-1]))
    return shapes


def multiscales_metadata(name: str, n_levels: int, geometry: Geometry) -> dict:
    """OME-NGFF 0.5 ``multiscales`` for the labels pyramid (level k: every 2**k-th pixel of level 0)."""
    unit = {"µm": "micrometer", "mm": "millimeter", "nm": "nanometer", "cm": "centimeter", "m": "meter"}
    calibrated = geometry.calibrated
    axes = [{"name": a.lower(), "type": "space", **({"unit": unit[u]} if calibrated and u in unit else {})}
            for a, u in zip(geometry.axes, geometry.units, strict=True)]
    spacing = geometry.spacing if calibrated else np.ones(geometry.ndim)
    origin = geometry.origin if calibrated else np.zeros(geometry.ndim)
    datasets = [{"path": str(k), "coordinateTransformations": [
        {"type": "scale", "scale": [float(s) * 2**k for s in spacing]},
        {"type": "translation", "translation": [float(o) for o in origin]}]} for k in range(n_levels)]
    return {"version": "0.5", "multiscales": [{"name": name, "axes": axes, "datasets": datasets}],
            "image-label": {"version": "0.5"}}


def create_labels_store(path: Path, shape: Sequence[int], chunk: int, name: str, geometry: Geometry,
                        record: dict) -> None:
    """Create (or replace) ``path``: the empty labels pyramid and its metadata (``record`` under ``medseg``)."""
    import zarr

    if path.exists():
        shutil.rmtree(path)
    g = zarr.open_group(str(path), mode="w")
    shapes = level_shapes(shape)
    for k, s in enumerate(shapes):
        g.create_array(str(k), shape=s, chunks=tuple(min(chunk, v) for v in s), dtype="uint32", fill_value=0)
    g.attrs.update({"ome": multiscales_metadata(name, len(shapes), geometry), ATTR: record})


def read_record(path: Path) -> dict | None:
    """The ``medseg`` record of a labels store, or None when there is no readable store at ``path``."""
    f = Path(path) / "zarr.json"
    if not f.is_file():
        return None
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (meta.get("attributes") or {}).get(ATTR)


def update_record(path: Path, **entries: Any) -> None:
    """Add ``entries`` to the store's ``medseg`` record."""
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    rec = dict(g.attrs.get(ATTR) or {})
    rec.update(entries)
    g.attrs[ATTR] = rec


def labels_level(path: Path, level: int, mode: str = "r"):
    """Level ``level`` of a labels store as a zarr array."""
    import zarr

    return zarr.open_array(str(Path(path) / str(level)), mode=mode)


def open_labels(path: str | os.PathLike) -> tuple[list, Geometry, dict]:
    """Open a finished labels store lazily, for a napari multiscale Labels layer.

    Parameters
    ----------
    path : str or path-like
        An ``OUT/<name>.zarr`` folder that :mod:`napari_medseg.batch` wrote.

    Returns
    -------
    levels : list of zarr arrays
        ``(Y, X)`` uint32 labels, full resolution first (``add_labels(levels, multiscale=True)``).
    geometry : Geometry
        Level 0's ``YX`` geometry (pixel size, origin, unit).
    record : dict
        The job's ``medseg`` record (settings, ``complete``, summary).

    Raises
    ------
    ParameterError
        No labels store at ``path``, or the job that writes it has not finished.
    """
    import zarr

    p = Path(path)
    rec = read_record(p)
    if rec is None:
        raise ParameterError(f"{p} is not a labels store written by napari-medseg")
    if not rec.get("complete"):
        raise ParameterError(f"{p}: the job writing these labels has not finished (run it again to resume)")
    g = zarr.open_group(str(p), mode="r")
    ms = g.attrs["ome"]["multiscales"][0]
    levels = [g[d["path"]] for d in ms["datasets"]]
    geometry = Geometry.from_dict(rec["geometry"])
    return levels, geometry, rec


# ---------------------------------------------------------------- parts
def parts_folder(out: Path, name: str) -> Path:
    return Path(out) / f".{name}.parts"


def _part(parts: Path, i: int, suffix: str) -> Path:
    return Path(parts) / f"b{i:05d}{suffix}"


def write_block_part(parts: Path, i: int, crop: np.ndarray, box: Sequence[slice], n: int, key: str,
                     table: Any = None, *, off_tissue: int = 0) -> None:
    """Save block ``i``'s crop of owned objects (ids 1..n) and table, then its marker (with ``off_tissue``, the objects dropped on glass)."""
    from numcodecs import Blosc

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(crop))
    blob = Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE).encode(buf.getvalue())
    if n:
        atomic_write(_part(parts, i, ".bin"), lambda tmp: tmp.write_bytes(blob))
    if table is not None and n:
        atomic_write(_part(parts, i, ".csv"), lambda tmp: table.to_csv(tmp, index=False))
    marker = {"n": int(n), "off_tissue": int(off_tissue), "box": [[int(s.start), int(s.stop)] for s in box], "key": key}
    atomic_write(_part(parts, i, ".json"), lambda tmp: tmp.write_text(json.dumps(marker), encoding="utf-8"))


def read_block_marker(parts: Path, i: int, key: str) -> dict | None:
    """Block ``i``'s marker when it was finished with the settings ``key``, else None."""
    f = _part(parts, i, ".json")
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if m.get("key") == key else None


def read_block_crop(parts: Path, i: int, marker: dict) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Block ``i``'s crop (uint32, ids 1..n) and its box in image pixels."""
    from numcodecs import Blosc

    blob = _part(parts, i, ".bin").read_bytes()
    crop = np.load(io.BytesIO(Blosc().decode(blob)))
    return crop, tuple(slice(a, b) for a, b in marker["box"])


def read_block_table(parts: Path, i: int):
    """Block ``i``'s objects table (local ids), or None when it has none."""
    import pandas as pd

    f = _part(parts, i, ".csv")
    return pd.read_csv(f) if f.is_file() else None


def done_marker(parts: Path, what: str, key: str) -> Path:
    """The marker file of a finished paste or pyramid task ``what`` (e.g. ``"p00012"``, ``"l1_00003"``)."""
    return Path(parts) / f"{what}.{key}.done"


def mark_done(marker: Path) -> None:
    atomic_write(marker, lambda tmp: tmp.write_bytes(b""))

