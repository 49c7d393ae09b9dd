"""Every package the code imports is installed by ``pip install napari-medseg[all]`` on a fresh machine.

A fresh-clone run found ``import nrrd`` (the NRRD reader) missing: the
development environment had pynrrd, the package did not declare it.  This
scans ``src/napari_medseg`` for third-party imports and checks each one's
distribution is in ``[project].dependencies`` or the ``all`` extra, except
the few imported optionally (inside ``try/except ImportError``) or brought
by a declared package.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "napari_medseg"

#: imported only inside ``try: ... except ImportError`` (the code works without them)
OPTIONAL = {"psutil"}
#: imported only by ``napari_medseg.models.export`` and ``napari_medseg.zoo`` (behind ``require``, a clear message when
#: absent): the export extra
EXPORT_ONLY = {"onnx", "onnxscript", "onnxruntime", "bioimageio"}
EXPORT_PACKAGES = ("src/napari_medseg/models/export/", "src/napari_medseg/zoo/")
#: installed by a declared dependency: module -> the declared distribution that requires it
TRANSITIVE = {"numcodecs": "zarr", "distributed": "dask"}  # dask[distributed] pins it to dask's version


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    return _names(_project()["dependencies"], _project()["optional-dependencies"]["all"])


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _names(*lists: list[str]) -> set[str]:
    reqs = [r for reqs in lists for r in reqs]
    return {_norm(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in reqs}


def _third_party_imports() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for f in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top not in sys.stdlib_module_names and top != "napari_medseg":
                    found.setdefault(top, []).append(str(f.relative_to(REPO)))
    return found


def test_every_imported_package_is_declared() -> None:
    declared = _declared()
    dists = metadata.packages_distributions()
    missing = {}
    for module, files in sorted(_third_party_imports().items()):
        if module in OPTIONAL:
            continue
        if module in EXPORT_ONLY:
            outside = sorted(f for f in files if not f.startswith(EXPORT_PACKAGES))
            assert not outside, f"{module} is for the export extra only, but imported in {outside}"
            continue
        if module in TRANSITIVE:
            assert _norm(TRANSITIVE[module]) in declared, module
            continue
        names = {_norm(d) for d in dists.get(module, [])}
        assert names, f"{module} (imported in {files[0]}) is not installed here, so it cannot be checked"
        if not names & declared:
            missing[module] = (sorted(names), files[0])
    assert not missing, f"imported but not declared in pyproject.toml (module: (distribution, first file)): {missing}"


def test_export_extra_declares_its_packages() -> None:
    declared = _names(_project()["optional-dependencies"]["export"])
    dists = metadata.packages_distributions()
    for module in sorted(EXPORT_ONLY & set(_third_party_imports())):
        names = {_norm(d) for d in dists.get(module, [])} or {_norm(module)}
        assert names & declared or any(d.startswith(_norm(module)) for d in declared), (module, sorted(declared))
