"""QuPath interchange: objects as GeoJSON that QuPath imports (File > Import objects), and QuPath's export read back.

The format is QuPath's (``PathObjectTypeAdapters`` in qupath-core, v0.4+): a
``FeatureCollection`` of ``Feature`` objects whose ``geometry`` is a GeoJSON
``Polygon``/``MultiPolygon`` (or ``Point``...) in full-resolution pixel
coordinates ``[x, y]`` with the origin at the image's top-left corner, and
whose ``properties`` hold ``objectType`` (``"annotation"``, ``"detection"``,
``"cell"``, ``"tile"``), ``classification`` (``{"name": ..., "color": [r, g,
b]}``), optionally ``name``, ``color``, ``isLocked`` and ``measurements``
(``{name: number}``).  Reading also accepts QuPath's plain JSON array of
features, a single feature, v0.2's ``id``-as-type and the ``object_type``
spelling, and reads a feature without ``objectType`` as an annotation (as
QuPath does).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError, ReaderError

#: QuPath's object types.
OBJECT_TYPES = ("annotation", "detection", "cell", "tile", "tmaCore")
_LEGACY_TYPES = {"PathAnnotationObject": "annotation", "PathDetectionObject": "detection", "PathCellObject": "cell",
                 "PathTileObject": "tile", "TMACoreObject": "tmaCore"}
#: Colours given to classes without one (tab10).
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


@dataclass
class GeoObject:
    """One object read from GeoJSON.

    Attributes
    ----------
    geometry_type : str
        ``"Polygon"``, ``"MultiPolygon"``, ``"LineString"``, ``"Point"``...
    polygons : list of list of ndarray
        Polygon geometries: each ``[outline, holes...]``, rings ``(N, 2)``
        ``(x, y)`` level-0 pixels (QuPath's coordinates).  Lines and points
        are one "polygon" of one open ring.
    object_type : str
    class_name : str or None
    color : (int, int, int) or None
        The classification's colour (else the object's).
    name : str or None
    measurements : dict
    """

    geometry_type: str
    polygons: list[list[np.ndarray]]
    object_type: str = "annotation"
    class_name: str | None = None
    color: tuple[int, int, int] | None = None
    name: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)


def class_colors(names: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """A colour per class name, from :data:`PALETTE` in order."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _ring_list(ring: np.ndarray) -> list[list[float]]:
    r = np.asarray(ring, np.float64)
    if len(r) and not np.allclose(r[0], r[-1]):
        r = np.vstack([r, r[:1]])
    return [[round(float(x), 3), round(float(y), 3)] for x, y in r]


def polygon_geometry(polygons: Sequence[Sequence[np.ndarray]]) -> dict[str, Any]:
    """A GeoJSON ``Polygon`` (one) or ``MultiPolygon`` (several) from ``[outline, holes...]`` lists of ``(x, y)`` rings."""
    if not polygons:
        raise ParameterError("an object needs at least one polygon")
    polys = [[_ring_list(r) for r in p] for p in polygons]
    if len(polys) == 1:
        return {"type": "Polygon", "coordinates": polys[0]}
    return {"type": "MultiPolygon", "coordinates": polys}


