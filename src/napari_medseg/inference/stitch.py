"""Block-wise instance post-processing with bounded memory, and the label store.

Large images are turned into instances block by block.  Each block is its
*core* plus a *halo* that must be larger than the largest object.
:func:`~napari_medseg.inference.instances.instances_from_maps` runs on the
whole block (core + halo); an object is kept by the one block whose core holds
its centroid, and written with the next free global id.  Objects that do not
touch a block border therefore come out exactly as if the whole image had
been processed at once (up to the numbering); a kept object that reaches into
a neighbour's core is written there too, and where two blocks disagree about
a pixel the block processed first wins.  Ids stay consecutive from 1.

Cellpose's ``distributed_segmentation`` stitches by merging labels that
overlap across block faces; the centroid rule needs no merge pass and no
global relabelling, which is what keeps it streaming.
"""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[slice, ...]

#: Labels larger than this many bytes (as uint16) are staged on disk (zarr)
#: when the caller gives ``out``, so that RAM does not grow with the image.
DISK_STAGING_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Block:
    """One post-processing block: ``core`` and ``region`` (core + halo) in image coordinates."""

    index: int
    core: Box
    region: Box

    @property
    def core_in_region(self) -> Box:
        return tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(self.core, self.region, strict=False))


def plan_blocks(shape: Sequence[int], block_shape: Sequence[int], halo: Sequence[int]) -> list[Block]:
    """Split ``shape`` into balanced blocks of at most ``block_shape`` with ``halo`` (clipped to the image)."""
    axes = []
    for L, b, h in zip(shape, block_shape, halo, strict=False):
        n = max(1, math.ceil(L / max(1, int(b))))
        edges = np.linspace(0, L, n + 1).round().astype(int)
        axes.append([(int(a), int(e), max(0, int(a) - h), min(L, int(e) + h)) for a, e in zip(edges[:-1], edges[1:], strict=False)])
    blocks = []
    for i, combo in enumerate(itertools.product(*axes)):
        blocks.append(Block(i, tuple(slice(a, e) for a, e, _, _ in combo), tuple(slice(r0, r1) for _, _, r0, r1 in combo)))
    return blocks


