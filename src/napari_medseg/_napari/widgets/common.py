"""Rows shared by the napari-medseg dock widgets.

* :class:`LayerCombo` - layers of one type, kept in sync with the viewer
  (added, removed, renamed, reordered).
* :class:`ModelPicker` - shipped + user models from the registry, a refresh
  button and a "folder..." button; picks a default that fits the image.
* :class:`DevicePicker` - ``auto`` plus the devices torch can see; filled in a
  background thread so opening the widget does not wait for ``import torch``
  (a closing dock drops the answer and waits for the thread, bounded).
* :func:`scrolling_layout` / :class:`DockScroll`: every dock's rows scroll
  vertically and fit :data:`DOCK_MAX_WIDTH`; :func:`collapsible_form` (an
  "Advanced" section), :func:`spin_box`, :func:`suggest_model_name`.
* :class:`RunCancelRow`, :class:`StatusLine` and :class:`KindNote` (the
  selected model was made for other images than this one).
* :class:`OutputLayers` - the layers a widget made per source, replaced on a re-run.
* :func:`center_on` - slice through and centre the camera on a world position (table click).
* :func:`finish_job` and :func:`report_error` - how every widget shows the
  end of a :class:`~napari_medseg._napari._worker.ProgressJob` (result,
  cancel or error: status line, notification, Run/Cancel buttons).

Nothing here runs a model; torch is only imported off the GUI thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject, QSize, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ...errors import MedsegError, ModelError
from ..layers import unique_name

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from ...models.registry import ModelInfo
    from .._worker import JobOutcome

log = logging.getLogger(__name__)


class LayerCombo(QComboBox):
    """Combo box of the viewer's layers of one type, updated as layers change.

    Parameters
    ----------
    viewer : napari.Viewer
    layer_type : type
        napari layer class to list (e.g. ``napari.layers.Image``).

    Signals
    -------
    layerChanged(object)
        Emitted with the newly selected layer (or None) whenever the selection
        changes, by the user or because the selected layer went away.
    """

    layerChanged = Signal(object)

    def __init__(self, viewer: napari.Viewer, layer_type: type, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._layers: list[Layer] = []
        self._current: Layer | None = None
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(10)
        self.setPlaceholderText(f"(no {layer_type.__name__.lower()} layer)")
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self._on_removed)
        events.moved.connect(self.refresh)
        events.reordered.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.currentIndexChanged.connect(self._on_index)
        self.refresh()

    def layer(self) -> Layer | None:
        """The selected layer, or None."""
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def layers(self) -> list[Layer]:
        """The listed layers, top-most first (combo order)."""
        return list(self._layers)

    def set_layer(self, layer: Layer) -> None:
        """Select ``layer`` (must be listed)."""
        for i, lay in enumerate(self._layers):
            if lay is layer:
                self.setCurrentIndex(i)
                return
        raise ValueError(f"layer {layer.name!r} is not a {self._type.__name__} layer of this viewer")

    def _on_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)
        self.refresh()

    def _on_removed(self, event: Any) -> None:
        event.value.events.name.disconnect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        """Rebuild the list from the viewer, keeping the selection when possible."""
        keep = self._current
        self._layers = [lay for lay in reversed(self._viewer.layers) if isinstance(lay, self._type)]
        self.blockSignals(True)
        try:
            self.clear()
            self.addItems([lay.name for lay in self._layers])
            idx = next((i for i, lay in enumerate(self._layers) if lay is keep), 0 if self._layers else -1)
            self.setCurrentIndex(idx)
        finally:
            self.blockSignals(False)
        self._on_index()

    def _on_index(self, *_: Any) -> None:
        layer = self.layer()
        if layer is not self._current:
            self._current = layer
            self.layerChanged.emit(layer)


def model_fits(info: ModelInfo, rgb: bool) -> bool:
    """Whether a model takes this kind of image (RGB vs single-channel)."""
    from ...models.registry import is_compatible

    try:
        return bool(is_compatible(info.card, rgb))
    except Exception:  # a card with odd fields is simply not a fit  # noqa: BLE001
        return False


#: Short names of image kinds in the model list (``nuclei \u00b7 fluo/BF/H&E``).
_KIND_SHORT = {"fluorescence": "fluo", "brightfield": "BF", "histology": "H&E", "blood_smear": "blood smear"}


def _made_for(info: ModelInfo) -> str:
    """What a model was made for, short (``"fluo/BF/H&E"``), from its card; empty when it does not say."""
    from ...models.kinds import card_image_kinds

    try:
        kinds = card_image_kinds(info.card) or ()
    except Exception:  # noqa: BLE001
        kinds = ()
    return "/".join(_KIND_SHORT.get(k, k) for k in kinds)


class _ModelEvents(QObject):
    """App-wide "the set of models changed" signal (a model was saved or deleted)."""

    changed = Signal()


_MODEL_EVENTS: _ModelEvents | None = None


def model_events() -> _ModelEvents:
    """The one :class:`_ModelEvents` object; every :class:`ModelPicker` listens to it."""
    global _MODEL_EVENTS
    if _MODEL_EVENTS is not None:
        try:
            _MODEL_EVENTS.objectName()  # raises once Qt has deleted it (e.g. with a previous QApplication)
        except RuntimeError:
            _MODEL_EVENTS = None
    if _MODEL_EVENTS is None:
        _MODEL_EVENTS = _ModelEvents()
    return _MODEL_EVENTS


def notify_models_changed() -> None:
    """Tell every model picker (Segment, Train... widgets) to re-read the model registry."""
    model_events().changed.emit()


class ModelPicker(QWidget):
    """Model combo box with refresh and "add a model folder" buttons.

    Lists :func:`napari_medseg.models.registry.list_models` (shipped models
    first, then the user's models folder) plus folders added with the
    "folder..." button.  :meth:`refresh` re-reads the registry, so a model just
    saved by fine-tuning appears at once.  A model chosen by hand stays chosen
    as long as it fits the image (:meth:`pick_default_for`).
    """

    modelChanged = Signal(object)

    def __init__(self, parent: QWidget | None = None, *, kinds: tuple[str, ...] | None = None) -> None:
        super().__init__(parent)
        #: output kinds listed (e.g. ``("instance", "semantic")`` for segmentation); None lists all
        self.kinds = kinds
        self.combo = QComboBox()
        self.combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        # the dock's width must not grow with the longest model name
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(10)
        self.combo.setPlaceholderText("(no model found)")
        self.refresh_button = QPushButton("\u21bb")
        self.refresh_button.setToolTip("Re-read the shipped and user model folders")
        self.refresh_button.setFixedWidth(28)
        self.browse_button = QPushButton()
        self.browse_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon))
        self.browse_button.setFixedWidth(28)
        self.browse_button.setToolTip("Use a model folder (model.json + weights.safetensors) from disk")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.combo, 1)
        lay.addWidget(self.refresh_button)
        lay.addWidget(self.browse_button)
        self._infos: list[ModelInfo] = []
        self._extra: list[ModelInfo] = []  # folders added by hand, kept across refreshes
        self._by_hand: str | None = None  # key of the model the user picked explicitly
        self.combo.activated.connect(self._on_activated)
        self.combo.currentIndexChanged.connect(lambda *_: self.modelChanged.emit(self.current()))
        self.refresh_button.clicked.connect(self.refresh)
        self.browse_button.clicked.connect(self._browse)
        # a bound method of this QObject: Qt drops the connection when the picker is destroyed
        model_events().changed.connect(self._on_models_changed)

    def _on_models_changed(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # one broken picker must not stop the others  # noqa: BLE001
            log.warning("model list refresh failed: %s", exc)

    @staticmethod
    def _key(info: ModelInfo) -> str:
        return f"{info.name}|{info.path}"

    def current(self) -> ModelInfo | None:
        """The selected model, or None."""
        i = self.combo.currentIndex()
        return self._infos[i] if 0 <= i < len(self._infos) else None

    def models(self) -> list[ModelInfo]:
        """The listed models, in combo order."""
        return list(self._infos)

    def select(self, name_or_key: str) -> bool:
        """Select a listed model by name (or name|path key); False if not listed."""
        for i, info in enumerate(self._infos):
            if name_or_key in (info.name, self._key(info)):
                self.combo.setCurrentIndex(i)
                return True
        return False

    def refresh(self, *_: Any) -> None:
        """Re-read the registry, keeping the selection when it still exists."""
        from ...models.registry import list_models

        cur = self.current()
        keep = self._key(cur) if cur is not None else None
        try:
            infos = list(list_models())
        except Exception as exc:  # a broken user folder must not break the widget  # noqa: BLE001
            log.warning("listing models failed: %s", exc)
            _notify_error(f"Could not list models: {exc}")
            infos = []
        seen = {self._key(i) for i in infos}
        infos += [i for i in self._extra if self._key(i) not in seen]
        if self.kinds is not None:
            infos = [i for i in infos if i.card.kind in self.kinds]
        self._infos = infos
        self.combo.blockSignals(True)
        try:
            self.combo.clear()
            for info in infos:
                label = info.name if info.source == "shipped" else f"{info.name} ({info.source})"
                made_for = _made_for(info)
                self.combo.addItem(label + (f" \u00b7 {made_for}" if made_for else ""))
                card = info.card
                tip = (f"{card.description}\n" if card.description else "") + (
                    f"{card.kind}, {card.input.get('channels')} channel(s), {card.dims}D"
                    + (f", made for: {made_for}" if made_for else "") + f"\n{info.path}"
                )
                self.combo.setItemData(self.combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
            if not (keep and self.select(keep)):
                self.combo.setCurrentIndex(0 if infos else -1)
        finally:
            self.combo.blockSignals(False)
        self.modelChanged.emit(self.current())

    def pick_default_for(self, rgb: bool, image_kind: str | None = None) -> None:
        """Select the registry's default model for an RGB / non-RGB image of ``image_kind``.

        A model the user picked by hand is kept if its channels fit the image.
        With a kind no listed model is made for (an MR series), a model that
        fits the channels stays selected: :meth:`kind_warning` says why it
        is unlikely to do well.
        """
        from ...models.registry import default_model_for

        by_hand = next((i for i in self._infos if self._key(i) == self._by_hand), None)
        if by_hand is not None and model_fits(by_hand, rgb):
            self.select(self._key(by_hand))
            return
        cur = self.current()
        try:
            kinds = self.kinds or tuple(sorted({i.card.kind for i in self._infos})) or ("instance", "semantic")
            name = default_model_for(rgb, image_kind, kinds)
        except Exception as exc:  # noqa: BLE001
            log.warning("default_model_for failed: %s", exc)
            name = None
        if name is not None and self.select(name):
            return
        if cur is not None and model_fits(cur, rgb):
            return
        fitting = next((i for i in self._infos if model_fits(i, rgb) and i.card.output.get("auto", True) is not False),
                       None) or next((i for i in self._infos if model_fits(i, rgb)), None)
        if fitting is not None:
            self.select(self._key(fitting))

    def kind_warning(self, image_kind: str | None) -> str | None:
        """The warning for running the selected model on an image of ``image_kind`` (None when it fits)."""
        from ...models.kinds import kind_mismatch

        cur = self.current()
        if cur is None or image_kind is None:
            return None
        try:
            msg = kind_mismatch(cur.card, image_kind)
        except Exception:  # an odd card or kind: no warning  # noqa: BLE001
            return None
        return None if msg is None else msg[:1].upper() + msg[1:] + "."

    def add_path(self, path: str) -> ModelInfo:
        """Add a model folder from disk to the list and select it.

        Raises
        ------
        ModelError
            If the folder is not a readable model.
        """
        from ...models.registry import resolve_model

        info = resolve_model(path)
        if self.kinds is not None and info.card.kind not in self.kinds:
            raise ModelError(
                f"model {info.name!r} is a {info.card.kind} model; this widget takes {' or '.join(self.kinds)} models"
            )
        if all(self._key(i) != self._key(info) for i in self._extra):
            self._extra.append(info)
        self.refresh()
        self.select(self._key(info))
        self._by_hand = self._key(info)
        return info

    def _on_activated(self, *_: Any) -> None:
        cur = self.current()
        self._by_hand = self._key(cur) if cur is not None else None

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder (model.json + weights.safetensors)")
        if not path:
            return
        try:
            self.add_path(path)
        except Exception as exc:  # noqa: BLE001
            _notify_error(f"Not a usable model folder: {exc}")


class DevicePicker(QComboBox):
    """``auto`` plus the devices torch reports; filled from a background thread.

    Until :func:`~napari_medseg.models.device.available_devices` has answered
    (it imports torch, which takes seconds), the list holds ``auto`` and
    ``cpu``.  :attr:`ready` tells whether the real list arrived.
    """

    devicesChanged = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.addItems(["auto", "cpu"])
        self.setToolTip("auto: CUDA if present, else Apple MPS, else CPU")
        self.ready = False
        self._worker = None

    def device(self) -> str:
        """The selected device string (``auto``, ``cpu``, ``cuda:0``...)."""
        return self.currentText() or "auto"

    def populate(self) -> None:
        """Ask torch for the available devices in a worker thread (once).

        If the picker is destroyed first (its dock or the viewer closed while
        torch imports), the answer is dropped and the closing waits for it
        (bounded, :class:`~napari_medseg._napari._worker.BackgroundCall`).
        """
        if self._worker is not None or self.ready:
            return
        from ...models.device import available_devices
        from .._worker import BackgroundCall

        self._worker = BackgroundCall(available_devices, self.set_devices, self._on_error, owner=self)
        self._worker.start()

    def set_devices(self, devices: list[str]) -> None:
        """Replace the list, keeping the selection when it is still offered."""
        keep = self.device()
        devices = list(devices) or ["auto", "cpu"]
        if "auto" not in devices:
            devices.insert(0, "auto")
        self.blockSignals(True)
        try:
            self.clear()
            self.addItems(devices)
            self.setCurrentIndex(max(0, self.findText(keep)))
        finally:
            self.blockSignals(False)
        self.ready = True
        self.devicesChanged.emit(devices)

    def _on_error(self, exc: Exception) -> None:
        log.warning("available_devices failed: %s", exc)
        self.ready = True


#: Training arithmetic offered by the Train and Classify docks (``precision=`` of the trainers).
TRAIN_PRECISIONS = ("auto", "float32", "bfloat16")


def precision_combo() -> QComboBox:
    """A combo of :data:`TRAIN_PRECISIONS` for a training dock's Advanced section (``currentText()``)."""
    combo = QComboBox()
    combo.addItems(list(TRAIN_PRECISIONS))
    combo.setToolTip("Training arithmetic. auto: bfloat16 on CPUs with native BF16 (AVX-512 BF16 or AMX; "
                     "~2x faster, same loss curve), mixed precision on CUDA, float32 elsewhere")
    return combo


def spin_box(lo: float, hi: float, value: float, step: float | None = None, *, decimals: int | None = None,
             special: str | None = None, tip: str = "") -> QSpinBox | QDoubleSpinBox:
    """An integer spin box (a float one with ``decimals``): range, value, step, the text of its minimum, tooltip."""
    s = QSpinBox() if decimals is None else QDoubleSpinBox()
    if decimals is not None:
        s.setDecimals(decimals)
    s.setRange(lo, hi)
    if step is not None:
        s.setSingleStep(step)
    s.setValue(value)
    if special:
        s.setSpecialValueText(special)
    s.setToolTip(tip)
    return s


def collapsible_form(title: str) -> tuple[QCollapsible, QFormLayout]:
    """A collapsed section called ``title`` (an "Advanced" box) and the margin-less form inside it, for its rows."""
    section = QCollapsible(title)
    inner = QWidget()
    form = QFormLayout(inner)
    form.setContentsMargins(0, 0, 0, 0)
    section.addWidget(inner)
    return section, form


def suggest_model_name(edit: QLineEdit, stem: str) -> None:
    """Put a name for a new user model that is not taken yet (``stem``, ``stem-2``...) into ``edit``.

    An unreadable user model folder leaves ``edit`` as it is (and logs why).
    """
    from ...training.finetune import default_model_name

    try:
        edit.setText(default_model_name(stem))
    except Exception as exc:  # an unreadable user folder must not break the widget  # noqa: BLE001
        log.warning("cannot list models: %s", exc)


def compact_combo(combo: QComboBox, chars: int = 12) -> QComboBox:
    """Make ``combo``'s width independent of its items (long column or layer names): ``chars`` characters wide."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)
    return combo


#: Every dock fits this width (px) and, scrolled, this height: two docks side by side or stacked on a
#: 1366x768 laptop screen.
DOCK_MAX_WIDTH = 360
DOCK_MIN_HEIGHT = 300


class DockScroll(QScrollArea):
    """The scroll area a dock's rows live in: as wide as its content, scrolled vertically when the dock is short.

    Its minimum width is the content's (plus the scroll bar), so nothing is
    ever cut off sideways; its minimum height is at most
    :data:`DOCK_MIN_HEIGHT`, so a dock can share a laptop screen's height.
    """

    def __init__(self, content: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(content)
        content.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the content's minimum changed: so does the dock's
        return super().eventFilter(obj, event)

    def _bar(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:
        inner = self.widget().minimumSizeHint()
        return QSize(inner.width() + self._bar(), min(inner.height(), DOCK_MIN_HEIGHT))

    def sizeHint(self) -> QSize:
        inner = self.widget().sizeHint()
        return QSize(inner.width() + self._bar(), inner.height())


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """A vertical layout for ``widget``'s rows, inside a :class:`DockScroll` that fills ``widget``."""
    content = QWidget()
    content.setObjectName("medseg_dock_content")
    lay = QVBoxLayout(content)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(DockScroll(content))
    return lay


class RunCancelRow(QWidget):
    """Run and Cancel buttons; :meth:`set_running` flips which one is enabled."""

    def __init__(self, run_text: str = "Run", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.run_button)
        lay.addWidget(self.cancel_button)
        self.set_running(False)

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)


