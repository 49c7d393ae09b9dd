"""Trainable object classifier on measurement tables, and helpers to mark training objects.

The user marks a few objects per class (points with a class, or class ids
painted over some objects; :func:`marks_from_points`, :func:`marks_from_painted`),
:meth:`ObjectClassifier.fit` trains a random forest on the measurements of
the marked objects, and :meth:`ObjectClassifier.predict` gives every object a
class and a probability.  :func:`classify` does the same from a trained
classifier or from gates (:mod:`napari_medseg.analysis.gating`).

A saved classifier is one JSON file: feature names, class names, the
standardisation parameters and every tree of the forest as plain arrays.  It
is loaded without pickle or joblib (a pickle from an untrusted file can run
code), and predictions are made by a small numpy tree walker that reproduces
scikit-learn's ``predict_proba`` exactly (tested).  scikit-learn is only
needed to train.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, ParameterError
from .gating import Gate, column, gate_classes, n_rows

FORMAT = "napari-medseg object classifier"
FORMAT_VERSION = 1

#: Columns never used as features: ids, positions (where an object is says
#: nothing of what it is) and earlier classification results.
EXCLUDED_COLUMNS = frozenset({"label", "id", "index", "class", "probability", "score", "track_id"})
EXCLUDED_PREFIXES = ("centroid_", "bbox_", "class", "probability", "score", "cnn_")


def _names(table: Any) -> list[str]:
    if hasattr(table, "columns"):
        return [str(c) for c in table.columns]
    if isinstance(table, Mapping):
        return [str(k) for k in table]
    raise ParameterError(f"expected a DataFrame or a mapping of columns, got {type(table).__name__}")


def feature_columns(table: Any) -> list[str]:
    """Columns of a measurement table to use as classifier features.

    Numeric (not boolean) columns except ids, positions (``centroid_*``,
    ``bbox_*``) and previous results (``class``, ``probability``, ``score``, a CNN's ``cnn_*``),
    and except columns with no finite value.
    """
    out = []
    for name in _names(table):
        if name in EXCLUDED_COLUMNS or name.startswith(EXCLUDED_PREFIXES):
            continue
        v = np.asarray(table[name])
        if v.dtype == bool or not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
            continue
        if v.size and not np.isfinite(v.astype(np.float64)).any():
            continue
        out.append(name)
    return out


def _matrix(table: Any, names: Sequence[str]) -> np.ndarray:
    """(n_objects, n_features) float64 matrix, non-finite values as NaN."""
    cols = [column(table, n).astype(np.float64) for n in names]
    x = np.stack(cols, axis=1) if cols else np.zeros((n_rows(table), 0))
    x[~np.isfinite(x)] = np.nan
    return x


class ObjectClassifier:
    """Random-forest object classifier on measurement features.

    Features are standardised (mean 0, standard deviation 1 over the
    training objects); missing values (NaN, e.g. a channel not measured) are
    replaced by the training median.

    Parameters
    ----------
    features : sequence of str, optional
        Feature columns; default :func:`feature_columns` of the training table.
    n_estimators : int
        Number of trees.
    max_depth : int, optional
        Maximum tree depth (None: grow until leaves are pure).
    min_samples_leaf : int
        Minimum training objects per leaf.
    class_weight : {"balanced", None}
        ``"balanced"`` weighs classes inversely to how many objects were
        marked, so a class marked less often is not swamped.
    random_state : int
        Seed; training is deterministic for a given seed.

    Attributes
    ----------
    features_ : list of str
        Feature columns, in matrix order (after :meth:`fit`).
    classes_ : list of str
        Class names, sorted; columns of :meth:`predict_proba`.

    Examples
    --------
    >>> clf = ObjectClassifier(n_estimators=20).fit(table, {3: "tumour", 8: "stroma"})  # doctest: +SKIP
    >>> classes, prob = clf.predict(table)  # doctest: +SKIP
    """

    def __init__(
        self,
        features: Sequence[str] | None = None,
        n_estimators: int = 200,
        max_depth: int | None = None,
        min_samples_leaf: int = 1,
        class_weight: str | None = "balanced",
        random_state: int = 0,
    ):
        if n_estimators < 1:
            raise ParameterError(f"n_estimators must be >= 1, got {n_estimators}")
        if class_weight not in ("balanced", None):
            raise ParameterError(f"class_weight must be 'balanced' or None, got {class_weight!r}")
        self.params = {
            "n_estimators": int(n_estimators),
            "max_depth": None if max_depth is None else int(max_depth),
            "min_samples_leaf": int(min_samples_leaf),
            "class_weight": class_weight,
            "random_state": int(random_state),
        }
        self.features_: list[str] | None = list(features) if features is not None else None
        self.classes_: list[str] = []
        self._fill = self._mean = self._scale = np.zeros(0)
        self._trees: list[dict[str, np.ndarray]] = []
        self.training: dict[str, Any] = {}

    # ------------------------------------------------------------------ training

    @property
    def fitted(self) -> bool:
        """Whether the classifier has been trained or loaded."""
        return bool(self._trees)

    def fit(self, table: Any, labels_by_id: Mapping[int, str], id_column: str = "label") -> ObjectClassifier:
        """Train on the marked objects of a measurement table.

        Parameters
        ----------
        table : DataFrame or mapping of str to array
            Measurements, one row per object (e.g. from ``measure``).
        labels_by_id : mapping of int to str
            Class of each marked object, by object id (value of ``id_column``).
            At least two classes.
        id_column : str
            Column holding the object ids.

        Returns
        -------
        ObjectClassifier
            ``self``, trained.

        Raises
        ------
        ParameterError
            If fewer than two classes are marked, a marked id is not in the
            table, or there is no usable feature.
        """
        from sklearn.ensemble import RandomForestClassifier

        ids = column(table, id_column)
        marks = {int(k): str(v) for k, v in labels_by_id.items()}
        if len(set(marks.values())) < 2:
            raise ParameterError(
                f"mark objects of at least two classes to train a classifier, got {sorted(set(marks.values()))}"
            )
        row_of = {int(i): r for r, i in enumerate(ids)}
        missing = sorted(k for k in marks if k not in row_of)
        if missing:
            raise ParameterError(f"marked object ids not in the table: {missing[:20]}")
        names = self.features_ if self.features_ is not None else feature_columns(table)
        if not names:
            raise ParameterError("the table has no numeric measurement column to use as a feature")
        rows = np.array([row_of[k] for k in marks], dtype=np.int64)
        y = np.array([marks[k] for k in marks], dtype=object)
        x = _matrix(table, names)[rows]

        with np.errstate(all="ignore"):
            fill = np.nanmedian(x, axis=0) if x.size else np.zeros(x.shape[1])
        fill = np.where(np.isfinite(fill), fill, 0.0)
        x = np.where(np.isnan(x), fill, x)
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[~(scale > 0)] = 1.0

        rf = RandomForestClassifier(
            n_estimators=self.params["n_estimators"],
            max_depth=self.params["max_depth"],
            min_samples_leaf=self.params["min_samples_leaf"],
            class_weight=self.params["class_weight"],
            random_state=self.params["random_state"],
            n_jobs=1,
        )
        rf.fit((x - mean) / scale, y.astype(str))
        self.features_ = list(names)
        self.classes_ = [str(c) for c in rf.classes_]
        self._fill, self._mean, self._scale = fill, mean, scale
        self._trees = [_export_tree(est.tree_, len(self.classes_)) for est in rf.estimators_]
        self.training = {
            "n_objects": int(len(marks)),
            "counts": {c: int(np.sum(y == c)) for c in self.classes_},
            "marked_ids": sorted(marks),
        }
        self._sklearn = rf  # kept for the equality test; never saved
        return self

    # ------------------------------------------------------------------ prediction

    def _standardised(self, table: Any) -> np.ndarray:
        if not self.fitted:
            raise ModelError("the classifier is not trained; call fit() or load() first")
        x = _matrix(table, self.features_)  # type: ignore[arg-type]
        x = np.where(np.isnan(x), self._fill, x)
        return (x - self._mean) / self._scale

    def predict_proba(self, table: Any) -> np.ndarray:
        """Probability of each class for every object.

        Returns
        -------
        ndarray of float64, shape (n_objects, n_classes)
            Columns in :attr:`classes_` order; the mean over trees of each
            tree's leaf class fractions (scikit-learn's definition).
        """
        # scikit-learn compares float32 features with float64 thresholds
        x = self._standardised(table).astype(np.float32)
        proba = np.zeros((x.shape[0], len(self.classes_)), dtype=np.float64)
        for tree in self._trees:
            proba += tree["value"][_leaves(tree, x)]
        proba /= len(self._trees)
        return proba

    def predict(self, table: Any) -> tuple[np.ndarray, np.ndarray]:
        """Class and probability of every object.

        Returns
        -------
        classes : ndarray of object (str), shape (n_objects,)
            Most probable class (first in :attr:`classes_` order on ties).
        probability : ndarray of float64, shape (n_objects,)
            Its probability.
        """
        proba = self.predict_proba(table)
        best = np.argmax(proba, axis=1) if proba.size else np.zeros(proba.shape[0], dtype=np.int64)
        classes = np.asarray(self.classes_, dtype=object)[best] if proba.shape[0] else np.zeros(0, dtype=object)
        return classes, proba[np.arange(proba.shape[0]), best] if proba.shape[0] else np.zeros(0)

    # ------------------------------------------------------------------ save / load

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description of the trained classifier (see :meth:`save`)."""
        if not self.fitted:
            raise ModelError("the classifier is not trained; nothing to save")
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": "random_forest",
            "features": self.features_,
            "classes": self.classes_,
            "fill": self._fill.tolist(),
            "mean": self._mean.tolist(),
            "scale": self._scale.tolist(),
            "params": self.params,
            "training": self.training,
            "trees": [
                {k: tree[k].tolist() for k in ("left", "right", "feature", "threshold", "value")}
                for tree in self._trees
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObjectClassifier:
        """Classifier from :meth:`to_dict` output, validated (every index in range, trees acyclic).

        Raises
        ------
        ModelError
            If the description is not a valid classifier of this format.
        """
        try:
            if d.get("format") != FORMAT or d.get("model") != "random_forest":
                raise ModelError(f"not a {FORMAT} file (format={d.get('format')!r})")
            if int(d.get("version", 0)) > FORMAT_VERSION:
                raise ModelError(
                    f"classifier format version {d['version']} is newer than this napari-medseg supports "
                    f"({FORMAT_VERSION}); update napari-medseg"
                )
            features = [str(f) for f in d["features"]]
            classes = [str(c) for c in d["classes"]]
            params = dict(d.get("params", {}))
            known = {"n_estimators", "max_depth", "min_samples_leaf", "class_weight", "random_state"}
            clf = cls(features=features, **{k: v for k, v in params.items() if k in known})
            clf.classes_ = classes
            clf._fill, clf._mean, clf._scale = (np.asarray(d[k], dtype=np.float64) for k in ("fill", "mean", "scale"))
            nf = len(features)
            if len(classes) < 2 or len(set(classes)) != len(classes):
                raise ModelError(f"classifier needs two or more distinct classes, got {classes}")
            if any(a.shape != (nf,) for a in (clf._fill, clf._mean, clf._scale)):
                raise ModelError("fill/mean/scale do not match the number of features")
            if not np.all(clf._scale > 0) or not np.all(np.isfinite(clf._mean)):
                raise ModelError("invalid standardisation parameters")
            clf._trees = [_check_tree(t, nf, len(classes)) for t in d["trees"]]
            if not clf._trees:
                raise ModelError("classifier has no trees")
            clf.training = dict(d.get("training", {}))
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelError(f"invalid object classifier description: {err}") from err
        return clf

    def save(self, path: str | Path) -> Path:
        """Write the classifier to a JSON file (no pickle); returns the path.

        A ``.json`` suffix is added when ``path`` has none.
        """
        path = Path(path)
        if path.suffix == "":
            path = path.with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ObjectClassifier:
        """Read a classifier written by :meth:`save` (plain JSON; nothing in the file is executed).

        Raises
        ------
        ModelError
            If the file is missing, not JSON, or not a valid classifier.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ModelError(f"classifier file not found: {path}") from err
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelError(f"cannot read classifier {path}: {err}") from err
        if not isinstance(d, dict):
            raise ModelError(f"{path} is not an object classifier (JSON object expected)")
        return cls.from_dict(d)

    def __repr__(self) -> str:
        state = f"{len(self._trees)} trees, classes={self.classes_}" if self.fitted else "not trained"
        return f"ObjectClassifier({state})"


def _export_tree(tree: Any, n_classes: int) -> dict[str, np.ndarray]:
    """Arrays of a fitted ``sklearn.tree._tree.Tree`` (single output)."""
    return {
        "left": np.asarray(tree.children_left, dtype=np.int64).copy(),
        "right": np.asarray(tree.children_right, dtype=np.int64).copy(),
        "feature": np.asarray(tree.feature, dtype=np.int64).copy(),
        "threshold": np.asarray(tree.threshold, dtype=np.float64).copy(),
        "value": np.asarray(tree.value, dtype=np.float64)[:, 0, :n_classes].copy(),
    }


def _check_tree(t: Mapping[str, Any], n_features: int, n_classes: int) -> dict[str, np.ndarray]:
    tree = {
        "left": np.asarray(t["left"], dtype=np.int64),
        "right": np.asarray(t["right"], dtype=np.int64),
        "feature": np.asarray(t["feature"], dtype=np.int64),
        "threshold": np.asarray(t["threshold"], dtype=np.float64),
        "value": np.asarray(t["value"], dtype=np.float64),
    }
    n = tree["left"].shape[0] if tree["left"].ndim == 1 else -1
    if n < 1 or any(tree[k].shape != (n,) for k in ("right", "feature", "threshold")):
        raise ModelError("tree arrays differ in length")
    if tree["value"].shape != (n, n_classes):
        raise ModelError(f"tree values must have shape ({n}, {n_classes}), got {tree['value'].shape}")
    leaf = tree["left"] == -1
    node = np.arange(n)
    inner = ~leaf
    if np.any(tree["right"][leaf] != -1):
        raise ModelError("tree leaf with one child")
    # children come after their parent (as scikit-learn builds them): no cycles, walks terminate
    for side in ("left", "right"):
        c = tree[side][inner]
        if np.any(c <= node[inner]) or np.any(c >= n):
            raise ModelError("tree child index out of order or out of range")
    f = tree["feature"][inner]
    if np.any(f < 0) or np.any(f >= n_features):
        raise ModelError("tree feature index out of range")
    return tree


def _leaves(tree: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Leaf reached by every row of ``x`` (float32) in one tree, as scikit-learn walks it."""
    left, right, feature, threshold = tree["left"], tree["right"], tree["feature"], tree["threshold"]
    node = np.zeros(x.shape[0], dtype=np.int64)
    rows = np.arange(x.shape[0])
    active = rows[left[node] != -1]
    while active.size:
        nd = node[active]
        go_left = x[active, feature[nd]] <= threshold[nd]
        node[active] = np.where(go_left, left[nd], right[nd])
        active = active[left[node[active]] != -1]
    return node


# ---------------------------------------------------------------------------- applying


def classify(table: Any, classifier: ObjectClassifier | Gate | Sequence[Gate], **gate_options: Any) -> Any:
    """Add a ``class`` column (and ``probability`` for a trained classifier) to a table.

    Parameters
    ----------
    table : DataFrame or mapping of str to array
        Measurement table, one row per object.
    classifier : ObjectClassifier, Gate or sequence of Gate
        A trained classifier, or gates (classes such as ``"CD3+ CD8-"``).
    **gate_options
        ``positive``, ``negative``, ``sep`` for :func:`~napari_medseg.analysis.gating.gate_classes`.

    Returns
    -------
    DataFrame or dict
        A copy of ``table`` (same type) with the new columns.
    """
    if isinstance(classifier, ObjectClassifier):
        if gate_options:
            raise ParameterError(f"options {sorted(gate_options)} only apply to gates")
        classes, prob = classifier.predict(table)
        new = {"class": classes, "probability": prob}
    elif isinstance(classifier, Gate) or (
        isinstance(classifier, Sequence) and classifier and all(isinstance(g, Gate) for g in classifier)
    ):
        new = {"class": gate_classes(table, classifier, **gate_options)}
    else:
        raise ParameterError(
            f"classifier must be an ObjectClassifier, a Gate or a list of Gates, got {type(classifier).__name__}"
        )
    if hasattr(table, "columns"):
        out = table.copy()
        for k, v in new.items():
            out[k] = v
        return out
    if isinstance(table, Mapping):
        out = {str(k): np.asarray(v) for k, v in table.items()}
        out.update(new)
        return out
    raise ParameterError(f"expected a DataFrame or a mapping of columns, got {type(table).__name__}")


# ---------------------------------------------------------------------------- marking objects


def majority_class(obj: np.ndarray, cls: np.ndarray, what: str) -> dict[int, int]:
    """Most frequent class per object; ties raise (the user marked an object two ways).

    Parameters
    ----------
    obj : ndarray of int
        Object id of each mark.
    cls : ndarray of int
        Class code of each mark (same length).
    what : str
        What made the marks (``"points"``, ``"painting"``), for the error message.

    Returns
    -------
    dict of int to int
        Object id -> its most frequent class code.

    Raises
    ------
    ParameterError
        When an object has two classes marked equally often.
    """
    if obj.size == 0:
        return {}
    pairs, counts = np.unique(np.stack([obj, cls], axis=1), axis=0, return_counts=True)
    out: dict[int, int] = {}
    best: dict[int, int] = {}
    tied: set[int] = set()
    for (o, c), n in zip(pairs.tolist(), counts.tolist(), strict=False):
        if o not in best or n > best[o]:
            best[o], out[o] = n, c
            tied.discard(o)
        elif n == best[o]:
            tied.add(o)
    if tied:
        raise ParameterError(
            f"objects {sorted(tied)[:20]} are marked with different classes equally often by {what}; "
            "remove or fix the conflicting marks"
        )
    return out


def marks_from_points(points: Any, point_classes: Sequence[Any], labels: Any) -> dict[int, str]:
    """Classes of the objects hit by class-marked points.

    Parameters
    ----------
    points : array-like, shape (n_points, labels.ndim)
        Point positions in the label image's pixel (data) coordinates,
        ``(y, x)`` or ``(z, y, x)``; rounded to the nearest pixel.
    point_classes : sequence, length n_points
        Class of each point (converted to str).
    labels : array-like of int
        Label image.

    Returns
    -------
    dict of int to str
        Object id -> class, for objects with at least one point inside.
        Points on background or outside the image are ignored; an object hit
        by several points takes their most common class.

    Raises
    ------
    ParameterError
        On shape mismatch, or if an object has a tie between classes.
    """
    labels = np.asarray(labels)
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return {}
    if pts.ndim != 2 or pts.shape[1] != labels.ndim:
        raise ParameterError(f"points must have shape (n, {labels.ndim}) for labels {labels.shape}, got {pts.shape}")
    cls = np.asarray([str(c) for c in point_classes], dtype=object)
    if cls.shape[0] != pts.shape[0]:
        raise ParameterError(f"{pts.shape[0]} points but {cls.shape[0]} classes")
    idx = np.floor(pts + 0.5)
    ok = np.all(np.isfinite(idx), axis=1) & np.all((idx >= 0) & (idx < np.array(labels.shape)), axis=1)
    idx = idx[ok].astype(np.int64)
    obj = labels[tuple(idx.T)].astype(np.int64)
    cls = cls[ok]
    hit = obj > 0
    names, codes = np.unique(cls[hit].astype(str), return_inverse=True)
    best = majority_class(obj[hit], codes.ravel(), "points")
    return {o: str(names[c]) for o, c in sorted(best.items())}


def marks_from_painted(
    class_paint: Any,
    labels: Any,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
) -> dict[int, str]:
    """Classes of the objects painted over with class ids.

    Parameters
    ----------
    class_paint : array-like of int, same shape as ``labels``
        Painted class ids, 0 = not painted (e.g. a napari Labels layer the
        user paints class 1, 2... onto some objects).
    labels : array-like of int
        Label image.
    class_names : mapping or sequence, optional
        Name of each class id (a sequence is indexed by the id); default the
        id as a string.

    Returns
    -------
    dict of int to str
        Object id -> class for objects with painted pixels: the class painted
        on most of the object's painted pixels.

    Raises
    ------
    ParameterError
        On shape mismatch, negative ids, a class id without a name, or a tie.
    """
    paint, labels = np.asarray(class_paint), np.asarray(labels)
    if paint.shape != labels.shape:
        raise ParameterError(f"class paint {paint.shape} and labels {labels.shape} differ in shape")
    if not np.issubdtype(paint.dtype, np.integer):
        raise ParameterError(f"class paint must hold integer class ids, got dtype {paint.dtype}")
    m = (paint != 0) & (labels != 0)
    cls = paint[m].astype(np.int64)
    if cls.size and cls.min() < 0:
        raise ParameterError("class paint has negative class ids")
    best = majority_class(labels[m].astype(np.int64), cls, "painting")
    out = {}
    for o, c in sorted(best.items()):
        if class_names is None:
            name = str(c)
        else:
            try:
                name = str(class_names[c])
            except (KeyError, IndexError) as err:
                raise ParameterError(f"no name for painted class id {c} in class_names") from err
        out[o] = name
    return out
