"""Build settings that ``pyproject.toml`` cannot express; everything else is there.

The repository keeps ``napari.yaml`` (the npe2 manifest) and ``sample_data/`` at
its top level, one copy each; the wheel ships both inside the package, where
npe2 and the sample-data code look for them:

- ``sample_data/`` is the package data folder of ``napari_medseg.sample_data``
  (``package_dir`` maps it), so it lands in ``napari_medseg/sample_data/``.
- ``napari.yaml`` is copied by ``build_py`` to ``napari_medseg/napari.yaml``
  (the ``napari.manifest`` entry point ``napari_medseg:napari.yaml``).  In the
  source tree ``src/napari_medseg/napari.yaml`` is a symbolic link to it, so an
  editable install (and ``PYTHONPATH=src``) finds the same file; the copy made
  here does not rely on that link, so a checkout without symlink support still
  builds a correct wheel.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MANIFEST = "napari.yaml"


class BuildPyWithManifest(build_py):
    """``build_py`` that also places the top-level ``napari.yaml`` in the package."""

    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):
            target = Path(self.build_lib, "napari_medseg", MANIFEST)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            target.write_bytes((ROOT / MANIFEST).read_bytes())

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        manifest = str(Path(self.build_lib, "napari_medseg", MANIFEST))
        return outputs if manifest in outputs else [*outputs, manifest]


def _data_packages(prefix: str, folder: str) -> list[str]:
    """``prefix`` and its sub-folders under ``folder`` as package names (data only, no ``__init__.py``).

    Listing data folders as packages keeps setuptools from warning that they
    are importable yet not configured; their files are package data of
    ``prefix`` (the ``**/*`` patterns below).
    """
    return [prefix, *(f"{prefix}.{p}" for p in find_namespace_packages(folder, exclude=["*__pycache__*"]))]


setup(
    packages=[
        *find_namespace_packages("src", include=["napari_medseg", "napari_medseg.*"], exclude=["*__pycache__*"]),
        *_data_packages("napari_medseg.sample_data", "sample_data"),
    ],
    package_dir={"": "src", "napari_medseg.sample_data": "sample_data"},
    package_data={
        "napari_medseg": ["icon.png"],  # the manifest's icon (scripts/make_icon.py)
        "napari_medseg.models.shipped": ["**/*"],
        "napari_medseg.sample_data": ["**/*"],
    },
    cmdclass={"build_py": BuildPyWithManifest},
)
