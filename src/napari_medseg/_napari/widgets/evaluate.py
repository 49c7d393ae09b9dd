"""The Evaluate dock widget: compare a prediction Labels layer with a ground-truth one.

Pick the ground-truth and the predicted Labels layers and an IoU threshold,
press Compare.  The scores are those of ``medseg evaluate`` for one image
(:func:`napari_medseg.analysis.evaluation.score_image`): object counts, AP at IoU 0.5
and 0.75 and the mean AP over IoU 0.5:0.05:0.9 with the DSB definition
``TP / (TP + FP + FN)``, and the foreground pixel Dice.  TP/FP/FN are also
given at the chosen threshold (a match needs IoU strictly above it; see
:func:`napari_medseg.analysis.metrics.match_instances`).

The whole array of each layer is compared at once, whatever its
dimensionality: in a 3D layer an id is one 3D object, in a time-lapse (or any
nD) layer an id is one object across every time point.

Output layers (never a change to the user's layers)
---------------------------------------------------
* ``<prediction> false positives``: the predicted objects left unmatched,
  with their ids, in magenta.
* ``<ground truth> false negatives``: the true objects left unmatched (missed),
  with their ids, in yellow.

Each carries the geometry (scale, translate, rotate, shear, affine, units) of
its source layer and ``metadata["napari_medseg_errors_of"]`` naming the
compared layers and the threshold.  The widget owns one such pair: Compare
again replaces them (in place in the layer list), whatever layers are
compared; a user's layer with the same name is never touched (the new one is
then called ``... [1]``).  The numerics run in a napari thread worker
(:class:`~napari_medseg._napari._worker.ProgressJob`).
"""

from __future__ import annotations

import csv
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from ...analysis.evaluation import CSV_COLUMNS, Comparison, compare_iter
from ...progress import CancelToken, Progress
from .._worker import JobOutcome
from ..layers import output_geometry, unique_name
from .common import LayerCombo, report_error, scrolling_layout
from .dock import JobDock

if TYPE_CHECKING:
    import napari

ERRORS_OF = "napari_medseg_errors_of"  #: metadata key of the output layers: what was compared
OUTPUT_OF = "napari_medseg_output_of"  #: metadata key of the Segment widget's outputs (the usual prediction)
FP_COLOR = "magenta"  #: colour of every false-positive object
FN_COLOR = "yellow"  #: colour of every false-negative object

def nd_note(shape: tuple[int, ...]) -> str:
    """What comparing a layer of this shape means, for 3D and higher (empty for 2D)."""
    if len(shape) <= 2:
        return ""
    if len(shape) == 3:
        return (f"3D {shape}: the whole volume is compared; an id is one 3D object. For a 2D time-lapse, "
                "this counts an id as one object over all frames.")
    return (f"{len(shape)}D {shape}: the whole array is compared at once; an id is one object across every "
            "time point and slice (ids reused per frame merge into one object).")


def _error_colormap(color: str) -> DirectLabelColormap:
    """Every id in one colour, background transparent."""
    return DirectLabelColormap(color_dict={None: color, 0: "transparent"})


