"""The shipped samples are what ``sample_data/PROVENANCE.md`` says they are.

Each row of its table names a shipped file and the shared data set file it
was copied from, byte for byte.  The nuclei and H&E samples must come from
``dsb2018/val`` (images the shipped models never trained on), with the
modality ``index.csv`` lists.  The byte comparison needs ``../shared/datasets``
and skips without it; the rest runs anywhere.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import tifffile

from napari_medseg._napari.sample_data import (
    HE_IMAGE,
    HE_LABELS,
    NUCLEI_IMAGE,
    NUCLEI_LABELS,
    SAMPLE_DIR,
    sample_path,
)
from tests.conftest import dataset

ROW = re.compile(r"^\| `(?P<shipped>[^`]+)` \| `(?P<source>dsb2018/[^`]+)` \| (?P<licence>[^|]+) \|$")
MAX_BYTES = 300_000  # keep the wheel small


def _dsb_rows() -> dict[str, str]:
    text = (SAMPLE_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    rows = {m["shipped"]: m["source"] for line in text.splitlines() if (m := ROW.match(line.strip()))}
    assert set(rows) == {NUCLEI_IMAGE, NUCLEI_LABELS, HE_IMAGE, HE_LABELS}, rows
    return rows


def test_dsb_samples_come_from_val_not_train() -> None:
    rows = _dsb_rows()
    for shipped, source in rows.items():
        assert source.startswith("dsb2018/val/"), f"{shipped} comes from {source}: the models trained on dsb2018/train"
        assert sample_path(shipped).stat().st_size < MAX_BYTES
    # image and mask of one sample share the image id
    for image, labels in ((NUCLEI_IMAGE, NUCLEI_LABELS), (HE_IMAGE, HE_LABELS)):
        assert Path(rows[image]).name == Path(rows[labels]).name
        assert rows[image].startswith("dsb2018/val/images/") and rows[labels].startswith("dsb2018/val/masks/")


def test_sample_counts_match_provenance() -> None:
    text = (SAMPLE_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    for labels, n in ((NUCLEI_LABELS, 136), (HE_LABELS, 17)):
        assert f"{n} nuclei in `{labels}`" in text or f"{n} in `{labels}`" in text
        lab = tifffile.imread(sample_path(labels))
        assert np.array_equal(np.unique(lab), np.arange(n + 1))


def test_dsb_samples_are_byte_copies_with_the_indexed_modality() -> None:
    rows = _dsb_rows()
    root = dataset("dsb2018", "val")
    index = {r["id"]: r for r in csv.DictReader((root / "index.csv").read_text().splitlines())}
    for shipped, source in rows.items():
        original = dataset(*source.split("/"))
        assert sample_path(shipped).read_bytes() == original.read_bytes(), f"{shipped} differs from {source}"
    expected = {NUCLEI_IMAGE: "fluo", HE_IMAGE: "histo"}
    for image, modality in expected.items():
        row = index[Path(rows[image]).stem]
        assert row["modality"] == modality
        labels = NUCLEI_LABELS if image == NUCLEI_IMAGE else HE_LABELS
        assert int(row["n_nuclei"]) == int(tifffile.imread(sample_path(labels)).max())
