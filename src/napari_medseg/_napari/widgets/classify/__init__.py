"""The Classify dock widget (CNN image classifier): :class:`ClassifyWidget`.

* ``widget.py`` - the dock: the Train tab (items, budget, base model, live curve, cancel) and the status line;
* ``predict.py`` - the Predict tab: the results table, Grad-CAM on the selected row, the heat-map layer;
* ``items.py`` - items from Image layers, Shapes regions or a ``file,class`` CSV, and where their maps go;
* ``layer_table.py`` - the Image layers with a class each (training from layers);
* ``results.py`` - the sortable results table and its CSV.
"""

from .widget import ClassifyWidget

__all__ = ["ClassifyWidget"]
