"""Kinds of images: the shipped cards say what they were made for; auto picks by kind; wrong kinds warn."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_medseg.errors import ImageKindWarning, ModelError, ParameterError
from napari_medseg.geometry import LPS, Volume
from napari_medseg.io import read
from napari_medseg.models.kinds import (
    card_image_kinds,
    infer_image_kind,
    kind_fits,
    kind_mismatch,
    kind_of_volume,
    normalize_kind,
)
from napari_medseg.models.registry import default_model_for, list_models, resolve_model, resolve_model_or_auto

MR_SAMPLE = str(Path(__file__).resolve().parents[2] / "sample_data" / "mr" / "mr_0004")
NUCLEI_ON_MR = ("the nuclei model was made for fluorescence microscopy, brightfield microscopy and H&E histology "
                "images; this image is MR: results are unlikely to mean anything")


def test_shipped_cards_say_what_they_were_made_for() -> None:
    kinds = {m.name: card_image_kinds(m.card) for m in list_models() if m.source == "shipped"}
    assert kinds == {"bccd": ("blood_smear",), "nuclei": ("fluorescence", "brightfield", "histology"),
                     "nuclei-he": ("histology",), "ms-lesions": ("MR",)}


def test_infer_and_normalize() -> None:
    assert infer_image_kind() == "microscopy"
    assert infer_image_kind("LPS") == "radiology"
    assert infer_image_kind("LPS", "MR") == infer_image_kind(None, "mr") == "MR"
    assert infer_image_kind("LPS", "CT") == "CT"
    assert infer_image_kind("LPS", "OT") == "radiology"  # an unknown modality stays generic
    assert [normalize_kind(k) for k in ("mri", "H&E", "smear", "Fluo", "ct", "Blood smear")] == \
        ["MR", "histology", "blood_smear", "fluorescence", "CT", "blood_smear"]
    with pytest.raises(ParameterError, match="unknown image kind 'xyz'; choose from fluorescence, brightfield"):
        normalize_kind("xyz")
    vol = Volume(np.zeros((2, 4, 4)), "ZYX", frame=LPS)
    assert kind_of_volume(vol) == "radiology"
    assert kind_of_volume(Volume(np.zeros((4, 4)), "YX")) == "microscopy"


def test_dicom_series_is_mr() -> None:
    (vol,) = read(MR_SAMPLE)
    assert vol.frame == "LPS" and kind_of_volume(vol) == "MR"


def test_fit_and_messages() -> None:
    nuclei, he, bccd = (resolve_model(n).card for n in ("nuclei", "nuclei-he", "bccd"))
    assert kind_fits(nuclei, "microscopy") and kind_fits(nuclei, "fluorescence") and kind_fits(bccd, None)
    assert kind_fits(bccd, "microscopy")  # a plain RGB picture may be a smear
    assert not kind_fits(nuclei, "MR") and not kind_fits(he, "radiology") and not kind_fits(he, "blood_smear")
    assert kind_mismatch(nuclei, "MR") == NUCLEI_ON_MR
    assert kind_mismatch(he, "blood_smear") == ("the nuclei-he model was made for H&E histology images; this image "
                                                "is a blood smear: results are unlikely to mean anything")
    assert kind_mismatch(nuclei, "radiology").endswith(
        "this image is a radiology volume (patient coordinates): results are unlikely to mean anything")
    assert kind_mismatch(nuclei, "microscopy") is None and kind_mismatch(he, "histology") is None


def test_auto_picks_by_kind() -> None:
    seg, det = ("instance", "semantic"), ("instance", "semantic", "detection")
    assert default_model_for(True) == default_model_for(True, "microscopy") == "nuclei-he"
    assert default_model_for(False) == default_model_for(False, "fluorescence") == "nuclei"
    assert default_model_for(True, "histology") == "nuclei-he"
    assert default_model_for(True, "blood_smear", det) == "bccd"
    assert default_model_for(True, "blood_smear", seg) is None
    assert default_model_for(False, "MR") is None and default_model_for(False, "radiology", det) is None


def test_auto_refuses_radiology_and_named_models_warn() -> None:
    with pytest.raises(ModelError, match=r"^no installed segmentation model is made for MR images \(installed: "
                                         r"nuclei \(.*\); nuclei-he \(H&E histology\)\); rather than guess, nothing "
                                         r"was run"):
        resolve_model_or_auto("auto", False, "segmentation model", image_kind="MR")
    with pytest.warns(ImageKindWarning) as rec:
        info = resolve_model_or_auto("nuclei", False, image_kind="MR")
    assert info.name == "nuclei" and [str(w.message) for w in rec] == [NUCLEI_ON_MR]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_model_or_auto("auto", True, image_kind="microscopy").name == "nuclei-he"
        assert resolve_model_or_auto("nuclei", False).name == "nuclei"  # no kind: no warning


def test_engine_refuses_an_mr_volume_with_auto() -> None:
    from napari_medseg.inference.dispatch import segment_any_iter
    from napari_medseg.progress import run

    (vol,) = read(MR_SAMPLE)
    vol.data = np.asarray(vol.data)[0]  # one time point: Z, Y, X
    vol.axes = "ZYX"
    vol.scale = vol.units = vol.translate = None
    vol.affine = np.asarray(vol.affine)[1:, 1:]
    with pytest.raises(ModelError, match="made for MR images"):
        run(segment_any_iter(vol, "auto", device="cpu"))
