"""Minimal reader for the Siemens CSA header (private tags (0029,xx10) / (0029,xx20)).

The CSA header is a small binary table that Siemens scanners store in a private
DICOM element; it carries, among others, ``NumberOfImagesInMosaic`` and
``SliceNormalVector`` that are needed to unpack a mosaic.  Format (all
little-endian), as documented by nibabel and dcm2niix:

* CSA2: ``b"SV10"``, 4 unused bytes, ``uint32 n_tags``, ``uint32`` unused (77);
  CSA1: the same without the first 8 bytes.
* ``n_tags`` times: ``name`` (64 bytes, NUL-terminated), ``int32 vm``,
  ``vr`` (4 bytes), ``int32 syngodt``, ``int32 n_items``, ``int32`` unused;
  then ``n_items`` items, each 4 ``int32`` (``x0..x3``) followed by the item
  bytes, padded to a multiple of 4.  The item length is ``x1`` (CSA2) or
  ``x0 - n_items of tag 1`` (CSA1).

It is ~60 lines, so it is implemented here instead of making nibabel a runtime
dependency; ``tests/core/test_dicom_mosaic.py`` checks it against
``nibabel.nicom.csareader`` on real Siemens files.
"""

from __future__ import annotations

import struct
from typing import Any

from ...errors import ReaderError

_NUMERIC = {"FL": float, "FD": float, "DS": float, "SS": int, "US": int, "SL": int, "UL": int, "IS": int}
_MAX_ITEMS = 1000
_TAG = struct.Struct("<64si4s3i")
_ITEM = struct.Struct("<4i")


def parse_csa(raw: bytes) -> dict[str, list[Any]]:
    """Parse a CSA1/CSA2 header.

    Parameters
    ----------
    raw : bytes
        Value of the private element, e.g. ``ds[0x0029, 0x1010].value``.

    Returns
    -------
    dict
        Tag name -> list of item values; numeric VRs (DS, FD, IS, US, ...) are
        converted to float/int, others kept as str.  Empty trailing numeric items
        are dropped.

    Raises
    ------
    ReaderError
        If the bytes are not a well-formed CSA header.
    """
    raw = bytes(raw)
    try:
        return _parse(raw)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ReaderError(f"malformed Siemens CSA header: {exc}") from exc


def _text(b: bytes) -> str:
    return b.split(b"\x00", 1)[0].decode("latin-1")


def _parse(raw: bytes) -> dict[str, list[Any]]:
    csa2 = raw[:4] == b"SV10"
    ptr = 8 if csa2 else 0
    n_tags, _ = struct.unpack_from("<2I", raw, ptr)
    ptr += 8
    if not 0 < n_tags <= _MAX_ITEMS:
        raise ValueError(f"{n_tags} tags (expected 1..{_MAX_ITEMS})")
    out: dict[str, list[Any]] = {}
    tag1_items = 0
    for tag_no in range(n_tags):
        name_b, vm, vr_b, _syngodt, n_items, _ = _TAG.unpack_from(raw, ptr)
        ptr += _TAG.size
        name, vr = _text(name_b), _text(vr_b)
        if tag_no == 1:
            tag1_items = n_items
        if not 0 <= n_items <= _MAX_ITEMS:
            raise ValueError(f"tag {name!r} has {n_items} items")
        n_values = vm if vm else n_items
        conv = _NUMERIC.get(vr)
        items: list[Any] = []
        for item_no in range(n_items):
            x0, x1, _, _ = _ITEM.unpack_from(raw, ptr)
            ptr += _ITEM.size
            length = x1 if csa2 else x0 - tag1_items
            if length < 0 or ptr + length > len(raw):
                if csa2:
                    raise ValueError(f"item of tag {name!r} runs past the end")
                break  # CSA1 quirk: nibabel stops at the first impossible length
            value = raw[ptr:ptr + length]
            ptr += length + (-length % 4)
            if item_no >= n_values:
                continue
            if conv is not None:
                if length == 0:
                    continue
                items.append(conv(_text(value).strip()))
            else:
                items.append(_text(value))
        out[name] = items
    return out


def csa_image_header(ds: Any) -> dict[str, list[Any]] | None:
    """The parsed CSA *image* header of a pydicom dataset, or None when absent."""
    try:
        block = ds.private_block(0x0029, "SIEMENS CSA HEADER")
        elem = block[0x10]
    except (KeyError, ValueError):
        return None
    return parse_csa(elem.value)
