"""Whole slides: pyramids opened lazily, tissue detection, tile heat maps, lesion regions, QuPath GeoJSON.

* :mod:`.pyramid`: :func:`open_slide` -> :class:`Slide` (levels as dask arrays, µm per pixel).
* :mod:`.tissue`: :func:`detect_tissue` on a low level -> :class:`TissueMask`, tissue fraction per tile.
* :mod:`.heatmap`: :func:`classify_slide_iter`, a CNN tile classifier over a grid -> :class:`HeatMap`.
* :mod:`.regions`: thresholded heat-map regions with class, mean probability, area (mm²), longest diameter (mm).
* :mod:`.geojson`: QuPath-compatible GeoJSON out (regions, cells, annotations) and in (annotations).

Nothing here imports napari or Qt; torch only inside the classifier calls.
"""
