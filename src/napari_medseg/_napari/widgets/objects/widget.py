"""The Objects dock widget: detect, measure, classify and tabulate objects (QuPath-like).

Source: a Labels layer (the user's or ours), or an Image layer plus a model
(segmentation or box detection).  Run calls
:func:`napari_medseg.analysis.objects.detect_iter` in a napari thread
worker; the checked Image layers give per-channel intensity columns.

Outputs (never a change to the user's layers)
---------------------------------------------
* ``<source> objects``: a Points layer at the objects' centroids, coloured by
  class, carrying the whole table as ``features`` (class, score, probability
  and every measurement).  Box models give ``<source> boxes``, a Shapes layer
  of rectangles, instead.
* ``<image> objects labels``: for segmentation models, the objects' Labels
  layer, with the table as ``features`` (``index`` = label id).
* A user's Labels layer is only read: its data, features and selected label
  stay as they were (its table lives on the Points layer).

A re-run on the same source replaces the layers this widget made for it.
Classification (gates or a trained classifier) rewrites the ``class`` (and
``probability``) columns of the table and of the output layers' features,
and recolours them.  Table rows are in output-layer order: row ``i`` is point
(or rectangle) ``i``.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ....analysis.crop_classify import default_crop_size
from ....errors import MedsegError, ParameterError
from ..._worker import JobOutcome, ProgressJob
from ...layers import labels_of, layer_axes, measure_geometry, output_geometry, output_metadata
from ..common import LayerCombo, OutputLayers, center_on, report_error, scrolling_layout
from ..crop_cnn import CropCnnPanel, RowLabeller
from ..dock import JobDock, ModelRows
from .classify import ClassifierPanel, GatePanel
from .outputs import (
    OBJECTS_OF,
    LayerChecklist,
    boxes_layer,
    centroids,
    class_colors,
    column_name,
    points_layer,
    rgba,
)
from .plot import PlotPanel
from .table import ObjectsTable
from .training import ClassifierActions

if TYPE_CHECKING:
    import napari

    from ....analysis.objects import ObjectsResult

log = logging.getLogger(__name__)

SOURCES = ("labels layer", "image + model")
_RGB = ("red", "green", "blue", "alpha")


@dataclass
class _RunContext:
    """What the GUI thread captured at Run time (layers may change meanwhile)."""

    source: weakref.ref
    name: str
    geometry: dict[str, Any]
    model: Any = None
    params: dict[str, Any] = field(default_factory=dict)


def _intensity_items(layer: Image, shape: tuple[int, ...]) -> list[tuple[str, Any]]:
    """``[(column name, (Z,)Y,X array)]`` for one Image layer; RGB layers give one entry per colour."""
    data = layer.data[0] if layer.multiscale else layer.data
    base = column_name(layer.name)
    if layer.rgb:
        if tuple(data.shape[:-1]) != tuple(shape):
            raise ParameterError(f"image layer {layer.name!r} has shape {tuple(data.shape[:-1])}, "
                                 f"the objects {tuple(shape)}: intensities need the same grid")
        return [(f"{base}_{_RGB[i]}", data[..., i]) for i in range(min(int(data.shape[-1]), 4))]
    if tuple(data.shape) != tuple(shape):
        raise ParameterError(f"image layer {layer.name!r} has shape {tuple(data.shape)}, "
                             f"the objects {tuple(shape)}: intensities need the same grid")
    return [(base, data)]


class ObjectsWidget(ClassifierActions, JobDock):
    """Dock widget: objects from labels or a model, their table, plots, gates and classifier.

    ``napari_viewer``: see :class:`~napari_medseg._napari.widgets.dock.JobDock`.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer, "Pick a Labels layer, or an image and a model, then Detect.")
        # --- source rows
        self.source_kind = QComboBox()
        self.source_kind.addItems(list(SOURCES))
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.model_rows = rows = ModelRows(napari_viewer, ("instance", "semantic", "detection"))
        self.image_combo, self.model_picker, self.kind_note = rows.image_combo, rows.model_picker, rows.kind_note
        self.device_picker = rows.device_picker
        self.intensity_list = LayerChecklist(napari_viewer)
        self._labels_row = QWidget()
        f1 = QFormLayout(self._labels_row)
        f1.setContentsMargins(0, 0, 0, 0)
        f1.addRow("labels", self.labels_combo)
        self._model_rows = QWidget()
        f2 = QFormLayout(self._model_rows)
        f2.setContentsMargins(0, 0, 0, 0)
        rows.add_rows(f2)
        top = QFormLayout()
        top.addRow("objects from", self.source_kind)
        self.run_row("Detect objects", self.run)
        self.counts_label = QLabel()
        self.counts_label.setWordWrap(True)
        # --- tabs
        self.table_view = ObjectsTable()
        self.export_csv_button = QPushButton("Export CSV…")
        table_tab = QWidget()
        tl = QVBoxLayout(table_tab)
        tl.setContentsMargins(2, 2, 2, 2)
        tl.addWidget(self.table_view, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.export_csv_button)
        tl.addLayout(row)
        self.plot_panel = PlotPanel()
        self.gate_panel = GatePanel()
        self.classifier_panel = ClassifierPanel(napari_viewer)
        self.row_labeller = RowLabeller(self._selected_ids, self.classifier_panel.mark_class)
        self.cnn_panel = CropCnnPanel(self.status, self._cnn_source, lambda: self._marks(), self._cnn_result,
                                      what="cells", default_size=lambda unit: default_crop_size(self.table, unit))
        self.classifier_panel.add_cnn(self.row_labeller, self.cnn_panel)
        self.tabs = QTabWidget()
        self.tabs.addTab(table_tab, "Table")
        self.tabs.addTab(self.plot_panel, "Plot")
        self.tabs.addTab(self.gate_panel, "Gate")
        self.tabs.addTab(self.classifier_panel, "Classifier")

        lay = scrolling_layout(self)
        lay.addLayout(top)
        lay.addWidget(self._labels_row)
        lay.addWidget(self._model_rows)
        inten = QFormLayout()
        inten.addRow("intensities", self.intensity_list)
        lay.addLayout(inten)
        lay.addWidget(self.buttons)
        lay.addWidget(self.status)
        lay.addWidget(self.counts_label)
        lay.addWidget(self.tabs, 1)

        # --- state
        self.result: ObjectsResult | None = None
        self.table = None  #: the current objects table (pandas DataFrame), classes included
        self.colors: dict[str, str] = {}
        self.classifier = None  #: the last trained or loaded ObjectClassifier
        self._train_job: ProgressJob | None = None
        self._out: weakref.ref | None = None  # Points/Shapes layer of the current objects
        self._our_labels: weakref.ref | None = None  # Labels layer we made for the current objects
        self._outputs = OutputLayers(napari_viewer)  # a re-run replaces the layers made for the same source
        self._focusing = False
        self._viewer_selection: set[int] = set()
        self._crop_layer: weakref.ref | None = None  # the image the objects were detected on (CNN crops)

        self.source_kind.currentIndexChanged.connect(self._on_source_kind)
        self.row_labeller.labelsChanged.connect(self._on_row_labels)
        self.export_csv_button.clicked.connect(lambda: self.export_csv())
        self.table_view.objectActivated.connect(self.focus_object)
        self.gate_panel.gateApplied.connect(self.apply_gate)
        cp = self.classifier_panel
        cp.train_button.clicked.connect(self.train)
        cp.new_marks_button.clicked.connect(lambda: self.new_marks_layer())
        cp.save_button.clicked.connect(lambda: self.save_classifier())
        cp.load_button.clicked.connect(lambda: self.load_classifier())
        cp.markClassChanged.connect(self._on_mark_class)
        cp.marks_combo.layerChanged.connect(lambda *_: self._on_mark_class(cp.mark_class.currentText()))
        rows.start()
        if self.labels_combo.layer() is None and self.image_combo.layer() is not None:
            self.source_kind.setCurrentIndex(1)
        self._on_source_kind()

    # ================================================================== public API
    @property
    def running(self) -> bool:
        """Whether a detection or a training is in progress."""
        return any(j is not None and j.running for j in (self._job, self._train_job)) or self.cnn_panel.running

    @property
    def output_layer(self) -> Points | Any | None:
        """The Points (or Shapes) layer of the current objects, if still in the viewer."""
        lay = self._out() if self._out is not None else None
        return lay if lay is not None and any(x is lay for x in self.viewer.layers) else None

    @property
    def objects_labels_layer(self) -> Labels | None:
        """The Labels layer this widget made for the current objects (segmentation models)."""
        lay = self._our_labels() if self._our_labels is not None else None
        return lay if lay is not None and any(x is lay for x in self.viewer.layers) else None

    def counts(self) -> dict[str, int]:
        """Objects per class in the current table (classes in colour order)."""
        if self.table is None:
            return {}
        cls = [str(c) for c in self.table["class"]]
        return {c: n for c in self.colors if (n := cls.count(c))}

    def run(self) -> None:
        """Detect and measure the objects of the chosen source in a worker thread (returns at once)."""
        if (prepared := self.prepared(self._prepare)) is None:
            return
        ctx, make_gen = prepared
        self.start_job(make_gen, lambda outcome: self._finish(ctx, outcome), desc=f"Objects of {ctx.name}",
                       message=f"Detecting objects in {ctx.name}…")

    def apply_gate(self, gate: Any) -> None:
        """Classify every object with a gate (``<name>+`` / ``<name>-``)."""
        from ....analysis.gating import gate_classes

        if self.table is None:
            self.status.set("Detect objects first.", error=True)
            return
        try:
            classes = gate_classes(self.table, gate)
        except MedsegError as exc:
            self._report_error(exc, "Gate")
            return
        self._set_classes(classes, None)
        t = gate.threshold
        self.status.set(f"Gate {gate.label} {gate.op} {t:.4g}: " + ", ".join(f"{c} {n}" for c, n in
                                                                            self.counts().items()))

    def export_csv(self, path: str | Path | None = None) -> Path | None:
        """Write the objects table as CSV (asks for a file when ``path`` is None)."""
        from ....analysis.objects import write_objects_csv

        if self.table is None:
            self.status.set("Nothing to export: detect objects first.", error=True)
            return None
        if path is None:
            out = self.output_layer
            default = f"{column_name(out.name) if out is not None else 'objects'}.csv"
            path, _ = QFileDialog.getSaveFileName(self, "Export objects table", default, "CSV (*.csv)")
            if not path:
                return None
        try:
            written = write_objects_csv(path, self.table)
        except (MedsegError, OSError) as exc:
            self._report_error(exc, "Export")
            return None
        self.status.set(f"Wrote {len(self.table)} objects to {written}")
        return written

    def export_plot(self, path: str | Path | None = None) -> Path | None:
        """Save the Plot tab's figure as PNG."""
        return self.plot_panel.export_png(path)

    def focus_object(self, row: int) -> None:
        """Centre the viewer on the object in table row ``row`` and select it."""
        out = self.output_layer
        if self.table is None or out is None or not 0 <= row < len(self.table) or self._focusing:
            return
        self._focusing = True
        try:
            px = centroids(self.table.iloc[[row]], self.result.axes)[0]
            center_on(self.viewer, out.data_to_world(px))
            out.selected_data = {int(row)}
            lab = self.objects_labels_layer
            if lab is not None:
                lab.selected_label = int(self.table["id"].iloc[row])
            self.table_view.select_row(row)
        finally:
            self._focusing = False
        self._viewer_selection: set[int] = set()

    def _on_viewer_selection(self, *_: Any) -> None:
        """A point/box selected in the viewer selects its table row (the camera stays)."""
        out = self.output_layer
        if out is None or self._focusing:
            return
        sel = {int(i) for i in out.selected_data}
        if sel == self._viewer_selection:
            return
        self._viewer_selection = sel
        if len(sel) == 1:
            self._focusing = True
            try:
                self.table_view.select_row(next(iter(sel)))
            finally:
                self._focusing = False

    # ================================================================== running
    def _prepare(self):
        """Context and generator factory for a run, from the current controls (GUI thread)."""
        device = self.device_picker.device()
        if self.source_kind.currentIndex() == 0:
            src = self.labels_combo.layer()
            if src is None:
                raise ParameterError("No Labels layer: pick one, or switch to 'image + model'.")
            lab = labels_of(src)
            if lab.ndim not in (2, 3):
                raise ParameterError(f"Labels layer {src.name!r} has {lab.ndim} dimensions; objects are 2D or 3D")
            shape = lab.shape
            intensity = []
            for layer in self.intensity_list.checked_layers():
                intensity += _intensity_items(layer, shape)
            image = axes = model = None
        else:
            src = self.image_combo.layer()
            model = self.model_picker.current()
            if src is None:
                raise ParameterError("No image layer: open or select an image first.")
            if model is None:
                raise ParameterError("No model: add a model folder with the folder button.")
            image = src.data[0] if src.multiscale else src.data
            axes = layer_axes(src)
            if axes is None or "T" in axes:
                raise ParameterError(f"image {src.name!r} (shape {tuple(image.shape)}) is not one 2D/3D image; "
                                     "objects are detected one time point at a time")
            shape = tuple(int(image.shape[axes.index(a)]) for a in axes if a in "ZYX")
            intensity = _intensity_items(src, shape)
            for layer in self.intensity_list.checked_layers():
                if layer is not src:
                    intensity += _intensity_items(layer, shape)
            lab = None
        names = [n for n, _ in intensity]
        if len(set(names)) != len(names):
            raise ParameterError(f"intensity layers need different names; got {names}")
        ndim = len(shape)
        geometry = measure_geometry(src, ndim)
        unit = None if geometry is None else geometry.length_unit
        spacing = None if geometry is None else tuple(float(s) for s in geometry.spacing)
        warn = self.model_rows.kind_warning() if model is not None else None
        ctx = _RunContext(weakref.ref(src), src.name, output_geometry(src, ndim), model,
                          {"device": device, "unit": unit, "spacing": spacing, "source_meta": output_metadata(src),
                           "kind_warning": warn})
        model_path = None if model is None else model.path

        def make_gen(token):
            from ....analysis.objects import (
                detect_iter,  # torch (if any) loads here, in the worker
            )

            return detect_iter(image, model_path if model_path is not None else "auto", labels=lab,
                               intensity=intensity or None, geometry=geometry, axes=axes, device=device, cancel=token)

        return ctx, make_gen

    def _finish(self, ctx: _RunContext, outcome: JobOutcome) -> None:
        def show(res: ObjectsResult) -> str:
            self._show_result(ctx, res)
            model = f" with {res.model_name}" if res.model_name else ""
            warn = ctx.params.get("kind_warning")
            return (f"{len(res)} objects in {ctx.name}{model} in {outcome.elapsed:.1f} s"
                    + (f"\n{res.device_reason}" if res.device_reason else "")
                    + (f"\nWarning: {warn}" if warn else ""))

        self.end_job(outcome, "Detection", show, show_what="Showing the objects")

    def _show_result(self, ctx: _RunContext, res: ObjectsResult) -> None:
        table = res.table.reset_index(drop=True)
        classes = [str(c) for c in table["class"]]
        colors = class_colors(list(res.class_names) + sorted(set(classes) - set(res.class_names)))
        meta = {OBJECTS_OF: ctx.name, "napari_medseg": {"kind": res.kind, "model": res.model_name,
                                                         "unit": res.unit, "score": res.info.get("score", "")},
                **ctx.params.get("source_meta", {})}
        src = ctx.source()
        if res.kind == "detection":
            out = boxes_layer(res.boxes, table, colors, ctx.geometry, f"{ctx.name} boxes", dict(meta))
        else:
            out = points_layer(table, res.axes, colors, ctx.geometry, f"{ctx.name} objects", dict(meta))
        lab_layer = None
        if res.kind in ("instance", "semantic"):
            lab_layer = Labels(res.labels, name=f"{ctx.name} objects labels", features=_labels_features(table),
                               metadata=dict(meta), **ctx.geometry)
        # the viewer changes only once every new layer exists
        self.result, self.table, self.colors = res, table, colors
        if lab_layer is not None:
            self._our_labels = weakref.ref(self._outputs.put("labels", src, lab_layer, keep=()))
        else:
            self._our_labels = None
            self._outputs.drop("labels", src)
        self._out = weakref.ref(self._outputs.put("objects", src, out, keep=()))
        self._viewer_selection = set()
        out.events.highlight.connect(self._on_viewer_selection)
        self._crop_layer = weakref.ref(src) if isinstance(src, Image) else None
        self.cnn_panel.set_dims(len(res.axes), res.geometry.length_unit if res.geometry is not None else None)
        self.row_labeller.set_labels({})  # new objects, new ids
        self._refresh_views()

    # ================================================================== classes
    def _set_classes(self, classes: Any, probability: Any | None) -> None:
        from ....analysis.objects import order_columns

        table = self.table.copy()
        table["class"] = np.asarray([str(c) for c in classes], dtype=object)
        if probability is None:
            table = table.drop(columns=["probability"], errors="ignore")
        else:
            table["probability"] = np.asarray(probability, np.float64)
        table = order_columns(table)
        names = sorted({str(c) for c in table["class"]})
        self.colors = class_colors(names, {c: v for c, v in self.colors.items() if c in names})
        self.colors = {c: self.colors[c] for c in names}
        self.table = table
        out = self.output_layer
        if out is not None:
            out.features = table
            col = rgba(list(table["class"]), self.colors)
            if isinstance(out, Points):
                out.face_color = col
            elif len(table):
                out.edge_color = col
            out.refresh()
        lab = self.objects_labels_layer
        if lab is not None:
            lab.features = _labels_features(table)
        self._refresh_views()

    def _refresh_views(self) -> None:
        self.table_view.set_table(self.table)
        self.plot_panel.set_table(self.table, self.colors)
        self.gate_panel.set_table(self.table, self.colors)
        counts = self.counts()
        total = 0 if self.table is None else len(self.table)
        parts = [f'<span style="color:{self.colors[c]}">&#9632;</span> {escape(c)}: {n}' for c, n in counts.items()]
        self.counts_label.setText(f"<b>{total} objects</b> &nbsp; " + " &nbsp; ".join(parts))

    # ================================================================== misc
    def _on_source_kind(self, *_: Any) -> None:
        labels = self.source_kind.currentIndex() == 0
        self._labels_row.setVisible(labels)
        self._model_rows.setVisible(not labels)

    def _report_error(self, exc: BaseException, what: str) -> None:
        report_error(self.status, exc, what)


def _labels_features(table: Any) -> Any:
    """The table for a Labels layer: napari maps rows to label values by an ``index`` column."""
    t = table.copy()
    t.insert(0, "index", np.asarray(t["id"], np.int64))
    return t
