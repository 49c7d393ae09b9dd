"""The Segment dock widget: run a U-Net on an image layer, get a Labels layer.

The widget turns a layer into an array + geometry, runs
:func:`napari_medseg.inference.segment.segment_iter` in a napari thread worker
(:class:`~napari_medseg._napari._worker.ProgressJob`), and turns the result
back into a Labels layer that carries the image's geometry.  No numerics and
no torch import happen in the GUI thread.

Output layers
-------------
``<image> labels`` (and ``<image> probabilities`` when asked) carry the
image's ``scale``, ``translate``, ``rotate``, ``shear``, ``affine`` and
``units`` (for RGB images, those of the spatial axes, which is all napari
keeps).  ``metadata["napari_medseg_output_of"]`` names the image and
``metadata["napari_medseg"]`` records model, device and parameters.  A re-run
on the same image replaces the layer this widget created, never a user's layer
that merely has the same name (the new one is then called ``... labels [1]``).
A new output goes under the first user Labels layer above its image (e.g. a
sample's ground truth), else on top.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QSpinBox,
)

from ...errors import MedsegError, ParameterError
from .._worker import JobOutcome
from ..layers import (
    engine_scale,
    insert_axis,
    layer_axes,
    output_geometry,
    output_metadata,
    time_point,
    voxel_ratio_scale,
)
from .common import OutputLayers, collapsible_form, scrolling_layout
from .dock import JobDock, ModelRows

if TYPE_CHECKING:
    import napari

    from ...models.registry import ModelInfo

log = logging.getLogger(__name__)

OUTPUT_OF = "napari_medseg_output_of"  #: metadata key: name of the image an output came from
META = "napari_medseg"  #: metadata key: model, device, parameters, timings



@dataclass
class _RunContext:
    """What the GUI thread captured at Run time (the layers may change meanwhile)."""

    image: weakref.ref
    image_name: str
    model: ModelInfo
    params: dict[str, Any]
    geometry: dict[str, Any]
    t_index: int | None = None  #: time point segmented, for layers with a T axis
    t_size: int = 0
    source_meta: dict[str, Any] | None = None  #: what outputs inherit from the image's metadata (frame)
    kind_warning: str | None = None  #: the model was made for other images (shown with the result)


class SegmentWidget(JobDock):
    """Dock widget: pick an image layer, a model and a device, then Run.

    ``napari_viewer``: see :class:`~napari_medseg._napari.widgets.dock.JobDock`.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer, "Pick an image and a model, then Run.")
        self.model_rows = rows = ModelRows(napari_viewer, ("instance", "semantic"))
        self.image_combo, self.model_picker, self.kind_note = rows.image_combo, rows.model_picker, rows.kind_note
        self.device_picker = rows.device_picker

        self.tile_size = QSpinBox()
        self.tile_size.setRange(0, 8192)
        self.tile_size.setSingleStep(64)
        self.tile_size.setSpecialValueText("auto")
        self.tile_size.setToolTip("Largest tile edge fed to the network, in pixels, halo included; "
                                  "auto: 1024 for 2D models, 128 for 3D. Smaller tiles use less memory.")
        self.batch_size = QSpinBox()
        self.batch_size.setRange(0, 256)
        self.batch_size.setSpecialValueText("auto")
        self.batch_size.setToolTip("Tiles per network call; auto: 1 on the CPU, 4 (2D) / 2 (3D) on a GPU")
        self.keep_probabilities = QCheckBox("keep probabilities")
        self.keep_probabilities.setToolTip("Also add the network's probability maps as an image layer")
        self.tta = QCheckBox("test-time augmentation")
        self.tta.setToolTip("Average the network over 4 mirror images of each tile: ~4x slower, "
                            "slightly better objects")
        self.do_3d = QCheckBox("3D objects from 2D model (3 axes)")

        # --- the knobs Cellpose/StarDist users expect; defaults are the model card's
        self.voxel_size = QLineEdit()
        self.voxel_size.setToolTip("Pixel size for layers that carry none (napari's 'pixel' unit): Z Y X or Y X "
                                   "(one value: all axes) and a unit, e.g. '2 0.5 0.5 um'. Empty: the layer's "
                                   "scale. Used for the Z/XY ratio of 3D objects, for models with a pixel size "
                                   "and for a diameter in µm.")
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(0.0, 10000.0)
        self.diameter.setDecimals(1)
        self.diameter.setSingleStep(1.0)
        self.diameter_unit = QComboBox()
        self.diameter_unit.addItems(["px", "µm"])
        self.prob_threshold = QDoubleSpinBox()
        self.seed_threshold = QDoubleSpinBox()
        for box in (self.prob_threshold, self.seed_threshold):
            box.setRange(0.0, 1.0)
            box.setDecimals(2)
            box.setSingleStep(0.05)
        self.objects_group, obj_form = collapsible_form("Object size and thresholds")
        diam_row = QHBoxLayout()
        diam_row.addWidget(self.diameter, 1)
        diam_row.addWidget(self.diameter_unit)
        obj_form.addRow("diameter", diam_row)
        obj_form.addRow("probability", self.prob_threshold)
        obj_form.addRow("seed", self.seed_threshold)
        obj_form.addRow("pixel size", self.voxel_size)
        self._card_pp: dict[str, float] = {}

        self.advanced, adv_form = collapsible_form("Advanced")
        adv_form.addRow("tile size", self.tile_size)
        adv_form.addRow("batch size", self.batch_size)
        adv_form.addRow(self.keep_probabilities)
        adv_form.addRow(self.tta)

        self.run_row("Run", self.run)

        form = QFormLayout()
        rows.add_rows(form)
        form.addRow(self.do_3d)
        lay = scrolling_layout(self)
        lay.addLayout(form)
        lay.addWidget(self.objects_group)
        lay.addWidget(self.advanced)
        lay.addWidget(self.buttons)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self._outputs = OutputLayers(napari_viewer)  # the layers made per image: a re-run replaces them

        self.image_combo.layerChanged.connect(self._update_do_3d)
        self.model_picker.modelChanged.connect(self._update_do_3d)
        self.model_picker.modelChanged.connect(self._load_card_defaults)
        rows.start()
        self._update_do_3d()
        self._load_card_defaults()

    # --- public API (used by tests and scripts) ---------------------------------------
    def run(self) -> None:
        """Start segmenting the selected image in a worker thread (returns at once)."""
        if self.running:
            return
        image = self.image_combo.layer()
        model = self.model_picker.current()
        if image is None:
            self.status.set("No image layer: open or select an image first.", error=True)
            return
        if model is None:
            self.status.set("No model: add a model folder with the folder button, or fine-tune one first.", error=True)
            return
        data = image.data[0] if image.multiscale else image.data  # level 0, not copied
        axes = layer_axes(image)
        t_index, t_size = None, 0
        tp = time_point(image, self.viewer.dims.point)
        if tp is not None:  # segment the time point on screen
            ti, t_index, t_size = tp
            data = data[(slice(None),) * ti + (t_index,)]  # a view (numpy) or lazy slice (dask)
        core_axes = None if axes is None else axes.replace("T", "")
        scale, units = engine_scale(image) if axes is not None else (None, None)
        params: dict[str, Any] = {
            "axes": core_axes,
            "scale": scale,
            "units": units,
            "device": self.device_picker.device(),
            "tile_size": self.tile_size.value() or None,
            "batch_size": self.batch_size.value() or None,
            "return_probabilities": self.keep_probabilities.isChecked(),
            "tta": self.tta.isChecked(),
            "do_3d": self.do_3d.isChecked() and _why_no_3d(image, model) is None,
        }
        try:
            given = _parse_voxel_size(self.voxel_size.text(), len([a for a in (core_axes or "") if a in "ZYX"]))
            if given is not None:
                params["scale"], params["units"] = given
            params.update(self._object_knobs(params["scale"], params["units"]))
        except MedsegError as exc:
            self.status.set(str(exc), error=True)
            return
        if params["do_3d"] and params["scale"] is None:  # no physical units: the Z/XY ratio still counts
            params["scale"], params["units"] = voxel_ratio_scale(image), "pixel"
        ctx = _RunContext(weakref.ref(image), image.name, model, params, output_geometry(image), t_index, t_size,
                          output_metadata(image), self.model_rows.kind_warning())
        model_ref = model.path

        def make_gen(token):
            from ...inference.dispatch import segment_any_iter  # torch loads here, in the worker thread

            return segment_any_iter(data, model_ref, cancel=token, **params)

        at = "" if t_index is None else f" (time point {t_index})"
        self.start_job(make_gen, lambda outcome: self._finish(ctx, outcome), desc=f"Segmenting {image.name}",
                       message=f"Running {model.name} on {image.name}{at}…"
                       + ("" if ctx.kind_warning is None else f"\n{ctx.kind_warning}"), postprocess=_count_objects)

    def _object_knobs(self, scale: Any, units: Any) -> dict[str, Any]:
        """``diameter`` (image pixels) and ``postprocess`` overrides from the knobs (only those set or changed)."""
        from ...inference.prepare import diameter_in_pixels

        out: dict[str, Any] = {}
        if self.diameter.isEnabled() and self.diameter.value() > 0:
            unit = None if self.diameter_unit.currentText() == "px" else "µm"
            out["diameter"] = diameter_in_pixels(self.diameter.value(), unit, scale, units)
        pp = {}
        for key, box in (("fg_threshold", self.prob_threshold), ("seed_threshold", self.seed_threshold)):
            v = round(float(box.value()), 2)
            if box.isEnabled() and (key not in self._card_pp or abs(v - self._card_pp[key]) > 1e-9):
                pp[key] = v
        if pp:
            out["postprocess"] = pp
        return out

    def _load_card_defaults(self, *_: Any) -> None:
        """Show the selected model's own diameter and thresholds (the values used when left alone)."""
        from ...inference.prepare import card_object_diameter

        model = self.model_picker.current()
        card = None if model is None else model.card
        instance = card is not None and card.kind == "instance"
        pp = dict((card.output.get("postprocess") or {}) if card is not None else {})
        self._card_pp = {}
        fg_tip = "Foreground probability above which a pixel is in an object; lower finds more and larger objects."
        seed_tip = ("Normalised distance to the object's edge (0 edge, 1 centre) above which pixels seed one "
                    "object; higher splits touching objects more, lower less.")
        for key, box, default, what in (("fg_threshold", self.prob_threshold, 0.5, fg_tip),
                                        ("seed_threshold", self.seed_threshold, 0.5, seed_tip)):
            v = float(pp.get(key, default)) if isinstance(pp.get(key, default), (int, float)) else default
            self._card_pp[key] = round(v, 2)
            box.setValue(v)
            box.setEnabled(instance)
            box.setToolTip(what + (f" The model's value: {v:g}." if instance else " (instance models only)"))
        ref = None if card is None else card_object_diameter(card)
        self.diameter.setEnabled(ref is not None)
        self.diameter_unit.setEnabled(ref is not None)
        self.diameter.setValue(0.0)
        self.diameter.setSpecialValueText(f"model: {ref:.1f}" if ref is not None else "not known")
        self.diameter.setToolTip(
            "Typical diameter of the objects in this image: it is resampled so they become the size the model was "
            "trained on" + (f" ({ref:.1f} px)" if ref is not None else "") + ". 0: no resampling for size "
            "(the pixel sizes decide).")

    # --- slots ----------------------------------------------------------------------------
    def _update_do_3d(self, *_: Any) -> None:
        """Offer "3D objects from 2D model" only for an image with a Z axis and a 2D instance model."""
        why = _why_no_3d(self.image_combo.layer(), self.model_picker.current())
        self.do_3d.setEnabled(why is None)
        self.do_3d.setToolTip(
            "Run the 2D model on the planes along Z, Y and X (Z first resampled to the X/Y pixel size from "
            "the layer scale), average the maps and label 3D objects. Slower than plane by plane (3 passes; "
            "~7x on stacks with a Z step of 2 pixels); the stack must fit in memory."
            + ("" if why is None else f"\nUnavailable: {why}.")
        )

    def _finish(self, ctx: _RunContext, outcome: JobOutcome) -> None:
        self.end_job(outcome, "Segmentation", lambda res: self._show_result(ctx, res, outcome.elapsed))

    def _show_result(self, ctx: _RunContext, res: tuple[Any, int], elapsed: float) -> str:
        """Add the output layers of a finished run; returns the status text."""
        result, n_objects = res
        self._add_outputs(ctx, result)
        what = "object" if ctx.model.card.kind == "instance" else "class"
        plural = "" if n_objects == 1 else ("es" if what == "class" else "s")
        at = "" if ctx.t_index is None else f" at time point {ctx.t_index}"
        return (f"{n_objects} {what}{plural}{at} in {elapsed:.1f} s with {result.model_name}\n{result.device_reason}"
                + ("" if ctx.kind_warning is None else f"\nWarning: {ctx.kind_warning}"))

    # --- output layers ----------------------------------------------------------------------
    def _add_outputs(self, ctx: _RunContext, result: Any) -> None:
        """Add or update the output layers; every new layer is built before the viewer changes."""
        image = ctx.image()
        meta = {
            **(ctx.source_meta or {}),
            OUTPUT_OF: ctx.image_name,
            META: {
                "model": result.model_name,
                "model_path": str(ctx.model.path),
                "model_source": ctx.model.source,
                "device": result.device,
                "device_reason": result.device_reason,
                "parameters": dict(ctx.params) | {"time_index": ctx.t_index},
                "timings": dict(result.timings or {}),
            },
        }
        outputs = [("labels", result.labels)]
        if ctx.params["return_probabilities"] and result.probabilities is not None:
            outputs.append(("probabilities", result.probabilities))
        plan = []  # (kind, existing layer to write one time point into | None, new layer | None)
        for kind, arr in outputs:
            # probabilities have a leading class axis K: after T when there is one
            geom = ctx.geometry if kind == "labels" else insert_axis(ctx.geometry, 0 if ctx.t_index is None else 1)
            name = f"{ctx.image_name} {kind}"
            if ctx.t_index is not None:
                full_shape = (ctx.t_size, *arr.shape)
                old = self._outputs.get(kind, image)
                if (old is not None and tuple(old.data.shape) == full_shape and isinstance(old.data, np.ndarray)
                        and np.can_cast(arr.dtype, old.data.dtype)):
                    plan.append((kind, old, None))
                    continue
                full = np.zeros(full_shape, arr.dtype)
                full[ctx.t_index] = arr
                arr = full
            if kind == "labels":
                layer = Labels(arr, name=name, metadata=_copy_meta(meta), **geom)
            else:
                layer = Image(arr, name=name, metadata=_copy_meta(meta), colormap="magma",
                              contrast_limits=(0.0, 1.0), **geom)
            plan.append((kind, None, layer))
        results = dict(outputs)
        for kind, old, layer in plan:
            if old is not None:  # another time point of a layer we made: write just this one
                old.data[ctx.t_index] = results[kind]
                old.metadata = _copy_meta(meta)
                old.refresh()
            else:
                self._put_layer(kind, image, layer)

    def _put_layer(self, kind: str, image: Any, layer: Any) -> None:
        """Update the layer this widget made earlier for ``image``, swap ``layer`` in for it (another
        dimensionality) or add ``layer``."""
        old = self._outputs.get(kind, image)
        if old is not None and type(old) is type(layer) and old.ndim == layer.ndim:
            old.data = layer.data
            for attr in ("scale", "translate", "rotate", "shear", "affine", "units"):
                setattr(old, attr, getattr(layer, attr))
            old.metadata = layer.metadata
            return
        self._outputs.put(kind, image, layer, keep=(), at=None if old is not None else _insert_index(self.viewer, image))


