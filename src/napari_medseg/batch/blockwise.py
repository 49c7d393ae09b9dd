"""Whole-image segmentation and detection block by block, with bounded memory and exact stitching.

A job (:func:`plan_job`) cuts the image into the cores of a
:class:`~napari_medseg.batch.plan.BlockGrid` (only those that touch the
tissue: found on RGB slides by default, :mod:`napari_medseg.batch.tissue`,
or given) and runs in four kinds of tasks, each a plain function of
picklable arguments, so that the same code runs in one process
(:func:`segment_blockwise_iter`) or on a dask cluster
(:mod:`napari_medseg.batch.runner`):

1. :func:`segment_block` (one per block, independent): read the block's read
   box from the source (at the job's pyramid level), segment it with
   :func:`~napari_medseg.inference.segment.segment_iter` (normalised with
   limits estimated once for the whole image, on a sample of the job level's
   tissue pixels: :mod:`napari_medseg.batch.sampling`), keep the objects whose
   centroid lies in the core (each object has exactly one owner), number
   them 1..n and save them, cropped to the keep box, with their table.
2. :func:`block_offsets` (one): the first global id of each block (a prefix
   sum of the counts).
3. :func:`paste_block` (one per core near tissue, independent): the labels of a core
   are the owned objects of the block and of its neighbours, cropped to the
   core, with global ids; where two claim a pixel, the core's own block wins,
   then the neighbours in raster order.  Each core is whole chunks of the
   output, so no two tasks write the same chunk.
4. :func:`pyramid_block` (one per tile of each coarser level that is not
   all background, level after level) and :func:`finish_job` (one: the merged table and the
   ``complete`` flag).

Why this rule: an object of diameter <= ``halo`` with its centroid in a core
lies inside the keep box, and the read box adds the network's receptive
field, so the maps the block sees there are the whole image's maps; the
block segments it as the whole image would, and only its owner writes it,
with one id, into every core it crosses: none split, none duplicated.
StarDist's ``predict_instances_big`` keeps per block the objects that belong
to it in the same spirit (blocks with context, objects assigned to one block);
Cellpose's and dask-image's distributed labelling instead merge labels that
touch across block faces, which needs a global relabelling pass and merges
touching nuclei.  Memory is one block (read box, its maps, a crop or two),
whatever the size of the image.

Re-running a job with the same settings skips the blocks, cores and tiles
already done (markers in the parts folder); other settings, or a changed
input file, start it over.  An array input is recognised by its output name,
shape, dtype and intensity limits: give another name or folder for another
array.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..progress import CancelToken, Progress
from . import store as st
from .plan import BlockGrid, SourceSpec, round_up, scale_for_engine, shifted, tissue_blocks
from .sampling import normalization_sample
from .tissue import job_tissue

#: Default core edge (pixels); a multiple of the output chunk edge.
DEFAULT_BLOCK = 2048
#: Default largest object diameter (pixels of the level) when the model card says nothing.
DEFAULT_MAX_OBJECT = 64
#: Mask pixels by which the tissue mask is grown before objects on glass are dropped: a detected
#: mask's pixels are at least 4 µm, so a nucleus at the tissue's edge (centroid up to ~4-8 µm
#: outside the coarse outline) is kept, while debris and false detections out on the glass are not.
TISSUE_MARGIN = 1


@dataclass(frozen=True)
class BlockJob:
    """Everything a task of a whole-image job needs (picklable; see :func:`plan_job`).

    Attributes
    ----------
    source : SourceSpec
    name : str
        Output stem: ``out/<name>.zarr``, ``out/<name>_objects.csv``.
    out : str
        Output folder.
    grid : BlockGrid
    active : tuple of int
        Blocks that touch tissue (all without a mask), raster order.
    model : str
        Model folder.
    detect : bool
        Also measure the objects (table with one row per object).
    limits : tuple or None
        ``(low, high)`` normalisation limits per model channel, for every block.
    scale, units : tuple or None
        Pixel size handed to the engine (it resamples to the model's).
    engine : dict
        ``device``, ``tile_size``, ``batch_size``, ``precision``.
    chunk : int
        Labels chunk edge.
    key : str
        Hash of the settings that change the result (resume only with the same).
    tissue : dict
        ``{"tissue": mode, "tissue_fraction": float or None}``
        (:meth:`~napari_medseg.batch.tissue.JobTissue.record`).
    on_tissue : ndarray of bool or None
        The tissue mask grown by :data:`TISSUE_MARGIN` mask pixels, over the
        image's field of view; an object whose centroid falls outside it lies
        on glass and is dropped (None: every object is kept).
    """

    source: SourceSpec
    name: str
    out: str
    grid: BlockGrid
    active: tuple[int, ...]
    model: str
    detect: bool
    limits: tuple | None
    scale: tuple | None
    units: tuple | None
    engine: dict = field(default_factory=dict)
    chunk: int = st.DEFAULT_CHUNK
    key: str = ""
    tissue: dict = field(default_factory=lambda: {"tissue": "none", "tissue_fraction": None})
    on_tissue: np.ndarray | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def store(self) -> Path:
        return Path(self.out) / f"{self.name}.zarr"

    @property
    def parts(self) -> Path:
        return st.parts_folder(Path(self.out), self.name)

    @property
    def table_path(self) -> Path:
        return Path(self.out) / f"{self.name}_objects.csv"

    @property
    def levels(self) -> list[tuple[int, int]]:
        return st.level_shapes(self.grid.shape)

    def pyramid_tiles(self, level: int) -> list[tuple[slice, slice]]:
        """The tiles (``block`` px, whole chunks) of pyramid level ``level`` >= 1, raster order."""
        shape = self.levels[level]
        b = self.grid.block
        return [(slice(y, min(y + b, shape[0])), slice(x, min(x + b, shape[1])))
                for y in range(0, shape[0], b) for x in range(0, shape[1], b)]

    def paste_cores(self) -> list[int]:
        """The cores that can hold objects: those with an active block among their neighbours.

        The others stay background (the store's fill value) without a task:
        on a slide that is mostly glass, most cores.
        """
        active = set(self.active)
        return [i for i in range(len(self.grid)) if any(j in active for j in self.grid.neighbours(i))]

    def pyramid_tiles_needed(self, level: int) -> list[int]:
        """The tiles of ``level`` whose level-0 footprint meets a pasted core (the others are background)."""
        f = 2**level
        cores = [self.grid.core(i) for i in self.paste_cores()]
        need = []
        for t, (ys, xs) in enumerate(self.pyramid_tiles(level)):
            y0, y1, x0, x1 = ys.start * f, ys.stop * f, xs.start * f, xs.stop * f
            if any(c[0].start < y1 and y0 < c[0].stop and c[1].start < x1 and x0 < c[1].stop for c in cores):
                need.append(t)
        return need


def plan_job(source: SourceSpec, out: str, *, name: str | None = None, model: str = "auto", detect: bool = True,
             tissue: Any = "auto", block_size: int = DEFAULT_BLOCK, max_object_size: int | None = None,
             chunk: int = st.DEFAULT_CHUNK, device: str = "auto", tile_size: int | None = None,
             batch_size: int | None = None, precision: str = "auto") -> BlockJob:
    """Plan a whole-image job and create (or reuse, to resume) its output store.

    Parameters
    ----------
    source : SourceSpec
        The image (a file at a pyramid level, or an array): 2D, grey, RGB or multichannel.
    out : str
        Output folder (created).
    name : str, optional
        Output stem; default the file's stem (``"image"`` for arrays).
    model : str
        Instance segmentation model name or folder, or ``"auto"``.
    detect : bool
        Also write ``<name>_objects.csv`` (one row per object: id, class,
        score, centroid, box, size, intensities; as ``medseg detect``).
    tissue : {"auto", "on", "none"}, None or array-like of bool
        ``"auto"`` (default): find the tissue on a coarse pyramid level of an
        RGB slide (a pyramid, or a flat RGB image of at least 8192 x 8192
        pixels) and run the whole image otherwise (grey, fluorescence, small
        crops); ``"on"``: always find it; ``"none"`` or None: the whole image;
        a bool array: a low-resolution tissue mask over the image's field of
        view (see :func:`~napari_medseg.batch.tissue.job_tissue`).  Only the
        blocks whose core meets the mask are segmented, and the normalisation
        percentiles are those of the tissue (on a slide that is mostly
        glass, the whole image's 1st percentile would be glass).  The
        percentiles are estimated once, on a bounded, seeded sample of
        patches of the level the job runs on (never a coarser level), inside
        the mask eroded by a margin of 32 level pixels
        (:func:`~napari_medseg.batch.sampling.normalization_sample`), so that
        the same tissue gets the same limits whatever the slide's size or
        pyramid depth.  With a mask, objects whose centroid lies outside it
        (grown by :data:`TISSUE_MARGIN` mask pixels) are on glass and are
        dropped; the summary counts them (``off_tissue_objects``).
    block_size : int
        Core edge in pixels (rounded up to a multiple of ``chunk``).
    max_object_size : int, optional
        Largest object diameter in pixels of this level; default the card's
        ``postprocess.max_object_size`` (model pixels, converted) or
        :data:`DEFAULT_MAX_OBJECT`.  Larger objects may be cut at core borders.
    chunk : int
        Chunk edge of the labels arrays.
    device, tile_size, batch_size, precision
        As for :func:`~napari_medseg.inference.segment.segment_iter`.

    Returns
    -------
    BlockJob

    Raises
    ------
    ParameterError, ModelError, ReaderError
        Bad settings, a model that is not an instance model, an unreadable image.
    """
    from ..inference.normalize import normalization_limits
    from ..inference.prepare import model_channels, prepare_image, zoom_to_model
    from ..inference.tiling import unet_receptive_radius
    from ..models.registry import resolve_model_or_auto

    img = source.open()
    prep = prepare_image(img.data, img.axes)
    info = resolve_model_or_auto(model, prep.is_rgb)
    card = info.card
    if card.kind != "instance" or card.dims != 2:
        raise ParameterError(f"whole-image jobs run 2D instance models; {card.name!r} is a {card.dims}D "
                             f"{card.kind!r} model")
    scale, units = scale_for_engine(img.geometry)
    zoom = zoom_to_model(card, list(scale) if scale else None, list(units) if units else None, 0)
    pp = card.output.get("postprocess") or {}
    if max_object_size is None:
        max_object_size = max(float(pp.get("max_object_size", DEFAULT_MAX_OBJECT)) / z for z in zoom)
    chunk = int(chunk)
    if chunk < 16 or chunk % 16:
        raise ParameterError(f"chunk must be a multiple of 16 pixels, got {chunk}")
    block = round_up(max(int(block_size), 1), chunk)
    context = round_up(unet_receptive_radius(int(card.architecture.get("depth", 4))) / min(zoom))
    grid = BlockGrid(img.shape, block, round_up(max_object_size), context)
    found = job_tissue(source, tissue)
    tissue = found.mask
    active = tuple(tissue_blocks(grid, tissue))
    channels = model_channels(card, prep.n_channels, prep.is_rgb, prep.axes)
    norm = card.input.get("normalization")
    data, data_axes = img.data, img.axes
    if (norm or {}).get("kind") == "percentile":  # the job level's own pixels, on the tissue
        data, data_axes = normalization_sample(img.data, img.axes, tissue)
    low, high = normalization_limits(data, data_axes, norm, channels)
    limits = None if low is None else (tuple(float(v) for v in low), tuple(float(v) for v in high))
    name = name or (Path(source.path).stem.split(".")[0] if source.path else "image")
    # a changed file starts over; an array is known by its name, shape, dtype and intensity limits only
    stamp = [os.stat(source.path).st_mtime_ns, os.stat(source.path).st_size] if source.path else \
        str(getattr(img.data, "dtype", ""))
    settings = {"source": source.path or "array", "stamp": stamp, "level": source.level, "shape": grid.shape,
                "model": str(info.path),
                "detect": bool(detect), "grid": asdict(grid), "active": active, "limits": limits,
                "scale": scale, "units": units, "chunk": chunk}
    on_tissue = None
    if tissue is not None:
        from scipy import ndimage as ndi

        on_tissue = ndi.binary_dilation(np.asarray(tissue, bool), iterations=TISSUE_MARGIN) if TISSUE_MARGIN \
            else np.asarray(tissue, bool)
    if found.mode != "none":  # (keys made before tissue modes existed stay valid for whole-image jobs)
        settings["tissue"] = found.mode
        settings["on_tissue_only"] = {"margin": TISSUE_MARGIN}
    key = st.settings_key(settings)
    job = BlockJob(source, name, str(out), grid, active, str(info.path), bool(detect), limits, scale, units,
                   {"device": device, "tile_size": tile_size, "batch_size": batch_size, "precision": precision},
                   chunk, key, found.record(), on_tissue)
    rec = st.read_record(job.store)
    if rec is None or rec.get("key") != key:  # new, or other settings: start over
        shutil.rmtree(job.parts, ignore_errors=True)
        job.parts.mkdir(parents=True, exist_ok=True)
        st.create_labels_store(job.store, grid.shape, chunk, name, img.geometry,
                               {"key": key, "complete": False, "model": card.name, "source": settings["source"],
                                "level": source.level, "geometry": img.geometry.to_dict(),
                                "blocks": len(grid), "active_blocks": len(active), "block": block,
                                "halo": grid.halo, "context": context, **found.record()})
    else:
        job.parts.mkdir(parents=True, exist_ok=True)
    return job


def is_complete(job: BlockJob) -> bool:
    """Whether ``job``'s outputs are all there, made with its settings."""
    rec = st.read_record(job.store)
    return bool(rec and rec.get("key") == job.key and rec.get("complete")
                and (not job.detect or job.table_path.is_file()))


# ---------------------------------------------------------------- 1. segment a block
def segment_block(job: BlockJob, i: int) -> dict:
    """Segment block ``i`` and save the objects it owns.

    Returns ``{"block", "n", "off_tissue", "seconds", "cpu_seconds", "skipped"}``
    (``off_tissue``: owned objects dropped because their centroid lies on
    glass, see :attr:`BlockJob.on_tissue`; wall and this process's CPU time,
    0 for a block an earlier run finished).
    """
    marker = st.read_block_marker(job.parts, i, job.key)
    if marker is not None:
        return {"block": i, "n": marker["n"], "off_tissue": marker.get("off_tissue", 0), "seconds": 0.0,
                "cpu_seconds": 0.0, "skipped": True}
    t0, c0 = time.perf_counter(), time.process_time()
    from ..inference.segment import segment_iter
    from ..progress import run

    g = job.grid
    img = job.source.open()
    rbox, kbox, core = g.read_box(i), g.keep_box(i), g.core(i)
    region = img.read(rbox)
    res = run(segment_iter(region, job.model, axes=img.axes, scale=job.scale, units=job.units,
                           return_probabilities=job.detect, limits=job.limits,
                           postprocess={"block_size": max(region.shape)}, **job.engine))
    lab = np.asarray(res.labels)
    keep, cent = _owned(lab, [slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, rbox, strict=True)])
    off_tissue = 0
    if job.on_tissue is not None and keep.any():
        on = _centroids_on(job.on_tissue, cent + [r.start for r in rbox], job.grid.shape)
        off_tissue = int((keep & ~on).sum())
        keep &= on
    owned = np.flatnonzero(keep[1:]) + 1
    n = len(owned)
    lut = np.zeros(len(keep), np.uint32)
    lut[owned] = np.arange(1, n + 1, dtype=np.uint32)
    kin = tuple(slice(k.start - r.start, k.stop - r.start) for k, r in zip(kbox, rbox, strict=True))
    crop = lut[lab[kin]]
    table = None
    if job.detect and n:
        fg = np.asarray(res.probabilities[0][kin], np.float32)
        table = _block_table(crop, n, img.read(kbox), img.axes, img.geometry, kbox, fg)
    st.write_block_part(job.parts, i, crop, kbox, n, job.key, table, off_tissue=off_tissue)
    from ..inference.segment import release_memory

    del region, res, lab, crop
    release_memory()
    return {"block": i, "n": n, "off_tissue": off_tissue, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0, "skipped": False}


def _owned(labels: np.ndarray, core: Sequence[slice]) -> tuple[np.ndarray, np.ndarray]:
    """Per label of ``labels`` (row 0: background, False), whether its centroid (floored) lies in ``core``.

    Returns ``(inside, centroids)``: bool ``(n + 1,)`` and float64 ``(n + 1, ndim)``
    centroids in the pixels of ``labels`` (row 0 unused).
    """
    from ..inference.stitch import centroids

    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros(1, bool), np.zeros((1, labels.ndim))
    counts, cent = centroids(labels, n)
    inside = counts > 0
    for ax, s in enumerate(core):
        c = np.floor(cent[:, ax])
        inside &= (c >= s.start) & (c < s.stop)
    inside[0] = False
    return inside, cent


def _centroids_on(mask: np.ndarray, cent: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Whether each centroid ``(y, x)`` in image pixels falls on a True pixel of ``mask`` (same field of view)."""
    rc = [np.clip(np.floor(cent[:, ax] * m / s).astype(np.int64), 0, m - 1)
          for ax, (m, s) in enumerate(zip(mask.shape, shape, strict=True))]
    return mask[rc[0], rc[1]]


def _block_table(crop: np.ndarray, n: int, image: np.ndarray, axes: str, geometry, box: Sequence[slice],
                 fg: np.ndarray):
    """The objects table of a block's owned objects (local ids 1..n), in whole-image pixels and world units."""
    from ..analysis.measure import measure
    from ..analysis.objects import DEFAULT_CLASS, intensity_of_image, order_columns

    offset = [b.start for b in box]
    intensity = intensity_of_image(image, axes, None)
    if geometry.calibrated:
        table = measure(crop, intensity, geometry=shifted(geometry, offset))
    else:
        table = measure(crop, intensity)
    table = table.rename(columns={"label": "id"})
    for ax, name in enumerate("yx"):
        for col in (f"centroid_{name}", f"bbox_{name}0", f"bbox_{name}1"):
            table[col] = table[col] + offset[ax]
    ids = np.asarray(table["id"], np.int64)
    counts = np.bincount(crop.ravel(), minlength=n + 1)
    sums = np.bincount(crop.ravel(), weights=fg.ravel(), minlength=n + 1)
    table.insert(1, "class", np.full(len(ids), DEFAULT_CLASS, dtype=object))
    table.insert(2, "score", sums[ids] / np.maximum(counts[ids], 1))
    return order_columns(table)


# ---------------------------------------------------------------- 2. offsets
def block_offsets(job: BlockJob, *results: dict) -> dict:
    """The first global id minus one of each active block, and the seconds the blocks took.

    ``results`` are :func:`segment_block`'s, one per active block.  Returns
    ``{"offsets": {block: offset}, "objects": n, "seconds": s, "cpu_seconds": c}``.
    """
    counts = {int(r["block"]): int(r["n"]) for r in results}
    offsets, total = {}, 0
    for i in job.active:
        if i not in counts:
            raise ParameterError(f"block {i} of {job.name} has no result")
        offsets[i] = total
        total += counts[i]
    return {"offsets": offsets, "objects": total, "seconds": float(sum(r["seconds"] for r in results)),
            "cpu_seconds": float(sum(r["cpu_seconds"] for r in results))}


# ---------------------------------------------------------------- 3. paste a core
def paste_block(job: BlockJob, i: int, offsets: dict) -> dict:
    """Write core ``i`` of the labels: the owned objects of the block and its neighbours, with global ids.

    ``offsets`` is :func:`block_offsets`'s result.
    """
    offsets = offsets["offsets"]
    marker = st.done_marker(job.parts, f"p{i:05d}", job.key)
    if marker.exists():
        return {"block": i, "skipped": True}
    core = job.grid.core(i)
    out = np.zeros(tuple(s.stop - s.start for s in core), np.uint32)
    for j in job.grid.neighbours(i):
        if j not in offsets:
            continue  # no tissue there
        m = st.read_block_marker(job.parts, j, job.key)
        if m is None:
            raise ParameterError(f"block {j} of {job.name} is not done; cannot paste core {i}")
        if m["n"] == 0:
            continue
        crop, box = st.read_block_crop(job.parts, j, m)
        lo = [max(c.start, b.start) for c, b in zip(core, box, strict=True)]
        hi = [min(c.stop, b.stop) for c, b in zip(core, box, strict=True)]
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            continue
        src = crop[tuple(slice(a - b.start, e - b.start) for a, e, b in zip(lo, hi, box, strict=True))]
        dst = out[tuple(slice(a - c.start, e - c.start) for a, e, c in zip(lo, hi, core, strict=True))]
        free = (dst == 0) & (src > 0)
        dst[free] = src[free] + np.uint32(offsets[j])
    if out.any():
        st.labels_level(job.store, 0, "r+")[core] = out
    st.mark_done(marker)
    return {"block": i, "skipped": False}


# ---------------------------------------------------------------- 4. pyramid, finish
def pyramid_block(job: BlockJob, level: int, t: int, *_after: Any) -> int:
    """Tile ``t`` of pyramid level ``level`` >= 1: every second pixel of level ``level - 1``."""
    marker = st.done_marker(job.parts, f"l{level}_{t:05d}", job.key)
    if marker.exists():
        return t
    ys, xs = job.pyramid_tiles(level)[t]
    prev = st.labels_level(job.store, level - 1)
    tile = np.asarray(prev[2 * ys.start:2 * ys.stop:2, 2 * xs.start:2 * xs.stop:2])
    if tile.any():
        st.labels_level(job.store, level, "r+")[ys, xs] = tile
    st.mark_done(marker)
    return t


def finish_job(job: BlockJob, offsets: dict, *_after: Any) -> dict:
    """Merge the blocks' tables (global ids), mark the store complete, drop the parts; returns a summary.

    ``offsets`` is :func:`block_offsets`'s result.
    """
    seconds, cpu, offsets = offsets["seconds"], offsets["cpu_seconds"], offsets["offsets"]
    n_objects = off_tissue = 0
    tables = []
    for i in job.active:
        m = st.read_block_marker(job.parts, i, job.key)
        n_objects += int(m["n"]) if m else 0
        off_tissue += int(m.get("off_tissue", 0)) if m else 0
        if job.detect and m and m["n"]:
            t = st.read_block_table(job.parts, i)
            t["id"] = t["id"] + offsets[i]
            tables.append(t)
    if job.detect:
        import pandas as pd

        from ..analysis.objects import write_objects_csv

        table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame({"id": []})
        write_objects_csv(job.table_path, table)
    summary = {"objects": n_objects, "off_tissue_objects": off_tissue, "blocks": len(job.grid),
               "active_blocks": len(job.active),
               "skipped_blocks": len(job.grid) - len(job.active), **job.tissue,
               "shape": list(job.grid.shape), "levels": len(job.levels), "segment_seconds": round(seconds, 3),
               "segment_cpu_seconds": round(cpu, 3),
               "limits": None if job.limits is None else {"low": list(job.limits[0]), "high": list(job.limits[1])}}
    st.update_record(job.store, complete=True, summary=summary)
    shutil.rmtree(job.parts, ignore_errors=True)
    return {"name": job.name, **summary, "labels": str(job.store),
            "table": str(job.table_path) if job.detect else ""}


# ---------------------------------------------------------------- one process
@dataclass
class BlockwiseResult:
    """What :func:`segment_blockwise_iter` returns.

    Attributes
    ----------
    labels : list of zarr arrays
        The labels pyramid (``open_labels``), full resolution first.
    table : pandas.DataFrame or None
        One row per object (``detect``), ids as in the labels.
    summary : dict
        ``objects``, ``off_tissue_objects`` (found on glass inside a tissue block and dropped),
        ``blocks``, ``active_blocks``, ``skipped_blocks`` (off the tissue),
        ``tissue`` (``detected``, ``given``, ``none`` or ``empty``), ``tissue_fraction``
        (share of the image area, None without a mask), ``shape``, ``levels``, ``limits`` (the
        normalisation limits per model channel, ``{"low": [...], "high": [...]}``, or None), paths.
    timings : dict
        Seconds per stage (``plan``, ``segment``, ``paste``, ``pyramid``, ``finish``, ``total``).
    """

    labels: list
    table: Any
    summary: dict
    timings: dict


def job_tasks(job: BlockJob) -> int:
    """Number of tasks of ``job`` after the plan (blocks, offsets, cores, pyramid tiles, finish)."""
    return (len(job.active) + 1 + len(job.paste_cores())
            + sum(len(job.pyramid_tiles_needed(k)) for k in range(1, len(job.levels))) + 1)


def segment_blockwise_iter(source: SourceSpec | Any, out: str, *, cancel: CancelToken | None = None,
                           **plan_options: Any) -> Generator[Progress, None, BlockwiseResult]:
    """Segment (and measure) a whole image block by block in this process, yielding progress.

    Parameters
    ----------
    source : SourceSpec or array-like
        The image; an array is taken as ``SourceSpec(array=source)``.
    out : str
        Output folder: ``<name>.zarr`` (labels pyramid), ``<name>_objects.csv``.
    cancel : CancelToken, optional
        Checked between tasks; what is done stays done (a re-run resumes).
    **plan_options
        See :func:`plan_job` (``model``, ``detect``, ``tissue``, ``block_size``...).

    Yields
    ------
    Progress
        One per task.

    Returns
    -------
    BlockwiseResult
    """
    if not isinstance(source, SourceSpec):
        source = SourceSpec(array=source)
    t0 = time.perf_counter()
    timings = dict.fromkeys(("plan", "segment", "paste", "pyramid", "finish"), 0.0)
    job = plan_job(source, out, **plan_options)
    timings["plan"] = time.perf_counter() - t0
    total = job_tasks(job)
    step = 0

    def advance(stage: str, message: str) -> Progress:
        nonlocal step
        step += 1
        if cancel is not None:
            cancel.raise_if_cancelled()
        return Progress(step, total, message, {"stage": stage})

    if not is_complete(job):
        results = []
        for k, i in enumerate(job.active):
            t = time.perf_counter()
            results.append(segment_block(job, i))
            timings["segment"] += time.perf_counter() - t
            yield advance("segment", f"{job.name}: block {k + 1}/{len(job.active)}")
        offsets = block_offsets(job, *results)
        yield advance("segment", f"{job.name}: {sum(r['n'] for r in results)} objects")
        t = time.perf_counter()
        cores = job.paste_cores()
        for k, i in enumerate(cores):
            paste_block(job, i, offsets)
            yield advance("paste", f"{job.name}: core {k + 1}/{len(cores)}")
        timings["paste"] = time.perf_counter() - t
        t = time.perf_counter()
        for level in range(1, len(job.levels)):
            for ti in job.pyramid_tiles_needed(level):
                pyramid_block(job, level, ti)
                yield advance("pyramid", f"{job.name}: level {level} tile {ti + 1}")
        timings["pyramid"] = time.perf_counter() - t
        t = time.perf_counter()
        finish_job(job, offsets)
        timings["finish"] = time.perf_counter() - t
        yield advance("finish", f"{job.name}: done")
    levels, _, rec = st.open_labels(job.store)
    table = None
    if job.detect:
        import pandas as pd

        table = pd.read_csv(job.table_path)
    timings["total"] = time.perf_counter() - t0
    summary = {**rec.get("summary", {}), "labels": str(job.store), "table": str(job.table_path) if job.detect else ""}
    return BlockwiseResult(levels, table, summary, timings)


def read_summary(job: BlockJob) -> dict:
    """The summary of a finished job (from its store), as :func:`finish_job` returns it."""
    rec = st.read_record(job.store) or {}
    return {"name": job.name, **rec.get("summary", {}), "labels": str(job.store),
            "table": str(job.table_path) if job.detect else ""}


__all__ = ["DEFAULT_BLOCK", "BlockJob", "BlockwiseResult", "block_offsets", "finish_job", "is_complete", "job_tasks",
           "paste_block", "plan_job", "pyramid_block", "read_summary", "segment_block",
           "segment_blockwise_iter"]
