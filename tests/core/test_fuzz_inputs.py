"""Broken inputs built from real files give our error naming the file, or verifiably right data.

A fast sample (the cases tagged ``ci``) of ``benchmarks/fuzz_readers.py``:
truncated, bit-flipped and lying DICOM / TIFF / OME / NIfTI / NRRD files,
series folders with FIFOs, empty or cut slices, DICOMDIRs with bad offsets.
The harness runs in one clean subprocess (no threads, so forking is safe) and
reads each case in a forked child under ``RLIMIT_AS`` and a timeout; here
each case must end as

* ``clean error``: a :class:`~napari_medseg.errors.MedsegError` (no other
  exception type, BaseException included) whose message names the file;
* ``correct data``: equal, values and geometry, to what the intact input gives;
* ``partial + warning`` / ``undetectable``: see the harness's docstring;

never wrong data, a foreign exception, a memory blow-up, a hang or a changed
input file.  Cases that declare sizes far beyond the file (``huge``: Rows =
Columns = 65535, NumberOfFrames 1e9, TIFF 100000 x 100000, NIfTI 32767^3...)
must be refused with at most a few MB allocated (tracemalloc peak).  Sources
that are absent (``../shared/datasets``) simply give fewer cases.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "benchmarks" / "fuzz_readers.py"


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_readers", HARNESS)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules.setdefault("fuzz_readers", mod)
    spec.loader.exec_module(mod)
    return mod


H = _harness()
CASES = [c.name for c in H.build_cases() if "ci" in c.tags]
#: Largest allocation (tracemalloc peak, MB) allowed while refusing a declared huge size.
HUGE_PEAK_MB = 32


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict]:
    """Run the ``ci`` sample once, in a fresh interpreter, and index the outcomes by case name."""
    out = tmp_path_factory.mktemp("fuzz") / "outcomes.json"
    proc = subprocess.run([sys.executable, str(HARNESS), "--ci", "--timeout", "30", "--json", str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {r["case"]: r for r in json.loads(out.read_text())}


def test_the_sample_is_not_empty() -> None:
    if not CASES:
        pytest.skip("no source files (pydicom test data and ../shared/datasets both absent)")
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", CASES)
def test_broken_input_gives_our_error_or_the_right_data(name: str, outcomes: dict[str, dict]) -> None:
    r = outcomes[name]
    assert r["category"] in H.GOOD, f"{name}: {r['category']}: {r.get('detail')}"


@pytest.mark.parametrize("name", [c.name for c in H.build_cases() if {"ci", "huge"} <= c.tags])
def test_declared_huge_size_is_refused_before_allocating(name: str, outcomes: dict[str, dict]) -> None:
    r = outcomes[name]
    assert r["category"] == "clean error", f"{name}: {r['category']}: {r.get('detail')}"
    assert r["peak_traced_mb"] < HUGE_PEAK_MB, f"{name}: {r['peak_traced_mb']} MB allocated before refusing"


def test_panic_of_a_rust_decoder_is_our_error(monkeypatch, tmp_path: Path) -> None:
    """pyo3's PanicException derives from BaseException: it must not pass ``except Exception`` to the user."""
    from pydicom.data import get_testdata_file

    from napari_medseg.errors import ReaderError
    from napari_medseg.io.dicom import pixels

    class PanicException(BaseException):  # what pyo3 raises, by name
        pass

    def panic(*args, **kwargs):
        raise PanicException("called `Option::unwrap()` on a `None` value")

    src = get_testdata_file("MR_small_RLE.dcm")
    if src is None:
        pytest.skip("pydicom test data absent")
    monkeypatch.setattr("pydicom.pixels.pixel_array", panic)
    from napari_medseg.io.dicom.header import read_header

    hdr = read_header(src)
    with pytest.raises(ReaderError, match="decoder crashed"):
        pixels.decode(hdr.path, hdr.fmt, hdr.offset, hdr.ds)
    # never swallowed: an interrupt stays an interrupt
    monkeypatch.setattr("pydicom.pixels.pixel_array", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        pixels.decode(hdr.path, hdr.fmt, hdr.offset, hdr.ds)


def test_lazy_tiff_tile_that_fails_later_raises_our_error(tmp_path: Path) -> None:
    """A pyramid opens lazily; a corrupt tile fails when napari draws it, as a ReaderError naming the file."""
    import numpy as np

    from napari_medseg.errors import ReaderError
    from napari_medseg.io.tiff import read_tiff

    src = H.dsb_image(False)
    if src is None:
        pytest.skip("dsb2018 images absent")
    path = tmp_path / "pyramid.tif"
    H.pyramid_bytes(src, H.corrupt_tile(0, 3))(path)
    (vol,) = read_tiff(path)
    assert isinstance(vol.data, list) and len(vol.data) == 3  # opened: nothing decoded yet
    with pytest.raises(ReaderError, match="pyramid.tif"):
        np.asarray(vol.data[0])
