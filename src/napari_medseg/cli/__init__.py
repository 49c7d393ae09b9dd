"""The ``medseg`` command line (see :mod:`napari_medseg.cli.main`)."""

from __future__ import annotations

from .main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
