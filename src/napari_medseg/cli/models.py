"""``medseg models``: list the models available by name (shipped, then user)."""

from __future__ import annotations

import argparse

from .common import Command

HELP = "list the models available by name"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``models`` options to ``p``."""
    p.add_argument("--paths", action="store_true", help="print only model folders")


def run(args: argparse.Namespace) -> int:
    """Run ``medseg models``: a NAME, SOURCE, KIND, INPUT, PATH table (or only paths), then the broken
    model folders with their reason; returns 0."""
    from ..models.registry import scan_models, shipped_models_dir, user_models_dir

    models, broken = scan_models()
    if args.paths:
        for m in models:
            print(m.path)
        return 0
    if not models and not broken:
        print(f"no models found (shipped: {shipped_models_dir()}, user: {user_models_dir()})")
        return 0
    rows = [("NAME", "SOURCE", "KIND", "INPUT", "PATH")]
    for m in models:
        c = m.card
        ps = c.pixel_size
        inp = f"{c.dims}D {c.input.get('color', '?')} {c.in_channels}ch"
        if ps:
            inp += f" @{'x'.join(f'{p:g}' for p in ps)}{c.input.get('pixel_unit', '')}"
        rows.append((m.name, m.source, c.kind, inp, str(m.path)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(r[:4], widths, strict=False)) + "  " + r[4])
    if broken:
        print(f"\n{len(broken)} broken model folder(s), not usable until fixed:")
        for b in broken:
            print(f"  {b.name} ({b.source}, {b.path}): {b.reason}")
    return 0


COMMAND = Command("models", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "run"]
