"""Fixed physical-size crops around objects (cells, lesions) for a CNN classifier, and their CNN classes.

A crop is a square (or cube) of ``size`` world units (µm, mm; pixels when the
image is uncalibrated) centred on an object, resampled (linear interpolation,
edge values outside the image) to ``pixels`` samples per edge, so one model
sees the same physical field at any pixel size.  Three modes:

* ``"2d"``: the in-plane (Y, X) square; for a 3D image the plane through the
  centre (nearest slice);
* ``"2.5d"``: 3D images only: the axial (Y, X), coronal (Z, X) and sagittal
  (Z, Y) squares through the centre, stacked as 3 channels (last axis);
* ``"3d"``: 3D images only: the cube, ``(pixels, pixels, pixels)``.

The crop settings travel in the classifier's model card (``input.crop``:
``size``, ``unit``, ``mode``, ``pixels``), so :func:`classify_at` crops new
objects as the training crops were cut.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ModelError, ParameterError

#: Crop modes (see the module docstring).
CROP_MODES = ("2d", "2.5d", "3d")


@dataclass(frozen=True)
class CropSpec:
    """How crops are cut: edge ``size`` in ``unit`` (``"pixel"`` when uncalibrated), ``mode``, samples per edge."""

    size: float = 64.0
    unit: str = "pixel"
    mode: str = "2d"
    pixels: int = 64

    def __post_init__(self) -> None:
        from ..geometry.units import normalize_unit

        if self.mode not in CROP_MODES:
            raise ParameterError(f"crop mode must be one of {CROP_MODES}, got {self.mode!r}")
        if not (np.isfinite(self.size) and self.size > 0):
            raise ParameterError(f"crop size must be a positive number, got {self.size}")
        if not 8 <= int(self.pixels) <= 512:
            raise ParameterError(f"crop pixels must be in 8..512, got {self.pixels}")
        object.__setattr__(self, "unit", normalize_unit(self.unit))
        object.__setattr__(self, "pixels", int(self.pixels))
        object.__setattr__(self, "size", float(self.size))

    @property
    def dims(self) -> int:
        """Dimensions of the classifier's input (3 for ``"3d"``, else 2)."""
        return 3 if self.mode == "3d" else 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_card(cls, card: Any, default_size: float | None = None) -> CropSpec:
        """The card's ``input.crop`` (older cards: ``input.crop_size`` or ``default_size``, 2D, the input size)."""
        inp = card.input
        pixels = int(inp.get("size", [64])[0])
        crop = inp.get("crop")
        if isinstance(crop, Mapping):
            return cls(float(crop.get("size", 64.0)), str(crop.get("unit", "pixel")), str(crop.get("mode", "2d")),
                       int(crop.get("pixels", pixels)))
        size = default_size if default_size is not None else float(inp.get("crop_size", 64.0))
        return cls(float(size), "pixel", "3d" if card.dims == 3 else "2d", pixels)


