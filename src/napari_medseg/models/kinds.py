"""Kinds of images: what a model was made for, what an image is, and whether the two fit.

A model card names the kinds of images its model was trained on in
``input.image_kind`` (a list), from :data:`KINDS`:

* microscopy: ``fluorescence``, ``brightfield``, ``histology`` (H&E and
  other stained tissue), ``blood_smear``;
* radiology: ``CT``, ``MR``, ``PT``, ``US``, ``XR`` (DICOM Modality codes).

An image's kind is guessed cheaply and conservatively
(:func:`infer_image_kind`): patient coordinates (``frame == "LPS"``: DICOM,
NIfTI, NRRD) make it radiology, its DICOM ``Modality`` says which; anything
else is ``microscopy`` without saying which (RGB images get the H&E model by
default, grey ones the grey nuclei model).  The user can say more
(``medseg ... --kind blood_smear``), which also picks a model made for that
kind when the model is ``auto``.

:func:`kind_mismatch` gives the warning to show when a model's card says it
was made for other images (e.g. the nuclei model on an MR series); cards
without ``image_kind`` never warn.  Nothing here imports torch or napari.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ParameterError

#: Microscopy kinds of images.
MICROSCOPY_KINDS: tuple[str, ...] = ("fluorescence", "brightfield", "histology", "blood_smear")
#: Radiology kinds of images (DICOM Modality codes).
RADIOLOGY_KINDS: tuple[str, ...] = ("CT", "MR", "PT", "US", "XR")
#: The two families; an image of unknown kind within one is given the family's name.
MICROSCOPY = "microscopy"
RADIOLOGY = "radiology"
#: Every kind a card or the user may name.
KINDS: tuple[str, ...] = (*MICROSCOPY_KINDS, MICROSCOPY, *RADIOLOGY_KINDS, RADIOLOGY)

#: How kinds read in messages.
DESCRIPTIONS = {
    "fluorescence": "fluorescence microscopy", "brightfield": "brightfield microscopy",
    "histology": "H&E histology", "blood_smear": "blood smear", MICROSCOPY: "microscopy",
    "CT": "CT", "MR": "MR", "PT": "PET", "US": "ultrasound", "XR": "X-ray", RADIOLOGY: "radiology (CT, MR...)",
}

#: How an image of a kind reads in "this image is ..." (default: :data:`DESCRIPTIONS`).
_IMAGE_WORDS = {"blood_smear": "a blood smear", RADIOLOGY: "a radiology volume (patient coordinates)"}

#: Other spellings users type.
_ALIASES = {
    "fluo": "fluorescence", "fluorescent": "fluorescence", "bf": "brightfield", "bright-field": "brightfield",
    "histo": "histology", "he": "histology", "h&e": "histology", "pathology": "histology", "tissue": "histology",
    "smear": "blood_smear", "blood": "blood_smear", "blood-smear": "blood_smear", "bloodsmear": "blood_smear",
    "mri": "MR", "pet": "PT", "xray": "XR", "x-ray": "XR", "cr": "XR", "dx": "XR", "ultrasound": "US",
}

#: DICOM Modality codes read as one of :data:`RADIOLOGY_KINDS`.
_MODALITY = {"CT": "CT", "MR": "MR", "PT": "PT", "NM": "PT", "US": "US", "CR": "XR", "DX": "XR", "XA": "XR",
             "RF": "XR", "MG": "XR"}


def normalize_kind(kind: Any) -> str:
    """The :data:`KINDS` spelling of a kind (``"mri"`` -> ``"MR"``, ``"H&E"`` -> ``"histology"``).

    Raises
    ------
    ParameterError
        Not a known kind; the message lists them.
    """
    text = str(kind).strip()
    for k in KINDS:
        if text.lower() == k.lower():
            return k
    alias = _ALIASES.get(text.lower().replace(" ", "-"))
    if alias is None:
        alias = _ALIASES.get(text.lower().replace(" ", ""))
    if alias is not None:
        return alias
    raise ParameterError(f"unknown image kind {kind!r}; choose from {', '.join(KINDS)}")


def family(kind: str) -> str:
    """``"microscopy"`` or ``"radiology"``: the family of a (normalised) kind."""
    return RADIOLOGY if kind in RADIOLOGY_KINDS or kind == RADIOLOGY else MICROSCOPY


def card_image_kinds(card: Any) -> tuple[str, ...] | None:
    """The kinds of images a model card says its model was made for (``input.image_kind``), None if it does not say.

    Unknown names in a card are skipped (a newer card read by an older
    version); a card naming none it knows counts as saying nothing.
    """
    inp = getattr(card, "input", None)
    raw = inp.get("image_kind") if isinstance(inp, Mapping) else None
    if raw is None:
        return None
    items = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, Sequence) else []
    out = []
    for item in items:
        try:
            k = normalize_kind(item)
        except ParameterError:
            continue
        if k not in out:
            out.append(k)
    return tuple(out) or None


def infer_image_kind(frame: str | None = None, modality: str | None = None) -> str:
    """The kind of an image from what its file says: a radiology kind, ``"radiology"`` or ``"microscopy"``.

    Parameters
    ----------
    frame : str, optional
        The geometry frame: ``"LPS"`` (patient coordinates: DICOM, NIfTI,
        NRRD) means radiology.
    modality : str, optional
        The DICOM ``Modality`` (``"CT"``, ``"MR"``...).

    Returns
    -------
    str
        ``"CT"``, ``"MR"``... when the modality says so; ``"radiology"`` for
        patient coordinates without a known modality; else ``"microscopy"``
        (which microscopy is not guessed: only the user can say
        ``blood_smear`` or ``fluorescence``).
    """
    code = str(modality or "").strip().upper()
    if code in _MODALITY:
        return _MODALITY[code]
    if frame == "LPS":
        return RADIOLOGY
    return MICROSCOPY


def kind_of_volume(vol: Any) -> str:
    """:func:`infer_image_kind` of a :class:`~napari_medseg.geometry.Volume` (its frame and DICOM Modality)."""
    meta = getattr(vol, "metadata", None) or {}
    dicom = meta.get("dicom") if isinstance(meta, Mapping) else None
    modality = dicom.get("Modality") if isinstance(dicom, Mapping) else None
    frame = getattr(vol, "frame", None) or (meta.get("frame") if isinstance(meta, Mapping) else None)
    return infer_image_kind(frame, modality)


def kind_fits(card: Any, image_kind: str | None) -> bool:
    """Whether a model's card allows an image of ``image_kind`` (True when either does not say).

    A family name on either side (``"microscopy"``, ``"radiology"``) fits
    every kind of that family: an image known only to be microscopy fits a
    fluorescence model, a card made for ``radiology`` fits an MR image.
    """
    kinds = card_image_kinds(card)
    if kinds is None or image_kind is None:
        return True
    kind = normalize_kind(image_kind)
    if kind in (MICROSCOPY, RADIOLOGY):
        return any(family(k) == kind for k in kinds)
    return kind in kinds or family(kind) in kinds


def describe_kinds(kinds: Sequence[str]) -> str:
    """``"fluorescence microscopy, brightfield microscopy and histology"``-style text."""
    words = [DESCRIPTIONS.get(k, k) for k in kinds]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def kind_mismatch(card: Any, image_kind: str | None) -> str | None:
    """The warning for running ``card``'s model on an image of ``image_kind``, or None when it fits.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> card = SimpleNamespace(name="nuclei", input={"image_kind": ["fluorescence"]})
    >>> kind_mismatch(card, "MR")
    'the nuclei model was made for fluorescence microscopy images; this image is MR: results are unlikely to mean anything'
    """
    if kind_fits(card, image_kind):
        return None
    kind = normalize_kind(image_kind)
    what = _IMAGE_WORDS.get(kind, DESCRIPTIONS.get(kind, kind))
    return (f"the {card.name} model was made for {describe_kinds(card_image_kinds(card) or ())} images; "
            f"this image is {what}: results are unlikely to mean anything")


__all__ = [
    "DESCRIPTIONS", "KINDS", "MICROSCOPY", "MICROSCOPY_KINDS", "RADIOLOGY", "RADIOLOGY_KINDS", "card_image_kinds",
    "describe_kinds", "family", "infer_image_kind", "kind_fits", "kind_mismatch", "kind_of_volume", "normalize_kind",
]
