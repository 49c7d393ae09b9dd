"""``medseg demo``: open napari with a shipped sample and the Segment widget docked.

napari needs a window system.  On Linux without one (a server, a container,
``ssh`` without ``-X``) or without the libraries of Qt's ``xcb`` platform
plugin, Qt aborts the process (signal 6) with a message few users can act on.
Before importing napari, :func:`display_problem` checks for a display and,
where Qt would use ``xcb``, starts Qt once in a child process; if either
fails the demo exits with status 2 and says what to do instead (a virtual
display with ``xvfb-run``, the Debian/Ubuntu packages, or the napari-free
``medseg segment``).  ``QT_QPA_PLATFORM=offscreen`` (no window, e.g. with
``--screenshot``) skips the check.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping

from .common import Command, UsageError

#: Debian/Ubuntu packages for Qt's window and napari's canvas on a fresh machine; the same list as
#: ``.ci/apt-packages.txt`` and the README (tests/test_readme_commands.py keeps them equal).
APT_PACKAGES = ["xvfb", "libgl1-mesa-dri", "libegl1", "libxkbcommon-x11-0", "libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-image0", "libxcb-render-util0", "libxcb-xinerama0", "libxcb-shape0", "libdbus-1-3", "libfontconfig1"]

#: Qt platform plugins that need no window system (the demo runs under them without a check).
_HEADLESS_QPA = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb", "vkkhrdisplay")

_QT_PROBE = "from qtpy.QtWidgets import QApplication; QApplication([])"

HELP = "open napari with a sample image (nuclei, he or mr) and the Segment widget; --run segments it at once"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``p``."""
    p.add_argument("sample", nargs="?", default="nuclei", choices=["nuclei", "he", "mr"],
                   help="which shipped sample to open (default: nuclei)")
    p.add_argument("--run", action="store_true", help="press Run in the Segment widget once it is ready")
    p.add_argument("--screenshot", default=None, metavar="PNG",
                   help="after the run, save a screenshot of the window and quit (for checks without a person)")


def _what_to_do(problem: str, args: argparse.Namespace | None = None) -> str:
    again = "medseg demo" + (f" {args.sample}" if args is not None and args.sample != "nuclei" else "")
    return (
        f"{problem}\n"
        "napari needs a display for its window. Instead:\n"
        f"  - on a desktop session (or over ssh -X), run `{again} --run` there;\n"
        f"  - on a virtual display: `xvfb-run -a {again} --run --screenshot demo.png` segments the sample,\n"
        "    saves the window as demo.png and exits; on Debian/Ubuntu that needs\n"
        f"    `sudo apt-get install -y {' '.join(APT_PACKAGES)}`;\n"
        "  - without napari: `medseg segment IMAGE.tif -o out/` (see `medseg segment --help`)."
    )


def display_problem(env: Mapping[str, str] | None = None, platform: str | None = None,
                    probe: bool = True) -> str | None:
    """Why napari's window cannot open here, or None if it can (as far as can be told without opening it).

    Parameters
    ----------
    env : mapping, optional
        Environment to judge (default: ``os.environ``).
    platform : str, optional
        ``sys.platform`` to judge (default: this one).  Only Linux and other X11
        systems are checked; Windows and macOS always have a window system.
    probe : bool
        Also start Qt once in a child process where it would use ``xcb``, so a
        missing system library or an unreachable ``DISPLAY`` is reported instead
        of aborting this process.

    Returns
    -------
    str or None
        A one-line reason.
    """
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if platform.startswith(("win", "darwin", "cygwin")):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").strip().lower()
    if qpa.startswith(_HEADLESS_QPA):
        return None
    if qpa.startswith("wayland") and not qpa.startswith(("wayland;", "wayland,")) and not env.get("WAYLAND_DISPLAY"):
        return "QT_QPA_PLATFORM asks for Wayland but WAYLAND_DISPLAY is not set"
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return "no display: neither DISPLAY nor WAYLAND_DISPLAY is set"
    if not probe or (env.get("WAYLAND_DISPLAY") and not qpa.startswith("xcb")):
        return None
    try:
        out = subprocess.run([sys.executable, "-c", _QT_PROBE], env=dict(env), capture_output=True, text=True,
                             timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"Qt could not be started to check the display ({e})"
    if out.returncode == 0:
        return None
    lines = [ln.strip() for ln in (out.stderr or "").splitlines() if ln.strip()]
    qt_lines = [ln for ln in lines if "qt" in ln.lower() or "xcb" in ln.lower() or "display" in ln.lower()]
    detail = (qt_lines or lines or [f"exit status {out.returncode}"])[0]
    how = "aborted (signal 6)" if out.returncode in (-6, 134) else f"failed (exit status {out.returncode})"
    return f"Qt {how} opening a window on DISPLAY={env.get('DISPLAY', '')!r}: {detail}"


def run(args: argparse.Namespace) -> int:
    """Run ``medseg demo``: open napari (blocks until its window is closed); returns 0.

    Raises
    ------
    UsageError
        When there is no display to open napari on (exit status 2): the message says what to do instead.
    """
    problem = display_problem()
    if problem is not None:
        raise UsageError(_what_to_do(problem, args))

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

__all__ = ["APT_PACKAGES", "COMMAND", "HELP", "add_arguments", "add_parser", "display_problem", "run"]
