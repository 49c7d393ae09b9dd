"""Model cards: a model is ``model.json`` (this card) next to ``weights.safetensors``.

No pickled file is ever loaded: weights come from safetensors only.

Card layout (JSON)::

    {
      "format": "napari-medseg-model/1",
      "name": "nuclei",
      "description": "...",
      "architecture": {"type": "unet", "dims": 2, "in_channels": 1, "out_channels": 2,
                        "base_channels": 32, "depth": 4, "norm": "batch"},
      "input": {"channels": 1, "color": "grey" | "rgb" | "multichannel",
                 "image_kind": ["fluorescence", "histology", ...] (see models/kinds.py),
                 "normalization": {"kind": "percentile", "low": 1.0, "high": 99.8},
                 "pixel_size": [0.5, 0.5] | null, "pixel_unit": "µm"},
      "output": {"kind": "instance" | "semantic" | "detection" | "classification",
                  "channels": ["foreground", "distance"], "class_names": [...],
                  "postprocess": {...}},
      "training": {...}, "metrics": {...}
    }
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

FORMAT = "napari-medseg-model/1"
CARD_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"

#: What a model name may be: letters, digits, ``.``, ``_``, ``+``, ``-``; a letter or digit first; at most
#: :data:`MAX_NAME_LENGTH` characters (names become folder names).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
MAX_NAME_LENGTH = 64
#: Largest model card read (a card is a few kB; the rest would be an accident or an attack).
MAX_CARD_BYTES = 2**20
#: Bounds on the architecture, checked before any tensor is made.
MAX_CHANNELS_IN = 64
MAX_CHANNELS_OUT = 256
MAX_BASE_CHANNELS = 256
MAX_DEPTH = 8
#: Largest network built from a card (parameters; 100 M float32 = 400 MB, 50x the shipped models).
MAX_PARAMETERS = 100_000_000


def valid_model_name(name: Any) -> bool:
    """Whether ``name`` is a usable model name (see :data:`NAME_PATTERN`); ``re.fullmatch``, no ``$`` loophole."""
    return isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and NAME_PATTERN.fullmatch(name) is not None


def unet_parameters(arch: dict[str, Any]) -> int:
    """Number of parameters of the U-Net an architecture section describes (no torch needed)."""
    dims = int(arch.get("dims", 2))
    k = 3**dims
    depth = int(arch.get("depth", 4))
    base = int(arch.get("base_channels", 32))
    cin = int(arch.get("in_channels", 1))
    cout = int(arch.get("out_channels", 2))
    norm = str(arch.get("norm", "batch"))
    chs = [base * 2**i for i in range(depth)]

    def block(a: int, b: int) -> int:
        bias = b if norm == "none" else 0
        normp = 0 if norm == "none" else 2 * b
        return (a * b * k + bias + normp) + (b * b * k + bias + normp)

    total, c_prev = 0, cin
    for c in chs:
        total += block(c_prev, c)
        c_prev = c
    for i in range(depth - 1, 0, -1):
        total += chs[i] * chs[i - 1] * 2**dims + chs[i - 1]  # transposed convolution
        total += block(2 * chs[i - 1], chs[i - 1])
    return total + chs[0] * cout + cout


def _schema():
    """The pydantic models of a card (built on first use: pydantic is not imported with the package)."""
    global _SCHEMA
    if _SCHEMA is not None:
        return _SCHEMA
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator

    Number = StrictInt | StrictFloat

    class Architecture(BaseModel):
        model_config = ConfigDict(extra="forbid")
        type: Literal["unet"] = "unet"
        dims: Literal[2, 3] = 2
        in_channels: StrictInt = Field(ge=1, le=MAX_CHANNELS_IN)
        out_channels: StrictInt = Field(ge=1, le=MAX_CHANNELS_OUT)
        base_channels: StrictInt = Field(default=32, ge=1, le=MAX_BASE_CHANNELS)
        depth: StrictInt = Field(default=4, ge=2, le=MAX_DEPTH)
        norm: Literal["batch", "instance", "group", "none"] = "batch"

    class ClassifierArchitecture(BaseModel):
        model_config = ConfigDict(extra="forbid")
        type: Literal["encoder_classifier"]
        dims: Literal[2, 3] = 2
        in_channels: StrictInt = Field(ge=1, le=MAX_CHANNELS_IN)
        n_classes: StrictInt = Field(ge=2, le=MAX_CHANNELS_OUT)
        base_channels: StrictInt = Field(default=16, ge=1, le=MAX_BASE_CHANNELS)
        depth: StrictInt = Field(default=5, ge=2, le=MAX_DEPTH)
        norm: Literal["batch", "instance", "group", "none"] = "batch"
        dropout: Number = Field(default=0.2, ge=0, lt=1)

    class Normalization(BaseModel):
        model_config = ConfigDict(extra="allow")
        kind: StrictStr = Field(max_length=64)
        low: Number | None = None
        high: Number | None = None

        @field_validator("low", "high")
        @classmethod
        def _finite(cls, v: Any) -> Any:
            if v is not None and not math.isfinite(v):
                raise ValueError("must be a finite number")
            return v

    class Input(BaseModel):
        model_config = ConfigDict(extra="allow")
        channels: StrictInt | None = Field(default=None, ge=1, le=MAX_CHANNELS_IN)
        color: Literal["grey", "rgb", "multichannel"] | None = None
        normalization: Normalization | None = None
        pixel_size: list[Number] | None = Field(default=None, min_length=1, max_length=3)
        pixel_unit: StrictStr | None = Field(default=None, max_length=32)

        @field_validator("pixel_size")
        @classmethod
        def _positive(cls, v: Any) -> Any:
            if v is not None and not all(math.isfinite(x) and x > 0 for x in v):
                raise ValueError("pixel sizes must be positive finite numbers")
            return v

    class Output(BaseModel):
        model_config = ConfigDict(extra="allow")
        kind: Literal["instance", "semantic", "detection", "classification"]
        channels: list[StrictStr] | None = Field(default=None, max_length=MAX_CHANNELS_OUT)
        class_names: list[StrictStr] | None = Field(default=None, max_length=MAX_CHANNELS_OUT)
        postprocess: dict[str, Any] = Field(default_factory=dict)

    class Card(BaseModel):
        model_config = ConfigDict(extra="allow")
        format: Literal["napari-medseg-model/1"]
        name: StrictStr
        description: StrictStr = Field(default="", max_length=100_000)
        architecture: Architecture | ClassifierArchitecture
        input: Input
        output: Output
        training: dict[str, Any] = Field(default_factory=dict)
        metrics: dict[str, Any] = Field(default_factory=dict)

        @field_validator("name")
        @classmethod
        def _name(cls, v: str) -> str:
            if not valid_model_name(v):
                raise ValueError(f"{v!r} is not a model name (letters, digits, '.', '_', '+', '-'; a letter or "
                                 f"digit first; at most {MAX_NAME_LENGTH} characters)")
            return v

    _SCHEMA = (Card, Architecture, ClassifierArchitecture)
    return _SCHEMA


_SCHEMA: tuple | None = None


def _describe(exc: Any) -> str:
    """One line from a pydantic ValidationError: ``where: what`` for the first few problems."""
    parts = []
    for e in exc.errors()[:4]:
        where = ".".join(str(x) for x in e.get("loc", ())) or "card"
        got = e.get("input")
        shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
        parts.append(f"{where}: {e.get('msg')} (got {shown[:60]})")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more problem(s)" if more > 0 else "")


def check_architecture(arch: Any, what: str = "model") -> dict[str, Any]:
    """Validate an architecture section (types, bounds, parameter count) before any tensor is made.

    Raises
    ------
    ModelError
        Wrong types, sizes beyond the bounds, or a network above :data:`MAX_PARAMETERS` parameters.
    """
    from pydantic import ValidationError

    _, architecture, classifier = _schema()
    schema = classifier if isinstance(arch, dict) and arch.get("type") == "encoder_classifier" else architecture
    try:
        a = schema.model_validate(arch).model_dump()
    except ValidationError as exc:
        raise ModelError(f"{what}: bad architecture: {_describe(exc)}") from None
    # the classifier is a U-Net's encoder plus a linear head: the U-Net's count bounds it
    n = unet_parameters(a if schema is architecture else {**a, "out_channels": a["n_classes"]})
    if n > MAX_PARAMETERS:
        raise ModelError(f"{what}: the architecture (base_channels {a['base_channels']}, depth {a['depth']}, "
                         f"{a['dims']}D) would have {n:,} parameters, more than the {MAX_PARAMETERS:,} allowed")
    return a


@dataclass
class ModelCard:
    """Everything needed to rebuild, feed and interpret a network.

    Attributes
    ----------
    name : str
        Short identifier (``nuclei``, ``nuclei-he``...).
    architecture : dict
        Keyword arguments of :class:`~napari_medseg.models.unet.UNet` plus ``type``.
    input : dict
        ``channels`` (int), ``color`` (``grey``/``rgb``/``multichannel``),
        ``normalization`` (dict) and ``pixel_size`` (list of float per spatial
        axis, or None when the model is scale-free) in ``pixel_unit``.
    output : dict
        ``kind`` (``instance``/``semantic``/``detection``), ``channels`` (names
        of the network's output channels), ``class_names`` and ``postprocess``
        defaults.
    description, training, metrics
        Free text and provenance: data, licence, seed, epochs, time, scores.
    """

    name: str
    architecture: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any]
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    @property
    def dims(self) -> int:
        return int(self.architecture.get("dims", 2))

    @property
    def in_channels(self) -> int:
        return int(self.architecture["in_channels"])

    @property
    def slices(self) -> int:
        """Neighbouring planes a 2.5D model takes as channels (``input.slices``, odd; 1 = plain 2D)."""
        return int(self.input.get("slices", 1) or 1)

    @property
    def image_channels(self) -> int:
        """Image channels per plane: ``in_channels / slices``."""
        return self.in_channels // self.slices

    @property
    def kind(self) -> str:
        return str(self.output["kind"])

    @property
    def pixel_size(self) -> list[float] | None:
        ps = self.input.get("pixel_size")
        return None if ps is None else [float(p) for p in ps]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        """Write the card as pretty JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> ModelCard:
        """A card from its JSON object, validated against the card schema (types, bounds, names).

        Raises
        ------
        ModelError
            Not an object, wrong format, missing or ill-typed fields, sizes beyond the bounds, a bad
            name; the message says where (``where``: the card's path) and what.
        """
        from pydantic import ValidationError

        what = f"model card {where}" if where else "model card"
        if not isinstance(d, dict):
            raise ModelError(f"{what}: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ModelError(f"{what}: unsupported model card format {d.get('format')!r}; expected {FORMAT!r}")
        missing = [k for k in ("name", "architecture", "input", "output") if k not in d]
        if missing:
            raise ModelError(f"{what} lacks required fields: {', '.join(missing)}")
        card_model = _schema()[0]
        try:
            card_model.model_validate(d)
        except ValidationError as exc:
            raise ModelError(f"{what}: {_describe(exc)}") from None
        check_architecture(d["architecture"], f"{what} ({d['name']!r})")
        arch, inp, out = d["architecture"], d["input"], d["output"]
        if inp.get("channels") is not None and inp["channels"] != arch["in_channels"]:
            raise ModelError(f"{what}: input.channels {inp['channels']} differs from architecture.in_channels "
                             f"{arch['in_channels']}")
        slices = inp.get("slices", 1)
        if slices is not None and (not isinstance(slices, int) or isinstance(slices, bool) or slices < 1
                                   or slices % 2 == 0 or arch["in_channels"] % slices
                                   or (slices > 1 and arch.get("dims", 2) != 2)):
            raise ModelError(f"{what}: input.slices {slices!r} must be an odd number of planes dividing "
                             f"architecture.in_channels {arch['in_channels']} (2D models only)")
        if out.get("channels") is not None and len(out["channels"]) != arch["out_channels"]:
            raise ModelError(f"{what}: output.channels names {len(out['channels'])} channels but "
                             f"architecture.out_channels is {arch['out_channels']}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, path: str | Path) -> ModelCard:
        """Read a card; raises :class:`ModelError` with the path on any problem.

        The card must be a regular file (a pipe would block) of at most :data:`MAX_CARD_BYTES`, UTF-8 JSON
        (nesting too deep for the parser is refused), valid against the card schema.
        """
        p = Path(path)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise ModelError(f"no model card at {path}") from None
        except OSError as e:
            raise ModelError(f"model card {path} cannot be read: {e.strerror or e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"model card {path} is not a regular file (a folder, pipe or device)")
        if st.st_size > MAX_CARD_BYTES:
            raise ModelError(f"model card {path} is {st.st_size:,} bytes; a card is at most {MAX_CARD_BYTES:,}")
        try:
            with open(p, "rb") as fh:
                raw = fh.read(MAX_CARD_BYTES + 1)
            d = json.loads(raw.decode("utf-8"))
        except OSError as e:
            raise ModelError(f"model card {path} cannot be read: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise ModelError(f"model card {path} is not UTF-8 text: {e}") from None
        except json.JSONDecodeError as e:
            raise ModelError(f"model card {path} is not valid JSON: {e}") from None
        except RecursionError:
            raise ModelError(f"model card {path} nests JSON too deeply to be a model card") from None
        return cls.from_dict(d, str(path))


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """Return ``(card, weights)`` paths for a model folder, card or weights file."""
    p = Path(path)
    if p.is_dir():
        return p / CARD_NAME, p / WEIGHTS_NAME
    if p.suffix == ".json":
        return p, p.with_name(WEIGHTS_NAME) if not p.with_suffix(".safetensors").exists() else p.with_suffix(".safetensors")
    if p.suffix == ".safetensors":
        card = p.with_suffix(".json")
        return (card if card.exists() else p.with_name(CARD_NAME)), p
    raise ModelError(f"{p} is not a model: give a folder with {CARD_NAME} + {WEIGHTS_NAME}, or one of those files")


def build_network(card: ModelCard):
    """Instantiate the (untrained) network described by ``card``."""
    from .classifier import EncoderClassifier
    from .unet import UNet

    arch = dict(card.architecture)
    kind = arch.pop("type", "unet")
    networks = {"unet": UNet, "encoder_classifier": EncoderClassifier}
    if kind not in networks:
        raise ModelError(f"unknown architecture type {kind!r} in model {card.name!r}")
    arch = check_architecture(card.architecture, f"model {card.name!r}")  # bounds before any tensor
    arch.pop("type", None)
    try:
        return networks[kind](**arch)
    except (TypeError, ValueError) as e:
        raise ModelError(f"model {card.name!r}: bad architecture parameters {arch}: {e}") from None


def save_model(folder: str | Path, net, card: ModelCard) -> Path:
    """Write ``net``'s weights (safetensors) and ``card`` (JSON) into ``folder``.

    Returns the folder.  Weights are stored as float32 on CPU.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    refuse_shipped_folder(folder)
    state = {k: v.detach().to("cpu").float().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in net.state_dict().items()}
    bad = non_finite_weights(state)
    if bad:
        raise ModelError(f"model {card.name!r} was not saved: its weights hold NaN or infinite values "
                         f"({', '.join(bad[:3])}{'...' if len(bad) > 3 else ''})")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT, "name": card.name})
    tmp.replace(folder / WEIGHTS_NAME)
    card.to_json(folder / CARD_NAME)
    return folder


def shipped_folder() -> Path:
    """The folder of the models shipped in the package (resolved)."""
    return (Path(__file__).resolve().parent / "shipped").resolve()


def refuse_shipped_folder(folder: str | Path) -> None:
    """ModelError when ``folder`` (symlinks resolved) is the shipped-models folder or inside it."""
    try:
        target = Path(folder).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # symlink loops
        raise ModelError(f"{folder}: cannot resolve the model folder: {e}") from None
    shipped = shipped_folder()
    if target == shipped or shipped in target.parents:
        raise ModelError(f"{folder} is inside the shipped models ({shipped}): shipped models are never written or "
                         "overwritten; save the model elsewhere (e.g. the user model folder)")


def non_finite_weights(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in a state dict that hold NaN or infinite values."""
    import torch

    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_model(path: str | Path, device: Any = "cpu"):
    """Load ``(network, card)`` from a model folder or file pair.

    The network is in eval mode on ``device``.  Only safetensors weights are read.
    """
    from safetensors.torch import load_file

    card_path, w_path = model_paths(path)
    card = ModelCard.from_json(card_path)
    if not w_path.exists():
        raise ModelError(f"model {card.name!r}: weights file {w_path} is missing")
    if not w_path.is_file():
        raise ModelError(f"model {card.name!r}: weights {w_path} is not a regular file")
    net = build_network(card)
    try:
        state = load_file(str(w_path), device="cpu")
    except Exception as e:  # safetensors raises various errors on corrupt files  # noqa: BLE001
        raise ModelError(f"model {card.name!r}: cannot read weights {w_path}: {e}") from None
    bad = non_finite_weights(state)
    if bad:
        raise ModelError(f"model {card.name!r}: weights {w_path} hold NaN or infinite values ({', '.join(bad[:3])}"
                         f"{'...' if len(bad) > 3 else ''}): the model is broken (diverged training?)")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"model {card.name!r}: weights do not match the architecture in its card: {e}") from None
    net.eval()
    return net.to(device), card
