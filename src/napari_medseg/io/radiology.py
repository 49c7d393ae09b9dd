"""NIfTI and NRRD volumes in the DICOM convention: data ``(Z, Y, X)``, world LPS ``(z, y, x)`` in mm.

NIfTI (``.nii``, ``.nii.gz``; read and written with nibabel) stores a voxel
``(i, j, k)`` and an affine to **RAS** ``(x, y, z)`` millimetres.  NRRD
(``.nrrd``, ``.nhdr``; read and written with pynrrd) stores ``space
directions`` and ``space origin`` in the frame its ``space`` field names
(usually ``left-posterior-superior``).  Both are turned into the layout the
DICOM reader gives, so a NIfTI made from a DICOM series by dcm2niix overlays
the series in napari:

* data axes reversed: ``array[k, j, i]`` (slice, row, column);
* world axes: RAS -> LPS is ``x_L = -x_R``, ``y_P = -y_A``, ``z_S = z_S``,
  then ordered ``(z, y, x)``.  In homogeneous matrices:
  ``A_lps_zyx = P @ F @ A_ras_xyz @ P`` with ``F = diag(-1, -1, 1, 1)`` and
  ``P`` the permutation that reverses the first three entries.

Why these libraries: nibabel is the reference NIfTI implementation of the
neuroimaging community (qform/sform rules, scaling, gzip); pynrrd is small,
pure Python and reads every NRRD encoding we met (raw, gzip, bzip2, detached
headers).  SimpleITK reads both too but is a 50 MB binary wheel; the tests use
it only as an independent reference.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError, ReaderError
from ..geometry import LPS, Geometry, Volume
from ..geometry.units import SECONDS, convert, is_length, normalize_unit
from .atomic import atomic_write

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")

#: File names that mark an integer volume as a label map (opened as a Labels layer).
LABEL_NAME = re.compile(r"(label|labels|seg|segmentation|mask|gold_standard|lesion|roi)", re.IGNORECASE)

_P = np.eye(4)[[2, 1, 0, 3]]
_F = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a NIfTI file by its suffix."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_nrrd_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a NRRD file (or detached header) by its suffix."""
    return str(path).lower().endswith(NRRD_SUFFIXES)


def ras_xyz_to_lps_zyx(affine: Any) -> np.ndarray:
    """A NIfTI ``(4, 4)`` voxel ``(i, j, k)`` -> RAS ``(x, y, z)`` affine as our ``(k, j, i)`` -> LPS ``(z, y, x)``."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ParameterError(f"expected a 4x4 affine, got shape {a.shape}")
    return _P @ _F @ a @ _P


def lps_zyx_to_ras_xyz(affine: Any) -> np.ndarray:
    """Inverse of :func:`ras_xyz_to_lps_zyx`."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ParameterError(f"expected a 4x4 affine, got shape {a.shape}")
    return _F @ _P @ a @ _P


def _stem(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz", ".nii", ".nrrd", ".nhdr"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


def _layer_type(name: str, data: Any) -> str:
    return "labels" if np.dtype(data.dtype).kind in "iub" and LABEL_NAME.search(name) else "image"


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise ReaderError(f"{p} does not exist")
    if not _is_regular(p):
        raise ReaderError(f"{p} is not a regular file (a folder, pipe, socket or device)")
    return p


def _is_regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(p).st_mode)
    except OSError:
        return False


#: Largest ratio of decoded to gzip-compressed bytes believed before reading (deflate tops out at 1032).
MAX_GZIP_RATIO = 1100
#: Decoded sizes up to this are believed whatever the file size.
SMALL_BYTES = 64 * 2**20
#: Largest magnitude of a scaled value, a voxel size (mm) and an origin (mm) taken as data, not damage.
MAX_SCALED = 1e15
MAX_VOXEL_MM = 1e5
MAX_ORIGIN_MM = 1e6


