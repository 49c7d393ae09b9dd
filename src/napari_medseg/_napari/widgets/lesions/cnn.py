"""The Lesions widget's CNN class per lesion: rows the user labels, crops of a fixed mm size, probabilities.

:class:`LesionCnnActions` is a mixin of
:class:`~napari_medseg._napari.widgets.lesions.LesionsWidget`: it gives the
shared :class:`~napari_medseg._napari.widgets.crop_cnn.CropCnnPanel` the
lesions' image (the image the model ran on, or the intensity image of
existing labels, at the time point on screen), every lesion's centroid and the
geometry, and writes ``label`` (the user's class of a row) and the CNN's
``cnn_class``, ``cnn_probability`` and ``cnn_p_<class>`` into the lesion table
of the result, so the score/size filter keeps them.  It uses the widget's
``result``, ``table``, ``_ctx``, ``table_view``, ``row_labeller`` and
``apply_filter``.
"""

from __future__ import annotations

import numpy as np

from ....errors import ParameterError
from ..crop_cnn import CropSource, selected_ids
from ..objects.outputs import centroids


class LesionCnnActions:
    """Mixin: row labels and the CNN of the Lesions widget (see the module docstring)."""

    def _selected_ids(self) -> list[int]:
        return selected_ids(self.table, self.table_view)

    def _on_row_labels(self) -> None:
        """The row labels as the result table's ``label`` column (none: no column); the view keeps its selection."""
        if self.result is None:
            return
        t = self.result.table.drop(columns=["label"], errors="ignore")
        if self.row_labeller.labels:
            t["label"] = self.row_labeller.column(t["id"])
        sel = self._selected_ids()
        self.result.table = t
        self.apply_filter()
        ids = np.asarray(self.table["id"], np.int64)
        self.table_view.select_rows([int(r) for r in np.flatnonzero(np.isin(ids, sel))])

    def _cnn_source(self) -> CropSource:
        """Image, centroids and geometry of every lesion of the result (GUI thread)."""
        from ....geometry.units import PIXEL

        if self.result is None or self._ctx is None:
            raise ParameterError("Find or measure lesions first, then label some of each class in the table.")
        image = self._ctx.image
        if image is None:
            raise ParameterError("The CNN needs the lesions' image: tick 'intensities' with the image the labels "
                                 "belong to, then Measure lesions again.")
        t = self.result.table
        g = self.result.geometry
        ndim = g.ndim
        unit = g.length_unit if g.calibrated else PIXEL
        return CropSource(image, centroids(t, "ZYX"[-ndim:]), np.asarray(t["id"], np.int64), g, unit, self._ctx.name)

    def _cnn_result(self, ids: np.ndarray, probs: np.ndarray, names: list[str], model: str) -> None:
        """CNN columns into the result table (every lesion), then re-filter."""
        from ....analysis.crop_classify import cnn_columns

        if self.result is None or not np.array_equal(np.asarray(self.result.table["id"], np.int64), ids):
            raise ParameterError("The lesions changed while the CNN ran; train or classify again.")
        t = self.result.table
        self.result.table = cnn_columns(t.drop(columns=[c for c in t.columns if str(c).startswith("cnn_")]),
                                        probs, names)
        self.apply_filter()

    def _default_crop_size(self, unit: str) -> float | None:
        from ....analysis.crop_classify import default_crop_size

        return None if self.result is None else default_crop_size(self.result.table, unit, factor=2.0)


__all__ = ["LesionCnnActions"]
