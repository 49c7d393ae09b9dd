"""Segment an image with a U-Net model: tiles -> network -> labels, as a generator.

:func:`segment_iter` yields :class:`~napari_medseg.progress.Progress` once per
tile batch and once per post-processing block, and returns a
:class:`SegmentResult`.  The napari widget runs it in a thread worker, the CLI
drains it under a tqdm bar, :func:`napari_medseg.segment` drains it quietly
(those three go through :func:`~napari_medseg.inference.dispatch.segment_any_iter`,
which sends ``do_3d`` jobs to :mod:`.ortho3d` instead).

This module owns the tiled loop; the image checks, the zoom to the model's
pixel size and the tile plan are in :mod:`.prepare`, the network run
(precision, folded batch norms, out-of-memory fallbacks) in :mod:`.predictor`.

Pipeline (memory grows with the tile and one band of blocks, not the image):

1. Read tiles (core + halo, mirror-padded) from the array-like image,
   normalise them with per-channel limits estimated on a subsample.
2. Run the network on batches of tiles (autocast on GPUs; CUDA out-of-memory
   halves the batch, then falls back to the CPU with a warning), optionally
   resampling each tile to the model's pixel size and back.
3. ``instance`` models: keep each tile core's output maps (float16: the
   channels of the card's representation, :mod:`.representations`) until
   every post-processing block that needs them is done; each block (core +
   halo larger than the largest object) goes through the representation's
   :meth:`~napari_medseg.inference.representations.Representation.instances` and
   is stitched by the centroid rule (:mod:`.stitch`), in a worker thread
   while the network goes on when a core is free (GPU runs, or fewer torch
   threads than cores): :class:`BlockPostprocessor`.  Tiles are computed
   block after block, so only about one row of tiles is ever cached
   (LZ4-compressed when that row is large).
   ``semantic`` models: the arg-max of each tile core is written directly,
   then the whole map is cleaned as the card says (:mod:`.classes`: keep the
   largest lesion, fill its holes, drop small blobs; off unless the card or
   ``postprocess`` asks).
4. Labels are assembled in a private store (RAM, or a temporary zarr on disk
   for huge images when ``out`` is given) and copied into ``out`` only after
   the last yield: a cancelled run leaves ``out`` untouched.

Memory stays flat with the image size (BENCHMARKS.md: 16384^2 vs 2048^2 peak
RSS 1.02x): float16 block maps, few full-size temporaries in the labelling,
and on images past :data:`LARGE_IMAGE_PIXELS` fixed glibc heap thresholds
(:func:`bound_heap`), so threads do not keep what they freed.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError, ParameterError
from ..geometry import is_volume
from ..progress import CancelToken, Progress
from .predictor import Predictor, as_float16
from .prepare import (
    RESAMPLE_TOLERANCE,
    default_tile_size,
    model_channels,
    plan_tiles,
    prepare_image,
    zoom_for_diameter,
    zoom_to_model,
)
from .stitch import DISK_STAGING_BYTES, Block, LabelStore, plan_blocks, stitch_block
from .tiling import ArraySource, SliceStackSource, Tile, TileGrid, read_batch

#: Largest post-processing block core edge by dimensionality.
DEFAULT_BLOCK = {2: 2048, 3: 192}
#: Largest object diameter (model pixels) when the card does not say.
DEFAULT_MAX_OBJECT = {2: 64, 3: 32}
#: Compress the cached tile maps (lossless LZ4) when the image has several blocks.
COMPRESS_CACHE = True
#: ... when one row of cached tiles would exceed this many bytes.
COMPRESS_ABOVE_BYTES = 32 * 2**20
#: Blocks waiting for post-processing before the network waits for them (bounds memory).
MAX_PENDING_BLOCKS = 2
#: Post-process blocks in a worker thread while the network runs (when a core is free).
OVERLAP_POSTPROCESS = True
#: Post-processing blocks per image side at least, for images this many block edges across
#: (the last block's labelling cannot overlap the network, so it should be small).
MIN_BLOCKS_PER_SIDE = 3
#: Images with more pixels than this (over the block axes) run with fixed glibc heap
#: thresholds (:func:`bound_heap`), so that peak memory does not grow with the image
#: (BENCHMARKS.md, "Peak memory of huge images").
LARGE_IMAGE_PIXELS = 8192 * 8192


#: On large images (LARGE_IMAGE_PIXELS), glibc hands arrays of at least this many bytes back to
#: the OS when freed (``mallopt``; None: leave the allocator alone).  See :func:`bound_heap`.
LARGE_IMAGE_MMAP_THRESHOLD: int | None = 2**20

_LIBC = None


def _glibc():
    """glibc through ctypes, or False (not Linux, musl...); loaded once."""
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                lib = ctypes.CDLL("libc.so.6")
                if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt"):
                    _LIBC = lib
            except OSError:
                pass
    return _LIBC


def release_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; no-op elsewhere).

    Blocks and tiles allocate many 4-20 MB arrays; glibc raises its mmap
    threshold after the first such free and then serves them from heap arenas
    that it does not shrink, so the resident size creeps up with the number
    of blocks (measured: 400 -> 660 MB over an 8192^2 image) although nothing
    is kept.  Trimming after each block and batch (~0.3 ms) keeps it flat, as
    dask.distributed does for its workers.
    """
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)


