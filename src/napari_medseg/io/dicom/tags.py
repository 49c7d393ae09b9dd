"""Fast access to string-valued DICOM elements of a pydicom dataset.

pydicom converts an element on first access (DSfloat objects, value
validation); for the ~20 string tags read from every file of a series that
conversion cost more than parsing the file.  These helpers read the raw bytes
instead and fall back to the converted value when pydicom already made one.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


def text(ds: Any, keyword: str) -> str | None:
    """Value of a *string* element (DS, IS, CS, UI, TM, DA, DT, LO...) as text, None when absent.

    Reads the raw bytes when pydicom has not converted the element yet: the
    conversion (with validation and DSfloat objects) is what made header
    parsing slower than GDCM.  Multiple values stay joined by backslashes.
    Never use it for binary VRs (US, UL, FL...).
    """
    try:
        elem = ds.get_item(_tag(keyword))
    except (KeyError, AttributeError):
        return None
    if elem is None:
        return None
    val = elem.value
    if val is None:
        return None
    if isinstance(val, (bytes, bytearray)):
        return bytes(val).decode("latin-1").strip(" \x00")
    if isinstance(val, (list, tuple)) or type(val).__name__ == "MultiValue":
        return "\\".join(str(v) for v in val)
    return str(val).strip()


def nums(ds: Any, keyword: str) -> list[float] | None:
    """Numbers of a DS/IS element (all values), None when absent or not numeric."""
    s = text(ds, keyword)
    if not s:
        return None
    try:
        return [float(x) for x in s.split("\\")]
    except ValueError:
        return None


def ushort(ds: Any, keyword: str) -> int | None:
    """Value of a US (unsigned 16-bit) element, read from the raw bytes when possible."""
    try:
        elem = ds.get_item(_tag(keyword))
    except (KeyError, AttributeError):
        return None
    if elem is None or elem.value is None:
        return None
    val = elem.value
    if isinstance(val, (bytes, bytearray)):
        if len(val) < 2:
            return None
        return int.from_bytes(val[:2], "little" if getattr(elem, "is_little_endian", True) else "big")
    if isinstance(val, (list, tuple)) or type(val).__name__ == "MultiValue":
        return int(val[0]) if len(val) else None
    return int(val)
