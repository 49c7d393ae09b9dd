"""The wheel built from the repository ships the top-level ``napari.yaml`` and ``sample_data/``.

The repository keeps one copy of each at its top level (the design card's
layout); ``setup.py`` puts them inside the package.  This builds the wheel
from a clean copy of the tracked files (so stale ``build/`` folders cannot
hide a missing file), checks its contents byte for byte, installs it into a
temporary folder and runs ``npe2 validate napari-medseg --imports`` there,
the check napari's plugin tooling does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("setuptools", reason="building the wheel without isolation needs setuptools (the testing extra)")


def _tracked_files() -> list[Path] | None:
    """Files git tracks or would track (not ignored), relative paths; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return [Path(p) for p in out.stdout.decode().split("\0") if p]


def _clean_copy(dest: Path) -> Path:
    files = _tracked_files()
    if files is None:
        ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "tmp")
        shutil.copytree(REPO, dest, symlinks=True, ignore=ignore)
        return dest
    for rel in files:
        src, dst = REPO / rel, dest / rel
        if not (src.exists() or src.is_symlink()):
            continue  # deleted in the work tree, not yet committed
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    tree = _clean_copy(tmp / "tree")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(tree)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (whl,) = (tmp / "dist").glob("napari_medseg-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_ships_top_level_manifest_and_sample_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert z.read("napari_medseg/napari.yaml") == (REPO / "napari.yaml").read_bytes()
        samples = [p for p in (REPO / "sample_data").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert any(p.name == "PROVENANCE.md" for p in samples) and len(samples) > 45
        for p in samples:
            name = "napari_medseg/sample_data/" + p.relative_to(REPO / "sample_data").as_posix()
            assert name in names, f"{name} missing from the wheel"
            assert z.read(name) == p.read_bytes(), f"{name} differs from {p}"
        # the shipped models and the licence travel too
        assert "napari_medseg/models/shipped/nuclei/weights.safetensors" in names
        licences = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert licences and z.read(licences[0]) == (REPO / "LICENSE").read_bytes()
        # the manifest's icon, and what PyPI and the napari hub read from the metadata
        assert z.read("napari_medseg/icon.png") == (REPO / "src" / "napari_medseg" / "icon.png").read_bytes()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = z.read(meta_name).decode()
        for v in ("3.10", "3.11", "3.12"):
            assert f"Classifier: Programming Language :: Python :: {v}\n" in meta
        for key in ("Homepage", "Bug Tracker", "Documentation", "Source Code"):
            assert f"Project-URL: {key}, https://github.com/napari-medseg/napari-medseg" in meta, key
        assert "License-Expression: BSD-3-Clause" in meta and "License-File: LICENSE" in meta
        # no second manifest or sample folder anywhere else in the wheel
        assert [n for n in names if n.endswith("napari.yaml")] == ["napari_medseg/napari.yaml"]
        assert not [n for n in names if n.startswith("sample_data/")]


@pytest.mark.slow
def test_installed_wheel_validates_with_npe2_and_finds_its_samples(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed wheel first, not the source tree
    validate = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-medseg", "--imports"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "valid!" in validate.stdout
    probe = (
        "import sys, napari_medseg, napari_medseg._napari.reader\n"
        "from pathlib import Path\n"
        "from importlib import metadata\n"
        "from napari_medseg._napari.sample_data import SAMPLE_DIR, sample_path, MR_SERIES\n"
        "assert 'torch' not in sys.modules\n"
        "print(Path(napari_medseg.__file__).parent)\n"
        "print(SAMPLE_DIR)\n"
        "print(sample_path('nuclei.tif').is_file(), sample_path(MR_SERIES).is_dir())\n"
        "print(metadata.distribution('napari-medseg').locate_file(''))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    package, samples, found, dist = res.stdout.split("\n")[:4]
    assert Path(package) == target / "napari_medseg"
    assert Path(samples) == target / "napari_medseg" / "sample_data"
    assert found == "True True"
    assert Path(dist) == target


def test_source_tree_has_one_manifest_and_one_sample_folder() -> None:
    """In the checkout the package's manifest is a link to the top-level file, and there is no sample copy."""
    linked = REPO / "src" / "napari_medseg" / "napari.yaml"
    if linked.is_symlink():
        assert linked.resolve() == (REPO / "napari.yaml").resolve()
    else:  # a checkout without symlink support: git writes the link target as text
        pytest.skip(f"{linked} is not a symbolic link here (checkout without symlinks)")
    assert not (REPO / "src" / "napari_medseg" / "sample_data").exists()
    from napari_medseg._napari.sample_data import SAMPLE_DIR

    assert SAMPLE_DIR == REPO / "sample_data"