def bound_heap(mmap_threshold: int | None) -> bool:
    """Make glibc map arrays of ``mmap_threshold`` bytes or more on their own and unmap them when freed.

    glibc raises its mmap threshold (up to 32 MB) after the first large free
    and then serves such arrays from heap arenas, keeping up to twice that at
    the top of each thread's heap; :func:`release_memory` cannot trim those
    tops.  The zarr I/O threads, the post-processing worker and the network
    each keep one (measured on a 4096^2 run staged in zarr: 93 MB of anonymous
    memory above the start after the last block, none of it released by
    ``malloc_trim``).  A fixed threshold (and glibc's default trim threshold,
    128 KiB) keeps the resident size at what is alive (that run's peak: 483 ->
    394 MB).  Process-wide and
    lasting (``mallopt`` turns glibc's dynamic thresholds off for good), so
    only large images use it.  Returns False where it does not apply (not
    glibc, or ``mmap_threshold`` None).
    """
    libc = _glibc()
    if mmap_threshold is None or not libc:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold))) and bool(libc.mallopt(m_trim_threshold, 128 * 1024))


@dataclass
class SegmentResult:
    """What :func:`segment_iter` returns.

    Attributes
    ----------
    labels : ndarray or array-like
        ``(Z,) Y, X`` labels on the image grid, 0 background.  Instance models:
        object ids consecutive from 1, uint16 (uint32 past 65534 objects).
        Semantic models: class index (uint16).  ``out`` itself when given.
    probabilities : ndarray of float16 or None
        ``(K, (Z,) Y, X)`` when asked for: instance models ``[foreground,
        distance]`` (sigmoid), semantic models per-class softmax.
    device : str
        Device that ran the network (``"cpu"``, ``"cuda"``...).
    device_reason : str
        Why (and any fallback that happened).
    model_name : str
    timings : dict
        Seconds per stage (``load``, ``normalize``, ``read``, ``network``,
        ``postprocess``, ``write``, ``total``).
    info : dict
        Tiling plan, object count, batch size actually used.
    """

    labels: Any
    probabilities: np.ndarray | None
    device: str
    device_reason: str
    model_name: str
    timings: dict
    info: dict = field(default_factory=dict)


