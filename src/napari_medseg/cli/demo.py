"""``medseg demo``: open napari with a shipped sample and the Segment widget docked."""

from __future__ import annotations

import argparse

from .common import Command

HELP = "open napari with a sample image (nuclei, he or mr) and the Segment widget; --run segments it at once"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``p``."""
    p.add_argument("sample", nargs="?", default="nuclei", choices=["nuclei", "he", "mr"],
                   help="which shipped sample to open (default: nuclei)")
    p.add_argument("--run", action="store_true", help="press Run in the Segment widget once it is ready")
    p.add_argument("--screenshot", default=None, metavar="PNG",
                   help="after the run, save a screenshot of the window and quit (for checks without a person)")


def run(args: argparse.Namespace) -> int:
    """Run ``medseg demo``: open napari (blocks until its window is closed); returns 0."""
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title="napari-medseg demo")
    viewer.open_sample("napari-medseg", args.sample)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Segment")
    image = next(layer for layer in viewer.layers if layer.__class__.__name__ == "Image")
    widget.image_combo.set_layer(image)

    def start() -> None:
        if not widget.device_picker.ready:
            QTimer.singleShot(200, start)
            return
        widget.run()
        if args.screenshot:
            finish()

    def finish() -> None:
        if widget.running:
            QTimer.singleShot(200, finish)
            return
        viewer.screenshot(args.screenshot, canvas_only=False)
        print(f"wrote {args.screenshot}; status: {widget.status.text()}")
        viewer.close()

    if args.run or args.screenshot:
        QTimer.singleShot(0, start)
    napari.run()
    return 0


COMMAND = Command("demo", HELP, add_arguments, run)
add_parser = COMMAND.add_parser

__all__ = ["COMMAND", "HELP", "add_arguments", "add_parser", "run"]
