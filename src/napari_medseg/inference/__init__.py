"""Inference: tiles -> network -> labels.

``tiling`` (streamed tiles with a halo, crop-to-core), ``normalize``
(percentile limits on a subsample), ``stitch`` (block-wise instances with the
centroid rule, label store), ``instances`` (probability maps -> instance
labels) and ``segment`` (:func:`~napari_medseg.inference.segment.segment_iter`,
the generator behind :func:`napari_medseg.segment`, the widget and the CLI).
Nothing is imported here, so importing a submodule stays cheap.
"""
