"""The Lesions dock widget: lesions from a semantic model or existing labels, measured, filtered, navigated.

Source: an Image layer and a semantic lesion model
(:func:`napari_medseg.analysis.lesions.lesions_iter`: the model's class
probabilities become lesions with a score), or a Labels layer, e.g. a NIfTI
mask or a DICOM-SEG (:func:`~napari_medseg.analysis.lesions.lesions_from_labels`),
with an optional Image layer for intensities (HU for CT).  A layer with a
time axis gives the lesions of the time point on screen.  Both run in a
worker thread with progress and Cancel.

The result (the user's layers are never changed; a re-run on the same source
replaces only the layers this widget made for it):

* ``<source> lesions`` and ``<source> lesion outlines`` (see :mod:`.outputs`),
  on the source's geometry (DICOM/NIfTI affines included);
* the lesion table (sortable, filterable): one row per lesion with its class,
  score, volume (mL, mm³) or area (mm²), RECIST long/short axis... Clicking
  a row moves the viewer to the lesion's RECIST slice, centres it and selects
  its label; picking a label in the viewer selects its row.

The minimum score and size re-filter the cached result
(:meth:`LesionsResult.refilter`): no network run.  "CNN class" (:mod:`.cnn`):
label some rows (select, class, "Label selected"), train a CNN on crops of a
fixed size in mm around them (2D, 2.5D or 3D), and every lesion gets a
``cnn_class`` and ``cnn_p_<class>``; or apply a trained one.  Export CSV writes the
filtered table.  In the 3D view the outline layer shows the lesions as solid
class-coloured surfaces (the translucent fill layer is hidden meanwhile).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ....errors import MedsegError, ModelError, ParameterError
from ..._worker import JobOutcome
from ...layers import (
    labels_of,
    layer_axes,
    level0,
    output_geometry,
    output_metadata,
    spatial_geometry,
    time_point,
)
from ..common import LayerCombo, OutputLayers, center_on, collapsible_form, report_error
from ..crop_cnn import CropCnnPanel, RowLabeller
from ..dock import JobDock, ModelRows
from ..objects.outputs import column_name
from ..objects.table import ObjectsTable
from .cnn import LesionCnnActions
from .outputs import (
    LESIONS_OF,
    META,
    display_order,
    layer_features,
    lesion_colors,
    lesion_index,
    lesion_layers,
    size_column,
    value_names,
)

if TYPE_CHECKING:
    import napari

    from ....analysis.lesions import LesionsResult

log = logging.getLogger(__name__)

SOURCES = ("image + lesion model", "existing labels")
#: (core ``split`` value, text) of the "lesions are" choice for existing labels.
SPLITS = (("auto", "auto (a mask: its components)"), ("ids", "one per label value"),
          ("components", "connected components"))


@dataclass
class _RunContext:
    """What the GUI thread captured at Run time (the layers may change meanwhile)."""

    source: weakref.ref
    name: str
    kind: str  #: "model" or "labels"
    geometry: dict[str, Any]  #: output layer keywords (the source's geometry)
    meta: dict[str, Any] = field(default_factory=dict)
    t_index: int | None = None
    #: (viewer axis counted from the end, world value) of the time point, for layers with a T axis
    time: tuple[int, float] | None = None
    #: the pixels under the lesions ((Z,) Y, X[, C]), for CNN crops; None for labels without intensities
    image: Any = None


def _combo(items: Any) -> QComboBox:
    """A combo box as narrow as a dozen characters, whatever its longest item."""
    box = QComboBox()
    box.addItems(list(items))
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(12)
    return box


def _short(name: str, n: int = 40) -> str:
    """A layer name for the status line: long ones elided in the middle."""
    return name if len(name) <= n else f"{name[:n // 2 - 1]}\u2026{name[-(n // 2 - 1):]}"


def _measure_labels(lab: np.ndarray, geometry: Any, **kw: Any):
    """Generator: existing labels -> LesionsResult (worker thread)."""
    from ....analysis.lesions import lesions_from_labels
    from ....progress import Progress

    yield Progress(0, 1, "measuring lesions", {"stage": "lesions"})
    res = lesions_from_labels(np.array(lab), geometry, **kw)  # a copy: the user may paint meanwhile
    yield Progress(1, 1, "measuring lesions", {"stage": "lesions"})
    return res


class LesionsWidget(LesionCnnActions, JobDock):
    """Dock widget: find or measure lesions, filter them, click to navigate, export.

    ``napari_viewer``: see :class:`~napari_medseg._napari.widgets.dock.JobDock`.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer,
                         "Pick an image and a lesion model (or existing labels), then Find lesions.")
        v = napari_viewer
        # --- source
        self.source_kind = _combo(SOURCES)
        self.model_rows = rows = ModelRows(v, ("semantic",), note=False, by_kind=False)
        self.image_combo, self.model_picker, self.device_picker = rows.image_combo, rows.model_picker, rows.device_picker
        self.model_picker.setToolTip("Semantic (class probability) models; lesions are their connected components")
        self.labels_combo = LayerCombo(v, Labels)
        self.split_combo = _combo([text for _, text in SPLITS])
        self.split_combo.setToolTip("one per label value: every value (e.g. a DICOM-SEG segment) is one lesion;\n"
                                    "connected components: every connected part of every value is a lesion,\n"
                                    "its class the value's name; auto: components for a mask (one value)")
        self.intensity_check = QCheckBox()
        self.intensity_check.setToolTip("Measure mean/std/min/max of this image in every lesion (HU for CT)")
        self.intensity_combo = LayerCombo(v, Image)
        self._model_rows, self._labels_rows = QWidget(), QWidget()
        fm = QFormLayout(self._model_rows)
        fm.setContentsMargins(0, 0, 0, 0)
        rows.add_rows(fm)
        fl = QFormLayout(self._labels_rows)
        fl.setContentsMargins(0, 0, 0, 0)
        fl.addRow("labels", self.labels_combo)
        fl.addRow("lesions are", self.split_combo)
        irow = QHBoxLayout()
        irow.addWidget(self.intensity_check)
        irow.addWidget(self.intensity_combo, 1)
        fl.addRow("intensities", irow)
        # --- advanced
        self.probability = QDoubleSpinBox()
        self.probability.setRange(0.0, 0.99)
        self.probability.setSingleStep(0.05)
        self.probability.setSpecialValueText("arg-max")
        self.probability.setToolTip("A voxel is lesion when the lesion classes' probability exceeds this;\n"
                                    "arg-max: when a lesion class is the most probable class")
        self.connectivity = _combo(["faces, edges, corners", "faces only"])
        self.connectivity.setToolTip("Which neighbouring voxels join one lesion")
        self.split_touching = QCheckBox("split touching lesions")
        self.tta = QCheckBox("test-time flips")
        self.tta.setToolTip("Average the model over 4 mirror images of each tile: ~4x slower, steadier scores")
        self.tile_size = QSpinBox()
        self.tile_size.setRange(0, 8192)
        self.tile_size.setSingleStep(64)
        self.tile_size.setSpecialValueText("auto")
        self.advanced, fa = collapsible_form("Advanced")
        fa.addRow("lesion probability", self.probability)
        fa.addRow("connectivity", self.connectivity)
        fa.addRow(self.split_touching)
        fa.addRow(self.tta)
        fa.addRow("tile size", self.tile_size)
        self.run_row("Find lesions", self.run)
        # --- filter, counts, table, export
        self.min_score = QDoubleSpinBox()
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setSingleStep(0.05)
        self.min_score.setDecimals(2)
        self.min_score.setToolTip("Show lesions whose score (highest class probability) is at least this")
        self.min_size = QDoubleSpinBox()
        self.min_size.setRange(0.0, 1e12)
        self.min_size.setDecimals(1)
        self.min_size.setSuffix(" mm\u00b3")
        self.min_size.setToolTip("Show lesions at least this large (volume in 3D, area in 2D)")
        for spin in (self.min_score, self.min_size):
            spin.setKeyboardTracking(False)  # typed values apply on Enter; arrows at once
        # wide enough for a typical value with its unit (not the largest value: the dock stays narrow)
        _fit_width(self.min_score, "0.00")
        _fit_width(self.min_size, "9999.9 mm\u00b3")
        frow = QHBoxLayout()
        frow.addWidget(QLabel("score \u2265"))
        frow.addWidget(self.min_score)
        frow.addWidget(QLabel("size \u2265"))
        frow.addWidget(self.min_size, 1)
        self.counts_label = QLabel()
        self.counts_label.setWordWrap(True)
        for label in (self.status, self.counts_label):  # a long layer name must not widen the dock
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        self.table_view = ObjectsTable()
        self.table_view.view.setMinimumHeight(180)
        self.table_view.view.verticalHeader().setVisible(False)  # the id column names the lesion
        self.export_csv_button = QPushButton("Export CSV\u2026")
        self.export_csv_button.setEnabled(False)
        self.row_labeller = RowLabeller(self._selected_ids)
        self.cnn_panel = CropCnnPanel(self.status, self._cnn_source, lambda: dict(self.row_labeller.labels),
                                      self._cnn_result, what="lesions", default_size=self._default_crop_size)
        self.cnn_section = QCollapsible("CNN class")
        cnn_box = QWidget()
        cl = QVBoxLayout(cnn_box)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(QLabel("label selected rows as"))
        cl.addWidget(self.row_labeller)
        cl.addWidget(self.row_labeller.count_label)
        cl.addWidget(self.cnn_panel)
        self.cnn_section.addWidget(cnn_box)

        top = QFormLayout()
        top.addRow("lesions from", self.source_kind)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        lay.addLayout(top)
        lay.addWidget(self._model_rows)
        lay.addWidget(self._labels_rows)
        lay.addWidget(self.advanced)
        lay.addWidget(self.buttons)
        lay.addWidget(self.status)
        lay.addLayout(frow)
        lay.addWidget(self.counts_label)
        lay.addWidget(self.table_view, 1)
        erow = QHBoxLayout()
        erow.addStretch(1)
        erow.addWidget(self.export_csv_button)
        lay.addLayout(erow)
        lay.addWidget(self.cnn_section)
        self.scroll = QScrollArea()  # fits a laptop screen: scrolls instead of forcing a tall dock
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)

        # --- state
        self.result: LesionsResult | None = None  #: the last result (every lesion)
        self.table = None  #: the lesions shown (filtered table, pandas DataFrame)
        self.colors: dict[str, str] = {}
        self._ctx: _RunContext | None = None
        self._outputs = OutputLayers(v)
        self._fill: weakref.ref | None = None
        self._outline: weakref.ref | None = None
        self._focusing = False

        self.source_kind.currentIndexChanged.connect(self._on_source_kind)
        self.model_picker.modelChanged.connect(self._on_model_changed)
        self.intensity_combo.layerChanged.connect(self._on_intensity_layer)
        self.min_score.valueChanged.connect(self.apply_filter)
        self.min_size.valueChanged.connect(self.apply_filter)
        self.table_view.objectActivated.connect(self.focus_lesion)
        self.row_labeller.labelsChanged.connect(self._on_row_labels)
        self.export_csv_button.clicked.connect(lambda: self.export_csv())
        v.dims.events.ndisplay.connect(self._on_ndisplay, position="first")  # before the layers re-render
        rows.start()
        if self.model_picker.current() is None and self.labels_combo.layer() is not None:
            self.source_kind.setCurrentIndex(1)
        self._on_source_kind()
        self._on_intensity_layer(self.intensity_combo.layer())

    # ================================================================== public API
    @property
    def running(self) -> bool:
        """Whether a lesion run (or a CNN training / classification) is in progress."""
        return (self._job is not None and self._job.running) or self.cnn_panel.running

    @property
    def lesions_layer(self) -> Labels | None:
        """The lesions Labels layer of the current result, if still in the viewer."""
        return self._alive(self._fill)

    @property
    def outlines_layer(self) -> Labels | None:
        """The outline Labels layer of the current result, if still in the viewer."""
        return self._alive(self._outline)

    def run(self) -> None:
        """Find (model) or measure (labels) the lesions of the chosen source in a worker thread."""
        if (prepared := self.prepared(self._prepare)) is None:
            return
        ctx, make_gen = prepared
        what = "Finding lesions in" if ctx.kind == "model" else "Measuring lesions of"
        at = "" if ctx.t_index is None else f" (time point {ctx.t_index})"
        self.start_job(make_gen, lambda outcome: self._finish(ctx, outcome), desc=f"Lesions of {ctx.name}",
                       message=f"{what} {_short(ctx.name)}{at}\u2026")

    def apply_filter(self, *_: Any) -> None:
        """Show the lesions of the current result that pass the minimum score and size (no network run)."""
        if self.result is None:
            return
        labels, shown = self.result.refilter(score_threshold=self._score_threshold(),
                                             min_size=float(self.min_size.value()))
        self.table = shown
        feats = layer_features(shown)
        for lay in (self.lesions_layer, self.outlines_layer):
            if lay is not None:
                lay.data = labels
                lay.features = feats.copy()
        self._refresh_views()

    def focus_lesion(self, row: int) -> None:
        """Move the viewer to the lesion in (filtered) table row ``row``: its RECIST slice, centred, selected."""
        lay = self.lesions_layer or self.outlines_layer
        if self.table is None or lay is None or not 0 <= row < len(self.table) or self._focusing:
            return
        self._focusing = True
        try:
            r = self.table.iloc[row]
            t = self._ctx.time if self._ctx is not None else None
            fixed = None if t is None else {self.viewer.dims.ndim - t[0]: t[1]}
            center_on(self.viewer, lay.data_to_world(lesion_index(r, lay.ndim)), fixed)
            lay.selected_label = int(r["id"])
            self.table_view.select_row(row)
        finally:
            self._focusing = False

    def sort_table(self, column: str, descending: bool = True) -> None:
        """Sort the table view by ``column`` (as a click on its header does)."""
        order = Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder
        self.table_view.view.sortByColumn(self.table_view.model.columns().index(column), order)

    def export_csv(self, path: str | Path | None = None) -> Path | None:
        """Write the shown (filtered) lesion table as CSV; asks for a file when ``path`` is None."""
        from ....analysis.objects import write_objects_csv

        if self.table is None:
            self.status.set("Nothing to export: find lesions first.", error=True)
            return None
        if path is None:
            default = f"{column_name(self._ctx.name if self._ctx else 'lesions')}_lesions.csv"
            path, _ = QFileDialog.getSaveFileName(self, "Export lesion table", default, "CSV (*.csv)")
            if not path:
                return None
        try:
            written = write_objects_csv(path, self.table)
        except (MedsegError, OSError) as exc:
            report_error(self.status, exc, "Export")
            return None
        self.status.set(f"Wrote {len(self.table)} lesions to {written}")
        return written

    # ================================================================== Qt events
    def sizeHint(self) -> Any:
        """Opens wide enough for the table's key columns; shrinks to :meth:`minimumSizeHint` (<= 330 px)."""
        hint = super().sizeHint()
        hint.setWidth(max(hint.width(), 400))
        return hint

    # ================================================================== running
    def _prepare(self):
        """Context and generator factory for a run, from the current controls (GUI thread)."""
        point = self.viewer.dims.point
        conn = None if self.connectivity.currentIndex() == 0 else 1
        if self.source_kind.currentIndex() == 0:
            src, model = self.image_combo.layer(), self.model_picker.current()
            if src is None:
                raise ParameterError("No image layer: open or select an image first.")
            if model is None:
                raise ParameterError("No lesion model: add a semantic model with 'folder\u2026', train one in the "
                                     "Train widget (semantic mode), or switch to 'existing labels'.")
            if model.card.kind != "semantic":
                raise ModelError(f"{model.name} is a {model.card.kind} model; lesions need a semantic model "
                                 "(class probabilities).")
            data, axes = level0(src), layer_axes(src)
            if axes is None:
                raise ParameterError(f"image {src.name!r} has {src.ndim} dimensions; lesions need a 2D or 3D image")
            tp = time_point(src, point)
            if tp is not None:
                data = data[(slice(None),) * tp[0] + (tp[1],)]
                axes = axes.replace("T", "")
            geometry = spatial_geometry(src)
            # min_size 0: the size filter below re-filters the cached lesions (the card's is its start value)
            params = {"threshold": self.probability.value() or None, "min_size": 0.0, "connectivity": conn,
                      "split_touching": self.split_touching.isChecked(), "tta": self.tta.isChecked(),
                      "device": self.device_picker.device(),
                      "tile_size": self.tile_size.value() or None}
            model_path = model.path

            def make_gen(token):
                from ....analysis.lesions import lesions_iter  # torch loads here, in the worker thread

                return lesions_iter(data, model_path, geometry, axes=axes, cancel=token, **params)

            made = {"model": model.name, "model_path": str(model.path), "parameters": dict(params)}
            crop_image = np.moveaxis(data, axes.index("C"), -1) if "C" in axes else data
        else:
            src = self.labels_combo.layer()
            if src is None:
                raise ParameterError("No Labels layer: open lesion labels (NIfTI, NRRD, DICOM-SEG...) "
                                     "or switch to 'image + lesion model'.")
            lab = labels_of(src)
            tp = time_point(src, point)
            if tp is not None:
                lab = lab[(slice(None),) * tp[0] + (tp[1],)]
            geometry = spatial_geometry(src)
            if lab.ndim != geometry.ndim or lab.ndim not in (2, 3):
                raise ParameterError(f"Labels layer {src.name!r} is not one 2D or 3D label image "
                                     f"(shape {tuple(lab.shape)})")
            image, image_name = self._intensity_image(lab.shape, geometry, point)
            split = SPLITS[self.split_combo.currentIndex()][0]
            kw = {"split": split, "class_names": value_names(src), "connectivity": conn, "image": image,
                  "image_name": image_name}

            def make_gen(token):
                return _measure_labels(lab, geometry, **kw)

            made = {"labels": src.name, "parameters": {"split": split, "connectivity": conn,
                                                       "intensities": None if image is None else image_name}}
            crop_image = image
        ndim = geometry.ndim
        time = None
        if tp is not None:
            idx = np.zeros(src.ndim)
            idx[tp[0]] = tp[1]
            time = (src.ndim - tp[0], float(np.asarray(src.data_to_world(idx))[tp[0]]))
        meta = {**output_metadata(src), LESIONS_OF: src.name, META: {**made, "time_index": tp and tp[1]}}
        ctx = _RunContext(weakref.ref(src), src.name, "model" if self.source_kind.currentIndex() == 0 else "labels",
                          output_geometry(src, ndim), meta, None if tp is None else tp[1], time, crop_image)
        return ctx, make_gen

    def _intensity_image(self, shape: tuple[int, ...], geometry: Any, point: Any) -> tuple[Any, str]:
        """The intensity image for existing labels (None when unchecked or absent) and its column name."""
        layer = self.intensity_combo.layer() if self.intensity_check.isChecked() else None
        if layer is None:
            return None, "image"
        if layer.rgb:
            raise ParameterError(f"intensities: {layer.name!r} is an RGB image; pick a grey image or uncheck "
                                 "'intensities'")
        img = level0(layer)
        tp = time_point(layer, point)
        if tp is not None:
            img = img[(slice(None),) * tp[0] + (tp[1],)]
        if tuple(img.shape) != tuple(shape):
            raise ParameterError(f"intensities: image {layer.name!r} has shape {tuple(img.shape)}, the labels "
                                 f"{tuple(shape)}; pick the image the labels belong to, or uncheck 'intensities'")
        g = spatial_geometry(layer)
        if g.calibrated and geometry.calibrated and not np.allclose(g.corners(shape), geometry.corners(shape),
                                                                     atol=1e-2):
            raise ParameterError(f"intensities: image {layer.name!r} is not on the labels' grid (another "
                                 "position or orientation); pick the image the labels belong to")
        return img, column_name(layer.name)

    def _finish(self, ctx: _RunContext, outcome: JobOutcome) -> None:
        def show(res: LesionsResult) -> str:
            self._show_result(ctx, res)
            n, shown = len(res.table), len(self.table)
            at = "" if ctx.t_index is None else f" at time point {ctx.t_index}"
            how = f" with {res.model_name}" if ctx.kind == "model" else ""
            text = (f"{n} lesion{'' if n == 1 else 's'} in {_short(ctx.name)}{at}{how} in {outcome.elapsed:.1f} s"
                    + ("" if shown == n else f"; {shown} pass the filter"))
            return text + (f"\n{res.device_reason}" if res.device_reason else "")

        what = "Lesion detection" if ctx.kind == "model" else "Measuring lesions"
        self.end_job(outcome, what, show, show_what="Showing the lesions")

    def _show_result(self, ctx: _RunContext, res: LesionsResult) -> None:
        col, unit = size_column(res.table)
        self.min_size.blockSignals(True)
        self.min_size.setSuffix(f" {unit}")
        _fit_width(self.min_size, f"9999.9 {unit}")
        self.min_size.blockSignals(False)
        self.min_score.setEnabled(ctx.kind == "model")
        self.colors = lesion_colors(res.table, self.colors)
        self.result, self._ctx = res, ctx
        labels, shown = res.refilter(score_threshold=self._score_threshold(), min_size=float(self.min_size.value()))
        fill, outline = lesion_layers(labels, shown, res.table, self.colors, ctx.geometry, ctx.name, ctx.meta)
        # the viewer changes only once both layers exist
        src = ctx.source()
        self._fill = weakref.ref(self._outputs.put("lesions", src, fill))
        self._outline = weakref.ref(self._outputs.put("outlines", src, outline))
        fill.events.selected_label.connect(self._on_viewer_label)
        self.table = shown
        self.cnn_panel.set_dims(res.geometry.ndim, res.geometry.length_unit)
        self.row_labeller.set_labels({})  # new lesions, new ids
        self._refresh_views()
        self._on_ndisplay()

    # ================================================================== views
    def _score_threshold(self) -> float:
        return float(self.min_score.value()) if self._ctx is None or self._ctx.kind == "model" else 0.0

    def _refresh_views(self) -> None:
        shown = None if self.table is None else display_order(self.table)  # same rows, reporting columns first
        self.table_view.set_table(shown)
        if shown is not None and "score" in shown.columns:  # labels have no score: 1 each (the CSV keeps it)
            self.table_view.view.setColumnHidden(list(shown.columns).index("score"),
                                                 self._ctx is not None and self._ctx.kind == "labels")
        self.export_csv_button.setEnabled(self.table is not None)
        if self.table is None or self.result is None:
            self.counts_label.setText("")
            return
        cls = [str(c) for c in self.table["class"]]
        parts = [f'<span style="color:{self.colors[c]}">&#9632;</span> {escape(c)}: {n}'
                 for c in self.colors if (n := cls.count(c))]
        total = len(self.result.table)
        self.counts_label.setText(f"<b>{len(self.table)} of {total} lesion{'' if total == 1 else 's'}</b>"
                                  " &nbsp; " + " &nbsp; ".join(parts))

    def _on_viewer_label(self, *_: Any) -> None:
        """A label picked in the viewer selects its table row (the camera stays)."""
        lay = self.lesions_layer
        if lay is None or self.table is None or self._focusing:
            return
        rows = np.flatnonzero(np.asarray(self.table["id"], np.int64) == int(lay.selected_label))
        if rows.size:
            self._focusing = True
            try:
                self.table_view.select_row(int(rows[0]))
            finally:
                self._focusing = False

    def _on_ndisplay(self, *_: Any) -> None:
        """2D: translucent fill + class-coloured contours; 3D: solid class-coloured lesions (surfaces)."""
        three_d = self.viewer.dims.ndisplay == 3
        outline, fill = self.outlines_layer, self.lesions_layer
        if outline is not None:
            outline.contour = 0 if three_d else 1  # napari draws no contours in 3D
        if fill is not None:
            fill.visible = not three_d

    def _on_source_kind(self, *_: Any) -> None:
        model = self.source_kind.currentIndex() == 0
        self._model_rows.setVisible(model)
        self._labels_rows.setVisible(not model)
        for w in (self.probability, self.split_touching, self.tta, self.tile_size):
            w.setEnabled(model)
        self.run_button.setText("Find lesions" if model else "Measure lesions")

    def _on_intensity_layer(self, layer: Any) -> None:
        self.intensity_check.setChecked(layer is not None and not layer.rgb)  # RGB: no intensity columns

    def _on_model_changed(self, info: Any) -> None:
        """Start the probability, flips, score and size controls at the operating point the model's card recommends."""
        if info is None:
            return
        from ....analysis.lesions import lesion_defaults

        try:
            d = lesion_defaults(info.card)
        except MedsegError as exc:
            self.status.set(str(exc))
            return
        self.probability.setValue(d["threshold"] or 0.0)
        self.tta.setChecked(d["tta"])
        self.min_score.setValue(d["score_threshold"])
        self.min_size.setValue(d["min_size"])

    def _alive(self, ref: weakref.ref | None) -> Any:
        lay = ref() if ref is not None else None
        return lay if lay is not None and any(x is lay for x in self.viewer.layers) else None


def _fit_width(spin, sample: str) -> None:
    """Give ``spin`` the minimum width that shows ``sample`` (value and suffix) beside its arrows."""
    text = spin.fontMetrics().horizontalAdvance(sample)
    spin.setMinimumWidth(text + 64)  # buttons (napari puts - and + on either side), frame and margins
