"""Whole images block by block, and batches of files on a dask cluster.

``plan`` (the block grid, tissue blocks, the image a job reads),
``sampling`` (the pixels a job's normalisation percentiles are estimated on),
``tissue`` (a job's tissue mask: found on a coarse level of RGB slides, given, or none),
``store`` (the multiscale labels store and the per-block parts on disk),
``blockwise`` (the tasks of a whole-image job and
:func:`~napari_medseg.batch.blockwise.segment_blockwise_iter`, which runs
them in one process) and ``runner`` (:func:`~napari_medseg.batch.runner.run_batch`:
many files, or the blocks of one huge file, on dask.distributed).

Nothing is imported here; import the submodules.
"""
