"""The ``medseg`` command line (console script ``medseg = "napari_medseg.cli:main"``).

Modules:

* :mod:`napari_medseg.cli.main`: the parser built from the registry
  :data:`~napari_medseg.cli.main.COMMANDS`, exit codes, :func:`main`;
* :mod:`napari_medseg.cli.common`: helpers shared by the verbs;
* one module per verb: ``segment``, ``models``, ``evaluate``, ``train``,
  ``detect``, ``demo`` (each defines ``COMMAND``, ``add_parser`` and ``run``).

Importing this package imports neither torch nor napari.  Note that the
package attribute ``napari_medseg.cli.main`` is the *function* :func:`main`
(the console-script entry point); reach the module with
``from napari_medseg.cli.main import COMMANDS`` or
``importlib.import_module("napari_medseg.cli.main")``.
"""

from __future__ import annotations

from .main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