class EvaluateWidget(JobDock):
    """Dock widget: compare a predicted Labels layer with a ground-truth one.

    ``napari_viewer``: see :class:`~napari_medseg._napari.widgets.dock.JobDock`.
    """

    SCORE_ROWS = (
        ("n_true", "ground-truth objects"),
        ("n_pred", "predicted objects"),
        ("tp", "TP"),
        ("fp", "FP (predicted, unmatched)"),
        ("fn", "FN (true, missed)"),
        ("ap50", "AP@0.5"),
        ("ap75", "AP@0.75"),
        ("map", "mean AP 0.5:0.05:0.9"),
        ("dice", "pixel Dice"),
    )

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer, "Pick the ground truth and the prediction, then Compare.")
        self.gt_combo = LayerCombo(napari_viewer, Labels)
        self.gt_combo.setToolTip("The reference objects (e.g. painted by hand)")
        self.pred_combo = LayerCombo(napari_viewer, Labels)
        self.pred_combo.setToolTip("The objects to score (e.g. the Segment widget's labels)")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 0.95)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.threshold.setValue(0.5)
        self.threshold.setToolTip("A predicted and a true object match when their IoU is above this; "
                                  "sets TP/FP/FN and the false positive / negative layers")
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.compare_button = self.run_row("Compare", self.compare).run_button
        self.scores_table = QTableWidget(len(self.SCORE_ROWS), 2)
        self.scores_table.setHorizontalHeaderLabels(["score", "value"])
        self.scores_table.verticalHeader().setVisible(False)
        self.scores_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.scores_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.scores_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        for i, (_, label) in enumerate(self.SCORE_ROWS):
            self.scores_table.setItem(i, 0, QTableWidgetItem(label))
            self.scores_table.setItem(i, 1, QTableWidgetItem(""))
        rows = self.scores_table.verticalHeader()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.scores_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scores_table.setFixedHeight(rows.defaultSectionSize() * len(self.SCORE_ROWS)
                                         + self.scores_table.horizontalHeader().sizeHint().height()
                                         + 2 * self.scores_table.frameWidth())
        self.export_csv_button = QPushButton("Export CSV\u2026")
        self.export_csv_button.setToolTip("Write the scores row as CSV")
        self.export_csv_button.setEnabled(False)

        form = QFormLayout()
        form.addRow("ground truth", self.gt_combo)
        form.addRow("prediction", self.pred_combo)
        form.addRow("IoU threshold", self.threshold)
        lay = scrolling_layout(self)
        lay.addLayout(form)
        lay.addWidget(self.note)
        lay.addWidget(self.buttons)
        lay.addWidget(self.scores_table)
        lay.addWidget(self.export_csv_button)
        lay.addWidget(self.status)
        lay.addStretch(1)

        #: the last comparison (None before the first one)
        self.result: Comparison | None = None
        self._made: dict[str, weakref.ref] = {}  # "fp"/"fn" -> the layer this widget made

        self.export_csv_button.clicked.connect(lambda: self.export_csv())
        self.gt_combo.layerChanged.connect(self._update_note)
        self.pred_combo.layerChanged.connect(self._update_note)
        napari_viewer.layers.events.inserted.connect(self._on_inserted)
        napari_viewer.layers.events.removed.connect(self._on_removed)
        self._compared: tuple[weakref.ref, weakref.ref] | None = None  # the layers the scores are of
        self._pick_distinct()

    # ================================================================== public API
    @property
    def false_positives_layer(self) -> Labels | None:
        """The false-positives layer this widget made, if still in the viewer."""
        return self._ours("fp")

    @property
    def false_negatives_layer(self) -> Labels | None:
        """The false-negatives layer this widget made, if still in the viewer."""
        return self._ours("fn")

    def compare(self) -> None:
        """Compare the chosen layers in a worker thread (returns at once)."""
        if self.running:
            return
        gt, pred = self.gt_combo.layer(), self.pred_combo.layer()
        if gt is None or pred is None:
            self.status.set("Pick a ground-truth and a prediction Labels layer first.", error=True)
            return
        gt_data, pred_data = _level0(gt), _level0(pred)
        if tuple(gt_data.shape) != tuple(pred_data.shape):
            self.status.set(f"Shapes differ: ground truth {gt.name!r} is {tuple(gt_data.shape)}, prediction "
                            f"{pred.name!r} is {tuple(pred_data.shape)}. Compare layers on the same pixel grid.",
                            error=True)
            return
        thr = float(self.threshold.value())
        names = (gt.name, pred.name)
        ctx = {"gt": weakref.ref(gt), "pred": weakref.ref(pred), "names": names,
               "geometry": {"fn": output_geometry(gt), "fp": output_geometry(pred)},
               "same_scale": np.allclose(gt.scale, pred.scale) and np.allclose(gt.translate, pred.translate)}

        def make_gen(token: CancelToken):
            return compare_iter(gt_data, pred_data, thr, names=names, cancel=token)

        self.start_job(make_gen, lambda outcome: self._finish(ctx, outcome), desc=f"Comparing {pred.name}",
                       message=f"Comparing {pred.name!r} with {gt.name!r}…")

    def export_csv(self, path: str | Path | None = None) -> Path | None:
        """Write the last scores as a one-row CSV (asks for a file when ``path`` is None)."""
        if self.result is None:
            self.status.set("Nothing to export: Compare first.", error=True)
            return None
        if path is None:
            s = self.result.scores
            default = f"{s['prediction']} vs {s['ground_truth']}.csv".replace("/", "_")
            path, _ = QFileDialog.getSaveFileName(self, "Export scores", default, "CSV (*.csv)")
            if not path:
                return None
        path = Path(path)
        try:
            with path.open("w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
                w.writeheader()
                w.writerow({k: _csv_value(k, v) for k, v in self.result.scores.items() if k in CSV_COLUMNS})
        except OSError as exc:
            report_error(self.status, exc, "Export")
            return None
        self.status.set(f"Wrote the scores to {path}")
        return path

    # ================================================================== slots
    def _on_inserted(self, event: Any) -> None:
        """A new Segment output is offered as the prediction (wherever it sits in the layer list)."""
        layer = getattr(event, "value", None)
        meta = getattr(layer, "metadata", None) or {}
        if isinstance(layer, Labels) and OUTPUT_OF in meta and not self.running:
            self.pred_combo.set_layer(layer)
            if self.gt_combo.layer() is layer:
                other = next((lay for lay in self.gt_combo.layers() if lay is not layer
                              and OUTPUT_OF not in (lay.metadata or {}) and ERRORS_OF not in (lay.metadata or {})),
                             None)
                if other is not None:
                    self.gt_combo.set_layer(other)
        self._pick_distinct()

    def _compared_layers(self) -> list[Any]:
        if self._compared is None:
            return []
        return [lay for lay in (ref() for ref in self._compared) if lay is not None]

    def _on_removed(self, event: Any) -> None:
        """Removing a compared layer clears the scores: they no longer describe layers in the viewer."""
        if any(lay is event.value for lay in self._compared_layers()):
            self.clear_scores(f"Layer {event.value.name!r} was removed: Compare again for new scores.")

    def _on_compared_renamed(self, *_: Any) -> None:
        """A compared layer was renamed: the scores stay, under the new names."""
        if self.result is None or self._compared is None:
            return
        gt, pred = (ref() for ref in self._compared)
        if gt is not None and pred is not None:
            self.result.scores["ground_truth"], self.result.scores["prediction"] = gt.name, pred.name
            self.status.set(f"Scores of {pred.name!r} vs {gt.name!r} (layers renamed).")

    def clear_scores(self, why: str = "") -> None:
        """Forget the last comparison: empty table, no export (the error layers stay)."""
        self._watch_compared(None)
        self.result = None
        for i in range(len(self.SCORE_ROWS)):
            self.scores_table.item(i, 1).setText("")
        self.scores_table.item(2, 0).setText("TP")
        self.export_csv_button.setEnabled(False)
        if why:
            self.status.set(why)

    def _watch_compared(self, layers: tuple[Any, Any] | None) -> None:
        for lay in self._compared_layers():
            lay.events.name.disconnect(self._on_compared_renamed)
        self._compared = None if layers is None else (weakref.ref(layers[0]), weakref.ref(layers[1]))
        for lay in self._compared_layers():
            lay.events.name.connect(self._on_compared_renamed)

    def _pick_distinct(self, *_: Any) -> None:
        """With two or more Labels layers, do not offer the same one as both truth and prediction.

        The top-most Labels layer (the newest, e.g. a model's output) becomes
        the prediction, the one below it the ground truth.
        """
        shared = self.gt_combo.layer()
        if shared is None or shared is not self.pred_combo.layer() or self.gt_combo.count() < 2:
            return
        if self.gt_combo.currentIndex() == 0:
            self.gt_combo.setCurrentIndex(1)
        else:
            self.pred_combo.setCurrentIndex(0)

    def _update_note(self, *_: Any) -> None:
        layer = self.gt_combo.layer() or self.pred_combo.layer()
        self.note.setText(nd_note(tuple(_level0(layer).shape)) if layer is not None else "")

    def _on_progress(self, p: Progress) -> None:
        if self._job is not None and not self._job.cancel_requested:
            self.status.set(f"{p.message} ({p.step}/{p.total})")

    def _finish(self, ctx: dict[str, Any], outcome: JobOutcome) -> None:
        def show(res: Comparison) -> str:
            self._show_result(ctx, res)
            s = res.scores
            note = "" if ctx["same_scale"] else "\nNote: the layers' scale/translate differ; compared pixel by pixel."
            return (f"{s['prediction']} vs {s['ground_truth']} at IoU > {s['iou_threshold']:g}: "
                    f"{s['tp']} TP, {s['fp']} FP, {s['fn']} FN in {outcome.elapsed:.1f} s{note}")

        self.end_job(outcome, "Comparison", show, show_what="Showing the comparison")

    # ================================================================== output
    def _show_result(self, ctx: dict[str, Any], res: Comparison) -> None:
        s = res.scores
        gt_name, pred_name = ctx["names"]
        meta = {"ground_truth": gt_name, "prediction": pred_name, "iou_threshold": s["iou_threshold"]}
        fn = Labels(res.false_negatives, name=f"{gt_name} false negatives", colormap=_error_colormap(FN_COLOR),
                    metadata={ERRORS_OF: meta | {"kind": "false negatives"}}, opacity=0.8, **ctx["geometry"]["fn"])
        fp = Labels(res.false_positives, name=f"{pred_name} false positives", colormap=_error_colormap(FP_COLOR),
                    metadata={ERRORS_OF: meta | {"kind": "false positives"}}, opacity=0.8, **ctx["geometry"]["fp"])
        # the viewer changes only once both layers exist
        self._put_layer("fn", fn)
        self._put_layer("fp", fp)
        self.result = res
        gt, pred = ctx["gt"](), ctx["pred"]()
        self._watch_compared((gt, pred) if gt is not None and pred is not None else None)
        for i, (key, _) in enumerate(self.SCORE_ROWS):
            v = s[key]
            self.scores_table.item(i, 1).setText(f"{v:.3f}" if isinstance(v, float) else str(v))
        t = f"{s['iou_threshold']:g}"
        self.scores_table.item(2, 0).setText(f"TP (IoU > {t})")
        self.export_csv_button.setEnabled(True)

    def _ours(self, kind: str) -> Labels | None:
        ref = self._made.get(kind)
        layer = ref() if ref is not None else None
        return layer if layer is not None and any(x is layer for x in self.viewer.layers) else None

    def _put_layer(self, kind: str, layer: Labels) -> None:
        """Put ``layer`` where this widget's previous ``kind`` layer was, or add it on top."""
        old = self._ours(kind)
        if old is not None:
            idx = self.viewer.layers.index(old)
            self.viewer.layers.remove(old)
            layer.name = unique_name(self.viewer, layer.name)
            self.viewer.layers.insert(idx, layer)
        else:
            layer.name = unique_name(self.viewer, layer.name)
            self.viewer.add_layer(layer)
        self._made[kind] = weakref.ref(layer)


def _level0(layer: Labels) -> Any:
    """A Labels layer's full-resolution data (level 0 of a multiscale layer), not copied."""
    return layer.data[0] if layer.multiscale else layer.data


def _csv_value(key: str, v: Any) -> Any:
    if key == "iou_threshold":
        return f"{v:g}"
    return f"{v:.4f}" if isinstance(v, float) else v


__all__ = ["EvaluateWidget", "nd_note"]