def _parse_voxel_size(text: str, n_axes: int) -> tuple[tuple[float, ...], str] | None:
    """``"2 0.5 0.5 um"`` -> ``((2.0, 0.5, 0.5), "µm")`` for ``n_axes`` spatial axes; None for an empty text.

    One number means all axes; the unit defaults to µm.

    Raises
    ------
    ParameterError
        Not numbers (and a length unit), or the wrong count.
    """
    from ...geometry import is_length, normalize_unit

    words = text.replace(",", " ").replace("x", " ").split()
    if not words:
        return None
    unit = "µm"
    try:
        float(words[-1])
    except ValueError:
        unit = words.pop()
    try:
        values = [float(w) for w in words]
        u = normalize_unit(unit)
    except Exception:  # noqa: BLE001
        raise ParameterError(f"pixel size {text!r}: give numbers and a unit, e.g. '2 0.5 0.5 um'") from None
    if not is_length(u) or not values or any(not v > 0 for v in values):
        raise ParameterError(f"pixel size {text!r}: give positive numbers and a length unit (um, nm, mm)")
    if len(values) == 1:
        values = values * n_axes
    if len(values) != n_axes:
        raise ParameterError(f"pixel size {text!r}: {len(values)} values for {n_axes} spatial axes")
    return tuple(values), u


