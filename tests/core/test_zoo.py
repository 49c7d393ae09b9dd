"""BioImage Model Zoo packages: export validates and runs in bioimageio.core, import brings the model back.

Skips without the ``[export]`` extra.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
pytest.importorskip("bioimageio.spec")

import torch  # noqa: E402

from napari_medseg.errors import ModelError  # noqa: E402
from napari_medseg.models.spec import ModelCard, load_model  # noqa: E402
from napari_medseg.models.testing import make_random_model  # noqa: E402
from napari_medseg.zoo.importer import import_bioimageio  # noqa: E402
from napari_medseg.zoo.package import export_bioimageio, reference_output, validate_package  # noqa: E402


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A zip package of a small random RGB instance model whose card says it was trained on dsb2018."""
    tmp = tmp_path_factory.mktemp("zoo")
    folder = make_random_model(tmp / "m", name="tiny-he", in_channels=3, base_channels=4, depth=2, seed=2,
                               postprocess={"fg_threshold": 0.6, "seed_threshold": 0.3, "min_size": 9})
    card = ModelCard.from_json(folder / "model.json")
    card.training["data"] = "dsb2018 stage-1 train (BBBC038, CC0)"
    card.to_json(folder / "model.json")
    net, card = load_model(folder)
    rng = np.random.default_rng(0)
    sample = rng.integers(0, 255, size=(300, 262, 3), dtype=np.uint8)
    return export_bioimageio(net, card, tmp / "tiny.zip", sample=sample), net, card, sample


def test_package_holds_what_the_zoo_asks_for(package) -> None:
    path, net, card, sample = package
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert {"rdf.yaml", "weights.pt", "unet.py", "weights_torchscript.pt", "weights.onnx", "test_input.npy",
            "test_output.npy", "cover.png", "README.md"} <= names
    descr = validate_package(path)
    assert str(descr.format_version).startswith("0.5.")
    assert {w for w, e in descr.weights if e is not None} == {"pytorch_state_dict", "torchscript", "onnx"}
    dois = {str(c.doi) for c in descr.cite if c.doi}
    assert {"10.1007/978-3-319-24574-4_28", "10.1038/s41592-019-0612-7"} <= dois  # U-Net and the training data
    assert str(descr.license) == "BSD-3-Clause"
    assert [p.id for p in descr.inputs[0].preprocessing if p.id != "ensure_dtype"] == ["scale_range"]
    assert [p.id for p in descr.outputs[0].postprocessing if p.id != "ensure_dtype"] == ["sigmoid"]
    # test tensors: a centre crop (<= 256 px) of the sample, and our own output for it
    with zipfile.ZipFile(path) as zf:
        x, y = np.load(zf.open("test_input.npy")), np.load(zf.open("test_output.npy"))
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0].transpose(1, 2, 0), sample[22:278, 3:259].astype(np.float32))
    np.testing.assert_allclose(y, reference_output(net, card, x), atol=1e-6)
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_bioimageio_core_reproduces_the_test_output_with_every_weight_format(package) -> None:
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(str(package[0]))
    reproduced = [d.name for d in summary.details if d.name.startswith("Reproduce") and d.status == "passed"]
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.errors]
    assert len(reproduced) == 3, reproduced


def test_import_round_trip_gives_the_same_model(package, tmp_path) -> None:
    path, net, card, _ = package
    folder, diff = import_bioimageio(path, tmp_path / "back", name="tiny-back")
    assert diff < 1e-5
    net2, card2 = load_model(folder)
    assert card2.name == "tiny-back"
    assert card2.output == card.output and card2.input == card.input and card2.architecture == card.architecture
    for (k, a), (k2, b) in zip(net.state_dict().items(), net2.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)


def test_import_refuses_another_architecture(package, tmp_path) -> None:
    path = package[0]
    with zipfile.ZipFile(path) as zf:
        zf.extractall(tmp_path / "pkg")
    rdf = (tmp_path / "pkg" / "rdf.yaml").read_text(encoding="utf-8")
    (tmp_path / "pkg" / "rdf.yaml").write_text(rdf.replace("callable: UNet", "callable: UNet2d"), encoding="utf-8")
    with pytest.raises(ModelError, match="UNet2d.*is not napari-medseg's UNet"):
        import_bioimageio(tmp_path / "pkg" / "rdf.yaml", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_without_our_card_builds_one_from_the_rdf(package, tmp_path) -> None:
    from napari_medseg.zoo.package import CONFIG_KEY

    spec_utils = pytest.importorskip("bioimageio.spec.utils")
    with zipfile.ZipFile(package[0]) as zf:
        zf.extractall(tmp_path / "pkg")
    rdf_path = tmp_path / "pkg" / "rdf.yaml"
    rdf = spec_utils.read_yaml(rdf_path)
    del rdf["config"][CONFIG_KEY]
    spec_utils.write_yaml(rdf, rdf_path)
    folder, diff = import_bioimageio(rdf_path, tmp_path / "out")
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert card["output"]["kind"] == "instance" and card["output"]["channels"] == ["foreground", "distance"]
    assert card["input"]["normalization"] == {"kind": "percentile", "low": 1.0, "high": 99.8}
    assert card["architecture"]["in_channels"] == 3 and card["architecture"]["base_channels"] == 4
    assert diff < 1e-5  # same normalisation, network and activation as the package describes


def test_export_refuses_what_the_zoo_cannot_describe(tmp_path) -> None:
    net, card = load_model(make_random_model(tmp_path / "m3", dims=3, base_channels=4, depth=2))
    with pytest.raises(ModelError, match="2D U-Nets only"):
        export_bioimageio(net, card, tmp_path / "x.zip")
    net, card = load_model(make_random_model(tmp_path / "m1", base_channels=4, depth=2))
    with pytest.raises(ModelError, match="takes 1 channel"):
        export_bioimageio(net, card, tmp_path / "x.zip", sample=np.zeros((32, 32, 3)))
