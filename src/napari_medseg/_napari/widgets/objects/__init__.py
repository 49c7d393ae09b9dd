"""The Objects dock widget (detect, measure, gate, classify objects) and its panels.

* :mod:`.widget`: :class:`ObjectsWidget`, the dock widget and its run;
* :mod:`.table`, :mod:`.plot`: the objects table and scatter/histogram panel;
* :mod:`.classify`: gate and classifier panels; :mod:`.training`: classifier training actions;
* :mod:`.outputs`: the intensity checklist, class colours and the output layers.
"""

from .widget import ObjectsWidget

__all__ = ["ObjectsWidget"]
