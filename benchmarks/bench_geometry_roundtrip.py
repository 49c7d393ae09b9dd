"""Benchmark: geometry round trips, DICOM / NIfTI / NRRD -> labels file -> read again, against nibabel and SimpleITK.

For every real radiology series in ``../shared/datasets`` (the four GE MR
series of ``dicom_mr_series`` with their dcm2niix NIfTI, the pyradiomics NRRD
volumes of ``radiology_lesions``, the MS lesion NIfTI masks) and for the
shipped MR sample it prints, one line per input::

    <name> corners_vs_sitk_mm=... labels_roundtrip_mm=... labels_vs_nibabel_mm=... volume_rel_err=... write_s=... read_s=...

* ``corners_vs_sitk_mm``: largest distance between our world position of the
  8 corner voxel centres and SimpleITK's reading of the same file (for DICOM:
  of dcm2niix's NIfTI of the same series, compared as a set of points);
* ``labels_roundtrip_mm``: a label image on that grid written with
  :func:`napari_medseg.io.radiology.write_labels_nifti` and read back by our
  reader: largest corner distance;
* ``labels_vs_nibabel_mm``: the same labels file read by nibabel (RAS -> LPS):
  largest corner distance;
* ``volume_rel_err``: |our mm³ of each label (``measure(geometry=...)``) -
  SimpleITK's ``LabelShapeStatistics`` physical size| / SimpleITK's, worst label.

Run: ``python benchmarks/bench_geometry_roundtrip.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))


def _corners(shape) -> np.ndarray:
    return np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(len(shape), -1).T


def _sitk_corners(path: Path, shape) -> np.ndarray:
    import SimpleITK as sitk

    im = sitk.ReadImage(str(path))
    extra = [0] * (im.GetDimension() - 3)  # a 4D series: its first time point
    return np.array([im.TransformIndexToPhysicalPoint([int(i) for i in c[::-1]] + extra)[:3][::-1]
                     for c in _corners(shape)])


def _set_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance from a point of one set to its nearest point of the other."""
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    return float(max(d.min(axis=1).max(), d.min(axis=0).max()))


def _labels(shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint16)
    for k in range(1, 4):
        lo = [int(rng.integers(0, max(1, s - s // 3))) for s in shape]
        hi = [min(s, a + max(1, s // 4)) for a, s in zip(lo, shape, strict=True)]
        lab[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = k
    return lab


def row(name: str, vol, ref_path: Path | None, as_set: bool) -> str:
    import nibabel as nib
    import SimpleITK as sitk

    from napari_medseg.analysis.measure import measure
    from napari_medseg.io.radiology import ras_xyz_to_lps_zyx, read_nifti, write_labels_nifti

    g = vol.spatial_geometry()
    shape = vol.shape[-3:]
    ours = g.corners(shape)
    if ref_path is None:
        vs_sitk = float("nan")
    else:
        ref = _sitk_corners(ref_path, shape)
        vs_sitk = _set_distance(ours, ref) if as_set else float(np.linalg.norm(ours - ref, axis=1).max())
    lab = _labels(shape)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "labels.nii.gz"
        t = time.perf_counter()
        write_labels_nifti(p, lab, g)
        t_write = time.perf_counter() - t
        t = time.perf_counter()
        back = read_nifti(p)[0]
        t_read = time.perf_counter() - t
        rt = float(np.linalg.norm(back.spatial_geometry().corners(shape) - ours, axis=1).max())
        nimg = nib.load(str(p))
        lps = ras_xyz_to_lps_zyx(nimg.affine)
        nib_corners = _corners(shape) @ lps[:3, :3].T + lps[:3, 3]
        vs_nib = float(np.linalg.norm(nib_corners - ours, axis=1).max())
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(sitk.ReadImage(str(p)))
        table = measure(lab, geometry=g, properties=("area",))
        rel = max(abs(float(v) - stats.GetPhysicalSize(int(i))) / stats.GetPhysicalSize(int(i))
                  for i, v in zip(table["label"], table["volume_mm3"], strict=True))
    return (f"{name} corners_vs_sitk_mm={vs_sitk:.2e} labels_roundtrip_mm={rt:.2e} labels_vs_nibabel_mm={vs_nib:.2e} "
            f"volume_rel_err={rel:.2e} write_s={t_write:.3f} read_s={t_read:.3f}")


def main() -> int:
    from napari_medseg.io import read
    from napari_medseg.io.radiology import read_nifti, read_nrrd

    sample = REPO / "sample_data" / "mr" / "mr_0004"
    print(row("sample_mr_0004(dicom)", read(sample)[0], None, True))
    mr = DATASETS / "dicom_mr_series"
    for n in (4, 5, 6, 7):
        folder = mr / "In" / "20180918GE" / f"mr_000{n}"
        ref = mr / "Ref" / f"DCM2NIIX_regression_test_{n}.nii"
        if folder.exists() and ref.exists():
            print(row(f"ge_mr_000{n}(dicom_vs_dcm2niix)", read(folder)[0], ref, True))
    for p in sorted((DATASETS / "radiology_lesions").glob("*.nrrd")):
        print(row(f"{p.name}(nrrd)", read_nrrd(p)[0], p, False))
    for p in sorted((DATASETS / "ms_lesions").glob("*/GOLD_STANDARD*.nii.gz")):
        print(row(f"{p.parent.name}_{p.name[:13]}(nifti)", read_nifti(p)[0], p, False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