class LabelStore:
    """Where instance labels are assembled before they reach the caller.

    In memory (uint16, promoted to uint32 past 65534 ids), or, for large
    images, a temporary zarr array on disk (uint32, compressed) so that RAM
    does not grow with the image.  :meth:`commit` copies it into ``out``.
    """

    def __init__(self, shape: Sequence[int], on_disk: bool = False, chunks: Sequence[int] | None = None) -> None:
        self.shape = tuple(int(s) for s in shape)
        self._tmpdir = None
        if on_disk:
            import zarr

            self._tmpdir = tempfile.mkdtemp(prefix="medseg-labels-")
            chunks = tuple(min(int(c), s) for c, s in zip(chunks or (1024,) * len(self.shape), self.shape, strict=False))
            self.array = zarr.create_array(store=self._tmpdir, shape=self.shape, chunks=chunks, dtype="uint32",
                                           fill_value=0)
        else:
            self.array = np.zeros(self.shape, np.uint16)

    @property
    def on_disk(self) -> bool:
        return self._tmpdir is not None

    def ensure_capacity(self, max_id: int) -> None:
        """Promote the in-memory store to uint32 when ids pass uint16."""
        if max_id > 65534 and not self.on_disk and self.array.dtype == np.uint16:
            self.array = self.array.astype(np.uint32)

    def slabs(self, region: Box) -> list[tuple[Box, Box]]:
        """Split ``region`` along its first axis into slabs aligned with the store's chunks.

        Returns ``(box relative to the region, box in the image)`` pairs; slabs keep
        the temporaries of :func:`stitch_block` small (a few MB, not the block).
        """
        step = int(self.array.chunks[0]) if self.on_disk else 512
        r0 = region[0]
        edges = [r0.start, *range((r0.start // step + 1) * step, r0.stop, step), r0.stop]
        out = []
        for a, b in zip(edges[:-1], edges[1:], strict=False):
            out.append(((slice(a - r0.start, b - r0.start), *[slice(None)] * (len(region) - 1)),
                        (slice(a, b), *region[1:])))
        return out

    def read(self, box: Box) -> np.ndarray:
        return np.asarray(self.array[box])

    def write(self, box: Box, values: np.ndarray) -> None:
        self.array[box] = values

    def commit(self, out, n_labels: int, block_shape: Sequence[int]):
        """Copy the labels into ``out`` (block-wise) and return it; in-memory result if ``out`` is None."""
        if out is None:
            if self.on_disk:
                res = np.empty(self.shape, np.uint16 if n_labels < 65535 else np.uint32)
                for blk in plan_blocks(self.shape, block_shape, [0] * len(self.shape)):
                    res[blk.core] = self.read(blk.core)
                return res
            if self.array.dtype != np.uint16 and n_labels < 65535:
                return self.array.astype(np.uint16)
            return self.array
        # block by block: no full-size temporary (a dtype change would copy it all)
        for blk in plan_blocks(self.shape, block_shape, [0] * len(self.shape)):
            out[blk.core] = self.read(blk.core).astype(out.dtype, copy=False)
        if hasattr(out, "flush"):
            out.flush()
        return out

    def close(self) -> None:
        """Delete the temporary on-disk store, if any."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def centroids(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label pixel counts and centroids (``(n + 1, ndim)``, row 0 unused) of a label image.

    Works through slabs along the first axis so the coordinate arrays stay
    small (``np.nonzero`` on a whole dense 2k x 2k block would take ~70 MB).
    """
    counts = np.zeros(n + 1, np.int64)
    cent = np.zeros((n + 1, labels.ndim))
    step = max(1, (1 << 20) // max(1, int(np.prod(labels.shape[1:]))))
    for z0 in range(0, labels.shape[0], step):
        slab = labels[z0:z0 + step]
        idx = np.nonzero(slab)
        lab = slab[idx]
        counts += np.bincount(lab, minlength=n + 1)
        for ax, coord in enumerate(idx):
            cent[:, ax] += np.bincount(lab, weights=coord + (z0 if ax == 0 else 0), minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cent /= np.maximum(counts, 1)[:, None]
    return counts, cent


def stitch_block(store: LabelStore, block: Block, labels: np.ndarray, next_id: int) -> int:
    """Write the objects of ``labels`` (the block's region) whose centroid lies in its core.

    Parameters
    ----------
    store : LabelStore
        Global labels so far (0 = not yet claimed).
    block : Block
        The block ``labels`` was computed on.
    labels : ndarray of int
        Instance labels of ``block.region``, 0 background, ids 1..n.
    next_id : int
        First free global id.

    Returns
    -------
    int
        The next free global id after this block.
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    if n == 0:
        return next_id
    counts, cent = centroids(labels, n)
    core = block.core_in_region
    inside = np.ones(n + 1, bool)
    for ax, s in enumerate(core):
        c = np.floor(cent[:, ax])
        inside &= (c >= s.start) & (c < s.stop)
    inside &= counts > 0
    inside[0] = False
    if not inside.any():
        return next_id
    slabs = store.slabs(block.region)
    # pass 1: how many still-unclaimed pixels each candidate object would get
    written = np.zeros(n + 1, np.int64)
    for rel, box in slabs:
        lab = labels[rel]
        free = store.read(box) == 0
        written += np.bincount(lab[free & inside[lab]], minlength=n + 1)
    keep = inside & (written > 0)
    n_keep = int(keep.sum())
    if n_keep == 0:
        return next_id
    store.ensure_capacity(next_id + n_keep)
    lut = np.zeros(n + 1, store.array.dtype)
    lut[keep] = np.arange(next_id, next_id + n_keep, dtype=store.array.dtype)
    # pass 2: write them where nothing was written before (the first block wins)
    for rel, box in slabs:
        vals = lut[labels[rel]]
        existing = store.read(box)
        mask = (vals > 0) & (existing == 0)
        if mask.any():
            existing[mask] = vals[mask]  # in place: a view of an in-memory store, a fresh array from zarr
            store.write(box, existing)
    return next_id + n_keep
