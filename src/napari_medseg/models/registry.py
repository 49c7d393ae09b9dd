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


def default_model_for(image_is_rgb: bool) -> str | None:
    """Name of the model to use when the user asked for ``"auto"``.

    ``"nuclei-he"`` for RGB images and ``"nuclei"`` for grey ones when shipped;
    otherwise the first listed model that takes such images; None if none does.
    """
    models = list_models()
    wanted = DEFAULT_RGB if image_is_rgb else DEFAULT_GREY
    for m in models:
        if m.source == "shipped" and m.name == wanted and is_compatible(m.card, image_is_rgb):
            return m.name
    for m in models:
        if is_compatible(m.card, image_is_rgb) and m.card.kind in ("instance", "semantic"):
            return m.name
    return None


def resolve_model_or_auto(name_or_path, image_is_rgb: bool, what: str = "model") -> ModelInfo:
    """:func:`resolve_model`, with ``"auto"`` meaning :func:`default_model_for` the image.

    ``what`` names the kind of model in the error message.

    Raises
    ------
    ModelError
        ``"auto"`` and no installed model takes such images, or nothing matches.
    """
    if isinstance(name_or_path, str) and name_or_path == "auto":
        name = default_model_for(image_is_rgb)
        if name is None:
            raise ModelError(f"no installed {what} takes {'RGB' if image_is_rgb else 'single-channel'} images; "
                             "give a model name or folder (see `medseg models`)")
        name_or_path = name
    return resolve_model(name_or_path)
