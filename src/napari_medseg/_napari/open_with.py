"""*File > IO Utilities > Open with napari-medseg...*: open files and folders with this plugin's readers.

napari's own *File > Open* asks "Choose reader" whenever several plugins
claim a file name; its builtins claim ``.tif``, ``.dcm``, ``.nii.gz`` and
every folder, so a user who accepts the preselected choice may lose the
pixel size or the patient geometry.  These two menu commands skip that
question: they always read with napari-medseg, which keeps the geometry
(OME / ImageJ pixel size, DICOM and NIfTI / NRRD patient coordinates).

- :func:`open_files_dialog`: pick one or more files (TIFF, DICOM, NIfTI, NRRD;
  also DICOM files without an extension, which napari's *File > Open*
  cannot route to any reader).
- :func:`open_folder_dialog`: pick a folder (a DICOM series, a study with
  several series, or a folder holding a ``DICOMDIR``).

Both go through ``viewer.open(path, plugin="napari-medseg")`` where the file
name matches one of the manifest's reader patterns, so the layers carry their
source and the file enters napari's history like any *File > Open*; a DICOM
file without a matching name is read with the same DICOM reader and added
directly.

This module imports napari (it only runs inside a viewer); the reader module
stays napari-free.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import napari

from ..errors import ReaderError

PLUGIN = "napari-medseg"

#: the file dialog's filter: every name pattern the manifest's readers claim, then everything
FILE_FILTER = (
    "Images napari-medseg reads (*.tif *.tiff *.btf *.tf8 *.ome.tif *.dcm *.dicom *.ima "
    "*.nii *.nii.gz *.nrrd *.nhdr DICOMDIR);;"
    "All files, e.g. DICOM without extension (*)"
)


def open_files_dialog(viewer: napari.viewer.Viewer) -> list:
    """Ask for files and open them with napari-medseg; returns the new layers (empty if cancelled)."""
    from qtpy.QtWidgets import QFileDialog

    paths, _ = QFileDialog.getOpenFileNames(
        _parent(viewer), "Open with napari-medseg", _start_dir(), FILE_FILTER
    )
    return open_with_medseg(viewer, paths)


def open_folder_dialog(viewer: napari.viewer.Viewer) -> list:
    """Ask for a folder (DICOM series, study or DICOMDIR) and open it with napari-medseg."""
    from qtpy.QtWidgets import QFileDialog

    path = QFileDialog.getExistingDirectory(
        _parent(viewer), "Open folder with napari-medseg (DICOM series, study, DICOMDIR)", _start_dir()
    )
    return open_with_medseg(viewer, [path] if path else [])


def open_with_medseg(viewer: napari.viewer.Viewer, paths: Sequence[str | os.PathLike]) -> list:
    """Open each of ``paths`` with napari-medseg's readers (never napari's builtins); return the new layers.

    Raises
    ------
    ReaderError
        For a path none of napari-medseg's readers accepts, with what it reads instead.
    """
    layers: list = []
    for path in (os.fspath(p) for p in paths):
        if _claimed_by_manifest(path):
            layers.extend(viewer.open(path, plugin=PLUGIN))
        else:
            layers.extend(_open_unclaimed(viewer, path))
    return layers


def _claimed_by_manifest(path: str) -> bool:
    """Whether one of this plugin's reader contributions matches ``path`` (what ``viewer.open`` requires)."""
    from npe2 import PluginManager

    try:
        readers = list(PluginManager.instance().iter_compatible_readers([path]))
    except ValueError:
        return False
    return any(r.plugin_name == PLUGIN for r in readers)


def _open_unclaimed(viewer: napari.viewer.Viewer, path: str) -> list:
    """A file npe2 cannot route to us by its name (DICOM without extension, DICOMDIR on Linux)."""
    from napari.layers import Layer

    from .reader import get_dicom_reader, get_tiff_reader, get_volume_reader

    read = get_tiff_reader(path) or get_volume_reader(path) or get_dicom_reader(path)
    if read is None:
        raise ReaderError(
            f"napari-medseg cannot read {path}: it reads TIFF (.tif, .tiff, OME-TIFF, ImageJ), "
            "NIfTI / NRRD (.nii, .nii.gz, .nrrd, .nhdr) and DICOM (files with 'DICM' at byte 128, "
            "with or without extension, DICOMDIR, and folders of them)"
        )
    added = []
    with _layer_source(path):
        for data, kwargs, layer_type in read(path):
            added.append(viewer.add_layer(Layer.create(data, kwargs, layer_type)))
    _remember(path)
    return added


@contextlib.contextmanager
def _layer_source(path: str) -> Iterator[None]:
    """Give new layers ``source.path`` / ``source.reader_plugin`` as ``viewer.open`` does (where napari allows)."""
    try:
        from napari.layers._source import layer_source
    except ImportError:  # private in napari; without it the layers just have no source
        yield
        return
    with layer_source(path=path, reader_plugin=PLUGIN):
        yield


def _parent(viewer: napari.viewer.Viewer):
    """The active window (napari's), so the dialog sits on top of it; no private napari attribute."""
    from qtpy.QtWidgets import QApplication

    return QApplication.activeWindow()


def _start_dir() -> str:
    """napari's last *File > Open* folder, else the working directory."""
    try:
        from napari.utils.history import get_open_history

        history = get_open_history()
        if history and Path(history[0]).is_dir():
            return str(history[0])
    except Exception:  # history is a convenience only  # noqa: BLE001
        pass
    return os.getcwd()


def _remember(path: str) -> None:
    with contextlib.suppress(Exception):
        from napari.utils.history import update_open_history

        update_open_history(path)
