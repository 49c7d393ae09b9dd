"""Find models: those shipped in the package, the user's own, or any folder.

A model is a folder holding ``model.json`` (its card) and
``weights.safetensors``.  Shipped models live in
``napari_medseg/models/shipped/<name>/``; user models (fine-tuned ones, or
downloaded) in :func:`user_models_dir`, overridable with the environment
variable ``MEDSEG_MODELS_DIR``.  Listing reads the JSON cards only (no torch).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from .spec import CARD_NAME, WEIGHTS_NAME, ModelCard, model_paths

ENV_MODELS_DIR = "MEDSEG_MODELS_DIR"

#: Names of the default shipped models, by image kind.
DEFAULT_RGB = "nuclei-he"
DEFAULT_GREY = "nuclei"


@dataclass
class ModelInfo:
    """A model found on disk.

    Attributes
    ----------
    name : str
        The card's name (what users type).
    path : Path
        The model folder (or card file for a loose pair).
    source : {"shipped", "user", "path"}
        Where it was found.
    card : ModelCard
        Its card (architecture, input, output...).
    """

    name: str
    path: Path
    source: str
    card: ModelCard


@dataclass
class BrokenModel:
    """A model folder that cannot be used: listed with its reason, never used, never in the way of others.

    Attributes
    ----------
    name : str
        The folder's name (its card could not be read).
    path : Path
        The model folder.
    source : {"shipped", "user"}
    reason : str
        Why (the card's problem, missing weights...).
    """

    name: str
    path: Path
    source: str
    reason: str


def shipped_models_dir() -> Path:
    """Folder of the models shipped inside the package."""
    return Path(__file__).resolve().parent / "shipped"


def user_models_dir() -> Path:
    """Folder of the user's models (``$MEDSEG_MODELS_DIR`` or the platform data dir).

    The folder is not created here; :func:`napari_medseg.models.spec.save_model`
    creates it when a model is saved.
    """
    env = os.environ.get(ENV_MODELS_DIR)
    if env:
        try:
            p = Path(env).expanduser()
        except RuntimeError:  # "~nosuchuser/..."
            p = Path(env)
        if str(p).startswith("~"):
            raise ModelError(f"{ENV_MODELS_DIR}={env!r}: cannot expand {env.split(os.sep)[0]!r} (no such user); "
                             "give an absolute folder")
        return p
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-medseg", appauthor=False)) / "models"


def _scan(folder: Path, source: str) -> tuple[list[ModelInfo], list[BrokenModel]]:
    """Usable and broken models in ``folder``; one model's problem never stops the others from being listed."""
    out: list[ModelInfo] = []
    broken: list[BrokenModel] = []
    try:
        if not folder.is_dir():
            return out, broken
        subs = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        warnings.warn(f"cannot list the {source} model folder {folder}: {e.strerror or e}", stacklevel=3)
        return out, broken
    for sub in subs:
        try:
            if not sub.is_dir():
                continue
            card_path = sub / CARD_NAME
            if not (card_path.exists() or card_path.is_symlink()):
                continue
            card = ModelCard.from_json(card_path)
            w = sub / WEIGHTS_NAME
            if not w.is_file():
                raise ModelError(f"no {WEIGHTS_NAME} in {sub}" if not w.exists() else f"{w} is not a regular file")
        except (ModelError, OSError, ValueError, TypeError, RecursionError) as e:
            broken.append(BrokenModel(sub.name, sub, source, str(e)))
            continue
        out.append(ModelInfo(card.name, sub, source, card))
    return out, broken


def scan_models() -> tuple[list[ModelInfo], list[BrokenModel]]:
    """``(usable models, broken model folders)``: shipped first, then the user's (see :func:`list_models`)."""
    good_s, bad_s = _scan(shipped_models_dir(), "shipped")
    try:
        user = user_models_dir()
    except ModelError as e:
        warnings.warn(str(e), stacklevel=2)
        return good_s, bad_s
    good_u, bad_u = _scan(user, "user")
    return good_s + good_u, bad_s + bad_u


def list_models() -> list[ModelInfo]:
    """All models available by name: shipped ones first, then the user's.

    Re-scans the folders on each call (it only reads small JSON files).  When
    a user model has the same name as a shipped one, both are listed and the
    shipped one wins in :func:`resolve_model`; give the user model's path to
    use it.  Broken model folders (unreadable card, missing weights) are left
    out; :func:`list_broken_models` lists them with their reason.
    """
    return scan_models()[0]


def list_broken_models() -> list[BrokenModel]:
    """Model folders that cannot be used, each with the reason (``medseg models`` shows them)."""
    return scan_models()[1]


def resolve_model(name_or_path: str | os.PathLike) -> ModelInfo:
    """Find a model by name, or by path to its folder / card / weights file.

    Raises
    ------
    ModelError
        If nothing matches; the message lists the models available.
    """
    if isinstance(name_or_path, ModelInfo):
        return name_or_path
    key = os.fspath(name_or_path)
    models = list_models()
    if not isinstance(name_or_path, Path):
        for info in models:
            if info.name == key:
                return info
    try:
        p = Path(key).expanduser()
    except RuntimeError:  # "~nosuchuser/...": no such home folder
        p = Path(key)
    if p.exists():
        card_path, w_path = model_paths(p)
        card = ModelCard.from_json(card_path)
        if not w_path.is_file():
            raise ModelError(f"model {card.name!r} at {p}: weights file {w_path} is missing")
        return ModelInfo(card.name, p.resolve(), "path", card)
    for b in list_broken_models():
        if b.name == key:
            raise ModelError(f"model {key!r} ({b.path}) is broken: {b.reason}")
    names = ", ".join(f"{m.name} ({m.source})" for m in models) or "none installed"
    try:
        where = f"User models go in {user_models_dir()}"
    except ModelError as e:
        where = str(e)
    raise ModelError(
        f"unknown model {key!r}: it is neither a known name nor an existing path. "
        f"Available: {names}. {where}"
    )


def is_compatible(card: ModelCard, image_is_rgb: bool) -> bool:
    """Whether a model takes the kind of image given (RGB vs single-channel)."""
    color = str(card.input.get("color", "rgb" if card.in_channels == 3 else "grey"))
    if image_is_rgb:
        return card.in_channels == 3 and color in ("rgb", "multichannel")
    return card.in_channels == 1


#: Output kinds :func:`default_model_for` picks by default (segmentation models).
SEGMENTATION_KINDS = ("instance", "semantic")


def default_model_for(image_is_rgb: bool, image_kind: str | None = None,
                      kinds: tuple[str, ...] = SEGMENTATION_KINDS) -> str | None:
    """Name of the model to use when the user asked for ``"auto"``.

    Parameters
    ----------
    image_is_rgb : bool
        An RGB image (else single-channel).
    image_kind : str, optional
        What the image is (:mod:`napari_medseg.models.kinds`): None or
        ``"microscopy"`` keep the defaults below; a radiology kind, or a
        microscopy kind the user named (``"blood_smear"``...), takes only a
        model whose card says it was made for such images
        (``input.image_kind``), shipped models first.
    kinds : tuple of str
        Output kinds allowed (``("instance", "semantic")``; add
        ``"detection"`` for object detection).

    Returns
    -------
    str or None
        ``"nuclei-he"`` for RGB images and ``"nuclei"`` for grey ones when
        shipped (and fitting ``image_kind``); otherwise the first listed
        model that takes such images; None if none does.  Models whose card
        says ``output.auto: false`` (one finding, such as ``ms-lesions``)
        are never picked: name them.
    """
    from .kinds import MICROSCOPY, card_image_kinds, kind_fits, normalize_kind

    kind = None if image_kind is None else normalize_kind(image_kind)
    if kind == MICROSCOPY:
        kind = None
    # a model for one finding (``output.auto: false``, e.g. ms-lesions) is never picked by "auto": name it
    models = [m for m in list_models() if is_compatible(m.card, image_is_rgb) and m.card.kind in kinds
              and m.card.output.get("auto", True) is not False]
    if kind is not None:  # only models whose card says they are made for such images
        models = [m for m in models if card_image_kinds(m.card) is not None and kind_fits(m.card, kind)]
    wanted = DEFAULT_RGB if image_is_rgb else DEFAULT_GREY
    for m in models:
        if m.source == "shipped" and m.name == wanted:
            return m.name
    for m in models:
        if m.source == "shipped":
            return m.name
    return models[0].name if models else None


def resolve_model_or_auto(name_or_path, image_is_rgb: bool, what: str = "model", *, image_kind: str | None = None,
                          kinds: tuple[str, ...] = SEGMENTATION_KINDS) -> ModelInfo:
    """:func:`resolve_model`, with ``"auto"`` meaning :func:`default_model_for` the image.

    ``what`` names the kind of model in the error message.  With
    ``image_kind`` (see :mod:`napari_medseg.models.kinds`), ``"auto"``
    picks only a model made for such images, and a model named explicitly
    whose card says it was made for other images runs with an
    :class:`~napari_medseg.errors.ImageKindWarning` (e.g. the microscopy
    nuclei model on an MR series).

    Raises
    ------
    ModelError
        ``"auto"`` and no installed model takes such images, or nothing matches.
    """
    from .kinds import DESCRIPTIONS, MICROSCOPY, card_image_kinds, describe_kinds, kind_mismatch, normalize_kind

    kind = None if image_kind is None else normalize_kind(image_kind)
    if isinstance(name_or_path, str) and name_or_path == "auto":
        name = default_model_for(image_is_rgb, kind, kinds)
        if name is None and kind not in (None, MICROSCOPY):
            listed = [(m, k) for m in list_models() if m.card.kind in kinds and (k := card_image_kinds(m.card))]
            made = [f"{m.name} ({describe_kinds(k)})" for m, k in listed if m.card.output.get("auto", True) is not False]
            named = [f"{m.name} ({describe_kinds(k)})" for m, k in listed if m.card.output.get("auto", True) is False]
            raise ModelError(
                f"no installed {what} is made for {DESCRIPTIONS.get(kind, kind)} images"
                + (f" (installed: {'; '.join(made)})" if made else "")
                + "; rather than guess, nothing was run. Give a model name or folder to run one anyway "
                  "(see `medseg models`), or train one on your own annotated images (`medseg train`)"
                + (f". Models for one finding run by name only: {'; '.join(named)}" if named else ""))
        if name is None:
            raise ModelError(f"no installed {what} takes {'RGB' if image_is_rgb else 'single-channel'} images; "
                             "give a model name or folder (see `medseg models`)")
        name_or_path = name
    info = resolve_model(name_or_path)
    msg = kind_mismatch(info.card, kind)
    if msg is not None:
        from ..errors import ImageKindWarning

        warnings.warn(ImageKindWarning(msg), stacklevel=2)
    return info
