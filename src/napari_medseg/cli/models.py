"""``medseg models``: list the models available by name (shipped, then user)."""

from __future__ import annotations

import argparse

from .common import Command

HELP = "list the models available by name"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``models`` options to ``p``."""
    p.add_argument("--paths", action="store_true", help="print only model folders")


def run(args: argparse.Namespace) -> int:
    """Run ``medseg models``: a NAME, SOURCE, KIND, INPUT, FOR (image kinds), DEFAULTS (diameter, thresholds),
    PATH table (or only paths), then the broken model folders with their reason; returns 0."""
    from ..models.kinds import card_image_kinds
    from ..models.registry import scan_models, shipped_models_dir, user_models_dir

    models, broken = scan_models()
    if args.paths:
        for m in models:
            print(m.path)
        return 0
    if not models and not broken:
        print(f"no models found (shipped: {shipped_models_dir()}, user: {user_models_dir()})")
        return 0
    rows = [("NAME", "SOURCE", "KIND", "INPUT", "FOR", "DEFAULTS", "PATH")]
    for m in models:
        c = m.card
        ps = c.pixel_size
        inp = f"{c.dims}D {c.input.get('color', '?')} {c.in_channels}ch"
        if ps:
            inp += f" @{'x'.join(f'{p:g}' for p in ps)}{c.input.get('pixel_unit', '')}"
        rows.append((m.name, m.source, c.kind, inp, ",".join(card_image_kinds(c) or ()) or "-", _defaults(c),
                     str(m.path)))
    n = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    for r in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(r[:n], widths, strict=False)) + "  " + r[n])
    if broken:
        print(f"\n{len(broken)} broken model folder(s), not usable until fixed:")
        for b in broken:
            print(f"  {b.name} ({b.source}, {b.path}): {b.reason}")
    return 0


def _defaults(card) -> str:
    """``diameter=20.1px,prob=0.5,seed=0.4``: the card values ``medseg segment``'s knobs default to."""
    from ..inference.prepare import card_object_diameter

    pp = card.output.get("postprocess") or {}
    parts = []
    d = card_object_diameter(card)
    if d is not None:
        parts.append(f"diameter={d:g}px")
    for key, name in (("fg_threshold", "prob"), ("seed_threshold", "seed"), ("score_threshold", "score")):
        if isinstance(pp.get(key), (int, float)):
            parts.append(f"{name}={pp[key]:g}")
    return ",".join(parts) or "-"


COMMAND = Command("models", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "run"]
