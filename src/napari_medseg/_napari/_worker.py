"""Run a core progress generator in a napari thread worker.

The core's long jobs are generators that ``yield`` :class:`~napari_medseg.progress.Progress`
and ``return`` a result.  :class:`ProgressJob` runs one in a napari
:class:`~napari.qt.threading.GeneratorWorker` (a ``QRunnable`` on Qt's global
thread pool), maps every yield to a napari progress bar (shown in the activity
dock) and to an optional callback, and reports exactly once, in the GUI
thread, how the job ended: with a result, an error, or cancelled.

Cancel does two things: ``worker.quit()``, which stops the generator at its
next yield (the generator is then closed in the worker thread, so its
``finally`` blocks run), and :meth:`CancelToken.cancel`, which the core checks
inside long stretches that do not yield (model loading, one tile batch).

Exceptions raised by the core are caught in the worker thread and handed to
``on_done`` as :attr:`JobOutcome.error`; they never propagate into Qt's event
loop, so napari keeps running and the caller decides how to show them.

This module imports napari/Qt; only widgets import it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress as napari_progress

from ..progress import Cancelled, CancelToken, Progress

__all__ = ["JobOutcome", "ProgressJob"]


@dataclass
class JobOutcome:
    """How a job ended; exactly one of ``result``/``error``/``cancelled`` is meaningful.

    Attributes
    ----------
    result : object
        The generator's return value, passed through ``postprocess`` if given
        (None when the job failed or was cancelled).
    error : Exception or None
        The exception the job raised, if any (never :class:`Cancelled`).
    cancelled : bool
        True when the user cancelled, whether the generator noticed it at a
        yield (``worker.quit()``) or through the :class:`CancelToken`.
    elapsed : float
        Wall-clock seconds from :meth:`ProgressJob.start` to the end of the job.
    """

    result: Any = None
    error: Exception | None = None
    cancelled: bool = False
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled


class _ClosingGeneratorWorker(GeneratorWorker):
    """A GeneratorWorker that closes its generator in the worker thread when it stops.

    superqt's worker simply stops calling ``send`` after ``quit()``, leaving the
    generator suspended until garbage collection (in whatever thread that
    happens).  Closing it here runs the core's cleanup deterministically, off
    the GUI thread.
    """

    def work(self):
        try:
            return super().work()
        finally:
            self._gen.close()


def _drive(
    make_gen: Callable[[CancelToken], Generator[Progress, None, Any]],
    token: CancelToken,
    postprocess: Callable[[Any], Any] | None,
) -> Generator[Progress, None, JobOutcome]:
    """Worker-thread body: run the core generator, never let an exception escape."""
    try:
        result = yield from make_gen(token)
        if postprocess is not None:
            result = postprocess(result)
    except Cancelled:
        return JobOutcome(cancelled=True)
    except Exception as exc:  # handed to the GUI thread, shown there  # noqa: BLE001
        return JobOutcome(error=exc)
    return JobOutcome(result=result)


class ProgressJob:
    """One run of a core progress generator in a napari thread worker.

    Parameters
    ----------
    make_gen : callable
        ``make_gen(token) -> generator`` building the core generator; called in
        the worker thread, so it may import torch or read files.
    on_done : callable
        ``on_done(outcome: JobOutcome)``, called once in the GUI thread when
        the job has ended (after the worker thread finished).
    on_progress : callable, optional
        ``on_progress(p: Progress)``, called in the GUI thread for each yield.
    postprocess : callable, optional
        ``postprocess(result) -> object`` applied to the generator's return
        value in the worker thread (e.g. counting objects), so that the GUI
        thread never does array work.
    desc : str
        Title of the napari progress bar.
    owner : QObject, optional
        The widget that started the job.  If it is destroyed (dock closed,
        viewer closed) the job is cancelled and ``on_done`` is not called.

    Examples
    --------
    >>> job = ProgressJob(lambda token: segment_iter(img, cancel=token),
    ...                   on_done=show_result, desc="Segmenting")  # doctest: +SKIP
    >>> job.start()  # doctest: +SKIP
    >>> job.cancel()  # doctest: +SKIP
    """

    def __init__(
        self,
        make_gen: Callable[[CancelToken], Generator[Progress, None, Any]],
        on_done: Callable[[JobOutcome], None],
        *,
        on_progress: Callable[[Progress], None] | None = None,
        postprocess: Callable[[Any], Any] | None = None,
        desc: str = "napari-medseg",
        owner: Any = None,
    ) -> None:
        self.token = CancelToken()
        self._make_gen = make_gen
        self._on_done = on_done
        self._on_progress = on_progress
        self._postprocess = postprocess
        self._desc = desc
        self._outcome: JobOutcome | None = None
        self._t0 = 0.0
        self._done = False
        self.pbar: napari_progress | None = None
        self.worker: GeneratorWorker | None = None
        self._owner_alive = True
        if owner is not None:
            owner.destroyed.connect(self._owner_destroyed)

    @property
    def running(self) -> bool:
        """Whether the job was started and has not ended yet."""
        return self.worker is not None and not self._done

    @property
    def cancel_requested(self) -> bool:
        return self.token.cancelled

    def start(self) -> None:
        """Start the worker thread (returns at once)."""
        if self.worker is not None:
            raise RuntimeError("a ProgressJob can be started only once")
        self._t0 = time.perf_counter()
        self.pbar = napari_progress(total=0, desc=self._desc)
        self.worker = create_worker(
            _drive,
            self._make_gen,
            self.token,
            self._postprocess,
            _worker_class=_ClosingGeneratorWorker,
            _start_thread=False,
            _ignore_errors=True,  # errors are reported through on_done, not re-raised
        )
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)
        self.worker.start()

    def cancel(self) -> None:
        """Ask the job to stop: at its next yield, or at the core's next token check."""
        self.token.cancel()
        if self.worker is not None:
            self.worker.quit()
        if self.pbar is not None and not self._done:
            self.pbar.set_description(f"{self._desc}: cancelling")

    # --- slots, all run in the GUI thread -------------------------------------------------
    def _yielded(self, p: Any) -> None:
        if not isinstance(p, Progress) or self._done:
            return
        # The callback first: updating napari's progress bar can process pending
        # events re-entrantly (the activity dock repaints), which may deliver
        # `finished` before this slot returns.
        if self._on_progress is not None:
            self._on_progress(p)
        pbar = self.pbar
        if pbar is None or self._done:
            return
        total = max(int(p.total), 0)
        if total != pbar.total:
            pbar.total = total
        pbar.n = min(int(p.step), total) if total else int(p.step)
        if p.message:
            pbar.set_description(f"{self._desc}: {p.message}")
        if not self._done:
            pbar.update(0)  # emits the value event with the new n

    def _returned(self, outcome: Any) -> None:
        if isinstance(outcome, JobOutcome):
            self._outcome = outcome

    def _errored(self, exc: Exception) -> None:
        # Only reached for a failure outside the core generator (it catches its own).
        self._outcome = JobOutcome(error=exc)

    def _finished(self) -> None:
        if self._done:
            return
        self._done = True
        if self.pbar is not None:
            self.pbar.close()
        outcome = self._outcome
        if self.token.cancelled:
            # quit() makes the worker skip `returned`; a cancel that came after the
            # last yield still counts as cancelled, so no output is created.
            outcome = JobOutcome(cancelled=True)
        elif outcome is None:
            outcome = JobOutcome(error=RuntimeError("the worker thread ended without a result"))
        outcome.elapsed = time.perf_counter() - self._t0
        if self._owner_alive:
            self._on_done(outcome)

    def _owner_destroyed(self, *_: Any) -> None:
        self._owner_alive = False
        if self.running:
            self.cancel()
