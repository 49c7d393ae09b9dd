"""The npe2 manifest is valid, discoverable, and every ``python_name`` in it resolves.

No viewer and no display needed: this only imports the plugin's modules.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

DIST = "napari-medseg"
REPO = Path(__file__).resolve().parents[2]
#: the one manifest, at the repository's top level (src/napari_medseg/napari.yaml links to it; setup.py ships it)
MANIFEST = REPO / "napari.yaml"


def _commands() -> list[dict]:
    return yaml.safe_load(MANIFEST.read_text())["contributions"]["commands"]


def test_distribution_metadata_declares_napari_framework() -> None:
    meta = metadata.metadata(DIST)
    assert "Framework :: napari" in (meta.get_all("Classifier") or [])


def test_manifest_entry_point_points_at_shipped_manifest() -> None:
    eps = [ep for ep in metadata.distribution(DIST).entry_points if ep.group == "napari.manifest"]
    assert [(ep.name, ep.value) for ep in eps] == [("napari-medseg", "napari_medseg:napari.yaml")]
    import napari_medseg

    assert (Path(napari_medseg.__file__).parent / "napari.yaml").read_text() == MANIFEST.read_text()


def test_manifest_schema_is_valid() -> None:
    """What napari does at start-up: an invalid schema means the plugin is silently skipped."""
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution(DIST)
    assert pm.name == DIST
    assert {s.key for s in pm.contributions.sample_data} == {"nuclei", "he", "mr"}
    assert [w.layer_types for w in pm.contributions.writers] == [["labels"], ["labels"]]
    assert [w.filename_extensions for w in pm.contributions.writers] == [[".tif", ".tiff"], [".nii.gz", ".nii", ".nrrd"]]
    assert {r.command for r in pm.contributions.readers} == {
        "napari-medseg.get_tiff_reader",
        "napari-medseg.get_slide_reader",
        "napari-medseg.get_volume_reader",
        "napari-medseg.get_dicom_reader",
    }


def test_npe2_discovers_the_plugin() -> None:
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover(include_npe1=False)
    assert DIST in pm._manifests, "npe2 skipped napari-medseg: run `npe2 validate napari-medseg`"


@pytest.mark.parametrize("command", _commands(), ids=lambda c: c["id"])
def test_python_name_resolves(command: dict) -> None:
    """Each command's ``module:attribute`` imports and is callable (what ``--imports`` checks)."""
    from npe2.manifest.utils import import_python_name

    obj = import_python_name(command["python_name"])
    assert callable(obj), f"{command['python_name']} is not callable"


def test_npe2_validate_with_imports_cli() -> None:
    """``npe2 validate napari-medseg --imports``, as a plugin author runs it."""
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", DIST, "--imports"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid!" in out.stdout