def segment_iter(
    image,
    model="auto",
    *,
    axes: str | None = None,
    scale: Sequence[float] | None = None,
    device="auto",
    tile_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    return_probabilities: bool = False,
    cancel: CancelToken | None = None,
    out=None,
    halo: int | Sequence[int] | None = None,
    postprocess: dict | None = None,
    precision: str = "auto",
    units: str | Sequence[str] | None = None,
    tta: bool = False,
    labels: bool = True,
    image_kind: str | None = None,
    diameter: float | Sequence[float] | None = None,
    limits: tuple[Sequence[float], Sequence[float]] | None = None,
    backend: str = "auto",
) -> Generator[Progress, None, SegmentResult]:
    """Segment an image, yielding progress; returns a :class:`SegmentResult`.

    Parameters
    ----------
    image : array-like or Volume
        numpy, dask, zarr or ``np.memmap`` array (read tile by tile, never
        loaded whole), or a :class:`~napari_medseg.geometry.Volume` (its axes
        and scale are used).
    model : str or path
        Model name (``"nuclei"``, see :func:`napari_medseg.list_models`), a
        model folder, or ``"auto"``: ``nuclei-he`` for RGB images, ``nuclei``
        for grey ones.
    axes : str, optional
        One letter per image axis from ``Z Y X C S`` (``S``: RGB samples,
        last).  None guesses from the shape (see
        :func:`~napari_medseg.inference.prepare.infer_axes`).  A 2D
        model on a ``Z`` stack segments each plane.
    scale : sequence of float, optional
        Physical pixel size per spatial axis of the image (Z, Y, X order, in
        the model card's ``pixel_unit``).  When the card has a pixel size and
        they differ by more than 5 %, tiles are resampled to the model's
        pixel size and the output back to the image grid.  See ``units``.
    device : {"auto", "cpu", "cuda", "mps"}
        See :func:`napari_medseg.models.device.select_device`.
    tile_size : int or sequence of int, optional
        Largest tile edge per model axis (pixels, including the halo); default
        2048 for 2D models on the CPU (less halo overhead), else 1024 (2D) /
        128 (3D).  Smaller tiles use less memory.
    batch_size : int, optional
        Tiles per forward pass; default 1 on CPU, 4 (2D) / 2 (3D) on GPU.
    return_probabilities : bool
        Also return the full-size probability maps (float16).
    cancel : CancelToken, optional
        Checked before each tile batch and block; raises
        :class:`~napari_medseg.progress.Cancelled`.
    out : array-like, optional
        Integer array of the image's spatial shape (numpy, ``np.memmap``,
        zarr) to receive the labels; written only once everything succeeded.
    halo : int or sequence of int, optional
        Tile margin in model pixels.  Default: the network's receptive-field
        radius (exact, tiling-independent output: 56 pixels for a depth-4
        U-Net), but at most a quarter of the tile (so 32 for 128-voxel 3D
        tiles).
    postprocess : dict, optional
        Overrides of the card's ``output.postprocess``: instance models
        ``fg_threshold``, ``seed_threshold``, ``seed_h`` (> 0: h-maxima
        seeds, see :func:`~napari_medseg.inference.instances.instances_from_maps`),
        ``min_size`` in pixels, ``max_object_size``, ``block_size``; semantic models
        ``keep_largest``, ``fill_holes`` (bool) and ``min_size`` (see
        :mod:`napari_medseg.inference.classes`).
    precision : {"auto", "float32", "bfloat16", "float16"}
        Network arithmetic.  ``auto``: bfloat16 (CUDA with bf16 support),
        float16 (other CUDA, MPS), bfloat16 on CPUs with native bfloat16
        (AVX-512 BF16: AMD Zen 4+, Intel Cooper Lake; AMX: Intel Sapphire
        Rapids+; ~1.6-2x faster than float32 there, AP within 0.005 on
        dsb2018/val, BENCHMARKS.md), float32 on other CPUs.
    backend : {"auto", "torch", "onnxruntime"}
        What runs the network: torch eager (``auto``, every device) or ONNX
        Runtime on the CPU in float32 (needs ``pip install
        "napari-medseg[export]"``; the network is exported once per session).
    units : str or sequence of str, optional
        Unit of ``scale`` (one for all axes or one per spatial axis: ``"µm"``,
        ``"mm"``, ``"nm"``...).  None: the card's ``pixel_unit``.  Pixel-like
        units (``"pixel"``, ``"px"``, ``""``: an uncalibrated image) turn
        resampling off.
    tta : bool
        Test-time augmentation: average the network's maps (after sigmoid /
        softmax) over the tile and its mirror images along the last two model
        axes (4 passes, so ~4x the network time).  Smoother maps and slightly
        better objects (on ``dsb2018/val`` fluorescence, AP@0.5 +0.018 with
        the shipped ``nuclei`` model, see BENCHMARKS.md).
    labels : bool
        False: compute only the probability maps (needs
        ``return_probabilities``); no objects or classes are made and the
        returned labels are all 0.  For callers that combine maps themselves
        (the 3D-from-2D path).
    image_kind : str, optional
        What the image is (:mod:`napari_medseg.models.kinds`: ``"MR"``,
        ``"CT"``, ``"radiology"``, ``"fluorescence"``, ``"blood_smear"``...);
        default: from a Volume's frame and DICOM Modality, else unknown.
        ``model="auto"`` then picks only a model made for such images (and
        raises ModelError when none is installed, e.g. for an MR series), and
        a named model whose card says it was made for other images runs with
        an :class:`~napari_medseg.errors.ImageKindWarning`.
    diameter : float or sequence of float, optional
        The objects' typical diameter in image pixels (one value, or one per
        Y, X axis; see :func:`~napari_medseg.inference.prepare.diameter_in_pixels`
        for µm): the image is resampled so they become the diameter the model
        was trained on (the card's ``typical_object_diameter_px``),
        instead of matching pixel sizes (``scale`` is then not used for
        resampling).  As Cellpose's ``diameter``.
    limits : (low, high), optional
        Per-channel input intensities mapped to 0 and 1 (one value per
        channel the model reads), instead of the card's normalisation
        estimated on ``image``: a block of a larger image
        (:mod:`napari_medseg.batch.blockwise`) is normalised as the whole
        image, so that blocks agree with each other.

    Notes
    -----
    3D objects in a Z stack from a 2D instance model are made by
    :func:`napari_medseg.inference.ortho3d.segment_3d_from_2d_iter`;
    :func:`napari_medseg.inference.dispatch.segment_any_iter` takes the same
    arguments as this function plus ``do_3d`` and picks one of the two.

    Yields
    ------
    Progress
        ``info["stage"]`` is ``"network"``, ``"postprocess"`` or ``"write"``.

    Returns
    -------
    SegmentResult

    Raises
    ------
    ParameterError, ModelError
        Bad arguments or a model that does not fit the image.
    Cancelled
        When ``cancel`` was set.
    """
    if not labels and not return_probabilities:
        raise ParameterError("labels=False computes only the probability maps: set return_probabilities=True")
    import torch

    from ..models.cache import get_model
    from ..models.device import configure_cpu_threads, select_device
    from ..models.kinds import kind_of_volume
    from ..models.registry import resolve_model_or_auto
    from .normalize import normalization_limits
    from .representations import representation_of

    t_start = time.perf_counter()
    timings = dict.fromkeys(("load", "normalize", "read", "network", "postprocess", "write"), 0.0)
    if image_kind is None and is_volume(image):
        image_kind = kind_of_volume(image)
    img = prepare_image(image, axes, scale, units, out)
    spatial_shape = img.spatial_shape
    if cancel is not None:
        cancel.raise_if_cancelled()

    # ---- the model -------------------------------------------------------
    info = resolve_model_or_auto(model, img.is_rgb, image_kind=image_kind)
    _check_model_fits(info.card, img.spatial_axes)
    mdims = info.card.dims
    channels = model_channels(info.card, img.n_channels, img.is_rgb, img.axes)
    t = time.perf_counter()
    dev, reason = select_device(device)
    if dev.type == "cpu":
        configure_cpu_threads()
    net, card = get_model(info.path, dev)
    timings["load"] = time.perf_counter() - t

    # ---- plan: zoom, tiles, blocks --------------------------------------
    n_extra = len(img.spatial_axes) - mdims  # leading axes (Z) handled plane by plane
    if diameter is not None:
        zoom = zoom_for_diameter(card, diameter, mdims)
    else:
        zoom = zoom_to_model(card, img.scale, img.units, n_extra)
    resample = any(abs(z - 1.0) > RESAMPLE_TOLERANCE for z in zoom)
    if not resample:
        zoom = [1.0] * mdims
    if tile_size is None:
        tile_size = default_tile_size(mdims, dev.type)
    grid, model_tile = plan_tiles(spatial_shape, mdims, int(net.divisor), int(card.architecture.get("depth", 4)),
                                  tile_size, halo, zoom if resample else None)
    batch_size = _default_batch_size(batch_size, dev, mdims)
    instance = card.kind == "instance"
    rep = representation_of(card) if instance else None
    pp, blk_shape, blk_halo = _block_plan(card, postprocess, zoom, n_extra)
    explicit_block = "block_size" in (postprocess or {}) or "block_size" in (card.output.get("postprocess") or {})
    blk_shape = overlap_block_shape(blk_shape, spatial_shape, blk_halo, explicit_block)
    if is_large_image(blk_shape, spatial_shape):
        bound_heap(LARGE_IMAGE_MMAP_THRESHOLD)
    objects = instance and labels  # instance post-processing, block by block

    # ---- normalisation ---------------------------------------------------
    t = time.perf_counter()
    if limits is not None:
        low, high = (np.asarray(v, np.float32).reshape(-1) for v in limits)
    else:
        low, high = normalization_limits(img.data, img.axes, card.input.get("normalization"), channels)
    source = ArraySource(img.data, img.axes, channels, low, high)
    if card.slices > 1:  # 2.5D: each plane with its neighbours as channels
        if mdims != 2 or n_extra != 1:
            raise ModelError(f"model {card.name!r} takes {card.slices} neighbouring slices of a Z stack as its input; "
                             f"this image has spatial axes {img.spatial_axes!r}: give a (Z, Y, X) volume")
        source = SliceStackSource(source, card.slices)
    timings["normalize"] = time.perf_counter() - t

    predictor = Predictor(info.path, net, card, dev, reason, batch_size, n_extra, model_tile, precision, tta=tta,
                          backend=backend)
    tiles_all = list(grid)
    blocks = plan_blocks(spatial_shape, blk_shape, blk_halo) if objects else []
    needs, refs = _block_tiles(grid, blocks)
    tile_order = _block_major_order(tiles_all, needs) if objects else tiles_all
    batches = [tile_order[i:i + batch_size] for i in range(0, len(tile_order), batch_size)]
    n_out = rep.n_channels if instance else int(card.architecture["out_channels"])
    probs = np.zeros((n_out, *spatial_shape), np.float16) if return_probabilities else None

    n_px = int(np.prod(spatial_shape))
    on_disk = out is not None and n_px * 2 > DISK_STAGING_BYTES
    store = LabelStore(spatial_shape, on_disk=on_disk, chunks=[min(b, 1024) for b in blk_shape])
    steps = _ProgressSteps(len(batches) + len(blocks) + 1)
    # compress cached maps only when one band of tiles would be big (huge images)
    band_bytes = n_out * 2 * int(np.prod(grid.core_shape)) * int(np.prod(grid.counts[1:]))
    cache = TileCache(compress=COMPRESS_CACHE and len(blocks) > 1 and band_bytes > COMPRESS_ABOVE_BYTES)
    core_crop = tuple(slice(h, h + c) for h, c in zip(grid.halo, grid.core_shape, strict=False))
    post = None
    # a worker thread only when a core is left over (a GPU run, or fewer torch threads than
    # cores): on 2 cores with 2 torch threads a worker, with or without a thread lent to it
    # (torch.set_num_threads per batch), made 4096^2 1.5-1.7x slower than labelling inline (BENCHMARKS.md)
    spare = predictor.device.type != "cpu" or torch.get_num_threads() < (os.cpu_count() or 1)
    if objects:
        post = BlockPostprocessor(blocks, needs, refs, tiles_all, cache, store, pp, n_extra,
                                  threaded=OVERLAP_POSTPROCESS and spare, cancel=cancel,
                                  representation=rep)
    try:
        max_cached = 0
        for k, tiles in enumerate(batches):
            if cancel is not None:
                cancel.raise_if_cancelled()
            _run_tile_batch(source, grid, tiles, predictor, core_crop, timings, probs, post, store if labels else None)
            yield steps.advance(f"network: tile batch {k + 1}/{len(batches)}",
                                {"stage": "network", "device": predictor.device.type})
            max_cached = max(max_cached, len(cache))
            if post is not None:
                post.submit_ready()
                yield from post.reports(steps)
        if post is not None:
            yield from post.reports(steps, wait_all=True)
            timings["postprocess"] = post.seconds
        elif labels and not instance:
            timings["postprocess"] = _clean_classes(store, card, postprocess, zoom, n_extra)
        n_labels = post.next_id - 1 if objects else (n_out - 1 if labels else 0)
        if out is not None and n_labels > np.iinfo(np.dtype(out.dtype)).max:
            raise ParameterError(f"{n_labels} labels do not fit in out's dtype {out.dtype}; use uint32")
        yield Progress(steps.total, steps.total, "writing labels", {"stage": "write"})
        # no yield after this point: out is only written by a run that finishes
        t = time.perf_counter()
        result_labels = store.commit(out, n_labels, blk_shape)
        timings["write"] += time.perf_counter() - t
    finally:
        if post is not None:  # let a running block finish before its store goes away
            post.shutdown()
        store.close()
        cache.clear()
    timings["total"] = time.perf_counter() - t_start
    res_info = {
        "grid": repr(grid), "tiles": len(grid), "tile_shape": grid.tile_shape, "halo": grid.halo,
        "batch_size": predictor.max_batch, "blocks": len(blocks), "resampled": resample, "zoom": zoom,
        "n_labels": n_labels, "megapixels": n_px / 1e6, "threads": torch.get_num_threads(),
        "precision": predictor.dtype_name, "backend": predictor.backend, "max_cached_tiles": max_cached,
        "max_cache_mb": round(cache.max_nbytes / 2**20, 1), "tta": bool(tta),
        "postprocess": dict(pp) if instance else {}, "diameter": diameter,
    }
    return SegmentResult(result_labels, probs, predictor.device.type, predictor.reason, card.name, timings, res_info)