def _gzip_isize(p: Path) -> int | None:
    """The uncompressed size (mod 2**32) a gzip file's trailer records, or None."""
    try:
        with open(p, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                return None
            fh.seek(-4, os.SEEK_END)
            return int.from_bytes(fh.read(4), "little")
    except OSError:
        return None


def _verify_gzip(p: Path) -> None:
    """Read a gzip file to its end so that its CRC and length are checked (readers stop early)."""
    import gzip
    import zlib

    try:
        with gzip.open(p, "rb") as fh:
            while fh.read(8 * 2**20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise ReaderError(f"{p}: the gzip data are damaged or truncated ({type(exc).__name__}: {exc}); the "
                          "values read from it cannot be trusted") from exc


def _check_nifti_header(p: Path, img: Any) -> None:
    """Refuse a NIfTI header whose image does not fit the file or whose numbers are unusable, before reading."""
    hdr = img.header
    shape = tuple(int(s) for s in img.shape)
    if not shape or min(shape) < 1:
        raise ReaderError(f"{p}: the NIfTI header declares an empty image (dim {shape}): the header is damaged")
    dtype = np.dtype(hdr.get_data_dtype())
    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    offset = float(hdr.get_data_offset())
    size = p.stat().st_size
    what = f"{' x '.join(map(str, shape))} voxels of {dtype}"
    if not np.isfinite(offset) or offset < 0:
        raise ReaderError(f"{p}: the NIfTI vox_offset {offset} is not a file position: the header is damaged")
    if is_nifti_path(p) and str(p).lower().endswith(".gz"):
        isize = _gzip_isize(p)
        if nbytes > max(SMALL_BYTES, MAX_GZIP_RATIO * size):
            raise ReaderError(f"{p}: the NIfTI header declares {what} ({nbytes:,} bytes) but the gzip file has only "
                              f"{size:,} bytes: the header is damaged")
        if isize is not None and offset + nbytes < 2**32 and isize < offset + nbytes:
            raise ReaderError(f"{p}: the NIfTI header declares {what} ({nbytes:,} bytes from byte {int(offset)}) but "
                              f"the gzip data hold {isize:,} bytes: the file is truncated or the header is damaged")
    elif offset + nbytes > size:
        raise ReaderError(f"{p}: the NIfTI header declares {what} ({nbytes:,} bytes from byte {int(offset)}) but the "
                          f"file has only {size:,} bytes: it is truncated or the header is damaged")
    # nibabel moves the scaling into the array proxy when it loads the image
    slope, inter = getattr(img.dataobj, "slope", None), getattr(img.dataobj, "inter", None)
    if slope is not None or inter is not None:
        s_, b_ = float(slope if slope is not None else 1.0), float(inter if inter is not None else 0.0)
        top = float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0
        reach = abs(s_) * top + abs(b_) if np.isfinite(s_) and np.isfinite(b_) else np.inf
        if not reach <= MAX_SCALED:
            raise ReaderError(f"{p}: the NIfTI scaling scl_slope {s_:g} / scl_inter {b_:g} maps the stored values "
                              f"beyond any real measurement (|value| > {MAX_SCALED:g}): the header is damaged")


def _check_affine(p: Path, lin: np.ndarray, origin: np.ndarray, what: str) -> None:
    """Refuse a voxel-to-world transform that is not finite, degenerate, or absurdly large."""
    lin = np.asarray(lin, dtype=float)
    origin = np.asarray(origin, dtype=float)
    if not (np.isfinite(lin).all() and np.isfinite(origin).all()):
        raise ReaderError(f"{p}: the {what} has non-finite values: the header is damaged")
    steps = np.linalg.norm(lin, axis=0)
    if (steps <= 0).any() or abs(np.linalg.det(lin)) < 1e-12 * max(float(np.prod(steps)), 1e-300):
        raise ReaderError(f"{p}: the {what} is degenerate (a voxel axis of length 0 or axes in one plane): the "
                          "header is damaged")
    if (steps > MAX_VOXEL_MM).any() or (np.abs(origin) > MAX_ORIGIN_MM).any():
        raise ReaderError(f"{p}: the {what} gives voxel sizes {steps.tolist()} / origin {origin.tolist()} beyond any "
                          "scan (1e5 mm voxels or a 1 km origin): the header is damaged")


# --------------------------------------------------------------------------- NIfTI


def read_nifti(path: str | os.PathLike) -> list[Volume]:
    """Read a NIfTI-1/2 file into a volume in patient coordinates.

    Parameters
    ----------
    path : str or path-like
        ``.nii`` or ``.nii.gz``.  Opened read-only.

    Returns
    -------
    list of Volume
        One volume: axes ``"ZYX"`` (or ``"TZYX"`` for 4D, ``"YX"`` never:
        a single slice stays ``"ZYX"`` with one plane), ``affine`` index ->
        LPS ``(z, y, x)`` mm, ``frame="LPS"``, units mm (time in s).  Integer
        volumes whose file name says label/seg/mask are Labels layers.

    Raises
    ------
    ReaderError
        If the file is missing, not NIfTI, damaged, or has more than 4 dimensions.
    """
    import nibabel as nib

    p = _check_file(path)
    try:
        img = nib.load(str(p))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise ReaderError(f"{p}: not a NIfTI image ({type(img).__name__})")
        hdr = img.header
        shape = tuple(int(s) for s in img.shape)
        if len(shape) > 4:
            raise ReaderError(f"{p}: {len(shape)}-dimensional NIfTI (shape {shape}); only 2D, 3D and 4D are read")
        _check_nifti_header(p, img)
        ras = img.affine
        if ras is None:  # pragma: no cover - nibabel always builds one
            raise ReaderError(f"{p}: no voxel-to-world affine")
        _check_affine(p, np.asarray(ras)[:3, :3], np.asarray(ras)[:3, 3], "NIfTI voxel-to-world affine (qform/sform)")
        data = np.asanyarray(img.dataobj)
        if str(p).lower().endswith(".gz"):
            _verify_gzip(p)
        xyz_unit, t_unit = hdr.get_xyzt_units()
        zooms = tuple(float(z) for z in hdr.get_zooms())
    except ReaderError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # nibabel raises many types for damaged files
        raise ReaderError(f"cannot read NIfTI {p}: {type(exc).__name__}: {exc}") from exc
    while data.ndim < 3:
        data = data[..., np.newaxis]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    length_unit = {"meter": "m", "mm": "mm", "micron": "µm"}.get(str(xyz_unit), "mm")
    lps = ras_xyz_to_lps_zyx(ras)
    if length_unit != "mm":  # nibabel's affine is in the file's unit; patient coordinates are mm
        lps[:3, :] *= convert(1.0, length_unit, "mm")
    if data.ndim == 3:
        arr = np.ascontiguousarray(data.transpose(2, 1, 0))
        affine, axes, units = lps, "ZYX", ("mm", "mm", "mm")
    else:
        arr = np.ascontiguousarray(data.transpose(3, 2, 1, 0))
        dt = zooms[3] if len(zooms) > 3 and zooms[3] > 0 else 1.0
        tu = {"sec": "s", "msec": "ms", "usec": "µs"}.get(str(t_unit), "s")
        affine = np.eye(5)
        affine[0, 0] = convert(dt, tu, "s") if tu in SECONDS else dt
        affine[1:, 1:] = lps
        axes, units = "TZYX", ("s", "mm", "mm", "mm")
    name = _stem(p)
    meta = {"source": str(p), "format": "NIfTI", "nifti_affine_ras": np.asarray(ras).tolist(),
            "qform_code": int(hdr["qform_code"]), "sform_code": int(hdr["sform_code"])}
    return [Volume(data=arr, axes=axes, name=name, affine=affine, units=units, frame=LPS,
                   layer_type=_layer_type(name, arr), metadata=meta)]


def write_labels_nifti(path: str | os.PathLike, labels: Any, geometry: Geometry) -> Path:
    """Write a label image as NIfTI with the affine of its source image.

    Parameters
    ----------
    path : str or path-like
        Destination ``.nii`` or ``.nii.gz`` (gzip); written atomically.
    labels : array-like of int
        ``(Z, Y, X)`` (or ``(Y, X)``, written as one slice; or ``(T, Z, Y, X)``,
        written as 4D with the time step) label ids.
    geometry : Geometry
        Index -> world of ``labels`` (axes ``"ZYX"``, ``"YX"`` or ``"TZYX"``), lengths in
        any unit (written in mm).  With ``frame="LPS"`` the world is patient
        coordinates; otherwise it is written as it is (the NIfTI then has
        ``sform_code`` 0, "arbitrary coordinates").

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ParameterError
        If the labels are not integer, do not fit the geometry, or the suffix is wrong.
    """
    import nibabel as nib

    from .tiff import label_dtype

    p = Path(path)
    if not is_nifti_path(p):
        raise ParameterError(f"{p}: a NIfTI file name must end in .nii or .nii.gz")
    arr = np.asarray(labels)
    dtype = label_dtype(arr)
    dt = None
    if arr.ndim == 4:
        if not isinstance(geometry, Geometry) or geometry.axes != "TZYX":
            raise ParameterError(f"{p}: 4D labels need a TZYX geometry, got {geometry!r}")
        t_unit = geometry.units[0]
        dt = float(geometry.spacing[0])
        if t_unit in SECONDS:
            dt = convert(dt, t_unit, "s")
        geometry = geometry.subset("ZYX")
        data = np.asarray(arr.transpose(3, 2, 1, 0), dtype=dtype)
    else:
        geometry = _geometry_zyx(geometry, arr.ndim, p)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        data = np.asarray(arr.transpose(2, 1, 0), dtype=dtype)
    g = geometry.with_length_unit("mm") if geometry.calibrated else geometry
    ras = lps_zyx_to_ras_xyz(g.affine)
    img = nib.Nifti1Image(data, ras)
    code = 1 if geometry.frame == LPS else 2  # 1 = scanner anatomical, 2 = aligned to another scan
    img.set_sform(ras, code=code)
    img.set_qform(ras, code=code)
    if dt is not None:
        zooms = list(img.header.get_zooms())
        img.header.set_zooms((*zooms[:3], dt))
    img.header.set_xyzt_units("mm" if g.calibrated else "unknown", "sec" if dt is not None else "unknown")
    img.header["descrip"] = b"napari-medseg labels"
    return atomic_write(p, lambda tmp: nib.save(img, str(tmp)))


def _geometry_zyx(geometry: Geometry, ndim: int, p: Path) -> Geometry:
    if not isinstance(geometry, Geometry):
        raise ParameterError(f"{p}: geometry must be a Geometry, got {type(geometry).__name__}")
    if ndim == 3 and geometry.axes == "ZYX":
        return geometry
    if ndim == 2 and geometry.axes == "YX":
        a = np.eye(4)
        a[1:3, 1:3] = geometry.linear
        a[1:3, 3] = geometry.origin
        # the slice normal: unit length along the new Z, perpendicular in the world
        a[0, 0] = 1.0
        return Geometry("ZYX", a, (geometry.units[0],) + geometry.units, geometry.frame)
    if ndim == 2 and geometry.axes == "ZYX":
        raise ParameterError(f"{p}: 2D labels with a 3D geometry; pass the labels as (1, Y, X)")
    raise ParameterError(f"{p}: labels with {ndim} dimensions do not fit geometry axes {geometry.axes!r} "
                         "(NIfTI labels are ZYX or YX)")


# --------------------------------------------------------------------------- NRRD

_SPACES = {
    "left-posterior-superior": (1, 1, 1), "lps": (1, 1, 1),
    "right-anterior-superior": (-1, -1, 1), "ras": (-1, -1, 1),
    "left-anterior-superior": (1, -1, 1), "las": (1, -1, 1),
}


def read_nrrd(path: str | os.PathLike) -> list[Volume]:
    """Read a NRRD file (or detached ``.nhdr`` header) into a volume in patient coordinates.

    Parameters
    ----------
    path : str or path-like
        ``.nrrd`` or ``.nhdr``.  Opened read-only.

    Returns
    -------
    list of Volume
        One volume, axes ``"ZYX"`` (a 2D NRRD is one slice), or ``"CZYX"`` when
        the file has a non-spatial (vector) axis.  With ``space directions``
        in an anatomical ``space`` the affine maps index -> LPS ``(z, y, x)`` mm
        and ``frame="LPS"``; with only ``spacings`` the grid is axis aligned
        in ``space units`` (pixel when none).

    Raises
    ------
    ReaderError
        If the file is missing, not NRRD, damaged, or its geometry is unusable.
    """
    import nrrd

    p = _check_file(path)
    _check_nrrd_header(p)
    try:
        data, hdr = nrrd.read(str(p), index_order="F")
    except MemoryError:
        raise
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, OSError, zlib errors...
        raise ReaderError(f"cannot read NRRD {p}: {type(exc).__name__}: {exc}") from exc
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    dirs = hdr.get("space directions")
    if dirs is not None and len(dirs) != data.ndim:
        raise ReaderError(f"{p}: NRRD 'space directions' has {len(dirs)} entries for {data.ndim} axes (non-spatial "
                          "axes need 'none'): the header is damaged")
    space = str(hdr.get("space", "")).strip().lower()
    name = _stem(p)
    meta: dict[str, Any] = {"source": str(p), "format": "NRRD", "nrrd_space": space or None}
    spatial = list(range(data.ndim))
    if dirs is not None:
        rows = [None if (d is None or (np.ndim(d) and np.all(np.isnan(np.asarray(d, float))))) else
                np.asarray(d, float) for d in dirs]
        spatial = [i for i, r in enumerate(rows) if r is not None]
    chan = [i for i in range(data.ndim) if i not in spatial]
    if len(spatial) not in (2, 3) or len(chan) > 1:
        raise ReaderError(f"{p}: NRRD with {len(spatial)} spatial and {len(chan)} other axes "
                          f"(shape {data.shape}) is not a 2D/3D image")
    # reorder to (i, j, k[, c]) then reverse the spatial axes
    arr = np.moveaxis(data, chan, [data.ndim - 1] * len(chan)) if chan else data
    if dirs is not None:
        if space not in _SPACES:
            raise ReaderError(f"{p}: NRRD space {hdr.get('space')!r} is not an anatomical frame "
                              f"({', '.join(k for k in _SPACES if '-' in k)})")
        flip = np.array(_SPACES[space], float)
        vecs = np.stack([rows[i] for i in spatial], axis=1)  # columns = axis directions, xyz
        origin = np.asarray(hdr.get("space origin", np.zeros(vecs.shape[0])), float)
        if vecs.shape[0] != 3:
            raise ReaderError(f"{p}: NRRD space has {vecs.shape[0]} dimensions, expected 3")
        if origin.shape != (3,):
            raise ReaderError(f"{p}: NRRD space origin {origin.tolist()} is not 3 numbers: the header is damaged")
        if not (np.all(np.isfinite(vecs)) and np.all(np.isfinite(origin))):
            raise ReaderError(f"{p}: NRRD space directions/origin have non-finite values")
        steps = np.linalg.norm(vecs, axis=0)
        if (steps > MAX_VOXEL_MM).any() or (np.abs(origin) > MAX_ORIGIN_MM).any():
            raise ReaderError(f"{p}: NRRD space directions/origin give voxel sizes {steps.tolist()} / origin "
                              f"{origin.tolist()} beyond any scan: the header is damaged")
        lin = flip[:, None] * vecs
        if lin.shape[1] == 2:  # one slice: the normal of the plane, unit length
            n = np.cross(lin[:, 0], lin[:, 1])
            lin = np.column_stack([lin, n / np.linalg.norm(n)])
            arr = arr[:, :, np.newaxis, ...]
        lps_xyz = np.eye(4)
        lps_xyz[:3, :3] = lin
        lps_xyz[:3, 3] = flip * origin
        units_field = hdr.get("space units")
        if units_field is not None and not all(normalize_unit(u) == "mm" for u in units_field):
            unit = normalize_unit(units_field[0])
            if not is_length(unit):
                raise ReaderError(f"{p}: NRRD space units {units_field} are not lengths")
            lps_xyz[:3, :] *= convert(1.0, unit, "mm")
        affine = _P @ lps_xyz @ _P
        if abs(np.linalg.det(affine[:3, :3])) == 0:
            raise ReaderError(f"{p}: NRRD space directions are degenerate (zero volume)")
        geo_units: tuple[str, ...] = ("mm", "mm", "mm")
        frame = LPS
    else:
        sp = hdr.get("spacings")
        sp = [1.0] * len(spatial) if sp is None else [float(sp[i]) for i in spatial]
        if not all(np.isfinite(s) and s > 0 for s in sp):
            raise ReaderError(f"{p}: NRRD spacings {sp} must be positive")
        u = hdr.get("units") or hdr.get("space units")
        unit = normalize_unit(u[spatial[0]] if u is not None and len(u) > spatial[0] else None)
        if len(spatial) == 2:
            arr = arr[:, :, np.newaxis, ...]
            sp = sp + [1.0]
        affine = np.eye(4)
        affine[:3, :3] = np.diag(sp[::-1])
        geo_units, frame = (unit,) * 3, None
    order = (2, 1, 0) + ((3,) if chan else ())
    arr = np.ascontiguousarray(arr.transpose(order))
    axes = "ZYX"
    if chan:
        arr = np.moveaxis(arr, 3, 0)
        axes = "CZYX"
    return [Volume(data=arr, axes=axes, name=name, affine=affine, units=geo_units, frame=frame,
                   layer_type=_layer_type(name, arr) if not chan else "image", metadata=meta)]


#: NRRD header fields that point into the file or to other files.
_NRRD_SKIPS = ("line skip", "lineskip", "byte skip", "byteskip")


def _check_nrrd_header(p: Path) -> None:
    """Refuse, before pynrrd reads anything, skips beyond the file and data files that are not regular files.

    pynrrd skips ``line skip`` lines one ``readline`` at a time (a huge value spins for ever at the end of
    the file) and opens ``data file`` as given (a pipe blocks, ``/dev/zero`` never ends).
    """
    try:
        with open(p, "rb") as fh:
            head = fh.read(2**20)
    except OSError as exc:
        raise ReaderError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    text = head.decode("latin-1")
    lines = text.split("\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            break
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    size = p.stat().st_size
    for key in _NRRD_SKIPS:
        if key in fields:
            try:
                n = int(fields[key])
            except ValueError:
                raise ReaderError(f"{p}: NRRD '{key}: {fields[key]}' is not an integer: the header is damaged") from None
            if n < -1 or n > size:
                raise ReaderError(f"{p}: NRRD '{key}: {n}' points beyond the file ({size:,} bytes): the header is "
                                  "damaged")
    target = fields.get("data file") or fields.get("datafile")
    if target is None:
        return
    if target.upper().startswith("LIST"):
        names = [ln.strip() for ln in text.split("\n\n", 1)[-1].split("\n") if ln.strip()][:100000]
    elif " " in target:  # "format min max step [subdim]": data files named by a printf pattern
        parts = target.split()
        try:
            lo, hi, step = (int(v) for v in parts[1:4])
            if step == 0 or abs((hi - lo) // step) > 100000:
                raise ValueError("too many files")
            names = [parts[0] % i for i in range(lo, hi + (1 if step > 0 else -1), step)]
        except (ValueError, TypeError, IndexError) as exc:
            raise ReaderError(f"{p}: NRRD 'data file: {target}' is not a usable file pattern ({exc})") from None
    else:
        names = [target]
    for name in names:
        f = Path(name) if os.path.isabs(name) else p.parent / name
        if not f.exists() and not f.is_symlink():
            raise ReaderError(f"{p}: its NRRD data file {name} ({f}) does not exist")
        if not _is_regular(f):
            raise ReaderError(f"{p}: its NRRD data file {name} ({f}) is not a regular file (a folder, pipe or "
                              "device)")


def write_labels_nrrd(path: str | os.PathLike, labels: Any, geometry: Geometry) -> Path:
    """Write a ``(Z, Y, X)`` label image as gzip NRRD, ``space left-posterior-superior``, geometry of ``geometry``.

    Raises
    ------
    ParameterError
        If the labels are not integer or do not fit the geometry.
    """
    import nrrd

    from .tiff import label_dtype

    p = Path(path)
    arr = np.asarray(labels)
    dtype = label_dtype(arr)
    geometry = _geometry_zyx(geometry, arr.ndim, p)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    g = geometry.with_length_unit("mm") if geometry.calibrated else geometry
    lps_xyz = _P @ g.affine @ _P
    hdr = {"space": "left-posterior-superior", "space directions": lps_xyz[:3, :3].T,
           "space origin": lps_xyz[:3, 3], "kinds": ["domain"] * 3, "encoding": "gzip"}
    data = np.asarray(arr.transpose(2, 1, 0), dtype=dtype)
    return atomic_write(p, lambda tmp: nrrd.write(str(tmp), data, hdr, index_order="F"))


def write_labels_file(path: str | os.PathLike, labels: Any, geometry: Geometry) -> Path:
    """Write labels as NIfTI or NRRD, chosen by the suffix of ``path``."""
    if is_nifti_path(path):
        return write_labels_nifti(path, labels, geometry)
    if str(path).lower().endswith(".nrrd"):
        return write_labels_nrrd(path, labels, geometry)
    raise ParameterError(f"{path}: radiology labels are written as .nii, .nii.gz or .nrrd")


def labels_suffix(geometry: Geometry | None) -> str:
    """The file suffix labels over an image of this geometry are written with.

    ``.nii.gz`` for patient coordinates (DICOM, NIfTI, NRRD sources), so they
    overlay the series again in any radiology viewer; ``.tif`` (with the
    pixel size) for everything else.
    """
    return ".nii.gz" if geometry is not None and geometry.frame == LPS else ".tif"


__all__: Sequence[str] = [
    "NIFTI_SUFFIXES", "NRRD_SUFFIXES", "is_nifti_path", "is_nrrd_path", "labels_suffix", "lps_zyx_to_ras_xyz",
    "ras_xyz_to_lps_zyx", "read_nifti", "read_nrrd", "write_labels_file", "write_labels_nifti", "write_labels_nrrd",
]
