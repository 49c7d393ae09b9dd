"""Classifier actions of the Objects widget: marks, row labels, Train (random forest or CNN), Save, Load.

:class:`ClassifierActions` is a mixin of
:class:`~napari_medseg._napari.widgets.objects.ObjectsWidget`; it uses the
widget's ``viewer``, ``table``, ``result``, ``classifier_panel``,
``output_layer``, ``status``, ``running``, ``_set_classes``,
``_refresh_views`` and ``_report_error``.  The objects to learn from are the
points of the marks layer and the table rows the user labelled (a row label
wins over a point).  The random forest
(:class:`~napari_medseg.analysis.classify.ObjectClassifier`, on the
measurement columns) trains in a napari thread worker and is saved as JSON
(no pickle) in ``<user models dir>/classifiers`` by default; the CNN
(:class:`~napari_medseg._napari.widgets.crop_cnn.CropCnnPanel`) trains on
crops of the objects' image and is saved as a user model; its class and
probabilities (``cnn_class``, ``cnn_p_<class>``) go into the table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Points
from qtpy.QtWidgets import QFileDialog

from ....errors import MedsegError, ParameterError
from ....progress import Progress
from ..._worker import JobOutcome, ProgressJob
from ...layers import layer_axes, level0, unique_name
from ..common import finish_job
from ..crop_cnn import CropSource, selected_ids
from .outputs import OBJECTS_OF, centroids

log = logging.getLogger(__name__)


class ClassifierActions:
    """Mixin: the trainable object classifier's actions (see the module docstring)."""

    classifier: Any = None  #: the last trained or loaded ObjectClassifier

    def train(self) -> None:
        """Train the chosen classifier on the marked objects and classify all (worker thread)."""
        if self.running:
            return
        if self.classifier_panel.use_cnn:
            self.cnn_panel.train()
            return
        try:
            marks = self._marks()
        except MedsegError as exc:
            self._report_error(exc, "Training")
            return
        table = self.table.copy()

        def make_gen(token):
            return _train_iter(table, marks, token)

        self._train_job = ProgressJob(make_gen, lambda o: self._finish_train(marks, o), desc="Training classifier",
                                      owner=self)
        self.classifier_panel.train_button.setEnabled(False)
        self.classifier_panel.info.setText(f"Training on {len(marks)} marked objects…")
        self._train_job.start()

    def new_marks_layer(self, name: str = "object marks") -> Points:
        """Add an empty Points layer for marking objects (its ``class`` feature is the mark class)."""
        import pandas as pd

        ref = self.output_layer
        ndim = ref.ndim if ref is not None else 2
        geom = {"scale": tuple(ref.scale), "translate": tuple(ref.translate)} if ref is not None else {}
        if ref is not None and getattr(ref, "units", None) is not None:
            geom["units"] = tuple(ref.units)
        cls = self.classifier_panel.mark_class.currentText() or "positive"
        layer = Points(ndim=ndim, name=unique_name(self.viewer, name), features=pd.DataFrame(
            {"class": pd.Series([], dtype=object)}), feature_defaults={"class": cls}, face_color="class",
            symbol="cross", size=max(6.0, float(getattr(ref, "current_size", 6) or 6)), **geom)
        self.viewer.add_layer(layer)
        layer.mode = "add"
        self.classifier_panel.marks_combo.set_layer(layer)
        return layer

    def save_classifier(self, path: str | Path | None = None) -> Path | None:
        """Save the classifier as JSON (default folder: ``<user models>/classifiers``)."""
        if self.classifier is None:
            self.status.set("Train or load a classifier first.", error=True)
            return None
        if path is None:
            start = classifiers_dir()
            start.mkdir(parents=True, exist_ok=True)
            path, _ = QFileDialog.getSaveFileName(self, "Save object classifier", str(start / "classifier.json"),
                                                  "Object classifier (*.json)")
            if not path:
                return None
        out = self.classifier.save(path)
        self.classifier_panel.info.setText(f"Saved {out.name} in {out.parent}")
        return out

    def load_classifier(self, path: str | Path | None = None) -> bool:
        """Load a classifier JSON and classify the current objects with it."""
        from ....analysis.classify import ObjectClassifier

        if path is None:
            start = classifiers_dir()
            path, _ = QFileDialog.getOpenFileName(self, "Load object classifier", str(start),
                                                  "Object classifier (*.json)")
            if not path:
                return False
        try:
            clf = ObjectClassifier.load(path)
            self.classifier = clf
            if self.table is not None:
                classes, prob = clf.predict(self.table)
                self._set_classes(classes, prob)
        except MedsegError as exc:
            self._report_error(exc, "Loading the classifier")
            return False
        self.classifier_panel.info.setText(f"Loaded {Path(path).name}: classes {', '.join(clf.classes_)}")
        return True

    def _marks(self) -> dict[int, str]:
        """Object id -> class from the marks layer's points and the labelled table rows (rows win)."""
        if self.table is None or self.result is None:
            raise ParameterError("Detect objects first, then mark some of each class.")
        rows = dict(self.row_labeller.labels)
        marks = self.classifier_panel.marks_combo.layer()
        objects = marks is None or marks is self.output_layer or OBJECTS_OF in marks.metadata
        if rows and (objects or "class" not in marks.features.columns or len(marks.data) == 0):
            if len(set(rows.values())) < 2:
                raise ParameterError(f"label objects of at least two classes (labelled: {sorted(set(rows.values()))})")
            return rows
        if objects:
            raise ParameterError("No marks: press 'New' and click objects of each class, or select table rows "
                                 "and 'Label selected'.")
        return {**self._point_marks(marks, require_two=not rows), **rows}

    def _point_marks(self, marks: Any, require_two: bool = True) -> dict[int, str]:
        """Object id -> class from a marks layer's points."""
        out = self.output_layer
        if marks is out or OBJECTS_OF in marks.metadata:
            raise ParameterError(f"{marks.name!r} holds objects, not marks; pick or create a marks layer ('New')")
        if "class" not in marks.features.columns:
            raise ParameterError(f"Points layer {marks.name!r} has no 'class' feature to learn from")
        if out is None:
            raise ParameterError("The objects layer was removed; detect the objects again.")
        if marks.ndim != out.ndim:
            raise ParameterError(f"marks layer {marks.name!r} is {marks.ndim}D, the objects {out.ndim}D")
        pts = np.asarray(marks.data, np.float64)
        px = np.array([out.world_to_data(marks.data_to_world(p)) for p in pts]).reshape(len(pts), out.ndim)
        marked = self.result.marks_from_points(px, list(marks.features["class"]))
        classes = set(marked.values())
        if len(classes) < 2 and require_two:
            raise ParameterError(f"mark objects of at least two classes (marked: {sorted(classes) or 'none'}); "
                                 "points must lie on objects")
        return marked

    def _finish_train(self, marks: dict[int, str], outcome: JobOutcome) -> None:
        info = self.classifier_panel.info

        def cancelled(_: JobOutcome) -> None:
            info.setText("Training cancelled.")

        def show(result: Any) -> str:
            clf, classes, prob = result
            self.classifier = clf
            self._set_classes(classes, prob)
            per: dict[str, int] = {}
            for c in marks.values():
                per[c] = per.get(c, 0) + 1
            info.setText(f"Trained on {len(marks)} objects ({', '.join(f'{c} {n}' for c, n in sorted(per.items()))}), "
                         f"{len(clf.features_)} features, in {outcome.elapsed:.1f} s")
            return "Classified: " + ", ".join(f"{c} {n}" for c, n in self.counts().items())

        self.classifier_panel.train_button.setEnabled(True)
        finish_job(outcome, self.status, "Training", show, cancelled=cancelled)

    # ------------------------------------------------------------------ CNN and row labels
    def _selected_ids(self) -> list[int]:
        return selected_ids(self.table, self.table_view)

    def _on_row_labels(self) -> None:
        """Show the row labels as the table's ``label`` column (none: no column)."""
        if self.table is None:
            return
        t = self.table.drop(columns=["label"], errors="ignore")
        if self.row_labeller.labels:
            t.insert(min(2, len(t.columns)), "label", self.row_labeller.column(t["id"]))
        sel = self.table_view.selected_rows()
        self.table = t
        out = self.output_layer
        if out is not None:
            out.features = t
        self._refresh_views()
        self.table_view.select_rows(sel)

    def _cnn_source(self) -> CropSource:
        """The objects' image, centres and geometry for the CNN (GUI thread)."""
        from ....geometry.units import PIXEL

        if self.table is None or self.result is None:
            raise ParameterError("Detect objects first, then label some of each class.")
        res = self.result
        shape = None if res.labels is None else tuple(res.labels.shape)
        image, name = self._crop_image(shape)
        g = res.geometry
        unit = g.length_unit if g is not None and g.calibrated else PIXEL
        return CropSource(image, centroids(self.table, res.axes), np.asarray(self.table["id"], np.int64), g, unit,
                          name)

    def _crop_image(self, shape: tuple[int, ...] | None) -> tuple[Any, str]:
        """Pixels the crops come from: the detected image, else the first checked intensity layer of the grid."""
        cands = [] if self._crop_layer is None else [self._crop_layer()]
        cands += list(self.intensity_list.checked_layers())
        for layer in cands:
            if layer is None or not any(x is layer for x in self.viewer.layers):
                continue
            data, axes = level0(layer), layer_axes(layer) or ""
            if layer.rgb:
                img = data[..., :3]
            elif "C" in axes:
                img = np.moveaxis(np.asarray(data), axes.index("C"), -1)
            else:
                img = data
            sp = tuple(img.shape[:-1]) if img.ndim == len(self.result.axes) + 1 else tuple(img.shape)
            if shape is None or sp == shape:
                return img, layer.name
        raise ParameterError("The CNN needs the objects' image: detect from an image, or tick an intensity image "
                             "layer on the objects' grid.")

    def _cnn_result(self, ids: np.ndarray, probs: np.ndarray, names: list[str], model: str) -> None:
        """CNN probabilities into the table (``cnn_*`` columns); the classes and colours follow the CNN."""
        from ....analysis.crop_classify import cnn_columns

        if self.table is None or not np.array_equal(np.asarray(self.table["id"], np.int64), ids):
            raise ParameterError("The objects changed while the CNN ran; train or classify again.")
        t = cnn_columns(self.table.drop(columns=[c for c in self.table.columns if str(c).startswith("cnn_")]),
                        probs, names)
        self.table = t
        self._set_classes(t["cnn_class"], t["cnn_probability"])

    def _on_mark_class(self, text: str) -> None:
        marks = self.classifier_panel.marks_combo.layer()
        if not text or marks is None or OBJECTS_OF in marks.metadata or "class" not in marks.features.columns:
            return
        defaults = marks.feature_defaults
        values = defaults.iloc[0].to_dict() if len(defaults) else {}
        values["class"] = text
        try:
            marks.feature_defaults = values
        except (ValueError, TypeError) as exc:  # a user layer whose features napari cannot default
            log.warning("cannot set the mark class on %s: %s", marks.name, exc)


def _train_iter(table: Any, marks: dict[int, str], token: Any):
    """Worker body of Train: fit on the marks, classify every object."""
    from ....analysis.classify import ObjectClassifier

    yield Progress(0, 2, "training")
    token.raise_if_cancelled()
    clf = ObjectClassifier().fit(table, marks, id_column="id")
    yield Progress(1, 2, "classifying")
    classes, prob = clf.predict(table)
    return clf, classes, prob


def classifiers_dir() -> Path:
    """Where classifiers are saved by default: ``<user models dir>/classifiers``."""
    from ....models.registry import user_models_dir

    return user_models_dir() / "classifiers"
