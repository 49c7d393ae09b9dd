"""The Slide dock widget: tissue, a CNN tile heat map, lesion regions and QuPath GeoJSON on a (multiscale) slide.

**Find tissue** thresholds a low level (:func:`napari_medseg.slides.tissue.detect_tissue`)
into a Labels layer over the slide.  **Heat map** classifies the tissue
tiles with a classification model in a thread worker
(:func:`napari_medseg.slides.heatmap.classify_slide_iter`) and shows the
chosen class's probability as an Image layer aligned with the slide, the
thresholded regions as a Shapes layer (class in ``features``) and in a table
(class, mean probability, area mm², longest diameter mm; a click centres the
view on the region).  **Export GeoJSON** writes the regions, or the shapes of
a chosen Shapes layer, as QuPath annotations; **Import GeoJSON** adds QuPath
annotations as a Shapes layer with their classes.  The user's layers are
never modified; a re-run replaces the layers this widget made.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Shapes
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ...errors import ParameterError
from .._worker import JobOutcome
from ..layers import geometry_from_state, grid_layer_kwargs, output_geometry, slide_of_layer
from .common import LayerCombo, ModelPicker, OutputLayers, center_on, report_error, spin_box
from .dock import JobDock

if TYPE_CHECKING:
    import napari

COLUMNS = ("id", "class", "mean p", "area (mm²)", "longest (mm)")


def _hex(rgb: Any) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])


class SlideWidget(JobDock):
    """Dock widget for whole slides.

    ``napari_viewer``: see :class:`~napari_medseg._napari.widgets.dock.JobDock`.
    """

    cancelling_text = None  # the status says how the heat map ended

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer, "Open a slide, then Find tissue and Heat map.")
        self.outputs = OutputLayers(napari_viewer)
        self.image = LayerCombo(napari_viewer, Image)
        self.model_picker = ModelPicker(kinds=("classification",))
        self.tile = spin_box(16, 4096, 224, 16, tip="tile edge in pixels of the level below")
        self.level = spin_box(0, 16, 0, 1, tip="pyramid level the tiles are read from (0: full resolution)")
        self.use_tissue = QCheckBox("only tissue tiles")
        self.use_tissue.setChecked(True)
        self.threshold = spin_box(0.05, 1.0, 0.5, 0.05, decimals=2)
        self.smooth = spin_box(0.0, 5.0, 0.0, 0.5, decimals=1)
        self.smooth.setToolTip("Gaussian smoothing of the heat map before thresholding, in tiles")
        self.threshold.valueChanged.connect(self.update_regions)
        self.smooth.valueChanged.connect(self.update_regions)
        self.heat_class = QComboBox()
        self.heat_class.currentTextChanged.connect(self._show_class)
        self.tissue_button = QPushButton("Find tissue")
        self.tissue_button.clicked.connect(self.find_tissue)
        self.run_row("Heat map", self.run_heatmap)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.itemSelectionChanged.connect(self._go_to_region)
        self.shapes_source = LayerCombo(napari_viewer, Shapes)
        export = QPushButton("Export GeoJSON…")
        export.clicked.connect(lambda: self._ask_path(save=True))
        imp = QPushButton("Import GeoJSON…")
        imp.clicked.connect(lambda: self._ask_path(save=False))

        form = QFormLayout()
        form.addRow("slide", self.image)
        form.addRow("model", self.model_picker)
        form.addRow("tile (px)", self.tile)
        form.addRow("level", self.level)
        form.addRow("", self.use_tissue)
        form.addRow("threshold", self.threshold)
        form.addRow("smooth (tiles)", self.smooth)
        form.addRow("show class", self.heat_class)
        io = QHBoxLayout()
        io.addWidget(export)
        io.addWidget(imp)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.tissue_button)
        lay.addWidget(self.buttons)
        lay.addWidget(self.table)
        exp_form = QFormLayout()
        exp_form.addRow("export shapes", self.shapes_source)
        lay.addLayout(exp_form)
        lay.addLayout(io)
        lay.addWidget(self.status)
        self.setMinimumWidth(300)

        self.tissue: Any = None  #: TissueMask of the last Find tissue (for the layer it was found on)
        self._tissue_source: Any = None
        self.heatmap: Any = None  #: HeatMap of the last run
        self.regions: list[Any] = []
        self._source: Any = None
        self.model_picker.refresh()

    # --- actions ------------------------------------------------------------------------------
    def _slide(self) -> tuple[Any, Any]:
        layer = self.image.layer()
        if layer is None:
            raise ParameterError("add or open a slide (an Image layer) first")
        return layer, slide_of_layer(layer)

    def find_tissue(self) -> None:
        """Detect tissue on a low level of the chosen slide; show it as a Labels layer."""
        from ...slides.tissue import detect_tissue

        try:
            layer, slide = self._slide()
            mask = detect_tissue(slide)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            report_error(self.status, exc, "Tissue detection")
            return
        self.tissue, self._tissue_source = mask, layer
        from napari.utils.colormaps import DirectLabelColormap

        # an outline (as QuPath draws tissue): a filled overlay hid the stain under it and vanished under the heat map
        lab = Labels(mask.mask.astype(np.uint8), name=f"{layer.name} tissue", opacity=1.0,
                     colormap=DirectLabelColormap(color_dict={1: "lime", None: "transparent"}),
                     **grid_layer_kwargs(layer, mask.downsample))
        lab.contour = 1
        self.outputs.put("tissue", layer, lab)
        self.status.set(f"Tissue: {100 * mask.fraction:.1f} % of the slide (threshold {mask.threshold:.3f})."
                        if mask.mask.any() else "No tissue found (glass only?): a heat map on tissue tiles would "
                        "classify nothing; untick 'only tissue tiles' to classify every tile.")

    def run_heatmap(self) -> None:
        """Classify the slide's tiles in a thread worker; layers and table when done."""
        from ...slides.heatmap import classify_slide_iter
        from ...slides.tissue import detect_tissue

        try:
            layer, slide = self._slide()
            info = self.model_picker.current()
            if info is None:
                raise ParameterError("choose a classification model (Train one in the Classify widget)")
        except Exception as exc:  # noqa: BLE001
            report_error(self.status, exc, "Heat map")
            return
        model, tile, level = str(info.path), int(self.tile.value()), int(self.level.value())
        tissue = self.tissue if self._tissue_source is layer else None
        use = self.use_tissue.isChecked()

        def make(token: Any) -> Any:
            mask = (tissue or detect_tissue(slide)) if use else None
            return classify_slide_iter(slide, model, tile=tile, level=level, tissue=mask, cancel=token)

        self._source = layer
        self.start_job(make, self._done, desc="Heat map", message=f"Classifying tiles of {layer.name} with '{info.name}'…",
                       progress=False)

    def wait(self) -> None:
        """Block until the running job is done (scripts)."""
        from qtpy.QtWidgets import QApplication

        while self._job is not None and self._job.running:
            QApplication.processEvents()

    # --- results ------------------------------------------------------------------------------
    def _done(self, outcome: JobOutcome) -> None:
        def show(heat: Any) -> str:
            self.heatmap = heat
            self.heat_class.blockSignals(True)
            self.heat_class.clear()
            self.heat_class.addItems(heat.class_names)
            self.heat_class.blockSignals(False)
            self.update_regions()
            n = int(heat.classified.sum())
            return f"{n} of {heat.classified.size} tile(s) classified; {len(self.regions)} region(s)."

        self.end_job(outcome, "Heat map", show)

    def _show_class(self, name: str) -> None:
        if self.heatmap is None or not name or self._source is None:
            return
        heat, layer = self.heatmap, self._source
        k = heat.class_names.index(name)
        data = np.nan_to_num(heat.probabilities[..., k], nan=0.0)
        img = Image(data, name=f"{layer.name} p({name})", colormap="inferno", opacity=0.45, contrast_limits=(0, 1),
                    **grid_layer_kwargs(layer, heat.tile))
        out = self.outputs.put("heatmap", layer, img)
        title = f"{layer.name} p({name})"  # the class shown, also after a re-run kept the old layer's name
        if all(lay.name != title for lay in self.viewer.layers if lay is not out):
            out.name = title

    def update_regions(self) -> None:
        """Threshold the heat map again (threshold, smoothing) and refresh the regions layer and table."""
        from ...slides.geojson import class_colors, to_index
        from ...slides.regions import heatmap_regions

        if self.heatmap is None:
            return
        layer, heat = self._source, self.heatmap
        self.regions, _ = heatmap_regions(heat, threshold=float(self.threshold.value()),
                                          sigma=float(self.smooth.value()))
        self._show_class(self.heat_class.currentText() or heat.class_names[-1])
        colors = class_colors(heat.class_names)
        polys = [to_index(r.polygons[0][0]) for r in self.regions]
        classes = [r.class_name for r in self.regions]
        shapes = Shapes(polys, shape_type="polygon", name=f"{layer.name} regions", face_color="transparent",
                        edge_color=[_hex(colors[c]) for c in classes] or "yellow", edge_width=max(2.0, heat.tile[0] / 12),
                        features={"class": classes, "mean_probability": [r.mean_probability for r in self.regions]},
                        **output_geometry(layer, 2))
        self.outputs.put("regions", layer, shapes)
        self.table.setRowCount(len(self.regions))
        for i, r in enumerate(self.regions):
            for j, v in enumerate((r.id, r.class_name, f"{r.mean_probability:.3f}", f"{r.area:.4g}",
                                   f"{r.longest_diameter:.4g}")):
                self.table.setItem(i, j, QTableWidgetItem(str(v)))

    def _go_to_region(self) -> None:
        rows = {i.row() for i in self.table.selectedItems()}
        if len(rows) != 1 or self._source is None:
            return
        r = self.regions[rows.pop()]
        from ...slides.geojson import to_index

        centre = to_index(r.polygons[0][0]).mean(axis=0)
        center_on(self.viewer, self._source.data_to_world(centre))

    # --- GeoJSON ------------------------------------------------------------------------------
    def _ask_path(self, save: bool) -> None:
        if save:
            path, _ = QFileDialog.getSaveFileName(self, "Export GeoJSON", "", "GeoJSON (*.geojson *.json)")
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Import GeoJSON", "", "GeoJSON (*.geojson *.json)")
        if path:
            (self.export_geojson if save else self.import_geojson)(path)

    def export_geojson(self, path: str | Path) -> Path | None:
        """Write the chosen Shapes layer (default: the regions) as QuPath annotations in the slide's level-0 pixels."""
        from ...slides.geojson import class_colors, feature, from_index, region_features, write_geojson

        try:
            layer, _ = self._slide()
            shapes = self.shapes_source.layer()
            made = self.outputs.get("regions", layer)
            if shapes is None or (shapes is made and self.regions):
                if not self.regions:
                    raise ParameterError("no regions yet: run Heat map, or choose a Shapes layer to export")
                feats = region_features(self.regions)
            else:
                feats = []
                classes = shapes.features["class"] if "class" in shapes.features else [None] * len(shapes.data)
                colors = class_colors(sorted({str(c) for c in classes if c}))
                to_world = geometry_from_state("YX", {"scale": shapes.scale, "translate": shapes.translate,
                                                      "rotate": shapes.rotate, "shear": shapes.shear,
                                                      "affine": shapes.affine.affine_matrix})
                to_slide = geometry_from_state("YX", {"scale": layer.scale[-2:], "translate": layer.translate[-2:]})
                for verts, kind, cls in zip(shapes.data, shapes.shape_type, classes, strict=True):
                    idx = to_slide.world_to_index(to_world.index_to_world(np.asarray(verts)[:, -2:]))
                    if kind in ("line", "path"):
                        continue  # not areas
                    c = str(cls) if cls else None
                    feats.append(feature([[from_index(idx)]], class_name=c, color=colors.get(c) if c else None))
            out = write_geojson(path, feats)
        except Exception as exc:  # noqa: BLE001
            report_error(self.status, exc, "GeoJSON export")
            return None
        self.status.set(f"{out}: {len(feats)} object(s) for QuPath (File > Import objects).")
        return out

    def import_geojson(self, path: str | Path) -> Any:
        """Add the polygons of a QuPath GeoJSON file as a Shapes layer over the slide, classes in ``features``."""
        from ...slides.geojson import read_geojson, to_index

        try:
            layer, _ = self._slide()
            objs = [o for o in read_geojson(path) if o.geometry_type in ("Polygon", "MultiPolygon")]
            polys, classes, colors, types = [], [], [], []
            for o in objs:
                for poly in o.polygons:
                    polys.append(to_index(poly[0])[:-1])  # outline; napari closes polygons itself
                    classes.append(o.class_name or "")
                    colors.append(_hex(o.color) if o.color else "#ffff00")
                    types.append(o.object_type)
            if not polys:
                raise ParameterError(f"{path}: no polygon annotations in it")
            shapes = Shapes(polys, shape_type="polygon", name=f"{Path(path).stem}", face_color="transparent",
                            edge_color=colors, edge_width=max(2.0, max(layer.data[0].shape[:2] if layer.multiscale
                                                                      else layer.data.shape[:2]) / 400),
                            features={"class": classes, "object_type": types},
                            **output_geometry(layer, 2))
            self.viewer.add_layer(shapes)
        except Exception as exc:  # noqa: BLE001
            report_error(self.status, exc, "GeoJSON import")
            return None
        self.status.set(f"{Path(path).name}: {len(polys)} polygon(s), classes {sorted(set(classes) - {''})}.")
        return shapes


__all__ = ["SlideWidget"]
