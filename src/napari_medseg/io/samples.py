"""Where the shipped sample images are (napari's *File > Open Sample*, model export covers and test tensors).

Real files from the project's data sets, listed with their licences in
``sample_data/PROVENANCE.md``.  Torch- and napari-free.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ReaderError


def _find_sample_dir() -> Path:
    """The shipped sample folder: inside the installed package, or the source tree's top level.

    A wheel installs the repository's top-level ``sample_data/`` as
    ``napari_medseg/sample_data/``; in a source checkout (editable install,
    ``PYTHONPATH=src``) it is ``<repo>/sample_data`` next to ``src/``.
    """
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "sample_data", package.parent.parent / "sample_data"):
        if (candidate / "PROVENANCE.md").is_file():
            return candidate
    return package / "sample_data"  # missing: sample_path() says the installation is incomplete


#: Folder holding the shipped sample files.
SAMPLE_DIR = _find_sample_dir()

#: Shipped files, relative to :data:`SAMPLE_DIR`.
NUCLEI_IMAGE = "nuclei.tif"
NUCLEI_LABELS = "nuclei_labels.tif"
HE_IMAGE = "he.tif"
HE_LABELS = "he_labels.tif"
MR_SERIES = "mr/mr_0004"


def sample_path(name: str) -> Path:
    """Absolute path of a shipped sample file or folder.

    Parameters
    ----------
    name : str
        Path relative to the ``sample_data`` folder, e.g. ``"nuclei.tif"``.

    Raises
    ------
    ReaderError
        If the file is missing (a broken or partial installation).
    """
    p = SAMPLE_DIR / name
    if not p.exists():
        raise ReaderError(
            f"sample file {p} is missing: the napari-medseg installation is incomplete; "
            "reinstall the package (pip install --force-reinstall napari-medseg)"
        )
    return p