def _clean_classes(store: LabelStore, card, postprocess: dict | None, zoom: Sequence[float], n_extra: int) -> float:
    """Semantic post-processing (:mod:`.classes`: keep the largest lesion, fill holes, drop small blobs) in the store.

    The card's ``output.postprocess`` overridden by ``postprocess``; ``min_size``
    is in model pixels (converted with ``zoom``).  Each 2D plane of a stack
    (each leading index the model does not see) is cleaned on its own.
    Returns the seconds spent.
    """
    from .classes import postprocess_planes, semantic_options

    opts = semantic_options({**(card.output.get("postprocess") or {}), **(postprocess or {})})
    if not opts:
        return 0.0
    t = time.perf_counter()
    if "min_size" in opts:
        opts["min_size"] = opts["min_size"] / float(np.prod(zoom))
    mdims = len(store.shape) - n_extra
    for idx in np.ndindex(*store.shape[:n_extra]):
        box = (*(slice(i, i + 1) for i in idx), *(slice(None),) * mdims)
        store.write(box, postprocess_planes(store.read(box), mdims, opts))
    return time.perf_counter() - t


def _check_model_fits(card, spatial_axes: str) -> None:
    """Raise ModelError unless ``card`` is a segmentation model the image's spatial axes can feed.

    ``instance`` or ``semantic``; no more dimensions than ``spatial_axes``
    has; a 3D model needs ``ZYX``.
    """
    if card.kind not in ("instance", "semantic"):
        raise ModelError(f"model {card.name!r} is a {card.kind!r} model; segmentation needs 'instance' or 'semantic'")
    mdims = card.dims
    if mdims > len(spatial_axes):
        raise ModelError(f"model {card.name!r} is {mdims}D but the image has only the spatial axes {spatial_axes!r}")
    if mdims == 3 and spatial_axes != "ZYX":
        raise ModelError(f"3D model {card.name!r} needs Z, Y and X axes; the image has {spatial_axes!r}")


