"""What the napari hub (and PyPI) show: metadata, manifest name and icon, description, screenshots, licence.

The hub takes the summary, classifiers and project URLs from the package
metadata, the description from the README (older hub versions:
``.napari-hub/DESCRIPTION.md`` and ``config.yml``), the display name,
categories and icon from ``napari.yaml``.  Image links must be absolute
(PyPI and the hub do not resolve relative paths); each must name a committed
screenshot under ``docs/images/`` made by ``scripts/make_screenshots.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
MANIFEST = yaml.safe_load((REPO / "napari.yaml").read_text(encoding="utf-8"))
HUB = REPO / ".napari-hub"
RAW = "https://raw.githubusercontent.com/napari-medseg/napari-medseg/main/"
MAX_BYTES = 300_000
WIDGETS = ("segment", "objects", "train", "evaluate", "lesions", "classify")


def test_python_versions_urls_and_licence_metadata() -> None:
    classifiers = PYPROJECT["classifiers"]
    for v in ("3.10", "3.11", "3.12"):
        assert f"Programming Language :: Python :: {v}" in classifiers
    assert "Framework :: napari" in classifiers
    assert PYPROJECT["requires-python"] == ">=3.10"
    urls = PYPROJECT["urls"]
    for key in ("Homepage", "Bug Tracker", "Documentation", "Source Code"):
        assert urls[key].startswith("https://github.com/napari-medseg/napari-medseg"), key
    assert PYPROJECT["license"] == "BSD-3-Clause" and PYPROJECT["license-files"] == ["LICENSE"]
    licence = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("BSD 3-Clause License") and "napari-medseg developers" in licence
    assert not [c for c in classifiers if c.startswith("License ::")], "PEP 639: the licence expression only"


def test_manifest_has_a_human_name_and_a_shipped_icon() -> None:
    name = MANIFEST["display_name"]
    assert name != MANIFEST["name"] and 3 <= len(name) <= 90
    # napari's "Choose reader" dialog sorts by display name and preselects the first:
    # an upper-case start sorts before "napari builtins"
    assert sorted([name, "napari builtins"])[0] == name
    package, resource = MANIFEST["icon"].split(":")
    assert package == "napari_medseg"
    icon = REPO / "src" / "napari_medseg" / resource
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and icon.stat().st_size < 50_000


def _image_links(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)


def _check_screenshot_links(text: str, where: str) -> set[str]:
    links = _image_links(text)
    shown = set()
    for url in links:
        assert url.startswith(RAW + "docs/images/"), f"{where}: {url} is not an absolute link to docs/images"
        path = REPO / url[len(RAW):]
        assert path.is_file(), f"{where}: {url} names no committed file"
        assert path.stat().st_size < MAX_BYTES, f"{path} is over 300 KB"
        shown.add(path.stem)
    return shown


def test_readme_and_hub_description_show_a_screenshot_per_widget() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    description = (HUB / "DESCRIPTION.md").read_text(encoding="utf-8")
    assert _check_screenshot_links(readme, "README.md") == set(WIDGETS)
    assert _check_screenshot_links(description, "DESCRIPTION.md") == set(WIDGETS)
    committed = {p.stem for p in (REPO / "docs" / "images").glob("*.png")}
    assert committed == set(WIDGETS), "every screenshot is shown, every shown one is made by the script"
    script = (REPO / "scripts" / "make_screenshots.py").read_text(encoding="utf-8")
    for widget in WIDGETS:
        assert f'"{widget}.png"' in script


def test_hub_config_agrees_with_the_package_metadata() -> None:
    config = yaml.safe_load((HUB / "config.yml").read_text(encoding="utf-8"))
    assert config["summary"] == PYPROJECT["description"]
    assert config["project_urls"] == PYPROJECT["urls"]
    assert [a["name"] for a in config["authors"]] == [a["name"] for a in PYPROJECT["authors"]]
