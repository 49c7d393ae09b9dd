"""One entry point for both ways to segment: the tiled engine, or 3D objects from a 2D model.

:func:`segment_any_iter` takes the arguments of
:func:`~napari_medseg.inference.segment.segment_iter` plus ``do_3d`` and
hands the job to :func:`~napari_medseg.inference.segment.segment_iter`
(``do_3d=False``) or
:func:`~napari_medseg.inference.ortho3d.segment_3d_from_2d_iter`
(``do_3d=True``).  :func:`napari_medseg.segment`, the ``medseg segment``
command and the Segment widget go through it, so that neither of the two
modules has to know the other's callers.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from ..errors import ParameterError
from ..progress import CancelToken, Progress
from . import ortho3d, segment
from .segment import SegmentResult


def segment_any_iter(
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
    do_3d: bool = False,
    labels: bool = True,
    image_kind: str | None = None,
    diameter: float | Sequence[float] | None = None,
    backend: str = "auto",
) -> Generator[Progress, None, SegmentResult]:
    """Segment an image, yielding progress; returns a :class:`~napari_medseg.inference.segment.SegmentResult`.

    Parameters
    ----------
    image, model, axes, scale, device, tile_size, batch_size, return_probabilities, cancel, out, halo, \
postprocess, precision, units, tta, labels, image_kind, diameter, backend
        See :func:`~napari_medseg.inference.segment.segment_iter`.
    do_3d : bool
        3D objects in a Z stack from a 2D instance model: the model runs on
        the planes along Z, Y and X of the stack (Z first resampled to
        ~isotropic voxels from ``scale``), the maps are averaged and labelled
        in 3D, and the labels come back on the image grid.  Holds the whole
        stack in memory.  Runs
        :func:`~napari_medseg.inference.ortho3d.segment_3d_from_2d_iter` (see
        it for the method, the ``postprocess`` keys and the limits; it
        always makes labels, so ``labels`` is not passed on); raises
        ParameterError when the image has no Z axis and ModelError for
        semantic or 3D models.

    Yields
    ------
    Progress
        As the chosen generator yields them.

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
    if not do_3d:
        return (yield from segment.segment_iter(
            image, model, axes=axes, scale=scale, device=device, tile_size=tile_size, batch_size=batch_size,
            return_probabilities=return_probabilities, cancel=cancel, out=out, halo=halo, postprocess=postprocess,
            precision=precision, units=units, tta=tta, labels=labels, image_kind=image_kind,
            diameter=diameter, backend=backend))
    if not labels and not return_probabilities:
        raise ParameterError("labels=False computes only the probability maps: set return_probabilities=True")
    return (yield from ortho3d.segment_3d_from_2d_iter(
        image, model, axes=axes, scale=scale, units=units, device=device, tta=tta, postprocess=postprocess,
        cancel=cancel, tile_size=tile_size, batch_size=batch_size, return_probabilities=return_probabilities,
        halo=halo, precision=precision, out=out, image_kind=image_kind, diameter=diameter, backend=backend))