def _default_batch_size(batch_size: int | None, device, mdims: int) -> int:
    """Tiles per forward pass: ``batch_size``, or 1 on CPU and 4 (2D) / 2 (3D) elsewhere; ParameterError below 1."""
    if batch_size is None:
        batch_size = 1 if device.type == "cpu" else (4 if mdims == 2 else 2)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def _block_plan(card, postprocess: dict | None, zoom: Sequence[float], n_extra: int
               ) -> tuple[dict, list[int], list[int]]:
    """Instance post-processing settings: ``(representation keywords, block core shape, block halo)``.

    The representation's defaults (:mod:`.representations`), overridden by
    the card's ``output.postprocess``, overridden by ``postprocess``.
    ``min_size`` (model pixels) is converted to image pixels with ``zoom``
    (image / model pixel size per model axis); ``block_size`` (default
    :data:`DEFAULT_BLOCK`) is the block core edge and ``max_object_size``
    (model pixels, default :data:`DEFAULT_MAX_OBJECT`) sets the halo in
    image pixels.  Shapes cover all spatial axes; the ``n_extra`` leading
    ones get 1-plane blocks without halo.
    """
    from .representations import Representation, representation_of

    mdims = card.dims
    rep = representation_of(card) if card.kind == "instance" else Representation()
    pp = dict(rep.postprocess_defaults)
    pp.update(dict((card.output.get("postprocess") or {}).items()))
    pp.update(postprocess or {})
    max_obj = float(pp.pop("max_object_size", DEFAULT_MAX_OBJECT[mdims]))
    block = pp.pop("block_size", rep.default_block if mdims == 2 else DEFAULT_BLOCK[mdims])
    pp = rep.keywords(pp)
    if "min_size" in pp:  # card sizes are in model pixels
        pp["min_size"] = float(pp["min_size"]) / float(np.prod(zoom))
    blk_shape = [1] * n_extra + ([int(block)] * mdims if np.isscalar(block) else [int(b) for b in block])
    blk_halo = [0] * n_extra + [math.ceil(max_obj / z) for z in zoom]
    return pp, blk_shape, blk_halo