def object_centres(labels: Any, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (pixel indices, ``(N, ndim)`` float64) of the objects of a label image, and their ids.

    Raises
    ------
    ParameterError
        Ids not present in the labels.
    """
    from scipy import ndimage as ndi

    lab = np.asarray(labels)
    present = np.unique(lab)
    present = present[present != 0]
    ids_arr = present.astype(np.int64) if ids is None else np.asarray(list(ids), np.int64)
    missing = sorted(set(ids_arr.tolist()) - set(present.tolist()))
    if missing:
        raise ParameterError(f"ids {missing[:10]} are not in the labels")
    if not len(ids_arr):
        return np.zeros((0, lab.ndim)), ids_arr
    c = ndi.center_of_mass(np.ones(lab.shape, np.uint8), lab, ids_arr)
    return np.asarray(c, np.float64).reshape(len(ids_arr), lab.ndim), ids_arr


def _steps(geometry: Any, nsp: int, spec: CropSpec) -> np.ndarray:
    """Pixel step per spatial axis between two samples of a crop."""
    from ..geometry.units import PIXEL, convert

    if geometry is None or not geometry.calibrated:
        if spec.unit != PIXEL:
            raise ParameterError(f"the crops are {spec.size:g} {spec.unit} but the image has no pixel size; "
                                 "set the layer's scale and units (or use a model trained on pixels)")
        spacing = np.ones(nsp)
    else:
        if spec.unit == PIXEL:
            spacing = np.ones(nsp)  # a pixel model on a calibrated image: crops in pixels
        else:
            unit = geometry.length_unit
            spacing = np.asarray([convert(float(s), unit, spec.unit) for s in geometry.spacing[-nsp:]])
    return spec.size / spec.pixels / spacing


def sample_crops(image: Any, centres: Any, geometry: Any = None, spec: CropSpec | None = None) -> list[np.ndarray]:
    """The crop around each centre, resampled to ``spec.pixels`` per edge (see the module docstring).

    Parameters
    ----------
    image : array-like
        ``(Y, X)``, ``(Y, X, C)`` (channels last, C <= 8) or ``(Z, Y, X)``; numpy, dask or zarr
        (only the region around each centre is read).
    centres : array-like, shape (N, 2) or (N, 3)
        Pixel indices of the crop centres (Y, X) or (Z, Y, X).
    geometry : Geometry, optional
        Index -> world of the spatial axes (their spacing sets the crop's size in world units).
    spec : CropSpec

    Returns
    -------
    list of ndarray
        ``(p, p[, C])`` for ``"2d"``, ``(p, p, 3)`` for ``"2.5d"``, ``(p, p, p)`` for ``"3d"``; uint8 for a
        uint8 image, else float32.

    Raises
    ------
    ParameterError
        A mode that needs a 3D image on a 2D one, or centres of the wrong dimension.
    """
    from scipy import ndimage as ndi

    spec = spec or CropSpec()
    c = np.asarray(centres, np.float64)
    if c.size == 0:
        return []
    img = image
    nsp = c.shape[1] if c.ndim == 2 else 0
    if nsp not in (2, 3) or img.ndim not in (nsp, nsp + 1):
        raise ParameterError(f"centres {c.shape} do not fit an image of shape {tuple(img.shape)}")
    if spec.mode != "2d" and (nsp != 3 or img.ndim != 3):
        raise ParameterError(f"crop mode {spec.mode!r} needs a 3D grey image (Z, Y, X); got shape {tuple(img.shape)}")
    step = _steps(geometry, nsp, spec)
    p = spec.pixels
    offs = (np.arange(p) - (p - 1) / 2.0)  # sample offsets, centred
    shape = np.asarray(img.shape[:nsp])
    out = []
    for centre in c:
        g = np.meshgrid(offs, offs, indexing="ij")
        a, b = g[0].ravel(), g[1].ravel()
        if nsp == 2 or spec.mode == "2d":
            yx = [centre[-2] + a * step[-2], centre[-1] + b * step[-1]]
            z = [] if nsp == 2 else [np.full_like(a, np.clip(np.rint(centre[0]), 0, shape[0] - 1))]
            planes = [np.stack(z + yx)]  # (nsp, p*p)
        elif spec.mode == "2.5d":
            cz, cy, cx = centre
            planes = [np.stack([np.full_like(a, cz), cy + a * step[1], cx + b * step[2]]),   # axial (Y, X)
                      np.stack([cz + a * step[0], np.full_like(a, cy), cx + b * step[2]]),   # coronal (Z, X)
                      np.stack([cz + a * step[0], cy + b * step[1], np.full_like(a, cx)])]   # sagittal (Z, Y)
        else:
            g = np.meshgrid(offs, offs, offs, indexing="ij")
            planes = [np.stack([centre[k] + g[k].ravel() * step[k] for k in range(3)])]
        allp = np.concatenate(planes, axis=1)
        lo = np.clip(np.floor(allp.min(axis=1)).astype(np.int64) - 1, 0, shape - 1)
        hi = np.clip(np.ceil(allp.max(axis=1)).astype(np.int64) + 2, lo + 1, shape)
        region = np.asarray(img[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))], np.float32)
        vals = []
        for pts in planes:
            q = pts - lo[:, None]
            if region.ndim == nsp:
                vals.append(ndi.map_coordinates(region, q, order=1, mode="nearest"))
            else:
                vals.append(np.stack([ndi.map_coordinates(region[..., k], q, order=1, mode="nearest")
                                      for k in range(region.shape[-1])], axis=-1))
        if spec.mode == "3d":
            crop = vals[0].reshape(p, p, p)
        elif spec.mode == "2.5d":
            crop = np.stack([v.reshape(p, p) for v in vals], axis=-1)
        else:
            v = vals[0]
            crop = v.reshape((p, p) + v.shape[1:])
        if img.dtype == np.uint8:
            crop = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(crop, dtype=crop.dtype if img.dtype == np.uint8 else np.float32))
    return out


def default_crop_size(table: Any, unit: str, factor: float = 2.5) -> float | None:
    """``factor`` times the median equivalent diameter of a table's objects, in ``unit`` (None: no size column).

    Uses an ``equivalent_diameter_<unit>`` column (converted), else ``n_pixels`` / ``n_voxels``
    (pixel units only).
    """
    from ..geometry.units import PIXEL, convert, normalize_unit

    unit = normalize_unit(unit)
    if table is None or not len(table):
        return None
    for col in table.columns:
        if str(col).startswith("equivalent_diameter_"):
            src = normalize_unit(str(col)[len("equivalent_diameter_"):])
            if (src == PIXEL) != (unit == PIXEL):
                continue
            d = float(np.nanmedian(np.asarray(table[col], np.float64)))
            if np.isfinite(d) and d > 0:
                return float(factor * (d if src == unit else convert(d, src, unit)))
    if unit == PIXEL:
        for col, k in (("n_pixels", 2), ("n_voxels", 3)):
            if col in table.columns:
                n = float(np.median(np.asarray(table[col], np.float64)))
                d = 2 * np.sqrt(n / np.pi) if k == 2 else 2 * np.cbrt(3 * n / (4 * np.pi))
                if d > 0:
                    return float(factor * d)
    return None


def crop_spec_of(model: str | os.PathLike) -> tuple[Any, CropSpec]:
    """``(card, CropSpec)`` of a classification model.

    Raises
    ------
    ModelError
        Not a classification model.
    """
    from ..models.registry import resolve_model

    card = resolve_model(model).card
    if card.kind != "classification":
        raise ModelError(f"model {card.name!r} is a {card.kind} model; this needs a classification model")
    return card, CropSpec.from_card(card)


def classify_at(image: Any, centres: Any, model: str | os.PathLike, geometry: Any = None, *,
                spec: CropSpec | None = None, tta: bool = True) -> tuple[np.ndarray, list[str]]:
    """CNN class probabilities ``(N, n_classes)`` of the crops around ``centres``, and the class names.

    ``spec`` defaults to the model card's crop settings.
    """
    from .image_classify import classify_items

    card, card_spec = crop_spec_of(model)
    crops = sample_crops(image, centres, geometry, spec or card_spec)
    if not crops:
        names = list(card.output["class_names"])
        return np.zeros((0, len(names))), names
    return classify_items(crops, model, tta=tta)


def cnn_columns(table: Any, probs: np.ndarray, names: Sequence[str], prefix: str = "cnn") -> Any:
    """A copy of ``table`` with ``<prefix>_class``, ``<prefix>_probability`` and ``<prefix>_p_<class>`` columns."""
    out = table.copy()
    probs = np.asarray(probs, np.float64).reshape(len(out), len(names))
    out[f"{prefix}_class"] = np.asarray([names[i] for i in probs.argmax(axis=1)] if len(out) else [], dtype=object)
    out[f"{prefix}_probability"] = probs.max(axis=1) if len(out) else np.zeros(0)
    for k, n in enumerate(names):
        out[f"{prefix}_p_{n}"] = probs[:, k]
    return out


__all__ = ["CROP_MODES", "CropSpec", "classify_at", "cnn_columns", "crop_spec_of", "default_crop_size",
           "object_centres", "sample_crops"]
