"""The plugin must not make napari start slower: no torch/napari/Qt on import."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = [
    "napari_medseg",
    "napari_medseg._napari.reader",
    "napari_medseg._napari.sample_data",
    "napari_medseg._napari.writer",
    "napari_medseg.io",
]


@pytest.mark.parametrize("heavy", ["torch", "napari", "qtpy", "PyQt6"])
def test_cheap_imports(heavy: str) -> None:
    code = (
        "import sys, importlib\n"
        f"for m in {MODULES!r}: importlib.import_module(m)\n"
        f"assert {heavy!r} not in sys.modules, sorted(k for k in sys.modules if k.startswith({heavy!r}))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