def overlap_block_shape(blk_shape: Sequence[int], spatial_shape: Sequence[int], halo: Sequence[int],
                        explicit: bool) -> list[int]:
    """Block cores small enough that the last block (labelled after the last tile) is a small part of the work.

    Along each axis wider than ``MIN_BLOCKS_PER_SIDE`` halos, the core edge
    becomes at most ``ceil(side / MIN_BLOCKS_PER_SIDE)`` (but not below
    8 halos, so the halo overhead stays under ~1.6x); a ``block_size`` the
    caller or card chose (``explicit``) is kept.  E.g. a 4096^2 image with
    the 2048 default gets 1366-pixel cores (3 x 3 blocks).
    """
    if explicit:
        return list(blk_shape)
    out = []
    for b, n, h in zip(blk_shape, spatial_shape, halo, strict=True):
        if b > 1 and n > MIN_BLOCKS_PER_SIDE * 8 * max(h, 1):
            b = max(8 * max(h, 1), min(int(b), math.ceil(n / MIN_BLOCKS_PER_SIDE)))
        out.append(int(b))
    return out


def is_large_image(blk_shape: Sequence[int], spatial_shape: Sequence[int]) -> bool:
    """More than :data:`LARGE_IMAGE_PIXELS` pixels over the block axes (those with cores wider than 1)."""
    return math.prod(int(n) for b, n in zip(blk_shape, spatial_shape, strict=True) if b > 1) > LARGE_IMAGE_PIXELS


def _block_major_order(tiles: Sequence[Tile], needs: Sequence[Sequence[int]]) -> list[Tile]:
    """The tiles in the order the blocks need them: each block's missing tiles, block after block.

    So only the tiles a later block still needs stay cached (one tile row
    across the image, not the ~3 rows a plain raster order would hold).
    ``needs`` is the first result of :func:`_block_tiles`.
    """
    seen: set[int] = set()
    order = []
    for need in needs:
        for ti in need:
            if ti not in seen:
                seen.add(ti)
                order.append(tiles[ti])
    return order


def _run_tile_batch(source: ArraySource, grid: TileGrid, tiles: Sequence[Tile], predictor: Predictor, crop,
                    timings: dict, probs: np.ndarray | None, post: BlockPostprocessor | None,
                    store: LabelStore | None) -> None:
    """Read one batch of tiles, run the network and keep the cores (:func:`_keep_tile_outputs`).

    Adds the seconds spent to ``timings["read"]``, ``["network"]`` and ``["write"]``.
    """
    t = time.perf_counter()
    x = read_batch(source, grid, tiles)
    timings["read"] += time.perf_counter() - t
    t = time.perf_counter()
    y = predictor(x, crop)
    timings["network"] += time.perf_counter() - t
    t = time.perf_counter()
    _keep_tile_outputs(tiles, y, probs, post, store)
    del x, y
    if post is None:  # the post-processing worker trims (every arena) after its blocks
        release_memory()
    timings["write"] += time.perf_counter() - t