class KindNote(QLabel):
    """An orange line under the model row: the selected model was made for other images (empty otherwise)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("", parent)
        self.setWordWrap(True)
        self.setStyleSheet("color: #e0a030;")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.setVisible(False)

    def show_warning(self, text: str | None) -> None:
        """Show ``text`` (hidden when None)."""
        self.setText(text or "")
        self.setToolTip(text or "")
        self.setVisible(bool(text))


class StatusLine(QLabel):
    """One wrapped, selectable line saying what happened last."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)

    def set(self, text: str, *, error: bool = False) -> None:
        self.setText(text)
        self.setToolTip(text)
        self.setStyleSheet("color: #e05555;" if error else "")


class OutputLayers:
    """The output layers a widget made, by kind and source layer: a re-run replaces only these.

    A user's layer that merely has the same name is never touched (the new
    one is then called ``<name> [1]``); a layer the user deleted is simply
    added again.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        self._made: dict[tuple[str, int], tuple[Any, Any]] = {}  # (kind, id(source)) -> weakrefs (source, layer)

    def get(self, kind: str, source: Any) -> Any:
        """The ``kind`` layer made for ``source`` if it is still in the viewer, else None."""
        entry = self._made.get((kind, id(source))) if source is not None else None
        if entry is None:
            return None
        src, out = entry[0](), entry[1]()
        if src is source and out is not None and any(lay is out for lay in self.viewer.layers):
            return out
        return None

    def put(self, kind: str, source: Any, layer: Any, keep: tuple[str, ...] = ("visible", "opacity"),
            at: int | None = None) -> Any:
        """Put ``layer`` in the viewer in place of the ``kind`` layer made for ``source`` (same name and
        position, its ``keep`` attributes carried over), or add it under a free name (at layer index ``at``;
        None: on top); returns ``layer``."""
        import weakref

        old = self.get(kind, source)
        if old is not None:
            idx = self.viewer.layers.index(old)
            layer.name = old.name
            for attr in keep:
                setattr(layer, attr, getattr(old, attr))
            self.viewer.layers.remove(old)
            self.viewer.layers.insert(idx, layer)
        else:
            layer.name = unique_name(self.viewer, layer.name)
            if at is None:
                self.viewer.add_layer(layer)
            else:
                self.viewer.layers.insert(at, layer)
        if source is not None:
            self._made[(kind, id(source))] = (weakref.ref(source), weakref.ref(layer))
        return layer

    def drop(self, kind: str, source: Any) -> None:
        """Remove the ``kind`` layer made for ``source`` from the viewer, if it is still there."""
        old = self.get(kind, source)
        if old is not None:
            self.viewer.layers.remove(old)


def viewer_camera(viewer: napari.Viewer) -> Any:
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    cam = getattr(scene, "camera", None)
    return cam if cam is not None else viewer.camera


def center_on(viewer: napari.Viewer, world: Any, fixed: dict[int, float] | None = None) -> None:
    """Show a world position: the axes not displayed slice through it, the camera centres on it.

    Parameters
    ----------
    viewer : napari.Viewer
    world : array-like
        The position on the viewer's last ``len(world)`` axes (a layer's
        ``data_to_world`` of an index: scale, translate and affine included).
    fixed : dict of int to float, optional
        World values of other viewer axes (e.g. the time point of a 3D result in a 4D viewer).
    """
    import numpy as np

    dims = viewer.dims
    w = np.asarray(world, np.float64).ravel()
    point = np.asarray(dims.point, np.float64)
    point[dims.ndim - w.size:] = w
    for ax, value in (fixed or {}).items():
        if 0 <= ax < dims.ndim:
            point[ax] = value
    for ax in dims.not_displayed:
        dims.set_point(ax, float(point[ax]))
    viewer_camera(viewer).center = tuple(float(point[d]) for d in dims.displayed)


#: Status text after a cancelled job that adds layers (``{elapsed}``: seconds).
CANCELLED_NO_LAYER = "Cancelled after {elapsed:.1f} s; no layer was added."


def report_error(status: StatusLine, exc: BaseException, what: str) -> str:
    """Show a failure in the status line (red) and as a napari error notification.

    A :class:`~napari_medseg.errors.MedsegError` is a problem the user can fix
    and reads ``"<what> failed: <message>"``; any other exception is a bug:
    its traceback goes to the log and the text names its type,
    ``"<what> failed (<Type>): <message>"``.

    Parameters
    ----------
    status : StatusLine
        Where the widget says what happened last.
    exc : BaseException
        The error (e.g. :attr:`JobOutcome.error`).
    what : str
        The action that failed, capitalised (``"Segmentation"``, ``"Training"``).

    Returns
    -------
    str
        The message shown.
    """
    if isinstance(exc, MedsegError):
        msg = f"{what} failed: {exc}"
    else:
        log.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
        msg = f"{what} failed ({type(exc).__name__}): {exc}"
    status.set(msg, error=True)
    _notify_error(msg)
    return msg


def finish_job(
    outcome: JobOutcome,
    status: StatusLine,
    what: str,
    show: Callable[[Any], str | None],
    *,
    buttons: RunCancelRow | None = None,
    cancelled: str | Callable[[JobOutcome], str | None] = CANCELLED_NO_LAYER,
    show_what: str | None = None,
) -> bool:
    """Show how a :class:`~napari_medseg._napari._worker.ProgressJob` ended (its ``on_done``).

    In order: ``buttons`` go back to "not running"; a cancelled job sets the
    ``cancelled`` text; a failed job goes to :func:`report_error` as
    ``what``; a successful one calls ``show(outcome.result)``, whose returned
    text (if any) becomes the status.  An exception raised by ``show`` (e.g. a
    result napari cannot display) is reported as ``show_what`` (default
    ``what``) instead of escaping into Qt's event loop.

    Parameters
    ----------
    outcome : JobOutcome
    status : StatusLine
    what : str
        The job's action, for error messages (``"Segmentation"``).
    show : callable
        ``show(result) -> str | None``: adds the layers / tables of a result
        and returns the success text (``None`` leaves the status as it is).
    buttons : RunCancelRow, optional
        Reset to "not running" first.
    cancelled : str or callable
        Status text for a cancelled job, formatted with ``elapsed`` (seconds),
        or ``cancelled(outcome) -> str | None`` (``None``: status untouched).
    show_what : str, optional
        The action named when ``show`` fails.

    Returns
    -------
    bool
        True when the result was shown.
    """
    if buttons is not None:
        buttons.set_running(False)
    if outcome.cancelled:
        text = cancelled(outcome) if callable(cancelled) else cancelled.format(elapsed=outcome.elapsed)
        if text is not None:
            status.set(text)
        return False
    if outcome.error is not None:
        report_error(status, outcome.error, what)
        return False
    try:
        text = show(outcome.result)
    except Exception as exc:  # keep napari alive whatever the layers make of the result  # noqa: BLE001
        report_error(status, exc, show_what or what)
        return False
    if text is not None:
        status.set(text)
    return True


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)
