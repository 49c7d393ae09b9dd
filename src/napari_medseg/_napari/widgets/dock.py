"""What the napari-medseg docks that run a job are made of.

* :class:`ModelRows` - the "image layer + model (+ the card's kind note) +
  device" pickers of a dock that runs a model on an image, wired together:
  the model follows the image, the note follows both, the device list is
  asked for off the GUI thread.
* :class:`JobDock` - the base of those docks: the viewer, the Run/Cancel row
  and the status line, one :class:`~napari_medseg._napari._worker.ProgressJob`
  at a time (``running``, :meth:`~JobDock.cancel`, progress in the status
  line, how it ended through :func:`~.common.finish_job`), cancelled when the
  dock closes.

Neither runs a model; torch is only imported off the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from napari.layers import Image
from qtpy.QtCore import QObject
from qtpy.QtWidgets import QFormLayout, QWidget

from ...errors import MedsegError
from .._worker import JobOutcome, ProgressJob
from ..layers import layer_image_kind
from .common import DevicePicker, KindNote, LayerCombo, ModelPicker, RunCancelRow, StatusLine, finish_job

if TYPE_CHECKING:
    import napari

    from ...progress import CancelToken, Progress

T = TypeVar("T")


class ModelRows(QObject):
    """The image layer, model and device pickers of a dock, wired together.

    A newly selected image layer selects the model that fits it
    (:meth:`ModelPicker.pick_default_for`: its channels and, with
    ``by_kind``, its image kind) unless a model picked by hand still fits;
    with ``note``, a :class:`KindNote` under the model row says when the
    selected model was made for other images than the selected one.  It is a
    child of its model picker (Qt keeps it, and its wiring, as long as the
    picker lives), so a dock may lay the pickers out wherever it likes.

    Parameters
    ----------
    viewer : napari.Viewer
    kinds : tuple of str
        The model output kinds listed (``("instance", "semantic")``...).
    note : bool
        Make :attr:`kind_note` (else it is None).
    by_kind : bool
        Let the image kind (fluorescence, H&E...) choose the default model, not only RGB or not.

    Attributes
    ----------
    image_combo : LayerCombo
        The viewer's Image layers.
    model_picker : ModelPicker
    kind_note : KindNote or None
    device_picker : DevicePicker
    """

    def __init__(self, viewer: napari.Viewer, kinds: tuple[str, ...], *, note: bool = True,
                 by_kind: bool = True) -> None:
        model_picker = ModelPicker(kinds=kinds)
        super().__init__(model_picker)
        self.model_picker = model_picker
        self.image_combo = LayerCombo(viewer, Image)
        self.kind_note = KindNote() if note else None
        self.device_picker = DevicePicker()
        self._by_kind = by_kind
        self.image_combo.layerChanged.connect(self.follow_image)
        if self.kind_note is not None:
            self.model_picker.modelChanged.connect(self.update_note)

    def add_rows(self, form: QFormLayout, *, device: bool = True) -> None:
        """Add the rows "image", "model", the note (when made) and, with ``device``, "device" to ``form``."""
        form.addRow("image", self.image_combo)
        form.addRow("model", self.model_picker)
        if self.kind_note is not None:
            form.addRow(self.kind_note)
        if device:
            form.addRow("device", self.device_picker)

    def start(self) -> None:
        """Fill the model list, pick the model for the selected image, ask for the devices (background)."""
        self.model_picker.refresh()
        self.follow_image(self.image_combo.layer())
        self.device_picker.populate()

    def kind_warning(self) -> str | None:
        """The selected model was made for other images than the selected one (None: fine, unknown or no image)."""
        layer = self.image_combo.layer()
        return None if layer is None else self.model_picker.kind_warning(layer_image_kind(layer))

    def follow_image(self, layer: Any) -> None:
        """Select the default model for ``layer`` (an Image layer or None) and update the note."""
        if layer is not None:
            self.model_picker.pick_default_for(bool(layer.rgb), layer_image_kind(layer) if self._by_kind else None)
        self.update_note()

    def update_note(self, *_: Any) -> None:
        """Show or hide the kind note for the selected image and model."""
        if self.kind_note is not None:
            self.kind_note.show_warning(self.kind_warning())


class JobDock(QWidget):
    """Base of the docks that run one background job at a time, with a Run/Cancel row and a status line.

    A subclass builds its rows (``self.status`` exists from the start, the
    Run/Cancel row comes from :meth:`run_row`), starts its job with
    :meth:`start_job` and shows how it ended with :meth:`end_job`.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari (npe2 widget contribution).
    status_text : str
        What the status line says before the first run.

    Attributes
    ----------
    viewer : napari.Viewer
    status : StatusLine
    buttons : RunCancelRow or None
        The row made by :meth:`run_row` (with ``run_button`` and ``cancel_button``).
    model_rows : ModelRows or None
        Set by a subclass that has one: its model list is re-read whenever the dock is shown.
    """

    #: The status while a cancel is on its way (None: the status stays until the job has ended).
    cancelling_text: str | None = "Cancelling\u2026"

    def __init__(self, napari_viewer: napari.Viewer, status_text: str = "") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.status = StatusLine(status_text)
        self.buttons: RunCancelRow | None = None
        self.model_rows: ModelRows | None = None
        self._job: ProgressJob | None = None

    @property
    def running(self) -> bool:
        """Whether the dock's job is in progress."""
        return self._job is not None and self._job.running

    def run_row(self, run_text: str, on_run: Callable[[], None]) -> RunCancelRow:
        """The Run/Cancel row (also ``self.buttons``, ``self.run_button``, ``self.cancel_button``): Run calls
        ``on_run``, Cancel :meth:`cancel`."""
        self.buttons = RunCancelRow(run_text)
        self.run_button, self.cancel_button = self.buttons.run_button, self.buttons.cancel_button
        self.run_button.clicked.connect(on_run)
        self.cancel_button.clicked.connect(self.cancel)
        return self.buttons

    def prepared(self, prepare: Callable[[], T]) -> T | None:
        """``prepare()`` (what a run needs, from the controls), or None while a job runs or when it raises a
        :class:`~napari_medseg.errors.MedsegError`, whose message then turns the status line red."""
        if self.running:
            return None
        try:
            return prepare()
        except MedsegError as exc:
            self.status.set(str(exc), error=True)
            return None

    def start_job(self, make_gen: Callable[[CancelToken], Generator[Progress, None, Any]],
                  on_done: Callable[[JobOutcome], None], *, desc: str, message: str, progress: bool = True,
                  postprocess: Callable[[Any], Any] | None = None) -> ProgressJob:
        """Run ``make_gen(token)`` in a worker thread (:class:`ProgressJob`, owned by this dock).

        Parameters
        ----------
        make_gen, on_done, postprocess
            As :class:`~napari_medseg._napari._worker.ProgressJob` takes them.
        desc : str
            Title of the napari progress bar.
        message : str
            The status line while the job starts.
        progress : bool
            Show every step in the status line (:meth:`_on_progress`).

        Returns
        -------
        ProgressJob
            The started job (also ``self._job``).
        """
        self._job = ProgressJob(make_gen, on_done, on_progress=self._on_progress if progress else None,
                                postprocess=postprocess, desc=desc, owner=self)
        if self.buttons is not None:
            self.buttons.set_running(True)
        self.status.set(message)
        self._job.start()
        return self._job

    def end_job(self, outcome: JobOutcome, what: str, show: Callable[[Any], str | None], **kwargs: Any) -> bool:
        """:func:`~.common.finish_job` with this dock's status line and Run/Cancel row."""
        return finish_job(outcome, self.status, what, show, buttons=self.buttons, **kwargs)

    def cancel(self) -> None:
        """Stop the running job at its next step; no layer is added or changed."""
        if self._job is not None and self._job.running:
            if self.cancelling_text is not None:
                self.status.set(self.cancelling_text)  # first: cancel() may deliver the job's end re-entrantly
            self._job.cancel()

    def _on_progress(self, p: Progress) -> None:
        if self._job is not None and not self._job.cancel_requested:
            total = f" ({p.step}/{p.total})" if p.total else ""
            self.status.set(f"{p.message or 'Running'}{total}")

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if self.model_rows is not None:
            self.model_rows.model_picker.refresh()  # a model just trained shows up at once

    def closeEvent(self, event: Any) -> None:
        self.cancel()
        super().closeEvent(event)