def _keep_tile_outputs(tiles: Sequence[Tile], y: np.ndarray, probs: np.ndarray | None,
                      post: BlockPostprocessor | None, store: LabelStore | None) -> None:
    """Put each tile's core of a network batch where it goes.

    ``y`` is the predictor's ``(B, K, *core)`` output (cores as planned, so
    cropped here to the tile's clipped core).  Into ``probs`` (``(K,
    *spatial)``) when given; then to ``post``'s cache (instance models) or,
    without ``post``, as arg-max classes into ``store`` (semantic models;
    ``store`` None: maps only).
    """
    for i, tile in enumerate(tiles):
        sub = (slice(None), *(slice(0, s.stop - s.start) for s in tile.core))
        c = y[i][sub]
        if probs is not None or post is not None:
            c16 = as_float16(c)
            if probs is not None:
                probs[(slice(None), *tile.core)] = c16
            if post is not None:
                post.add_tile(tile.index, c16)
        if post is None and store is not None:
            store.write(tile.core, np.argmax(c, axis=0).astype(store.array.dtype))


class _ProgressSteps:
    """Numbered :class:`~napari_medseg.progress.Progress` reports out of a known total."""

    def __init__(self, total: int) -> None:
        self.step = 0
        self.total = total

    def advance(self, message: str, info: dict) -> Progress:
        self.step += 1
        return Progress(self.step, self.total, message, info)


