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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

FORMAT = "napari-medseg-model/1"
CARD_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"


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
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        if d.get("format") != FORMAT:
            raise ModelError(f"unsupported model card format {d.get('format')!r}; expected {FORMAT!r}")
        missing = [k for k in ("name", "architecture", "input", "output") if k not in d]
        if missing:
            raise ModelError(f"model card lacks required fields: {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, path: str | Path) -> ModelCard:
        """Read a card; raises :class:`ModelError` with the path on any problem."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"no model card at {path}") from None
        except json.JSONDecodeError as e:
            raise ModelError(f"model card {path} is not valid JSON: {e}") from None
        return cls.from_dict(d)


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
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").float().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in net.state_dict().items()}
    tmp = folder / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT, "name": card.name})
    tmp.replace(folder / WEIGHTS_NAME)
    card.to_json(folder / CARD_NAME)
    return folder


def load_model(path: str | Path, device: Any = "cpu"):
    """Load ``(network, card)`` from a model folder or file pair.

    The network is in eval mode on ``device``.  Only safetensors weights are read.
    """
    from safetensors.torch import load_file

    card_path, w_path = model_paths(path)
    card = ModelCard.from_json(card_path)
    if not w_path.exists():
        raise ModelError(f"model {card.name!r}: weights file {w_path} is missing")
    net = build_network(card)
    try:
        state = load_file(str(w_path), device="cpu")
    except Exception as e:  # safetensors raises various errors on corrupt files  # noqa: BLE001
        raise ModelError(f"model {card.name!r}: cannot read weights {w_path}: {e}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"model {card.name!r}: weights do not match the architecture in its card: {e}") from None
    net.eval()
    return net.to(device), card
