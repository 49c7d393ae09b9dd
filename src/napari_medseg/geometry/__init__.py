"""One geometry for every file, layer, measurement and output.

* :mod:`.units`: the one unit table (names, exact conversions, napari/ASCII names).
* :mod:`.grid`: :class:`Geometry`, the pixel index -> world affine (spacing,
  origin, direction, voxel size, LPS frame for radiology).
* :mod:`.volume`: :class:`Volume`, an array plus its geometry, what readers return.

Nothing here imports napari or torch.
"""

from .grid import LPS, Geometry
from .units import (
    PIXEL,
    ascii_unit,
    common_unit,
    convert,
    factor,
    is_length,
    is_pixel,
    is_time,
    napari_unit,
    normalize_unit,
    per_axis,
)
from .volume import Volume, is_volume

__all__ = [
    "LPS", "PIXEL", "Geometry", "Volume", "ascii_unit", "common_unit", "convert", "factor", "is_length",
    "is_pixel", "is_time", "is_volume", "napari_unit", "normalize_unit", "per_axis",
]
