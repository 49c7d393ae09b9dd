"""Inference: tiles -> network -> labels.

``tiling`` (streamed tiles with a halo, crop-to-core), ``normalize``
(percentile limits on a subsample), ``prepare`` (axes, scale, channels, zoom
to the model's pixel size, the tile plan), ``predictor`` (the network as
inference runs it: precision, folded batch norms, out-of-memory fallbacks,
and :func:`~napari_medseg.inference.predictor.predict_whole`, one padded
whole-image pass), ``stitch`` (block-wise instances with the centroid rule,
label store), ``instances`` (probability maps -> instance labels),
``segment`` (:func:`~napari_medseg.inference.segment.segment_iter`, the
tiled engine), ``ortho3d`` (3D objects from a 2D model) and ``dispatch``
(:func:`~napari_medseg.inference.dispatch.segment_any_iter`, which picks one
of the last two: the generator behind :func:`napari_medseg.segment`, the
widget and the CLI).

Nothing is imported here until asked for, so importing a submodule stays
cheap; ``napari_medseg.inference.segment_any_iter`` loads ``dispatch`` on
first use.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "segment_any_iter":
        from .dispatch import segment_any_iter

        return segment_any_iter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