def _insert_index(viewer: Any, image: Any) -> int | None:
    """Where a new output of ``image`` goes: under the first user Labels layer above the image (a ground
    truth, painted annotations), so those stay visible on top; None (the top of the list) without one."""
    layers = list(viewer.layers)
    i = next((k for k, lay in enumerate(layers) if lay is image), None)
    if i is None:
        return None
    for j in range(i + 1, len(layers)):
        lay = layers[j]
        meta = lay.metadata if isinstance(lay.metadata, dict) else {}
        if isinstance(lay, Labels) and not any(k.startswith("napari_medseg") for k in meta):
            return j
    return None


def _copy_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, dict) else v for k, v in meta.items()}


def _why_no_3d(image: Any, model: ModelInfo | None) -> str | None:
    """Why 3D objects from a 2D model cannot run on this image and model (None: they can)."""
    if image is None or model is None:
        return "pick an image and a model"
    if model.card.kind != "instance" or model.card.dims != 2:
        return f"{model.name} is not a 2D instance model"
    axes = layer_axes(image)
    if axes is None or "Z" not in axes:
        return "the image has no Z axis"
    return None


def _count_objects(result: Any) -> tuple[Any, int]:
    """(result, number of labels); runs in the worker thread."""
    n = (getattr(result, "info", None) or {}).get("n_labels")
    if n is None:
        u = np.unique(np.asarray(result.labels))
        n = u.size - (1 if u.size and u[0] == 0 else 0)
    return result, int(n)
