"""3D objects from a 2D instance model: predict on planes along Z, Y and X, average, label in 3D.

A 2D nuclei model run plane by plane on a confocal stack gives 2D objects per
plane; :func:`segment_3d_from_2d_iter` turns the same model into a 3D
segmenter, as Cellpose's ``do_3D`` does with its flows:

1. **Isotropic grid.**  From the Z and Y/X pixel sizes in ``scale`` the
   anisotropy ``a = dz / sqrt(dy * dx)`` is computed; when it is more than 5 %
   away from 1 the stack is resampled along Z (linear interpolation) to
   ``round(Z * a)`` planes, so that the planes cut along Y and X show objects
   with their true shape.  Y and X are left as they are (the engine still
   matches them to a model's pixel size, when the card has one).
2. **Three orientations.**  The engine
   (:func:`~napari_medseg.inference.segment.segment_iter`, with
   ``return_probabilities=True``) runs on the stack viewed as YX planes along
   Z, ZX planes along Y and ZY planes along X (the array transposed so that
   the slicing axis is first).  The foreground and distance maps are
   transposed back and averaged over the three orientations.  A voxel near
   the top of a nucleus sits near the centre of a small disk in its YX plane
   (2D distance high) but near the border in the ZX and ZY planes (low): the
   mean is high only near the 3D centre, which gives one seed per nucleus.
   These runs make only the maps (``segment_iter(..., labels=False)``): no
   per-plane objects are made, since only the maps are used.
3. **3D instances.**  :func:`~napari_medseg.inference.instances.instances_from_maps`
   labels the mean maps in 3D (seeded watershed, face connectivity) with the
   card's ``fg_threshold``.  The seed threshold is raised from the card's
   2D value ``s`` to ``(m + 2 s) / 3``, where ``m`` is the distance the model
   gives at the centres of the YX planes' disks (99th percentile of the
   YX-pass distance over the foreground, ~0.8 for the shipped ``nuclei``
   model, 1 for an ideal one).  Why: a voxel on the Z axis of a nucleus,
   above its centre, is the centre of its YX plane's disk (distance ``m``)
   while the ZX and ZY planes give its true distance ``v``; the mean
   ``(m + 2 v) / 3`` passes ``s`` long before ``v`` does, so seeds with the 2D
   threshold are wide and those of touching nuclei join.  Thresholding the
   mean at ``(m + 2 s) / 3`` puts the seed border back where ``v = s`` along
   the axes.  On 7 synthetic confocal-like stacks (``bench_nuclei3d.py``'s
   generator, seeds 10-16, not the ones it reports) mean AP@0.5 went from
   0.877 with the 2D threshold to 0.954 (threshold ~0.61).
   The card's ``min_size`` is an *area* in model pixels; the 3D minimum is
   the volume of the ball with that cross-section, ``(4/3) * pi * (A / pi)
   ** 1.5`` voxels of the isotropic grid (16 px -> 48 voxels).  ``postprocess={"min_volume": n}`` sets it directly, in voxels of
   the input grid.
4. **Back to the input grid.**  Labels are resampled along Z by nearest
   neighbour (input plane ``z`` takes working plane
   ``floor((z + 0.5) * Zw / Z)``), objects that fell between the kept planes
   are dropped and ids made consecutive again.

The whole stack and the mean maps are held in memory: the peak of numpy
allocations was 30 bytes per voxel of the isotropic grid (tracemalloc, a
64x256x256 uint16 stack with Z step 2, i.e. 8.4 M working voxels: 241 MB),
so ~4 GB at :data:`MAX_VOXELS`; larger stacks are refused, plane-by-plane
segmentation (``do_3d=False``) handles any size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence

import numpy as np

from ..errors import ModelError, ParameterError
from ..geometry import convert, is_length, is_pixel, is_volume, normalize_unit
from ..progress import CancelToken, Progress
from .prepare import (
    RESAMPLE_TOLERANCE,
    check_axes,
    check_out,
    check_scale,
    infer_axes,
    model_channels,
    unpack_image,
    zoom_for_diameter,
    zoom_to_model,
)
from .segment import SegmentResult, segment_iter

#: Largest number of voxels (input grid and isotropic working grid) handled at once.
MAX_VOXELS = 2**27
#: Relative deviation of the Z / XY voxel-size ratio from 1 above which Z is resampled.
ANISOTROPY_TOLERANCE = 0.05
#: (slicing axis, permutation of Z, Y, X putting it first, plane axes) of the three passes.
ORIENTATIONS = (("Z", (0, 1, 2), "YX"), ("Y", (1, 0, 2), "ZX"), ("X", (2, 0, 1), "ZY"))
#: Progress units per orientation (each sub-run's progress is scaled onto them).
UNITS_PER_PASS = 100
#: With ``batch_size=None``, planes per network call: about this many plane pixels ...
PLANE_BATCH_PIXELS = 2**18
#: ... but at most this many planes.
MAX_PLANE_BATCH = 32


def planes_per_batch(plane_shape: Sequence[int]) -> int | None:
    """Planes per forward pass for small planes (None: the engine's default, for planes >= 512x512).

    One tile per plane and one plane per call (the engine's CPU default) makes
    thousands of tiny forward passes for a stack's ZX/ZY planes; batching
    them keeps the per-call overhead down.  Measured on the 48x96x96 test
    stack with the shipped ``nuclei`` model on 2 busy CPU cores (other jobs
    running): 72 s one plane per call, 14 s with 8, 4.9 s with 32.
    """
    n = min(MAX_PLANE_BATCH, PLANE_BATCH_PIXELS // max(1, int(np.prod(plane_shape))))
    return n if n > 1 else None


def min_volume_from_area(area: float) -> float:
    """Volume (voxels) of the ball whose central cross-section has ``area`` pixels.

    ``r = sqrt(area / pi)``, ``V = 4/3 * pi * r**3``; ``min_volume_from_area(16) ~ 48.1``.
    """
    r = math.sqrt(max(float(area), 0.0) / math.pi)
    return 4.0 / 3.0 * math.pi * r**3


def _plane_centre_distance(fg: np.ndarray, dist: np.ndarray, fg_threshold: float,
                           max_samples: int = 2**22) -> float | None:
    """99th percentile of ``dist`` over the foreground (strided subsample): the value at 2D object centres."""
    step = max(1, math.ceil((fg.size / max_samples) ** (1 / 3)))
    sub = (slice(None, None, step),) * 3
    d = dist[sub][fg[sub] > fg_threshold]
    return float(np.percentile(d.astype(np.float32), 99)) if d.size else None


def _voxel_size_zyx(scale: Sequence[float] | None, units, spatial: str) -> tuple[list[float] | None, list | None]:
    """``scale`` and ``units`` reordered to Z, Y, X; scale converted to one unit when the axes' units differ."""
    if scale is None:
        return None, None
    scale = check_scale(scale, spatial)
    order = [spatial.index(a) for a in "ZYX"]
    scale = [scale[i] for i in order]
    if units is None or isinstance(units, str):
        return scale, units
    us = list(units)
    if len(us) != len(spatial):
        raise ParameterError(f"units {tuple(us)} need one entry per spatial axis ({len(spatial)})")
    us = [us[i] for i in order]
    norm = [normalize_unit(u) for u in us]
    if len(set(norm)) > 1:  # e.g. Z in mm, Y/X in µm: compare in µm
        if not all(is_length(u) for u in norm):
            if all(is_pixel(u) for u in norm):
                return scale, us
            raise ParameterError(f"cannot compare the voxel sizes {tuple(scale)} in units {tuple(us)}")
        scale = [convert(s, u, "µm") for s, u in zip(scale, norm, strict=True)]
        us = ["µm"] * 3
    return scale, us


def segment_3d_from_2d_iter(
    image,
    model="auto",
    *,
    axes: str | None = None,
    scale: Sequence[float] | None = None,
    units: str | Sequence[str] | None = None,
    device="auto",
    tta: bool = False,
    postprocess: dict | None = None,
    cancel: CancelToken | None = None,
    tile_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    return_probabilities: bool = False,
    halo: int | Sequence[int] | None = None,
    precision: str = "auto",
    out=None,
    image_kind: str | None = None,
    diameter: float | Sequence[float] | None = None,
    backend: str = "auto",
) -> Generator[Progress, None, SegmentResult]:
    """3D objects in a Z stack from a 2D instance model (planes along the three axes).

    See the module docstring for the method.  The arguments not described
    here mean what they mean for
    :func:`~napari_medseg.inference.segment.segment_iter` and are passed to
    its three runs.

    Parameters
    ----------
    image : array-like or Volume
        ``ZYX`` grey stack, or with a channel axis (``ZCYX``, ``ZYXS`` RGB...).
        Loaded whole (numpy, dask, zarr...); at most :data:`MAX_VOXELS`
        voxels on the input and on the isotropic grid.
    model : str or path
        A 2D ``instance`` model (name, folder or ``"auto"``).
    axes : str, optional
        Axis letters; must include ``Z``.  None guesses from the shape.
    scale : sequence of float, optional
        Voxel size per spatial axis (in ``axes`` order, e.g. ``(dz, dy, dx)``).
        Only ratios matter for the anisotropy; None means isotropic.
    units : str or sequence of str, optional
        Unit(s) of ``scale``.  Axes in different length units are converted
        before the ratio is taken.
    postprocess : dict, optional
        Overrides for the 3D instance step: ``fg_threshold``,
        ``seed_threshold`` (the 2D value, raised as the module docstring
        says) or ``seed_threshold_3d`` (used as is), ``min_size`` (2D area in
        model pixels, converted to a ball volume) or ``min_volume`` (voxels
        of the input grid, used as is).  ``max_object_size`` and
        ``block_size`` are ignored (the whole volume is labelled at once).
    cancel : CancelToken, optional
        Checked at every yield (and inside the three runs, per tile batch).
    batch_size : int, optional
        Tiles (planes) per forward pass; None: :func:`planes_per_batch` of
        each orientation's plane size.
    out : array-like, optional
        Integer array of the image's spatial shape, written after the last
        yield.
    image_kind : str, optional
        What the image is, as for
        :func:`~napari_medseg.inference.segment.segment_iter` (checked once,
        against the model picked here).
    diameter : float or sequence of float, optional
        The objects' typical diameter in pixels along Y, X, as for
        :func:`~napari_medseg.inference.segment.segment_iter`; the three
        passes run on the ~isotropic grid, so it holds for each of them.

    Yields
    ------
    Progress
        One sequence over the whole job: ``info["stage"]`` is ``"load"``,
        ``"resample"``, ``"network"`` / ``"postprocess"`` / ``"write"`` (from
        the runs along ``info["axis"]`` ``"Z"``, ``"Y"``, ``"X"``),
        ``"objects3d"`` and ``"write"``.

    Returns
    -------
    SegmentResult
        ``labels`` with the image's spatial shape (uint16, uint32 past 65534
        objects); ``probabilities`` ``(2, ...)`` float16 mean foreground and
        distance maps on the input grid (linearly resampled back) when asked;
        ``info`` holds ``do_3d``, ``anisotropy``, ``work_shape``,
        ``min_volume_voxels``, ``seed_threshold_3d``,
        ``plane_centre_distance`` and ``n_labels``.

    Raises
    ------
    ParameterError
        No Z axis, too few planes, a stack over :data:`MAX_VOXELS`, bad
        scale/units, or ``out`` of the wrong shape/dtype.
    ModelError
        A semantic (or detection) model, a 3D model, or a channel mismatch.
    Cancelled
        When ``cancel`` was set.
    """
    from scipy import ndimage as ndi

    from ..models.kinds import kind_of_volume
    from ..models.registry import resolve_model_or_auto
    from .instances import DEFAULT_POSTPROCESS, instances_from_maps

    t_start = time.perf_counter()
    timings = dict.fromkeys(("load", "normalize", "read", "network", "postprocess", "write", "resample"), 0.0)

    def check():
        if cancel is not None:
            cancel.raise_if_cancelled()

    check()
    # ---- the image -------------------------------------------------------
    if image_kind is None and is_volume(image):
        image_kind = kind_of_volume(image)
    image, axes, scale, units = unpack_image(image, axes, scale, units)
    shape = tuple(int(s) for s in image.shape)
    axes = check_axes(axes if axes is not None else infer_axes(shape), len(shape))
    if "Z" not in axes:
        raise ParameterError(
            f"3D objects from a 2D model need a Z axis; the image has axes {axes!r} (shape {shape}): "
            "segment it without do_3d"
        )
    spatial = "".join(a for a in axes if a in "ZYX")
    ch_letter = next((a for a in axes if a in "CS"), "")
    n_ch = shape[axes.index(ch_letter)] if ch_letter else 1
    is_rgb = ch_letter == "S" and n_ch in (3, 4)
    nz, ny, nx = (shape[axes.index(a)] for a in "ZYX")
    if min(ny, nx) < 1:
        raise ParameterError(f"the image is empty (shape {shape})")
    if nz < 2:
        raise ParameterError(f"3D objects need at least 2 planes along Z; this stack has {nz}")
    scale_zyx, units_zyx = _voxel_size_zyx(scale, units, spatial)
    check_out(out, tuple(shape[axes.index(a)] for a in spatial), spatial)

    # ---- anisotropy: the isotropic working grid --------------------------
    anisotropy = 1.0
    if scale_zyx is not None:
        anisotropy = scale_zyx[0] / math.sqrt(scale_zyx[1] * scale_zyx[2])
    resample = abs(anisotropy - 1.0) > ANISOTROPY_TOLERANCE
    nz_w = max(2, round(nz * anisotropy)) if resample else nz
    work_scale = None if scale_zyx is None else [scale_zyx[0] * nz / nz_w, scale_zyx[1], scale_zyx[2]]
    n_in, n_work = nz * ny * nx, nz_w * ny * nx
    if max(n_in, n_work) > MAX_VOXELS:
        raise ParameterError(
            f"the stack {(nz, ny, nx)} is {n_work / 1e6:.0f} M voxels on the isotropic grid {(nz_w, ny, nx)}; "
            f"3D objects from a 2D model hold the whole volume in memory and take at most {MAX_VOXELS / 1e6:.0f} M. "
            "Crop the stack, or segment it plane by plane (do_3d off)"
        )

    # ---- the model -------------------------------------------------------
    info = resolve_model_or_auto(model, is_rgb, image_kind=image_kind)
    card = info.card
    if card.kind != "instance":
        raise ModelError(
            f"model {card.name!r} is a {card.kind!r} model; 3D objects from a 2D model need an 'instance' model "
            "(foreground and distance maps)"
        )
    if card.dims != 2:
        raise ModelError(f"model {card.name!r} is already {card.dims}D: segment the stack with it directly "
                         "(do_3d is for 2D models)")
    from .representations import representation_of

    representation_of(card).check_2d(f"do_3d with model {card.name!r}")
    model_channels(card, n_ch, is_rgb, axes)  # raises when the channels do not fit

    # ---- post-processing parameters (the 3D step) ----------------------
    pp = dict(DEFAULT_POSTPROCESS)
    pp.update(card.output.get("postprocess") or {})
    pp.update(postprocess or {})
    if "min_volume" in pp:
        min_vol = float(pp["min_volume"]) * nz_w / nz
    else:
        area = float(pp.get("min_size", 0.0))  # model pixels -> image pixels, as the engine does
        zoom2 = None
        if diameter is not None:
            zoom2 = zoom_for_diameter(card, diameter, 2)
        elif work_scale is not None:
            zoom2 = zoom_to_model(card, work_scale, units_zyx, 1)
        if zoom2 is not None and any(abs(z - 1.0) > RESAMPLE_TOLERANCE for z in zoom2):
            area /= float(np.prod(zoom2))
        min_vol = min_volume_from_area(area)
    fg_thr, seed_2d = float(pp["fg_threshold"]), float(pp["seed_threshold"])
    seed_3d = None if pp.get("seed_threshold_3d") is None else float(pp["seed_threshold_3d"])
    for key, v in (("fg_threshold", fg_thr), ("seed_threshold", seed_2d), ("seed_threshold_3d", seed_3d)):
        if v is not None and not 0.0 <= v <= 1.0:  # checked now, not after the three passes
            raise ParameterError(f"{key} must be in [0, 1], got {v}")
    if min_vol < 0:
        raise ParameterError(f"min_size / min_volume must be >= 0, got {pp.get('min_volume', pp.get('min_size'))}")
    plane_centre = None

    # ---- load (and resample) ---------------------------------------------
    units_total = len(ORIENTATIONS) * UNITS_PER_PASS + 2  # load+resample, passes, 3D objects, write
    yield Progress(0, units_total, "loading the stack", {"stage": "load"})
    check()
    t = time.perf_counter()
    perm_in = [axes.index(a) for a in "ZYX"] + ([axes.index(ch_letter)] if ch_letter else [])
    vol = np.asarray(image).transpose(perm_in)  # Z, Y, X (, channel)
    timings["load"] += time.perf_counter() - t
    if resample:
        t = time.perf_counter()
        factors = (nz_w / nz, 1, 1) + ((1,) if ch_letter else ())
        vol = ndi.zoom(vol.astype(np.float32, copy=False), factors, order=1, mode="nearest", grid_mode=True)
        assert vol.shape[0] == nz_w, (vol.shape, nz_w)
        timings["resample"] = time.perf_counter() - t
    yield Progress(1, units_total, f"stack {nz}x{ny}x{nx}" + (f" resampled to {nz_w} planes" if resample else ""),
                   {"stage": "resample"})
    check()

    # ---- the three orientations ------------------------------------------
    fg_sum = np.zeros((nz_w, ny, nx), np.float32)
    dist_sum = np.zeros((nz_w, ny, nx), np.float32)
    sub_axes = "ZYX" + ch_letter
    first = None
    for k, (axis, perm, planes) in enumerate(ORIENTATIONS):
        arr = np.ascontiguousarray(vol.transpose(list(perm) + ([3] if ch_letter else [])))
        sub_scale = None if work_scale is None else [work_scale[i] for i in perm]
        sub_units = units_zyx if units_zyx is None or isinstance(units_zyx, str) else [units_zyx[i] for i in perm]
        bs = batch_size if batch_size is not None else planes_per_batch(arr.shape[1:3])
        sub = segment_iter(arr, info.path, axes=sub_axes, scale=sub_scale, units=sub_units, device=device,
                           tile_size=tile_size, batch_size=bs, return_probabilities=True, cancel=cancel,
                           halo=halo, precision=precision, tta=tta, labels=False, backend=backend,
                           diameter=None if diameter is None else float(np.mean(np.atleast_1d(diameter))))
        base = 1 + k * UNITS_PER_PASS
        try:
            while True:
                try:
                    p = next(sub)
                except StopIteration as stop:
                    res = stop.value
                    break
                step = base + min(UNITS_PER_PASS - 1, int(UNITS_PER_PASS * p.fraction))
                yield Progress(step, units_total, f"{planes} planes along {axis} ({k + 1}/3): {p.message}",
                               {**(p.info or {}), "axis": axis})
                check()
        finally:
            sub.close()
        del arr
        inv = [0] + [1 + i for i in np.argsort(perm)]
        maps = res.probabilities.transpose(inv)
        if k == 0 and seed_3d is None:  # the YX pass: distance at the plane disks' centres
            plane_centre = _plane_centre_distance(maps[0], maps[1], fg_thr)
        fg_sum += maps[0]
        dist_sum += maps[1]
        del maps
        res.probabilities = None
        for key in ("load", "normalize", "read", "network", "postprocess", "write"):
            timings[key] += float(res.timings.get(key, 0.0))
        if first is None:
            first = res
    del vol
    fg_sum /= len(ORIENTATIONS)
    dist_sum /= len(ORIENTATIONS)
    yield Progress(1 + len(ORIENTATIONS) * UNITS_PER_PASS, units_total, "3D objects", {"stage": "objects3d"})
    check()

    # ---- 3D instances, back to the input grid ----------------------------
    t = time.perf_counter()
    if seed_3d is None:
        m = seed_2d if plane_centre is None else max(plane_centre, seed_2d)
        seed_3d = (m + 2 * seed_2d) / 3
    lab = instances_from_maps(fg_sum, dist_sum, fg_threshold=fg_thr, seed_threshold=seed_3d, min_size=min_vol)
    if return_probabilities:
        maps = np.stack([fg_sum, dist_sum])
        if resample:
            maps = ndi.zoom(maps, (1, nz / nz_w, 1, 1), order=1, mode="nearest", grid_mode=True)
        probs = np.clip(maps, 0.0, 1.0).astype(np.float16)
        del maps
    else:
        probs = None
    del fg_sum, dist_sum
    if resample:
        planes_kept = np.minimum(np.floor((np.arange(nz) + 0.5) * nz_w / nz).astype(np.int64), nz_w - 1)
        lab = lab[planes_kept]
    n_max = int(lab.max()) if lab.size else 0
    present = np.bincount(lab.ravel(), minlength=n_max + 1) > 0
    present[0] = False
    n_labels = int(present.sum())
    dtype = np.uint16 if n_labels <= 65534 else np.uint32
    lut = np.zeros(n_max + 1, dtype)
    lut[present] = np.arange(1, n_labels + 1, dtype=dtype)
    lab = lut[lab]
    back = ["ZYX".index(a) for a in spatial]  # to the input's spatial axis order
    lab = lab.transpose(back)
    if probs is not None:
        probs = probs.transpose([0] + [1 + i for i in back])
    timings["postprocess"] += time.perf_counter() - t
    if out is not None and n_labels > np.iinfo(np.dtype(out.dtype)).max:
        raise ParameterError(f"{n_labels} labels do not fit in out's dtype {out.dtype}; use uint32")
    yield Progress(units_total, units_total, "writing labels", {"stage": "write"})
    check()
    # no yield after this point: out is only written by a run that finishes
    if out is not None:
        t = time.perf_counter()
        out[...] = lab
        lab = out
        timings["write"] += time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    res_info = {
        "do_3d": True, "anisotropy": anisotropy, "z_resampled": resample, "work_shape": (nz_w, ny, nx),
        "postprocess": {"fg_threshold": fg_thr, "seed_threshold": seed_2d, "min_size": min_vol},
        "diameter": diameter,
        "min_volume_voxels": min_vol, "seed_threshold_3d": seed_3d, "plane_centre_distance": plane_centre,
        "n_labels": n_labels, "megavoxels": n_in / 1e6, "tta": bool(tta),
        "orientations": [f"{p} planes along {a}" for a, _, p in ORIENTATIONS],
        "batch_size": first.info.get("batch_size"), "precision": first.info.get("precision"),
        "model_resampled": first.info.get("resampled"),
    }
    return SegmentResult(lab, probs, first.device, first.device_reason, first.model_name, timings, res_info)