class BlockPostprocessor:
    """Instance post-processing of the blocks, in order, as their tiles arrive.

    Tile maps go into ``cache`` (:meth:`add_tile`); a block is submitted
    (:meth:`submit_ready`) once every tile it needs is in, to one worker
    thread (``threaded``) or run at once: its maps are assembled from the
    cache, labelled (:func:`_instances`) and stitched into ``store`` by the
    centroid rule, and the tiles no later block needs are dropped.
    Post-processing releases the GIL for most of its work (numpy, scipy,
    skimage), so the network goes on meanwhile.  Only the worker touches
    ``refs``, :attr:`next_id`, :attr:`seconds` and the store; the cache has
    its own lock.

    Parameters
    ----------
    blocks : list of Block
        From :func:`~napari_medseg.inference.stitch.plan_blocks`.
    needs, refs
        From :func:`_block_tiles` (``refs`` is counted down in place).
    tiles : list of Tile
        The grid's tiles in raster order.
    cache : TileCache
    store : LabelStore
    pp : dict
        Keywords of the representation's
        :meth:`~napari_medseg.inference.representations.Representation.instances`.
    n_extra : int
        Leading spatial axes labelled plane by plane (a 2D model on a stack).
    threaded : bool
        Post-process in a worker thread (else in the calling thread).
    cancel : CancelToken, optional
    representation : Representation, optional
        What the cached maps mean (default: foreground and distance).
    """

    def __init__(self, blocks: Sequence[Block], needs: list[list[int]], refs: dict[int, int],
                 tiles: Sequence[Tile], cache: TileCache, store: LabelStore, pp: dict, n_extra: int, *,
                 threaded: bool, cancel: CancelToken | None = None, representation=None) -> None:
        from .representations import Representation

        self.representation = representation or Representation()
        self.blocks = blocks
        self.needs = needs
        self.refs = refs
        self.tiles = tiles
        self.cache = cache
        self.store = store
        self.pp = pp
        self.n_extra = n_extra
        self.cancel = cancel
        #: first free global object id
        self.next_id = 1
        #: seconds spent post-processing
        self.seconds = 0.0
        self._done: set[int] = set()
        self._submitted = 0
        self._pending: deque = deque()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="medseg-postprocess") if threaded \
            else _InlineExecutor()

    def add_tile(self, index: int, maps: np.ndarray) -> None:
        """Cache a tile core's ``(K, *core)`` output maps (as float16; a float16 array is kept, not copied)."""
        self.cache.put(index, maps if maps.dtype == np.float16 else as_float16(maps))
        self._done.add(index)

    def busy(self) -> bool:
        """True while a submitted block is not finished."""
        return any(not fut.done() for _, fut in self._pending)

    def submit_ready(self) -> None:
        """Submit, in order, the blocks whose tiles are all in."""
        while self._submitted < len(self.blocks) and self._done.issuperset(self.needs[self._submitted]):
            i = self._submitted
            self._pending.append((i, self._pool.submit(self._process, i)))
            self._submitted += 1

    def reports(self, steps: _ProgressSteps, wait_all: bool = False) -> Iterator[Progress]:
        """Progress for the blocks done so far, in order; waits while too many are queued (or for all)."""
        while self._pending and (wait_all or self._pending[0][1].done() or len(self._pending) > MAX_PENDING_BLOCKS):
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            i, fut = self._pending.popleft()
            fut.result()  # re-raises a worker error here
            yield steps.advance(f"objects: block {i + 1}/{len(self.blocks)}",
                                {"stage": "postprocess", "objects": self.next_id - 1})

    def shutdown(self) -> None:
        """Skip the blocks not started yet and wait for a running one."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _process(self, i: int) -> None:
        if self._stop.is_set() or (self.cancel is not None and self.cancel.cancelled):
            return
        b = self.blocks[i]
        t0 = time.perf_counter()
        maps = _assemble(b.region, self.needs[i], self.tiles, self.cache, self.representation.n_channels)
        for ti in self.needs[i]:
            self.refs[ti] -= 1
            if self.refs[ti] == 0:
                del self.cache[ti]
        lab = _instances(maps, self.n_extra, self.pp, self.representation)
        del maps
        release_memory()  # the labelling's temporaries, before the stitching makes its own
        self.next_id = stitch_block(self.store, b, lab, self.next_id)
        del lab
        release_memory()
        self.seconds += time.perf_counter() - t0


def _block_tiles(grid: TileGrid, blocks) -> tuple[list[list[int]], dict[int, int]]:
    """For each block: the tiles whose core meets its region (raster order); and per tile, how many blocks need it."""
    needs, refs = [], {}
    for b in blocks:
        ranges = [range(r.start // c, (r.stop - 1) // c + 1) for r, c in zip(b.region, grid.core_shape, strict=False)]
        idx = [int(np.ravel_multi_index(pos, grid.counts)) for pos in itertools.product(*ranges)]
        needs.append(idx)
        for i in idx:
            refs[i] = refs.get(i, 0) + 1
    return needs, refs


class _InlineExecutor:
    """Runs submitted work at once in the calling thread (same interface as ThreadPoolExecutor)."""

    def submit(self, fn, *args):
        from concurrent.futures import Future

        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # handed to the caller through the future  # noqa: BLE001
            fut.set_exception(e)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class TileCache:
    """Tile cores' probability maps (float16) kept until every block needing them is done.

    With ``compress``, each tile is stored Blosc-LZ4-compressed (byte
    shuffle): lossless, ~2x smaller on real probability maps for ~20 ms per
    1000^2 tile, which halves the one band of tiles a huge image keeps.
    """

    def __init__(self, compress: bool = False) -> None:
        self._data: dict[int, tuple] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.max_nbytes = 0
        self._codec = None
        if compress:
            try:
                from numcodecs import Blosc

                self._codec = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)
            except ImportError:  # numcodecs comes with zarr; without it, store raw
                pass

    def put(self, index: int, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        item = (self._codec.encode(arr), arr.shape, arr.dtype) if self._codec is not None else (arr,)
        with self._lock:
            self._data[index] = item
            self.nbytes += len(item[0]) if self._codec is not None else arr.nbytes
            self.max_nbytes = max(self.max_nbytes, self.nbytes)

    def get(self, index: int) -> np.ndarray:
        with self._lock:
            item = self._data[index]
        if len(item) == 1:
            return item[0]
        return np.frombuffer(self._codec.decode(item[0]), item[2]).reshape(item[1])

    def __delitem__(self, index: int) -> None:
        with self._lock:
            item = self._data.pop(index)
            self.nbytes -= len(item[0]) if len(item) == 3 else item[0].nbytes

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.nbytes = 0


def _assemble(region, tile_ids, tiles, cache, n_maps: int = 2) -> np.ndarray:
    """The ``n_maps`` output maps of ``region`` from cached tile cores: (K, *region), float16.

    float16 as cached (half the memory of float32 and the same values: the
    post-processing compares float16 maps in float32, see
    :func:`~napari_medseg.inference.instances.instances_from_maps`).
    """
    shape = tuple(s.stop - s.start for s in region)
    maps = np.empty((n_maps, *shape), np.float16)
    for ti in tile_ids:
        core = tiles[ti].core
        lo = [max(c.start, r.start) for c, r in zip(core, region, strict=False)]
        hi = [min(c.stop, r.stop) for c, r in zip(core, region, strict=False)]
        if any(a >= b for a, b in zip(lo, hi, strict=False)):
            continue
        src = tuple(slice(a - c.start, b - c.start) for a, b, c in zip(lo, hi, core, strict=False))
        dst = tuple(slice(a - r.start, b - r.start) for a, b, r in zip(lo, hi, region, strict=False))
        maps[(slice(None), *dst)] = cache.get(ti)[(slice(None), *src)]
    return maps


def _instances(maps: np.ndarray, n_extra: int, pp: dict, representation) -> np.ndarray:
    """The representation's instances on a region's ``(K, *region)`` maps; a 2D model's plane is labelled in 2D."""
    shape = maps.shape[1:]
    if n_extra:
        lead = shape[:n_extra]
        if int(np.prod(lead)) != 1:  # blocks are one plane thick along leading axes
            raise AssertionError(f"post-processing block spans {lead} planes")
        lab = representation.instances(maps.reshape(maps.shape[0], *shape[n_extra:]), **pp)
        return lab.reshape(shape)
    return representation.instances(maps, **pp)
