"""Classifier actions of the Objects widget: marks, Train, Save, Load.

:class:`ClassifierActions` is a mixin of
:class:`~napari_medseg._napari.widgets.objects.ObjectsWidget`; it uses the
widget's ``viewer``, ``table``, ``result``, ``classifier_panel``,
``output_layer``, ``status``, ``running``, ``_set_classes`` and
``_report_error``.  Training (scikit-learn random forest on the measurement
columns, :class:`~napari_medseg.analysis.classify.ObjectClassifier`) runs in
a napari thread worker; classifiers are saved as JSON (no pickle) in
``<user models dir>/classifiers`` by default.
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
from ...layers import unique_name
from ..common import finish_job
from .outputs import OBJECTS_OF

log = logging.getLogger(__name__)


class ClassifierActions:
    """Mixin: the trainable object classifier's actions (see the module docstring)."""

    classifier: Any = None  #: the last trained or loaded ObjectClassifier

    def train(self) -> None:
        """Train the object classifier on the marked objects and classify all (worker thread)."""
        if self.running:
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
        """Object id -> class from the marks layer's points."""
        if self.table is None or self.result is None:
            raise ParameterError("Detect objects first, then mark some of each class.")
        marks = self.classifier_panel.marks_combo.layer()
        out = self.output_layer
        if marks is None:
            raise ParameterError("No marks layer: press 'New' and click objects of each class.")
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
        if len(classes) < 2:
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
