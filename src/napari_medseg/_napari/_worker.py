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

Closing never crashes napari.  Every job (and every :class:`BackgroundCall`,
e.g. the device probe that imports torch) has an ``owner`` widget.  When the
owner is destroyed (its dock removed, the viewer closed) the job is cancelled,
its signals are disconnected, no callback runs any more, and the GUI thread
waits up to :data:`CLOSE_WAIT_S` (shared by all owners destroyed together) for
the worker thread to end.  At interpreter exit the threads still running are
cancelled and waited for up to :data:`EXIT_WAIT_S`: a worker thread that
outlives Qt's objects makes PyQt abort the process.  napari's own "cancel all
tasks" on close (``worker.quit``) sets the job's :class:`CancelToken` too.

This module imports napari/Qt; only widgets import it.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker, create_worker
from napari.utils import progress as napari_progress
from qtpy.QtCore import QTimer

from ..progress import Cancelled, CancelToken, Progress

__all__ = ["CLOSE_WAIT_S", "EXIT_WAIT_S", "BackgroundCall", "JobOutcome", "ProgressJob"]

#: Seconds the GUI thread waits for the worker threads of widgets destroyed together (a viewer closing).
CLOSE_WAIT_S = 5.0
#: Seconds interpreter exit waits for worker threads still running (e.g. an ``import torch`` in progress).
EXIT_WAIT_S = 30.0


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


_live: set[_GuardedRun] = set()  # workers started whose thread has not ended
_live_lock = threading.Lock()


class _GuardedRun:
    """Mixin for superqt workers: tells when its thread ended, can be dropped before it starts, never aborts Qt.

    ``on_quit`` is called by :meth:`quit` (napari's "cancel all tasks" calls
    ``worker.quit`` too), so the owner's :class:`CancelToken` follows.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_quit: Callable[[], None] | None = None
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._began = False
        self._dropped = False
        self._thread: int | None = None  # ident of the thread running it

    def start(self) -> None:
        with _live_lock:
            _live.add(self)
        super().start()

    def quit(self) -> None:
        super().quit()
        if self.on_quit is not None:
            self.on_quit()

    def run(self) -> None:
        with self._lock:
            if self._dropped:  # stopped before the thread pool got to it: nothing to run
                return
            self._began = True
            self._thread = threading.get_ident()
        try:
            super().run()
        except RuntimeError:
            # An emit on the worker's signals object after Qt deleted it (interpreter
            # exit): nobody is listening, and an exception escaping QRunnable.run makes
            # PyQt abort the process.
            pass
        finally:
            self._forget()

    @property
    def ended(self) -> bool:
        """Whether its thread has ended (or it was dropped before it started)."""
        return self._ended.is_set()

    def _forget(self) -> None:
        with _live_lock:
            _live.discard(self)
        self._ended.set()

    def stop(self, timeout: float) -> bool:
        """Quit, then wait up to ``timeout`` s for the thread; True when it ended or never started.

        Never waits when called from the worker's own thread (a widget garbage-collected there).
        """
        self.quit()
        with self._lock:
            if not self._began:
                self._dropped = True
                self._forget()
        if self._thread == threading.get_ident():
            return False
        return self._ended.wait(max(timeout, 0.0))


class _ClosingGeneratorWorker(_GuardedRun, GeneratorWorker):
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


class _GuardedFunctionWorker(_GuardedRun, FunctionWorker):
    """A FunctionWorker with :class:`_GuardedRun`'s end-of-thread event and exit safety."""


_close_deadline = 0.0  # shared by the owners destroyed in one burst (a viewer closing), until the event loop runs


def _end_close_burst() -> None:
    global _close_deadline
    _close_deadline = 0.0


def _wait_for(worker: _GuardedRun) -> bool:
    """Stop ``worker`` and wait for its thread within the current closing deadline (GUI thread)."""
    global _close_deadline
    now = time.monotonic()
    if now >= _close_deadline:
        _close_deadline = now + CLOSE_WAIT_S
        QTimer.singleShot(0, _end_close_burst)
    return worker.stop(_close_deadline - now)


@atexit.register
def _stop_all_at_exit() -> None:
    """Cancel the worker threads still running and wait for them (bounded), before Qt's objects go away."""
    with _live_lock:
        workers = list(_live)
    deadline = time.monotonic() + EXIT_WAIT_S
    for w in workers:
        w.stop(deadline - time.monotonic())


