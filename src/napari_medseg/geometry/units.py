"""The one unit table: names of length and time units, exact conversions, display names.

Every reader, writer, model card, measurement and widget of napari-medseg
spells a unit through :func:`normalize_unit`, which returns one short symbol
(``"µm"``, ``"mm"``, ``"s"``, ``"pixel"``...).  napari wants pint names
(:func:`napari_unit`), column names want ASCII (:func:`ascii_unit`), and
lengths convert exactly through :func:`convert` (decimal fractions, so
``0.65 µm`` becomes exactly ``0.00065 mm``).  Nothing here imports numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from ..errors import ParameterError

#: The symbol of "no physical unit" (a pixel index).
PIXEL = "pixel"

_ALIASES: dict[str, str] = {
    # lengths
    "µm": "µm", "μm": "µm", "um": "µm", "micron": "µm", "microns": "µm", "micrometer": "µm",
    "micrometre": "µm", "micrometers": "µm", "micrometres": "µm", "\\u00b5m": "µm", "u": "µm",
    "nm": "nm", "nanometer": "nm", "nanometre": "nm", "nanometers": "nm", "nanometres": "nm",
    "mm": "mm", "millimeter": "mm", "millimetre": "mm", "millimeters": "mm", "millimetres": "mm",
    "cm": "cm", "centimeter": "cm", "centimetre": "cm", "centimeters": "cm", "centimetres": "cm",
    "m": "m", "meter": "m", "metre": "m", "meters": "m", "metres": "m",
    "in": "inch", "inch": "inch", "inches": "inch",
    "å": "Å", "angstrom": "Å", "ångström": "Å", "angstroms": "Å",
    # no physical unit
    "": PIXEL, "pixel": PIXEL, "pixels": PIXEL, "px": PIXEL, "none": PIXEL, "voxel": PIXEL, "voxels": PIXEL,
    # times
    "s": "s", "sec": "s", "second": "s", "seconds": "s",
    "ms": "ms", "msec": "ms", "millisecond": "ms", "milliseconds": "ms",
    "µs": "µs", "μs": "µs", "us": "µs", "microsecond": "µs", "microseconds": "µs",
    "min": "min", "minute": "min", "minutes": "min",
    "h": "h", "hr": "h", "hour": "h", "hours": "h",
}

#: Metres per length unit, exact.
METRES: dict[str, Fraction] = {
    "nm": Fraction(1, 10**9), "µm": Fraction(1, 10**6), "mm": Fraction(1, 1000), "cm": Fraction(1, 100),
    "m": Fraction(1), "inch": Fraction(254, 10000), "Å": Fraction(1, 10**10),
}
#: Seconds per time unit, exact.
SECONDS: dict[str, Fraction] = {
    "µs": Fraction(1, 10**6), "ms": Fraction(1, 1000), "s": Fraction(1), "min": Fraction(60), "h": Fraction(3600),
}

_PINT = {"µm": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter", "m": "meter",
         "inch": "inch", "Å": "angstrom", PIXEL: "pixel", "s": "second", "ms": "millisecond",
         "µs": "microsecond", "min": "minute", "h": "hour"}
_ASCII = {"µm": "um", "Å": "A", "µs": "us", PIXEL: "px"}


def normalize_unit(unit: Any) -> str:
    """Return the short symbol of a length or time unit.

    Parameters
    ----------
    unit : str or object with ``str()``
        A unit as found in files or napari (``"micron"``, ``"\\u00B5m"``,
        ``"um"``, ``"micrometer"``, a pint unit, ``None``...).

    Returns
    -------
    str
        ``"µm"`` (U+00B5), ``"nm"``, ``"mm"``, ``"cm"``, ``"m"``, ``"inch"``,
        ``"Å"``, ``"s"``, ``"ms"``, ``"µs"``, ``"min"``, ``"h"`` or ``"pixel"``
        for no physical unit; anything else is returned stripped, unchanged.

    Examples
    --------
    >>> normalize_unit("micron"), normalize_unit("\\\\u00B5m"), normalize_unit(None)
    ('µm', 'µm', 'pixel')
    """
    if unit is None:
        return PIXEL
    text = str(unit).strip()
    return _ALIASES.get(text.lower(), _ALIASES.get(text, text))


def is_length(unit: Any) -> bool:
    """Whether ``unit`` is a physical length (µm, mm...)."""
    return normalize_unit(unit) in METRES


def is_time(unit: Any) -> bool:
    """Whether ``unit`` is a time (s, ms...)."""
    return normalize_unit(unit) in SECONDS


def is_pixel(unit: Any) -> bool:
    """Whether ``unit`` means "no physical unit" (``None``, ``"px"``, ``"pixel"``, ``""``)."""
    return normalize_unit(unit) == PIXEL


def exact(value: float | Fraction) -> Fraction:
    """The decimal a float prints as, as an exact fraction (0.65 -> 13/20)."""
    return value if isinstance(value, Fraction) else Fraction(repr(float(value)))


def factor(src: Any, dst: Any) -> float:
    """How many ``dst`` one ``src`` is (``factor("mm", "µm") == 1000.0``).

    Raises
    ------
    ParameterError
        If the two units are not both lengths or both times.
    """
    s, d = normalize_unit(src), normalize_unit(dst)
    if s == d:
        return 1.0
    for table in (METRES, SECONDS):
        if s in table and d in table:
            return float(table[s] / table[d])
    raise ParameterError(f"cannot convert {src!r} to {dst!r}")


def convert(value: float | Fraction, src: Any, dst: Any) -> float:
    """Convert ``value`` from unit ``src`` to unit ``dst`` (same kind), exactly in decimal.

    Examples
    --------
    >>> convert(0.65, "µm", "mm")
    0.00065
    """
    s, d = normalize_unit(src), normalize_unit(dst)
    v = exact(value)
    if s == d:
        return float(v)
    for table in (METRES, SECONDS):
        if s in table and d in table:
            return float(v * table[s] / table[d])
    raise ParameterError(f"cannot convert {src!r} to {dst!r}")


def napari_unit(unit: Any) -> str:
    """The pint name napari accepts for a unit (``"µm"`` -> ``"micrometer"``)."""
    u = normalize_unit(unit)
    return _PINT.get(u, u)


def ascii_unit(unit: Any) -> str:
    """ASCII name for file and column names (``"µm"`` -> ``"um"``, ``"pixel"`` -> ``"px"``)."""
    u = normalize_unit(unit)
    if u in _ASCII:
        return _ASCII[u]
    out = "".join(ch for ch in u.lower() if ch.isascii() and ch.isalnum())
    if not out:
        raise ParameterError(f"unit {unit!r} has no usable name")
    return out


def common_unit(units: Iterable[Any], what: str = "spatial axes") -> str:
    """The one unit shared by all ``units`` (normalised).

    Raises
    ------
    ParameterError
        If they differ (convert the spacing to one unit first) or none is given.
    """
    norm = {normalize_unit(u) for u in units}
    if len(norm) != 1:
        if not norm:
            raise ParameterError(f"no unit given for the {what}")
        raise ParameterError(
            f"all {what} must have the same unit to measure lengths, got {sorted(norm)}; "
            "convert the spacing to one unit first"
        )
    return norm.pop()


def per_axis(units: str | Sequence[Any] | None, n: int) -> tuple[str, ...] | None:
    """One normalised unit per axis from one unit for all axes or one per axis (None stays None).

    Raises
    ------
    ParameterError
        If a sequence has the wrong length.
    """
    if units is None:
        return None
    if isinstance(units, str) or not isinstance(units, Sequence):
        return (normalize_unit(units),) * n
    if len(units) != n:
        raise ParameterError(f"units has {len(units)} entries, expected {n} (one per spatial axis)")
    return tuple(normalize_unit(u) for u in units)