def feature(polygons: Sequence[Sequence[np.ndarray]], *, object_type: str = "annotation",
            class_name: str | None = None, color: Sequence[int] | None = None, name: str | None = None,
            measurements: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One QuPath GeoJSON feature (with a fresh UUID ``id``, as QuPath >= 0.4 writes)."""
    if object_type not in OBJECT_TYPES:
        raise ParameterError(f"objectType must be one of {OBJECT_TYPES}, got {object_type!r}")
    props: dict[str, Any] = {"objectType": object_type}
    if name:
        props["name"] = str(name)
    if class_name:
        rgb = [int(c) for c in (color if color is not None else PALETTE[0])]
        props["classification"] = {"name": str(class_name), "color": rgb}
    if measurements:
        props["measurements"] = {str(k): float(v) for k, v in measurements.items() if np.isfinite(float(v))}
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": polygon_geometry(polygons), "properties": props}


def region_features(regions: Sequence[Any], *, object_type: str = "annotation",
                    colors: Mapping[str, Sequence[int]] | None = None) -> list[dict[str, Any]]:
    """Features of heat-map :class:`~napari_medseg.slides.regions.Region` objects, measurements included."""
    cols = dict(colors or class_colors(sorted({r.class_name for r in regions})))
    out = []
    for r in regions:
        suffix = "mm2" if r.unit == "mm" else "px2"
        meas = {"mean_probability": r.mean_probability, "n_tiles": r.n_tiles, f"area_{suffix}": r.area,
                f"longest_diameter_{r.unit if r.unit == 'mm' else 'px'}": r.longest_diameter}
        out.append(feature(r.polygons, object_type=object_type, class_name=r.class_name,
                           color=cols.get(r.class_name), name=f"{r.class_name} {r.id}", measurements=meas))
    return out


def labels_features(labels: Any, *, scale: Sequence[float] = (1.0, 1.0), offset: Sequence[float] = (0.0, 0.0),
                    classes: Mapping[int, str] | None = None, object_type: str = "detection",
                    measurements: Any = None, colors: Mapping[str, Sequence[int]] | None = None
                    ) -> list[dict[str, Any]]:
    """Features of the objects (cells, nuclei) of a 2D label image, one per id.

    Parameters
    ----------
    labels : array-like of int, shape (Y, X)
        Object ids (0 background) on a grid of ``scale`` level-0 pixels per
        pixel whose top-left corner is at level-0 ``offset`` ``(y, x)``.
    classes : mapping of int to str, optional
        Class of each id.
    object_type : str
        ``"detection"`` (QuPath draws many fast) or ``"cell"`` or ``"annotation"``.
    measurements : DataFrame, optional
        Rows with an ``id`` column; numeric columns become QuPath measurements.
    """
    from scipy import ndimage as ndi

    from .outline import mask_polygons

    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ParameterError(f"labels must be 2D (Y, X), got shape {lab.shape}")
    rows: dict[int, dict[str, float]] = {}
    if measurements is not None:
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        num = [c for c in measurements.columns
               if c != "id" and is_numeric_dtype(measurements[c]) and not is_bool_dtype(measurements[c])]
        for rec in measurements[["id", *num]].to_dict("records"):
            rows[int(rec.pop("id"))] = rec
    names = sorted(set((classes or {}).values()))
    cols = dict(colors or class_colors(names))
    sy, sx = float(scale[0]), float(scale[1])
    out = []
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        polys = mask_polygons(lab[sl] == i, (sy, sx), (offset[0] + sl[0].start * sy, offset[1] + sl[1].start * sx))
        cls = (classes or {}).get(i)
        out.append(feature(polys, object_type=object_type, class_name=cls, color=cols.get(cls) if cls else None,
                           name=None, measurements={"id": i, **rows.get(i, {})}))
    return out


def feature_collection(features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"type": "FeatureCollection", "features": [...]}``."""
    return {"type": "FeatureCollection", "features": list(features)}


def write_geojson(path: str | os.PathLike, features: Sequence[Mapping[str, Any]]) -> Path:
    """Write features as a GeoJSON FeatureCollection (UTF-8, atomically); returns the path."""
    from ..io.atomic import atomic_write

    text = json.dumps(feature_collection(features), ensure_ascii=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _rings_of(geom: Mapping[str, Any], where: str) -> tuple[str, list[list[np.ndarray]]]:
    kind = str(geom.get("type", ""))
    coords = geom.get("coordinates")
    try:
        if kind == "Polygon":
            return kind, [[np.asarray(r, np.float64)[:, :2] for r in coords]]
        if kind == "MultiPolygon":
            return kind, [[np.asarray(r, np.float64)[:, :2] for r in p] for p in coords]
        if kind in ("LineString", "MultiPoint"):
            return kind, [[np.asarray(coords, np.float64).reshape(-1, 2)]]
        if kind == "Point":
            return kind, [[np.asarray(coords, np.float64)[:2].reshape(1, 2)]]
        if kind == "MultiLineString":
            return kind, [[np.asarray(r, np.float64)[:, :2]] for r in coords]
        if kind == "GeometryCollection":
            polys: list[list[np.ndarray]] = []
            for g in geom.get("geometries") or []:
                polys += _rings_of(g, where)[1]
            return kind, polys
    except (TypeError, ValueError, IndexError) as exc:
        raise ReaderError(f"{where}: its {kind} coordinates are not [x, y] pairs ({exc})") from exc
    raise ReaderError(f"{where}: geometry type {kind!r} is not a GeoJSON geometry")


def read_geojson(path: str | os.PathLike) -> list[GeoObject]:
    """Objects of a QuPath (or any) GeoJSON file.

    Raises
    ------
    ReaderError
        Not JSON, not GeoJSON features, or a feature with broken coordinates
        (the message names the file and the feature).
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))
    except FileNotFoundError as exc:
        raise ReaderError(f"{p}: file does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReaderError(f"{p}: not a readable GeoJSON (JSON) file ({exc})") from exc
    if isinstance(doc, Mapping) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features") or []
    elif isinstance(doc, Mapping) and doc.get("type") == "Feature":
        feats = [doc]
    elif isinstance(doc, list):
        feats = doc
    else:
        raise ReaderError(f"{p}: not a GeoJSON FeatureCollection, Feature or list of features")
    out = []
    for i, f in enumerate(feats):
        where = f"{p}, feature {i}"
        if not isinstance(f, Mapping) or not isinstance(f.get("geometry"), Mapping):
            raise ReaderError(f"{where}: not a GeoJSON feature with a geometry")
        kind, polys = _rings_of(f["geometry"], where)
        props = f.get("properties") or {}
        otype = props.get("objectType") or props.get("object_type") or props.get("type") \
            or _LEGACY_TYPES.get(str(f.get("id")), "annotation")
        cls = props.get("classification")
        name = cls.get("name") if isinstance(cls, Mapping) else (cls if isinstance(cls, str) else None)
        if name is None and isinstance(cls, Mapping) and cls.get("names"):
            name = ": ".join(str(n) for n in cls["names"])
        color = (cls.get("color") if isinstance(cls, Mapping) else None) or props.get("color")
        rgb = tuple(int(c) for c in color[:3]) if isinstance(color, (list, tuple)) and len(color) >= 3 else None
        meas = props.get("measurements") or {}
        if isinstance(meas, list):  # QuPath < 0.4: [{"name": ..., "value": ...}]
            meas = {m.get("name"): m.get("value") for m in meas if isinstance(m, Mapping)}
        meas = {str(k): float(v) for k, v in meas.items() if isinstance(v, (int, float))}
        out.append(GeoObject(geometry_type=kind, polygons=polys, object_type=str(otype),
                             class_name=None if name is None else str(name), color=rgb,
                             name=props.get("name"), measurements=meas))
    return out


def to_index(ring: np.ndarray) -> np.ndarray:
    """``(N, 2)`` ``(x, y)`` level-0 pixel coordinates (corner origin) -> ``(row, col)`` pixel-centre indices."""
    r = np.asarray(ring, np.float64)
    return np.stack([r[:, 1] - 0.5, r[:, 0] - 0.5], axis=1)


def from_index(points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` ``(row, col)`` level-0 pixel-centre indices -> ``(x, y)`` corner-origin coordinates (QuPath)."""
    q = np.asarray(points, np.float64)
    return np.stack([q[:, 1] + 0.5, q[:, 0] + 0.5], axis=1)


__all__ = ["OBJECT_TYPES", "PALETTE", "GeoObject", "class_colors", "feature", "feature_collection", "from_index",
           "labels_features", "polygon_geometry", "read_geojson", "region_features", "to_index", "write_geojson"]
