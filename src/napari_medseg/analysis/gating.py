"""Gates: threshold rules on measurement columns that sort objects into classes.

This is QuPath's "positive cell detection": a rule such as ``mean_CD3 > 120``
makes every object positive or negative for a marker; several gates combine
into class names such as ``"CD3+ CD8-"``.  :func:`suggest_threshold` proposes
a threshold from a column's histogram (Otsu, triangle...).

Tables are ``pandas.DataFrame`` objects or mappings of column name to 1D
array, as returned by :func:`napari_medseg.analysis.measure.measure`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError

#: Comparison operators a :class:`Gate` understands.
OPS: tuple[str, ...] = (">", ">=", "<", "<=", "between")

#: Threshold methods of :func:`suggest_threshold` (names of ``skimage.filters.threshold_*``).
THRESHOLD_METHODS: tuple[str, ...] = ("otsu", "triangle", "li", "yen", "isodata", "mean")


def column(table: Any, name: str) -> np.ndarray:
    """One column of a DataFrame or mapping as a 1D numpy array.

    Raises
    ------
    ParameterError
        If the table has no such column (the message lists those it has).
    """
    names = list(table.columns) if hasattr(table, "columns") else list(table.keys()) if isinstance(table, Mapping) else None
    if names is None:
        raise ParameterError(f"expected a DataFrame or a mapping of columns, got {type(table).__name__}")
    if name not in names:
        raise ParameterError(f"no column {name!r} in the table; columns are {names}")
    return np.asarray(table[name]).ravel()


def n_rows(table: Any) -> int:
    """Number of rows of a DataFrame or mapping of equal-length columns."""
    if hasattr(table, "columns"):
        return len(table)
    lengths = {len(np.asarray(v).ravel()) for v in table.values()}
    if len(lengths) > 1:
        raise ParameterError(f"table columns differ in length: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


@dataclass(frozen=True)
class Gate:
    """A threshold rule on one measurement column.

    Parameters
    ----------
    column : str
        Measurement column, e.g. ``"mean_CD3"`` or ``"area_um2"``.
    op : {">", ">=", "<", "<=", "between"}
        Comparison; ``"between"`` is inclusive at both ends.
    threshold : float or (float, float)
        Threshold, or ``(low, high)`` for ``"between"``, in the column's units.
    name : str, optional
        Marker name used in class names (``"CD3"`` gives ``"CD3+"`` /
        ``"CD3-"``); default: readable words from the column
        (:meth:`class_names`: ``"nuclei bright"`` / ``"nuclei dim"``).

    Notes
    -----
    Objects whose value is NaN are negative.

    Examples
    --------
    >>> g = Gate("mean_CD3", ">", 120.0, name="CD3")
    >>> g.mask({"mean_CD3": np.array([100.0, 130.0])}).tolist()
    [False, True]
    """

    column: str
    op: str = ">"
    threshold: float | tuple[float, float] = 0.0
    name: str | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ParameterError(f"gate operator {self.op!r} is not one of {list(OPS)}")
        if self.op == "between":
            try:
                lo, hi = (float(v) for v in self.threshold)  # type: ignore[union-attr]
            except (TypeError, ValueError) as err:
                raise ParameterError(f"'between' needs a (low, high) threshold, got {self.threshold!r}") from err
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ParameterError(f"'between' needs finite low <= high, got {self.threshold!r}")
            object.__setattr__(self, "threshold", (lo, hi))
        else:
            try:
                t = float(self.threshold)  # type: ignore[arg-type]
            except (TypeError, ValueError) as err:
                raise ParameterError(f"gate threshold must be a number, got {self.threshold!r}") from err
            if not math.isfinite(t):
                raise ParameterError(f"gate threshold must be finite, got {t}")
            object.__setattr__(self, "threshold", t)

    @property
    def label(self) -> str:
        """Marker name used in class names: ``name``, else a short readable form of the column."""
        return self.name if self.name else short_column_name(self.column)

    def class_names(self, positive: str = "+", negative: str = "-") -> tuple[str, str]:
        """``(passed, failed)`` class names.

        With a ``name``: ``"<name>+"`` / ``"<name>-"`` (QuPath's markers).
        Without one, words that say which side: ``"nuclei bright"`` /
        ``"nuclei dim"`` for an intensity mean, ``"area high"`` /
        ``"area low"`` otherwise (swapped for ``<`` / ``<=``), ``"area in
        range"`` / ``"area out of range"`` for ``between``.
        """
        if self.name:
            return self.name + positive, self.name + negative
        short = short_column_name(self.column)
        if self.op == "between":
            return f"{short} in range", f"{short} out of range"
        hi, lo = ("bright", "dim") if self.column.startswith(("mean_", "max_", "min_")) else ("high", "low")
        return (f"{short} {hi}", f"{short} {lo}") if self.op in (">", ">=") else (f"{short} {lo}", f"{short} {hi}")

    def mask(self, table: Any) -> np.ndarray:
        """Boolean array, True where the object passes the gate (is positive)."""
        v = column(table, self.column)
        if not (np.issubdtype(v.dtype, np.number) or v.dtype == bool):
            raise ParameterError(f"column {self.column!r} is not numeric (dtype {v.dtype}); cannot gate on it")
        v = v.astype(np.float64)
        t = self.threshold
        with np.errstate(invalid="ignore"):
            if self.op == ">":
                return v > t
            if self.op == ">=":
                return v >= t
            if self.op == "<":
                return v < t
            if self.op == "<=":
                return v <= t
            return (v >= t[0]) & (v <= t[1])  # type: ignore[index]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (inverse of :meth:`from_dict`)."""
        t = list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold
        return {"column": self.column, "op": self.op, "threshold": t, "name": self.name}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Gate:
        """Gate from :meth:`to_dict` output."""
        t = d.get("threshold", 0.0)
        return cls(str(d["column"]), str(d.get("op", ">")), tuple(t) if isinstance(t, list) else t, d.get("name"))


#: Prefixes of intensity columns (``mean_<channel>``...) and the words they become.
_STAT_PREFIXES = {"mean_": "", "max_": "max ", "min_": "min ", "std_": "std "}
#: Unit suffixes of measurement columns (``area_um2``, ``perimeter_px``...), dropped from short names.
_UNIT_SUFFIX = re.compile(r"_(?:px|pixel|um|µm|nm|mm|cm|m)[23]?$")
#: Longest channel part of a short name, in characters (whole words are kept).
SHORT_NAME_CHARS = 12


def short_column_name(column: str) -> str:
    """A measurement column as a few readable words, for class names.

    ``mean_nuclei_DSB2018_fluorescence`` -> ``nuclei``, ``mean_H_E_tile_DSB2018_red``
    -> ``H E tile red``, ``area_um2`` -> ``area``, ``equivalent_diameter_px`` ->
    ``equivalent diameter``, ``std_DAPI`` -> ``std DAPI``.  The channel part
    keeps whole words up to :data:`SHORT_NAME_CHARS` characters and an RGB or
    ``chN`` suffix.

    Examples
    --------
    >>> short_column_name("mean_nuclei_DSB2018_fluorescence"), short_column_name("area_um2")
    ('nuclei', 'area')
    """
    for prefix, word in _STAT_PREFIXES.items():
        if column.startswith(prefix) and len(column) > len(prefix):
            words = [w for w in column[len(prefix):].split("_") if w]
            tail = []
            if len(words) > 1 and (words[-1] in ("red", "green", "blue", "alpha") or re.fullmatch(r"ch\d+", words[-1])):
                tail = [words.pop()]
            keep = [words[0]]
            for w in words[1:]:
                if len(" ".join([*keep, w])) > SHORT_NAME_CHARS:
                    break
                keep.append(w)
            return word + " ".join(keep + tail)
    return _UNIT_SUFFIX.sub("", column).replace("_", " ") or column


def gate_classes(
    table: Any,
    gates: Gate | Sequence[Gate],
    positive: str = "+",
    negative: str = "-",
    sep: str = " ",
) -> np.ndarray:
    """Class name of every object from one or more gates.

    Parameters
    ----------
    table : DataFrame or mapping of str to array
        Measurement table.
    gates : Gate or sequence of Gate
        Applied in order; their names are joined by ``sep``.
    positive, negative : str
        Suffixes of a passed / failed gate.
    sep : str
        Separator between gates.

    Returns
    -------
    ndarray of object (str), shape (n_objects,)
        E.g. ``"CD3+"`` for one named gate, ``"CD3+ CD8-"`` for two; an
        unnamed gate gives words (``"nuclei bright"``, ``"area low"``: see
        :meth:`Gate.class_names`).

    Examples
    --------
    >>> t = {"mean_CD3": np.array([50.0, 200.0]), "mean_CD8": np.array([10.0, 90.0])}
    >>> gate_classes(t, [Gate("mean_CD3", ">", 100, "CD3"), Gate("mean_CD8", ">", 50, "CD8")]).tolist()
    ['CD3- CD8-', 'CD3+ CD8+']
    """
    if isinstance(gates, Gate):
        gates = [gates]
    gates = list(gates)
    if not gates:
        raise ParameterError("give at least one gate")
    n = n_rows(table)
    out = np.full(n, "", dtype=object)
    for i, g in enumerate(gates):
        m = g.mask(table)
        yes, no = g.class_names(positive, negative)
        part = np.where(m, yes, no).astype(object)
        out = part if i == 0 else out + sep + part
    return out


def suggest_threshold(values: Any, method: str = "otsu", nbins: int = 256) -> float:
    """Threshold for a gate from the histogram of a measurement column.

    Parameters
    ----------
    values : array-like of float
        The column's values (non-finite ones are ignored).
    method : {"otsu", "triangle", "li", "yen", "isodata", "mean"}
        ``skimage.filters.threshold_<method>``.  Otsu suits two populations
        of similar size; triangle a small positive tail beside a large
        negative peak.
    nbins : int
        Histogram bins (otsu, triangle, yen, isodata).

    Returns
    -------
    float
        Threshold in the column's units; use it with ``op=">"``.

    Raises
    ------
    ParameterError
        If the method is unknown or there are fewer than two distinct finite values.
    """
    from skimage import filters

    if method not in THRESHOLD_METHODS:
        raise ParameterError(f"threshold method {method!r} is not one of {list(THRESHOLD_METHODS)}")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if np.unique(v).size < 2:
        raise ParameterError("need at least two distinct finite values to suggest a threshold")
    fn = getattr(filters, f"threshold_{method}")
    if method in ("otsu", "triangle", "yen", "isodata"):
        return float(fn(v, nbins=nbins))
    return float(fn(v))
