"""TIFF, OME-TIFF and ImageJ hyperstacks in; label images with pixel size out.

Reading
-------
:func:`read_tiff` turns every image series of a TIFF file into a
:class:`~napari_medseg.geometry.Volume` with

* axes in the canonical order ``T C Z Y X S`` (a subset of it), mapped from
  tifffile's series axes: ``S`` (samples) stays ``S`` for RGB(A) images and
  becomes ``C`` otherwise; unknown axes (``Q`` shaped, ``I`` page sequence and
  other codes) become ``Z`` (nearest to ``YX``), then ``T``; any further
  unknown axes are folded into ``T``;
* the physical pixel size in ``Volume.scale`` / ``Volume.units`` from, in this
  order: the ``scale``/``units`` napari-medseg writes into its own files, OME
  ``PhysicalSize*``/``TimeIncrement``, ImageJ ``unit``/``spacing``/
  ``finterval`` with the resolution tags, or plain resolution tags in
  cm/inch (converted to µm).  Without any of these, scale 1 and unit
  ``"pixel"``;
* pixels read into numpy when the decoded series is at most
  :data:`LAZY_THRESHOLD_BYTES`, otherwise a lazy :mod:`dask` array over
  tifffile's zarr store, so that opening reads only the file's structure;
  multi-resolution (pyramidal) series always open lazily as a list of dask
  arrays, full resolution first (a napari multiscale layer).

Writing
-------
:func:`write_labels_tiff` writes a label image with its pixel size, as an
ImageJ hyperstack when ImageJ can hold it (uint8/uint16, one length unit),
atomically (temporary file, then rename).

Nothing here imports napari, Qt or torch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError, ReaderError
from ..geometry import Volume
from ..geometry.units import METRES, SECONDS, convert, exact, normalize_unit
from .atomic import atomic_write

__all__ = ["LAZY_THRESHOLD_BYTES", "normalize_unit", "read_tiff", "write_labels_tiff"]

#: Series whose decoded size (bytes) exceeds this open lazily as dask arrays.
#: Below it a single sequential read costs well under a second on an SSD and
#: gives numpy, which napari slices without per-chunk task overhead (and
#: computes exact contrast limits for) and which the analysis code takes as
#: is; above it, reading everything up front would take seconds to minutes and
#: a large share of a laptop's memory, while napari only ever shows a few
#: planes.  Files that already live in the page cache are not the common case.
LAZY_THRESHOLD_BYTES = 256 * 2**20

#: Largest decoded page (bytes) read as one zarr/dask chunk; bigger pages
#: (whole-slide images, huge mosaics) are read tile by tile / strip by strip.
_PAGE_CHUNK_BYTES = 64 * 2**20
#: Target edge length (pixels) of a dask chunk built from several TIFF tiles.
_TILE_GROUP_PX = 2048
#: Target size (bytes) of a dask chunk built from several strips of a huge page.
_STRIP_GROUP_BYTES = 32 * 2**20
#: Dots per inch that image software writes by default when it knows nothing
#: about the pixel size; they are display settings, not physical sizes.
_SCREEN_DPI = (72.0, 96.0)
#: Names of the associated (non-image) series of whole-slide formats.
_ASSOCIATED = {"thumbnail", "label", "macro", "map", "overview"}

#: Fragments of tifffile log messages that mean the IFD structure is broken.
_DAMAGE = ("invalid page offset", "invalid offset to page", "invalid circular reference",
           "corrupted tag list", "suspicious number of tags", "invalid next page",
           "corrupted file", "missing data offset", "missing ByteCounts", "missing data ByteCounts",
           "incorrect StripOffsets", "incorrect StripByteCounts", "OME series", "is not a valid PHOTOMETRIC",
           "is not a valid PLANARCONFIG", "is not a valid SAMPLEFORMAT", "is not a known COMPRESSION",
           "ImageJ series", "shaped series")
#: Largest ratio of decoded to stored bytes believed for compressed TIFF data (deflate tops out at about
#: 1032, LZW at a few thousand) before any lazy array is made.
_MAX_RATIO = 5000
#: Decoded sizes up to this are believed whatever the file size.
_SMALL_BYTES = 64 * 2**20
#: Lossless byte-stream codecs whose decoded length must equal what the tags declare.
_BYTE_CODECS = (5, 8, 32773, 32946, 34925, 50000)

_CANONICAL = "TCZYXS"
_log = logging.getLogger(__name__)

# ImageJ spells units in ASCII; "micron" is what ImageJ itself writes for µm.
_IMAGEJ_UNIT = {"µm": "micron", "Å": "angstrom"}


# --------------------------------------------------------------------------- reading


def read_tiff(path: str | os.PathLike, *, lazy: bool | None = None) -> list[Volume]:
    """Read a TIFF, OME-TIFF or ImageJ hyperstack into volumes with pixel sizes.

    Parameters
    ----------
    path : str or path-like
        TIFF file.  It is opened read-only and never modified.
    lazy : bool, optional
        Force (True) or forbid (False) lazy dask arrays.  By default a series
        opens lazily when its decoded size exceeds :data:`LAZY_THRESHOLD_BYTES`.
        Pyramidal series are always lazy.

    Returns
    -------
    list of Volume
        One per image series (associated thumbnail/label/macro images of
        whole-slide files are left out and named in ``metadata``).  ``axes`` is
        a subsequence of ``"TCZYXS"``; ``data`` is a numpy array, a dask array
        (lazy) or a list of dask arrays (pyramid, full resolution first), dtype
        as stored.  ``scale`` covers the axes other than C and S, in ``units``
        (``"µm"`` for lengths whenever the file says so, ``"s"`` for time,
        ``"pixel"`` when unknown).  ``metadata`` holds ``source_path``,
        ``file_axes``, ``series_index``, ``pixel_size_source``, ``lazy`` and
        the OME XML (``ome_xml``) or ImageJ dictionary (``imagej``).

    Raises
    ------
    ReaderError
        The path is missing, not a TIFF, truncated, damaged, or holds no image;
        the message names the file and the problem.

    Examples
    --------
    >>> vols = read_tiff("cells.ome.tif")            # doctest: +SKIP
    >>> vols[0].axes, vols[0].scale, vols[0].units     # doctest: +SKIP
    ('CZYX', (2.0, 0.5, 0.5), ('µm', 'µm', 'µm'))
    """
    import tifffile

    p = Path(path)
    if not p.exists():
        raise ReaderError(f"{p}: file does not exist")
    if not p.is_file():
        raise ReaderError(f"{p}: is a folder, not a TIFF file")
    size = p.stat().st_size
    if size == 0:
        raise ReaderError(f"{p}: the file is empty (0 bytes), not a TIFF image")

    with _capture_tifffile_warnings() as warned:
        try:
            tf = tifffile.TiffFile(p)
        except tifffile.TiffFileError as exc:
            raise ReaderError(f"{p}: not a TIFF file or its header is damaged ({exc})") from exc
        except MemoryError:
            raise
        except Exception as exc:  # struct.error, IndexError... from a damaged file
            raise ReaderError(f"{p}: not a readable TIFF file, the file structure is damaged "
                              f"({type(exc).__name__}: {exc})") from exc
        try:
            return _read_series(tf, p, size, lazy, warned)
        except (ReaderError, MemoryError):
            raise
        except Exception as exc:
            extra = f"; tifffile said: {'; '.join(warned[:3])}" if warned else ""
            raise ReaderError(f"{p}: the TIFF file is damaged and cannot be read "
                              f"({type(exc).__name__}: {exc}){extra}") from exc
        finally:
            # lazy arrays re-open the file on demand (tifffile's FileCache) and
            # close it when they are garbage-collected; keep no handle open here.
            tf.close()


def _read_series(tf: Any, p: Path, size: int, lazy: bool | None, warned: list[str]) -> list[Volume]:
    _check_ome_sizes(tf, p)
    series = list(tf.series)
    if not series:
        why = f" ({'; '.join(warned[:3])})" if warned else ""
        raise ReaderError(f"{p}: the TIFF file holds no readable image; its page directory "
                          f"(IFD) is damaged or missing{why}")
    damage = [m for m in warned if any(k in m for k in _DAMAGE) or _essential_tag_error(m)]
    if damage:
        # tifffile skips what it cannot parse (e.g. the pages after a broken
        # IFD link) and goes on; a partial image must not pass for the file.
        raise ReaderError(f"{p}: the TIFF file is damaged or truncated, its page directory (IFD) "
                          f"cannot be followed: {damage[0]}")
    associated: list[str] = []
    if any(len(s.levels) > 1 for s in series) and len(series) > 1:
        keep = [s for s in series if (s.name or "").strip().lower() not in _ASSOCIATED]
        associated = [s.name for s in series if s not in keep]
        series = keep

    common = _file_metadata(tf, p)
    ome_images = _ome_images(common.get("ome_xml"))
    stem = p.name[: -len(".ome" + p.suffix)] if p.name.lower().endswith((".ome.tif", ".ome.tiff")) else p.stem
    volumes = []
    for index, s in enumerate(series):
        _check_extent(s, size, p)
        _check_declared(s, size, p)
        ome_px = _match_ome(ome_images, s, index, len(series))
        vol = _series_volume(tf, s, p, lazy, ome_px, common)
        vol.metadata["series_index"] = index
        if associated:
            vol.metadata["associated_images"] = associated
        if warned:
            vol.metadata["tiff_warnings"] = list(warned)
        vol.name = stem if len(series) == 1 else f"{stem} [{s.name or index}]"
        volumes.append(vol)
    return volumes


#: Tags whose loss changes how pixels are decoded or laid out (an unreadable one is damage, not a detail).
_ESSENTIAL_TAGS = {256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 338, 339, 330}


def _essential_tag_error(message: str) -> bool:
    import re

    m = re.search(r"TiffTag (\d+)", message)
    return bool(m) and int(m.group(1)) in _ESSENTIAL_TAGS


def _file_metadata(tf: Any, p: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {"source_path": str(p)}
    if tf.is_ome and tf.ome_metadata:
        meta["ome_xml"] = tf.ome_metadata
    if tf.is_imagej and tf.imagej_metadata:
        meta["imagej"] = dict(tf.imagej_metadata)
    if tf.is_shaped and tf.shaped_metadata:
        meta["shaped"] = dict(tf.shaped_metadata[0])
    return meta


def _series_volume(tf: Any, s: Any, p: Path, lazy: bool | None, ome_px: ET.Element | None,
                   common: dict[str, Any]) -> Volume:
    keyframe = s.keyframe
    rgb = keyframe.photometric in (2, 6) and "S" in s.axes and s.shape[s.axes.index("S")] in (3, 4)
    perm, shape, axes, folded = _plan_axes(s.axes, s.shape, rgb)

    pyramid = len(s.levels) > 1
    if pyramid:
        # levels share the axes of level 0 and differ in Y/X (and possibly Z) sizes
        data: Any = [_reshape(_lazy_level(s, i, p), perm, _plan_axes(lvl.axes, lvl.shape, rgb)[1])
                     for i, lvl in enumerate(s.levels)]
        is_lazy = True
    else:
        is_lazy = lazy if lazy is not None else s.nbytes > LAZY_THRESHOLD_BYTES
        raw = _lazy_level(s, 0, p) if is_lazy else s.asarray()
        data = _reshape(raw, perm, shape)

    meta = dict(common)
    meta.update(file_axes=s.axes, lazy=is_lazy, tiff_kind=s.kind, tiff_series_name=s.name)
    scale, units, source = _pixel_size(tf, keyframe, axes, folded, ome_px, common)
    meta["pixel_size_source"] = source
    channel_names = None
    if ome_px is not None and "C" in axes:
        names = [c.get("Name") for c in ome_px.findall("{*}Channel")]
        if len(names) == shape[axes.index("C")] and all(names):
            channel_names = [str(n) for n in names]
    return Volume(data=data, axes=axes, scale=scale, units=units, channel_names=channel_names,
                  metadata=meta)


class _Guarded:
    """An array-like over tifffile's zarr view whose reads raise :class:`ReaderError` naming the file.

    Lazy (dask) arrays decode tiles when napari draws them, long after :func:`read_tiff` returned;
    a corrupt tile then raised imagecodecs' or tifffile's own exception types in the viewer.
    """

    def __init__(self, z: Any, path: str, level: int) -> None:
        self._z = z
        self.shape = tuple(z.shape)
        self.dtype = np.dtype(z.dtype)
        self.ndim = len(self.shape)
        self._where = f"{path}" + (f" (resolution level {level})" if level else "")

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self._z[key])
        except MemoryError:
            raise
        except Exception as exc:  # imagecodecs.*Error, tifffile errors, ValueError for unknown codecs...
            raise ReaderError(f"{self._where}: cannot decode TIFF image data at {_region(key)}: the file is "
                              f"damaged ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _region(key: Any) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for k in parts:
        if isinstance(k, slice):
            out.append(f"{k.start or 0}:{'' if k.stop is None else k.stop}")
        else:
            out.append(str(k))
    return "[" + ", ".join(out) + "]"


def _plan_axes(file_axes: str, shape: Sequence[int],
               rgb: bool) -> tuple[list[int], tuple[int, ...], str, set[str]]:
    """How to turn tifffile's series axes into canonical ``TCZYXS`` axes.

    Returns the transpose permutation, the shape after folding, the new axes
    string and the set of axes made of several file axes (their scale is 1).
    """
    targets: list[str] = []
    for a in file_axes:
        if a in "TCZYX":
            targets.append(a)
        elif a == "S":
            targets.append("S" if rgb else "C")
        else:
            targets.append("?")
    present = set(targets)
    free = [a for a in ("Z", "T") if a not in present]
    for i in range(len(targets) - 1, -1, -1):  # nearest to YX first
        if targets[i] == "?":
            targets[i] = free.pop(0) if free else "T"
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(targets):
        groups.setdefault(a, []).append(i)
    axes = "".join(a for a in _CANONICAL if a in groups)
    perm = [i for a in axes for i in groups[a]]
    new_shape = tuple(int(np.prod([shape[i] for i in groups[a]])) for a in axes)
    folded = {a for a in axes if len(groups[a]) > 1}
    return perm, new_shape, axes, folded


def _reshape(arr: Any, perm: list[int], shape: tuple[int, ...]) -> Any:
    if perm != sorted(perm):
        arr = arr.transpose(perm)
    if tuple(arr.shape) != shape:
        arr = arr.reshape(shape)
    return arr


def _lazy_level(s: Any, level: int, path: Path | str = "TIFF file") -> Any:
    """Dask array over one resolution level, backed by tifffile's zarr store (no pixel read)."""
    import dask.array as da
    import zarr

    lvl = s.levels[level]
    key = lvl.keyframe
    whole_pages = not key.is_tiled and key.nbytes <= _PAGE_CHUNK_BYTES
    store = s.aszarr(level=level, chunkmode=2 if whole_pages else 0)
    z = zarr.open_array(store, mode="r")
    if tuple(z.shape) != tuple(lvl.shape):
        raise ReaderError(f"zarr view of level {level} has shape {z.shape}, expected {lvl.shape}")
    chunks = list(z.chunks)
    if not whole_pages:
        # group tiles (strips) into dask chunks of about _TILE_GROUP_PX pixels a
        # side (_STRIP_GROUP_BYTES) so that a huge plane does not become hundreds
        # of thousands of dask tasks; aligned to the TIFF chunks, read once each
        yi, xi = lvl.axes.index("Y"), lvl.axes.index("X")
        if key.is_tiled:
            for i in (yi, xi):
                chunks[i] = min(lvl.shape[i], max(1, _TILE_GROUP_PX // chunks[i]) * chunks[i])
        else:
            strip_bytes = max(1, math.prod(chunks) * np.dtype(z.dtype).itemsize)
            chunks[yi] = min(lvl.shape[yi], max(1, _STRIP_GROUP_BYTES // strip_bytes) * chunks[yi])
    import uuid

    return da.from_array(_Guarded(z, str(path), level), chunks=tuple(chunks), asarray=False, fancy=False,
                         name=f"tiff-{uuid.uuid4().hex}", meta=np.empty((0,) * len(chunks), dtype=z.dtype))


def _check_extent(s: Any, size: int, p: Path) -> None:
    """Fail early (before any lazy read) when image data lies beyond the end of the file."""
    for level in s.levels:
        if level.dataoffset is not None and level.keyframe.compression == 1:
            end = level.dataoffset + level.nbytes
        else:
            end = 0
            pages = level.pages
            ends = (pages[0], pages[len(pages) - 1]) if len(pages) else ()
            for page in dict.fromkeys(p_ for p_ in ends if p_ is not None):  # one page: checked once
                n = min(len(page.dataoffsets), len(page.databytecounts))
                off = np.asarray(page.dataoffsets[:n], np.int64)
                cnt = np.asarray(page.databytecounts[:n], np.int64)
                if n and (off != 0).any():
                    end = max(end, int((off + cnt)[off != 0].max()))
        if end > size:
            raise ReaderError(f"{p}: the TIFF file is truncated: its image data runs to byte {end:,} "
                              f"but the file has only {size:,} bytes (incomplete copy or download?)")


def _check_declared(s: Any, size: int, p: Path) -> None:
    """Refuse tags that declare more image than the bytes present can hold, before any pixel is read.

    Checks the first and last page of every level: no strip/tile without data (tifffile would fill
    it with zeros), a decoded size within :data:`_MAX_RATIO` of the stored bytes, and for lossless
    byte codecs (deflate, LZW, PackBits, zstd, LZMA) the first strip/tile decodes to exactly the size
    the tags declare (a wrong ImageWidth/BitsPerSample/RowsPerStrip would otherwise be cut to fit).
    """
    for li, level in enumerate(s.levels):
        pages = level.pages
        if not len(pages):
            continue
        key = level.keyframe
        where = f"{p}: " + (f"resolution level {li}: " if li else "")
        for page in dict.fromkeys((pages[0], pages[len(pages) - 1])):  # a one-page level is checked once
            if page is None:
                raise ReaderError(f"{where}the TIFF metadata declare more image planes than the file holds pages")
            offsets, counts = page.dataoffsets, page.databytecounts
            n = min(len(offsets), len(counts))
            empty = (np.asarray(offsets[:n], np.int64) == 0) | (np.asarray(counts[:n], np.int64) == 0)
            if not offsets or empty.any():
                bad = int(np.argmax(empty)) if empty.any() else 0
                raise ReaderError(f"{where}strip/tile {bad} of page {page.index} has no data (offset or byte count "
                                  "0): the file is damaged or incomplete (missing data would read as zeros)")
        stored = sum(int(c) for c in key.databytecounts)
        page_bytes = int(key.nbytes)
        compression = int(key.compression)
        if compression == 1:
            if stored < page_bytes:
                raise ReaderError(f"{where}the TIFF tags declare {page_bytes:,} bytes per page "
                                  f"({key.imagewidth} x {key.imagelength} pixels, {key.bitspersample} bits x "
                                  f"{key.samplesperpixel} samples) but the strips/tiles hold {stored:,}: the tags are "
                                  "wrong or the file is damaged")
        elif page_bytes > max(_SMALL_BYTES, _MAX_RATIO * stored):
            raise ReaderError(f"{where}the TIFF tags declare {page_bytes:,} bytes per page "
                              f"({key.imagewidth} x {key.imagelength} pixels) from only {stored:,} compressed bytes: "
                              "the tags are wrong or the file is damaged")
        if compression in _BYTE_CODECS and key.dataoffsets:
            _check_first_segment(key, p, where)


def _check_first_segment(page: Any, p: Path, where: str) -> None:
    """The first strip/tile of ``page`` decodes to the byte count its tags imply (lossless byte codecs)."""
    import tifffile

    if page.is_tiled:
        rows, width, depth = page.tilelength, page.tilewidth, max(1, page.tiledepth)
    else:
        rows, width, depth = min(page.rowsperstrip or page.imagelength, page.imagelength), page.imagewidth, 1
    samples = page.samplesperpixel if page.planarconfig == 1 else 1
    row_bytes = -(-width * samples * page.bitspersample // 8)
    expected = row_bytes * rows * depth
    count = int(page.databytecounts[0])
    if count > 64 * 2**20:
        return  # one huge strip: decoding it just to check would cost what reading costs
    fh = page.parent.filehandle
    with fh.lock:
        fh.seek(page.dataoffsets[0])
        data = fh.read(count)
    try:
        decoded = tifffile.TIFF.DECOMPRESSORS[int(page.compression)](data, out=expected + 1)
    except Exception as exc:  # imagecodecs errors: corrupt stream, or more data than the tags allow
        raise ReaderError(f"{where}the first strip/tile cannot be decoded to the {expected:,} bytes its tags declare "
                          f"({width} x {rows} pixels, {page.bitspersample} bits x {samples} samples): the tags are "
                          f"wrong or the file is damaged ({type(exc).__name__}: {str(exc)[:120]})") from exc
    n = len(decoded) if isinstance(decoded, (bytes, bytearray)) else int(np.asarray(decoded).nbytes)
    if n != expected:
        raise ReaderError(f"{where}the first strip/tile decodes to {n:,} bytes but its tags declare {expected:,} "
                          f"({width} x {rows} pixels, {page.bitspersample} bits x {samples} samples): the tags are "
                          "wrong or the file is damaged")


# ---- OME


def _check_ome_sizes(tf: Any, p: Path) -> None:
    """Refuse OME metadata that declare more planes or larger planes than the file holds, before tifffile
    builds its series (an OME ``SizeX="1000000000"`` made it list millions of missing frames)."""
    try:
        first = tf.pages.first if hasattr(tf.pages, "first") else tf.pages[0]
        desc = first.description if first is not None else ""
    except Exception:  # noqa: BLE001 - a broken first page is reported by the series code
        return
    if not desc or "<OME" not in desc[:4096]:
        return
    try:
        root = ET.fromstring(desc)
    except ET.ParseError as exc:
        raise ReaderError(f"{p}: the OME-XML metadata are damaged and cannot be parsed ({exc}); the axes and "
                          "pixel sizes would be guessed") from exc
    images = root.findall("{*}Image")
    planes = 0
    width = height = 0
    for img in images:
        px = img.find("{*}Pixels")
        if px is None:
            continue
        if any(td.find("{*}UUID") is not None and td.find("{*}UUID").get("FileName") not in (None, "", p.name)
               for td in px.findall("{*}TiffData")):
            return  # planes in other files (multi-file OME): tifffile's own checks apply
        try:
            sx, sy, sz, sc, st = (int(px.get(k, "1")) for k in ("SizeX", "SizeY", "SizeZ", "SizeC", "SizeT"))
        except ValueError as exc:
            raise ReaderError(f"{p}: the OME-XML metadata give a non-integer image size ({exc})") from exc
        if min(sx, sy, sz, sc, st) < 1:
            raise ReaderError(f"{p}: the OME-XML metadata give an empty image size (SizeX={sx} SizeY={sy} "
                              f"SizeZ={sz} SizeC={sc} SizeT={st})")
        spp = max(1, int(first.samplesperpixel)) if sc % max(1, int(first.samplesperpixel)) == 0 else 1
        planes += sz * (sc // spp) * st
        width, height = max(width, sx), max(height, sy)
    if not planes:
        return
    n_pages = len(tf.pages)
    if planes > n_pages:
        raise ReaderError(f"{p}: the OME-XML metadata declare {planes:,} image planes but the file holds only "
                          f"{n_pages} pages (missing planes would read as zeros): the metadata or the file are "
                          "damaged")
    sizes = [(int(pg.imagewidth), int(pg.imagelength)) for pg in tf.pages[: min(n_pages, 64)] if pg is not None
             and hasattr(pg, "imagewidth")]
    if sizes and (width > max(w for w, _ in sizes) or height > max(h for _, h in sizes)):
        raise ReaderError(f"{p}: the OME-XML metadata declare {width} x {height} pixel planes but the file's pages "
                          f"are at most {max(w for w, _ in sizes)} x {max(h for _, h in sizes)}: the metadata are "
                          "damaged")


# ---- OME (pixel sizes)

def _ome_images(xml: str | None) -> list[ET.Element]:
    if not xml:
        return []
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        _log.warning("OME XML cannot be parsed; pixel sizes from OME are ignored")
        return []
    return list(root.findall("{*}Image"))


def _match_ome(images: list[ET.Element], s: Any, index: int, n_series: int) -> ET.Element | None:
    """The OME ``Pixels`` element of series ``s``: by position when counts match, else by name."""
    if not images:
        return None
    chosen = None
    if len(images) == n_series:
        chosen = images[index]
    else:
        named = [img for img in images if img.get("Name") == s.name]
        if len(named) == 1:
            chosen = named[0]
    return None if chosen is None else chosen.find("{*}Pixels")


# ---- pixel size

def _pixel_size(tf: Any, page: Any, axes: str, folded: set[str], ome_px: ET.Element | None,
                common: dict[str, Any]) -> tuple[tuple[float, ...], tuple[str, ...], str]:
    """Scale and units of the world axes (``axes`` without C, S)."""
    world = axes.replace("C", "").replace("S", "")
    found: dict[str, tuple[float, str]] = {}
    source = "none"

    shaped = common.get("shaped") or {}
    if isinstance(shaped.get("scale"), list) and isinstance(shaped.get("units"), list) \
            and isinstance(shaped.get("axes"), str):
        # written by write_labels_tiff for dtypes ImageJ cannot hold
        for a, v, u in zip(shaped["axes"], shaped["scale"], shaped["units"], strict=False):
            found[a] = (float(v), normalize_unit(u))
        source = "napari-medseg"
    elif ome_px is not None:
        for a, attr, default in (("X", "PhysicalSizeX", "µm"), ("Y", "PhysicalSizeY", "µm"),
                                 ("Z", "PhysicalSizeZ", "µm"), ("T", "TimeIncrement", "s")):
            v = _size(ome_px.get(attr), f"OME {attr}", common)
            if v is not None:
                found[a] = (v, normalize_unit(ome_px.get(attr + "Unit", default)))
        source = "ome" if found else "none"
    elif tf.is_imagej:
        ij = common.get("imagej") or {}
        unit = ij.get("unit")
        if unit is not None:
            xy = _resolution_sizes(page)
            if xy is not None:
                found["X"] = (xy[0], normalize_unit(unit))
                found["Y"] = (xy[1], normalize_unit(ij.get("yunit", unit)))
            sp = _size(ij.get("spacing"), "ImageJ spacing", common)
            if sp is not None:
                found["Z"] = (sp, normalize_unit(ij.get("zunit", unit)))
        fps = _size(ij.get("fps"), "ImageJ fps", common)
        fi = _size(ij.get("finterval"), "ImageJ finterval", common) or (1 / fps if fps else None)
        if fi is not None:
            found["T"] = (fi, normalize_unit(ij.get("tunit", "s")))
        source = "imagej" if found else "none"
    if not found.keys() & {"X", "Y"} and source != "napari-medseg":
        vendor = _slide_pixel_size_um(tf, page)
        if vendor is not None:
            (found["X"], found["Y"]), source = ((vendor[0], "µm"), (vendor[1], "µm")), vendor[2]
    if not found.keys() & {"X", "Y"} and source != "napari-medseg":
        xy_um = _plain_resolution_um(page)
        if xy_um is not None:
            found["X"], found["Y"] = (xy_um[0], "µm"), (xy_um[1], "µm")
            source = "resolution_tags" if source == "none" else source

    # only one of X/Y given (OME allows it): square pixels
    if "X" in found and "Y" not in found:
        found["Y"] = found["X"]
    elif "Y" in found and "X" not in found:
        found["X"] = found["Y"]
    # one length unit for Z/Y/X (napari compares scale numbers across axes)
    ref = found.get("X", found.get("Y", (None, None)))[1]
    if ref in METRES:
        for a in "ZY":
            if a in found and found[a][1] in METRES and found[a][1] != ref:
                found[a] = (convert(found[a][0], found[a][1], ref), ref)
    scale, units = [], []
    for a in world:
        if a in found and a not in folded:
            scale.append(found[a][0])
            units.append(found[a][1])
        else:
            scale.append(1.0)
            units.append("pixel")
    return tuple(scale), tuple(units), source


def _slide_pixel_size_um(tf: Any, page: Any) -> tuple[float, float, str] | None:
    """µm per pixel ``(x, y, source)`` of a whole-slide file's level-0 page from its vendor metadata, or None.

    Aperio SVS: ``MPP`` in the ImageDescription (square pixels, ``"svs_mpp"``).
    Leica SCN: the XML's ``view`` extent (nm) over the matching image's
    full-resolution ``dimension`` (``"scn_xml"``).  Hamamatsu NDPI and most
    other slides carry resolution tags, read by the caller.
    """
    from tifffile.tifffile import svs_description_metadata

    try:
        if tf.is_svs:
            mpp = _positive(svs_description_metadata(tf.pages.first.description).get("MPP"))
            return None if mpp is None else (mpp, mpp, "svs_mpp")
        if tf.is_scn and tf.scn_metadata:
            return _scn_pixel_size_um(tf.scn_metadata, page)
    except (ValueError, TypeError, ET.ParseError):  # unparsable vendor text: fall back to the tags
        _log.debug("no vendor pixel size in %s", tf.filehandle.name, exc_info=True)
    return None


def _scn_pixel_size_um(xml: str, page: Any) -> tuple[float, float, str] | None:
    root = ET.fromstring(xml)
    h, w = int(page.imagelength), int(page.imagewidth)
    for image in root.iter():
        if not image.tag.endswith("image"):
            continue
        view = next((e for e in image if e.tag.endswith("view")), None)
        pixels = next((e for e in image if e.tag.endswith("pixels")), None)
        if view is None or pixels is None:
            continue
        for dim in pixels:
            if dim.tag.endswith("dimension") and int(dim.get("sizeX", -1)) == w and int(dim.get("sizeY", -1)) == h:
                vx, vy = _positive(view.get("sizeX")), _positive(view.get("sizeY"))
                if vx is None or vy is None:
                    return None
                # view sizes are in nm; this dimension is the page's resolution
                return vx / w / 1000.0, vy / h / 1000.0, "scn_xml"
    return None


def _size(value: Any, what: str, common: dict[str, Any]) -> float | None:
    """A physical size from the metadata: None when absent, ReaderError when present but not a positive number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    v = _positive(value)
    if v is None:
        raise ReaderError(f"{common.get('source_path', 'TIFF file')}: {what} {value!r} is not a positive number: "
                          "the pixel size metadata are damaged")
    return v


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _resolution_fractions(page: Any) -> tuple[Fraction, Fraction] | None:
    """Pixel size (unit per pixel) along X and Y from the resolution tags, exactly."""
    out = []
    for code in (282, 283):
        v = page.tags.valueof(code)
        if v is None:
            return None
        try:
            if isinstance(v, (tuple, list)):
                n, d = int(v[0]), int(v[1])
            else:
                n, d = Fraction(float(v)).as_integer_ratio()
        except (TypeError, ValueError, OverflowError):
            return None
        if n <= 0 or d <= 0:
            return None
        out.append(Fraction(d, n))
    return out[0], out[1]


def _resolution_sizes(page: Any) -> tuple[float, float] | None:
    fr = _resolution_fractions(page)
    return None if fr is None else (float(fr[0]), float(fr[1]))


def _plain_resolution_um(page: Any) -> tuple[float, float] | None:
    """µm per pixel from XResolution/YResolution in inch, cm, mm or µm; None if absent or meaningless."""
    fr = _resolution_fractions(page)
    if fr is None:
        return None
    unit = {2: "inch", 3: "cm", 4: "mm", 5: "µm"}.get(int(page.tags.valueof(296, default=2)))
    if unit is None:  # ResolutionUnit NONE: aspect ratio only, no physical size
        return None
    if unit == "inch" and all(float(1 / f) in _SCREEN_DPI for f in fr):
        return None  # 72/96 dpi: a screen default written by image software, not a pixel size
    return convert(fr[0], unit, "µm"), convert(fr[1], unit, "µm")


# ---- tifffile warnings

@contextlib.contextmanager
def _capture_tifffile_warnings() -> Iterator[list[str]]:
    """Collect tifffile's logged warnings (damaged IFDs...) to put them in error messages."""
    messages: list[str] = []
    thread = threading.get_ident()

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread:  # not another file being read at the same time
                messages.append(record.getMessage()[:200])

    logger = logging.getLogger("tifffile")
    handler = _Collect(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------- writing


def write_labels_tiff(path: str | os.PathLike, labels: Any, scale: Sequence[float] | None = None,
                      units: Sequence[Any] | str | None = None, axes: str | None = None) -> Path:
    """Write a label image with its pixel size as a TIFF that :func:`read_tiff` reads back exactly.

    uint8 and uint16 labels are written as an ImageJ hyperstack (axes in
    ImageJ's ``TZYX`` order, resolution tags + ImageJ ``unit``, ``spacing``
    and ``finterval``), which ImageJ/Fiji open with their calibration.  Labels
    that need uint32/uint64, or whose units ImageJ cannot express (e.g.
    Z in µm but X/Y in pixels), are written as a zlib-compressed TIFF whose
    JSON description holds ``axes``, ``scale`` and ``units``, with resolution
    tags in centimetres for other readers.

    Parameters
    ----------
    path : str or path-like
        Destination file (``.tif``).  Written to a temporary file in the same
        folder, then renamed over ``path``: a failure never leaves a partial
        file, and an existing file is replaced only once the new one is
        complete.
    labels : array-like of int or bool
        Label ids, 0 = background.  numpy, dask or zarr; 2 to 4 dimensions.
        uint8/uint16/uint32 are kept; other integer types become the smallest
        unsigned type holding the largest id.  Negative ids are refused.
    scale : sequence of float, optional
        Pixel step along each axis of ``labels`` in ``units`` (default 1).
    units : str or sequence, optional
        Unit of each axis (``"µm"``, ``"micrometer"``, pint units, ``"s"`` for
        T...), or one unit for all non-T axes.  Default ``"pixel"``.
    axes : str, optional
        Letters from ``TZYX`` ending in ``YX``; default ``YX``, ``ZYX`` or
        ``TZYX`` by dimension.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ParameterError
        Negative, non-integer or too many dimensions in the labels, or
        inconsistent ``scale``/``units``/``axes``.
    """
    import tifffile

    p = Path(path)
    arr = labels
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        arr = np.asarray(arr)
    ndim = len(arr.shape)
    axes = _label_axes(axes, ndim)
    scale_t = _label_scale(scale, ndim)
    units_t = _label_units(units, axes)
    dtype = label_dtype(arr)

    imagej_meta = _imagej_calibration(axes, scale_t, units_t) if dtype in (np.uint8, np.uint16) else None
    if imagej_meta is not None:
        order = [axes.index(a) for a in "TZYX" if a in axes]
        out_axes = "".join(axes[i] for i in order)
        sx, sy = scale_t[axes.index("X")], scale_t[axes.index("Y")]
        kwargs: dict[str, Any] = {
            "imagej": True, "photometric": "minisblack", "metadata": {"axes": out_axes, **imagej_meta},
            "resolution": (_rational(1 / exact(sx)), _rational(1 / exact(sy)))}
    else:
        order = list(range(ndim))
        kwargs = {"compression": "zlib", "photometric": "minisblack",
                      "metadata": {"axes": axes, "scale": list(scale_t), "units": list(units_t)}}
        ix, iy = axes.index("X"), axes.index("Y")
        if units_t[ix] in METRES and units_t[iy] in METRES:
            kwargs["resolution"] = (_rational(1 / exact(convert(scale_t[ix], units_t[ix], "cm"))),
                                    _rational(1 / exact(convert(scale_t[iy], units_t[iy], "cm"))))
            kwargs["resolutionunit"] = tifffile.RESUNIT.CENTIMETER
        else:
            kwargs["resolutionunit"] = tifffile.RESUNIT.NONE

    if order != list(range(ndim)):
        if not hasattr(arr, "transpose"):  # e.g. zarr arrays
            arr = np.asarray(arr)
        arr = arr.transpose(order)
    shape = tuple(int(n) for n in arr.shape)
    data: Any
    if isinstance(arr, np.ndarray):
        data = arr.astype(dtype, copy=False)
    else:  # dask/zarr: one plane at a time, memory bounded by a plane
        data = _planes(arr, dtype)
        kwargs.update(shape=shape, dtype=dtype)

    return atomic_write(p, lambda tmp: tifffile.imwrite(tmp, data, **kwargs))


def _label_axes(axes: str | None, ndim: int) -> str:
    if axes is None:
        defaults = {2: "YX", 3: "ZYX", 4: "TZYX"}
        if ndim not in defaults:
            raise ParameterError(f"labels have {ndim} dimensions; only 2 (YX), 3 (ZYX) or 4 (TZYX) "
                                 "can be written, pass axes for other layouts")
        return defaults[ndim]
    axes = str(axes).upper()
    if len(axes) != ndim or len(set(axes)) != ndim or not set(axes) <= set("TZYX") \
            or not axes.endswith("YX"):
        raise ParameterError(f"axes {axes!r} do not fit labels with {ndim} dimensions: use distinct "
                             "letters from T, Z, Y, X ending in 'YX'")
    return axes


def _label_scale(scale: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if scale is None:
        return (1.0,) * ndim
    vals = tuple(float(s) for s in scale)
    if len(vals) != ndim or not all(math.isfinite(v) and v > 0 for v in vals):
        raise ParameterError(f"scale {scale!r} must hold {ndim} positive numbers, one per axis")
    return vals


def _label_units(units: Sequence[Any] | str | None, axes: str) -> tuple[str, ...]:
    if units is None:
        return ("pixel",) * len(axes)
    if isinstance(units, str) or not isinstance(units, Sequence):
        u = normalize_unit(units)
        return tuple("pixel" if a == "T" else u for a in axes)
    out = tuple(normalize_unit(u) for u in units)
    if len(out) != len(axes):
        raise ParameterError(f"units {tuple(units)!r} must have {len(axes)} entries, one per axis {axes!r}")
    return out


def label_dtype(arr: Any) -> np.dtype:
    dt = np.dtype(arr.dtype)
    if dt == np.bool_:
        return np.dtype(np.uint8)
    if dt.kind not in "iu":
        raise ParameterError(f"labels must be integers (got dtype {dt}); round or cast them first")
    if dt in (np.uint8, np.uint16, np.uint32):
        return dt
    lo, hi = _min_max(arr)
    if lo < 0:
        raise ParameterError(f"labels contain negative ids (minimum {lo}); label ids must be >= 0")
    for cand in (np.uint8, np.uint16, np.uint32, np.uint64):
        if hi <= np.iinfo(cand).max:
            return np.dtype(cand)
    raise ParameterError(f"largest label id {hi} does not fit in uint64")  # pragma: no cover


def _min_max(arr: Any) -> tuple[int, int]:
    if arr.size == 0:
        return 0, 0
    if isinstance(arr, np.ndarray):
        return int(arr.min()), int(arr.max())
    try:
        import dask.array as da

        if isinstance(arr, da.Array):
            lo, hi = da.compute(arr.min(), arr.max())
            return int(lo), int(hi)
    except ImportError:  # pragma: no cover
        pass
    lo, hi = None, None
    for plane in _planes(arr, None):
        a, b = int(plane.min()), int(plane.max())
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    return int(lo or 0), int(hi or 0)


def _planes(arr: Any, dtype: np.dtype | None) -> Iterator[np.ndarray]:
    for idx in np.ndindex(*arr.shape[:-2]):
        plane = np.asarray(arr[idx])
        yield plane if dtype is None else plane.astype(dtype, copy=False)


def _imagej_calibration(axes: str, scale: tuple[float, ...], units: tuple[str, ...]) -> dict[str, Any] | None:
    """ImageJ description items for this calibration, or None if ImageJ cannot express it."""
    s = dict(zip(axes, scale, strict=False))
    u = dict(zip(axes, units, strict=False))
    xy = u["X"]
    if u["Y"] != xy:
        return None
    meta: dict[str, Any] = {}
    if xy != "pixel":
        if xy not in METRES:
            return None
        meta["unit"] = _IMAGEJ_UNIT.get(xy, xy)
    if "Z" in s:
        if u["Z"] == xy:
            meta["spacing"] = s["Z"]
        elif u["Z"] in METRES and xy in METRES:
            meta["spacing"] = convert(s["Z"], u["Z"], xy)
        else:
            return None
    if "T" in s:
        if u["T"] in SECONDS:
            meta["finterval"] = convert(s["T"], u["T"], "s")
        elif not (u["T"] == "pixel" and s["T"] == 1.0):
            return None
    if xy == "pixel" and (s["X"] != 1.0 or s["Y"] != 1.0 or s.get("Z", 1.0) != 1.0):
        return None  # a relative scale without unit: keep it exactly in the JSON form
    return meta


def _rational(value: Fraction) -> tuple[int, int]:
    """TIFF RATIONAL (two uint32) closest to ``value``."""
    limit = 2**32 - 1
    f = value
    if f.numerator > limit or f.denominator > limit:
        # cap the denominator so that the numerator also stays below 2**32
        f = f.limit_denominator(max(1, int(limit / max(f, Fraction(1)))))
    return f.numerator, f.denominator