class _OwnedWorker:
    """A worker whose callbacks run only while its ``owner`` QObject lives; stopped when it is destroyed.

    Subclasses create :attr:`worker` (a :class:`_GuardedRun`), connect its
    signals through :meth:`_connect` and may extend :meth:`_release`.
    """

    def __init__(self, owner: Any) -> None:
        self.worker: _GuardedRun | None = None
        self._owner_alive = True
        self._connections: list[tuple[Any, Callable[..., None]]] = []
        owner.destroyed.connect(self._owner_destroyed)

    def _connect(self, signal: Any, slot: Callable[..., None]) -> None:
        signal.connect(slot)
        self._connections.append((signal, slot))

    def _release(self) -> None:
        """Cancel the work and drop what refers to the owner's world (the owner was just destroyed)."""

    def _settle(self) -> None:
        """Record that the work is over: its thread ended, but its queued end signal went with the owner."""

    def _owner_destroyed(self, *_: Any) -> None:
        self._owner_alive = False
        worker = self.worker
        # Nothing runs any more (or the interpreter is finalizing, when Qt objects may be gone
        # already and touching a signal can crash): the callbacks check `_owner_alive`.
        if worker is None or sys.is_finalizing():
            return
        if worker.ended:  # e.g. cancelled by the dock's closeEvent and already stopped
            self._settle()
            return
        self._release()
        for signal, slot in self._connections:
            with contextlib.suppress(TypeError, RuntimeError):  # already disconnected, or the signals object is gone
                signal.disconnect(slot)
        self._connections.clear()
        _wait_for(worker)


class BackgroundCall(_OwnedWorker):
    """Call ``func()`` in a worker thread; its result or error reaches the GUI thread while ``owner`` lives.

    For short jobs without progress (the device probe); no progress bar, no
    napari task entry.  ``func`` cannot be interrupted: when the owner is
    destroyed the call's result is dropped and the GUI thread waits (bounded,
    :data:`CLOSE_WAIT_S`) for it to return.

    Parameters
    ----------
    func : callable
        ``func() -> object``, run in the worker thread.
    on_result : callable
        ``on_result(value)``, called in the GUI thread.
    on_error : callable
        ``on_error(exc)``, called in the GUI thread when ``func`` raised.
    owner : QObject
        The widget the callbacks belong to.
    """

    def __init__(self, func: Callable[[], Any], on_result: Callable[[Any], None],
                 on_error: Callable[[Exception], None], *, owner: Any) -> None:
        super().__init__(owner)
        self._func = func
        self._on_result = on_result
        self._on_error = on_error

    def start(self) -> None:
        """Start the worker thread (returns at once)."""
        if self.worker is not None:
            raise RuntimeError("a BackgroundCall can be started only once")
        from superqt.utils import create_worker as superqt_worker  # no napari task entry for this

        self.worker = superqt_worker(self._func, _worker_class=_GuardedFunctionWorker, _start_thread=False,
                                     _ignore_errors=True)
        self._connect(self.worker.returned, self._returned)
        self._connect(self.worker.errored, self._errored)
        self.worker.start()

    def _returned(self, value: Any) -> None:
        if self._owner_alive:
            self._on_result(value)

    def _errored(self, exc: Exception) -> None:
        if self._owner_alive:
            self._on_error(exc)


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


class ProgressJob(_OwnedWorker):
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
    owner : QObject
        The widget that started the job.  When it is destroyed (dock removed,
        viewer closed) the job is cancelled, neither ``on_progress`` nor
        ``on_done`` is called any more, and the GUI thread waits (bounded) for
        the worker thread to end.

    Examples
    --------
    >>> job = ProgressJob(lambda token: segment_iter(img, cancel=token),
    ...                   on_done=show_result, desc="Segmenting", owner=widget)  # doctest: +SKIP
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
        owner: Any,
    ) -> None:
        super().__init__(owner)
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
        self.worker.on_quit = self.token.cancel  # napari's "cancel all tasks" on close quits the worker
        for signal, slot in ((self.worker.yielded, self._yielded), (self.worker.returned, self._returned),
                             (self.worker.errored, self._errored), (self.worker.finished, self._finished)):
            self._connect(signal, slot)
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
        if not isinstance(p, Progress) or self._done or not self._owner_alive:
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

    def _release(self) -> None:
        if self.running:
            self.cancel()
        self._settle()  # its `finished` is disconnected next: the job is over for the GUI

    def _settle(self) -> None:
        self._done = True
        if self.pbar is not None:
            self.pbar.close()
