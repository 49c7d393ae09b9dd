"""Progress reports and cooperative cancellation for long-running generators.

Long loops in the core (tiles, epochs, files) are written as generators that
``yield`` :class:`Progress` objects and ``return`` their result.  The napari
widgets run them in a ``thread_worker`` (``worker.quit()`` stops them at the
next yield), the CLI drains them under a tqdm bar, and the Python API drains
them with :func:`run`.  No Qt type ever enters the core.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Attributes
    ----------
    step : int
        Units of work done so far (0 <= step <= total).
    total : int
        Units of work in all; 0 when unknown.
    message : str
        Short human-readable description of the current stage.
    info : dict
        Optional structured extras (e.g. ``{"loss": 0.12, "epoch": 3}``).
    """

    step: int
    total: int
    message: str = ""
    info: dict | None = None

    @property
    def fraction(self) -> float:
        """Fraction done in [0, 1]; 0 when the total is unknown."""
        return min(1.0, self.step / self.total) if self.total else 0.0


class Cancelled(Exception):
    """Raised inside a generator when its :class:`CancelToken` was set."""


class CancelToken:
    """Thread-safe flag that a caller sets to ask a running job to stop.

    Examples
    --------
    >>> token = CancelToken()
    >>> token.cancel()
    >>> token.cancelled
    True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` if :meth:`cancel` was called."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


ProgressGen = Generator[Progress, None, T]


def run(
    gen: Generator[Progress, Any, T],
    callback: Callable[[Progress], Any] | None = None,
) -> T:
    """Drain a progress generator and return its result.

    Parameters
    ----------
    gen : generator
        A generator yielding :class:`Progress` and returning a result.
    callback : callable, optional
        Called with each :class:`Progress` as it is yielded.

    Returns
    -------
    object
        The generator's return value.

    When the callback raises (Ctrl-C in a progress bar, an error while
    reporting), the generator is closed at once, so that it can clean up
    (a training run saves its best checkpoint marked cancelled).
    """
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            try:
                callback(p)
            except BaseException:
                gen.close()
                raise
