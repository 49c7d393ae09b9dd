"""The Lesions dock widget: lesions from a semantic model or existing labels, with their table.

* :mod:`.widget`: :class:`LesionsWidget`, the dock widget, its run, filter and navigation;
* :mod:`.outputs`: the output Labels layers, class colours, features and size unit.
"""

from .widget import LesionsWidget

__all__ = ["LesionsWidget"]
