"""Draw the plugin icon (``src/napari_medseg/icon.png``, 256 x 256 RGBA) with numpy and matplotlib.

A dark rounded tile with grey nuclei, each outlined in its own label
colour, and a thin scan-line grid in one corner for radiology.  Re-make it with::

    python scripts/make_icon.py [--out src/napari_medseg/icon.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse, FancyBboxPatch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: (x, y, width, height, angle) of each nucleus, in a 0..1 frame
NUCLEI = [
    (0.33, 0.64, 0.30, 0.22, 25),
    (0.66, 0.70, 0.24, 0.19, -15),
    (0.58, 0.40, 0.30, 0.21, 40),
    (0.28, 0.33, 0.20, 0.16, -30),
]
COLOURS = ["#ff6e6e", "#ffd24a", "#5ee0a0", "#5fb4ff"]


def draw(out: Path, size: int = 256) -> Path:
    fig = plt.figure(figsize=(1, 1), dpi=size)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.add_patch(FancyBboxPatch((0.04, 0.04), 0.92, 0.92, boxstyle="round,pad=0,rounding_size=0.16",
                                facecolor="#1c2230", edgecolor="none"))
    # scan lines of a volume, bottom right
    for i, y in enumerate(np.linspace(0.10, 0.24, 4)):
        ax.plot([0.70, 0.90], [y, y + 0.04], color="#8fa3c7", lw=1.1, alpha=0.45 + 0.12 * i,
                solid_capstyle="round")
    for (x, y, w, h, a), c in zip(NUCLEI, COLOURS, strict=False):
        ax.add_patch(Ellipse((x, y), w, h, angle=a, facecolor="#c8ccd6", edgecolor="none", alpha=0.9))
        ax.add_patch(Ellipse((x, y), w * 0.55, h * 0.5, angle=a, facecolor="#f2f3f7", edgecolor="none",
                             alpha=0.6))
        ax.add_patch(Ellipse((x, y), w + 0.03, h + 0.03, angle=a, facecolor="none", edgecolor=c, lw=3.2))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=size, transparent=True)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "src" / "napari_medseg" / "icon.png")
    args = ap.parse_args()
    path = draw(args.out)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
