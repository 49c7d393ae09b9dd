"""Models that leave the plugin: ONNX files, int8 ONNX, BioImage Model Zoo packages (and importing them back).

Everything here needs the optional ``[export]`` extra
(``pip install "napari-medseg[export]"``: onnx, onnxscript, onnxruntime,
bioimageio.spec, bioimageio.core); :func:`require` names the missing
package and that command.  Importing this package imports nothing heavy.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from types import ModuleType

from ...errors import MedsegError

#: How to install what the export code needs.
INSTALL_HINT = 'pip install "napari-medseg[export]"'


class MissingDependencyError(MedsegError, ImportError):
    """An optional package the export code needs is not installed (the message says which, and how to get it)."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming it and the extra that installs it.

    Parameters
    ----------
    module : str
        Module to import (``"onnxruntime"``, ``"bioimageio.spec"``...).
    what : str
        What needs it, for the message (``"ONNX export"``).
    """
    top = module.split(".")[0]
    if find_spec(top) is None:
        raise MissingDependencyError(f"{what} needs the Python package {module!r}, which is not installed; "
                                     f"install the export extra: {INSTALL_HINT}")
    return import_module(module)
