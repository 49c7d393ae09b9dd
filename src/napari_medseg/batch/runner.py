"""Run whole-image jobs over many files on dask.distributed (or in this process).

:func:`run_batch_iter` submits, per file, the tasks of
:mod:`napari_medseg.batch.blockwise` (plan, one task per block, offsets, one
per core, the pyramid tiles, finish) as dask futures that depend on each
other; dask's scheduler spreads them over the workers, so a folder of slides
and the blocks of one huge slide keep every worker busy alike.  A file's plan
runs first (it opens the file); its other tasks are submitted when it is
done.  The scheduler is dask's (a :class:`distributed.LocalCluster` of
worker processes by default, or any scheduler address); without a cluster
(``workers=0``) the same task functions run one after the other here.

* **Resumable**: a file whose outputs exist with the same settings is
  skipped at its plan; inside a file, finished blocks, cores and pyramid
  tiles are skipped (markers beside the output).
* **Failures stay local**: a file whose plan or any task raises is reported
  (``failed`` with the error) and the others go on.
* **Tissue only**: each file's tissue is found at its plan (``tissue="auto"``:
  RGB slides; :mod:`napari_medseg.batch.tissue`) and only the blocks that
  touch it are segmented.
* **One table**: ``OUT/batch_report.csv`` (one row per file: status,
  objects, blocks run and skipped off the tissue, tissue mode and fraction,
  seconds, outputs, error) and, for detection, ``OUT/objects.csv``
  (every file's objects with a leading ``file`` column).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from ..progress import CancelToken, Progress
from . import blockwise as bw
from .plan import SourceSpec

#: Report columns, in order.
REPORT_COLUMNS = ("file", "status", "objects", "off_tissue_objects", "blocks", "active_blocks", "skipped_blocks", "tissue",
                  "tissue_fraction", "segment_seconds", "segment_cpu_seconds",
                  "finished_after_s", "labels", "table", "error")


# ---------------------------------------------------------------- executors
class InlineExecutor:
    """Runs the submitted tasks one after the other in this process (the single-process path).

    ``submit`` returns a :class:`concurrent.futures.Future` that runs when
    :meth:`completed` reaches it (tasks come back in the order they were
    submitted, which puts every task after the ones it depends on); a task
    whose arguments include a failed future fails with the same error, as
    dask's dependents do.
    """

    workers = 0

    def submit(self, fn: Callable, *args: Any) -> Future:
        fut: Future = Future()
        fut.task = (fn, args)  # type: ignore[attr-defined]
        return fut

    def completed(self, futures: Sequence[Future] = ()) -> _InlineCompleted:
        return _InlineCompleted(futures)

    def close(self) -> None:
        pass


def _run_inline(fut: Future) -> None:
    """Run a task of :class:`InlineExecutor` (once)."""
    if fut.done():
        return
    fn, args = fut.task  # type: ignore[attr-defined]
    try:
        resolved = []
        for a in args:
            if isinstance(a, Future):
                _run_inline(a)
                a = a.result()
            resolved.append(a)
        fut.set_result(fn(*resolved))
    except Exception as e:  # handed to the caller through the future  # noqa: BLE001
        fut.set_exception(e)
    del fut.task  # type: ignore[attr-defined]


class _InlineCompleted:
    def __init__(self, futures: Sequence[Future]) -> None:
        self._queue: deque = deque(futures)

    def add(self, fut: Future) -> None:
        self._queue.append(fut)

    def __iter__(self) -> Iterator[Future]:
        while self._queue:
            fut = self._queue.popleft()
            _run_inline(fut)
            yield fut


class DaskExecutor:
    """Submits tasks to a :class:`distributed.Client` (futures may be arguments of later tasks).

    Parameters
    ----------
    client : distributed.Client
    own_cluster : object, optional
        A LocalCluster this executor started and closes.
    """

    def __init__(self, client: Any, own_cluster: Any = None) -> None:
        self.client = client
        self._cluster = own_cluster

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def submit(self, fn: Callable, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def completed(self, futures: Sequence[Any] = ()) -> Any:
        from distributed import as_completed

        return as_completed(list(futures))

    def close(self) -> None:
        """Close the client and a cluster this executor started (a worker slow to stop is left to the OS)."""
        try:
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()
        except (TimeoutError, OSError):  # the results are in; a nanny that did not stop in time must not fail the run
            pass


def make_executor(workers: int = 2, scheduler: str | None = None, threads_per_worker: int = 1,
                  memory_limit: str | float | None = "auto", torch_threads: int | None = None
                  ) -> InlineExecutor | DaskExecutor:
    """The executor for a batch: dask at ``scheduler``, a LocalCluster of ``workers`` processes, or inline.

    Parameters
    ----------
    workers : int
        Worker processes of the LocalCluster; 0 runs everything in this process.
    scheduler : str, optional
        Address of a running dask scheduler (``tcp://host:8786``); its workers
        must see the input and output folders under the same paths.
    threads_per_worker : int
        Tasks at a time per worker.
    torch_threads : int, optional
        Threads of each task's torch on a LocalCluster; default
        ``physical cores // (workers * threads_per_worker)``, at least 1.
    memory_limit : str or float, optional
        Per-worker memory limit of the LocalCluster (dask's ``"auto"``: the
        machine's memory divided among the workers).

    Raises
    ------
    ParameterError
        ``distributed`` is not installed, or the scheduler cannot be reached.
    """
    if scheduler is None and workers == 0:
        return InlineExecutor()
    if workers < 0 or threads_per_worker < 1:
        raise ParameterError(f"workers must be >= 0 and threads per worker >= 1, got {workers}, {threads_per_worker}")
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise ParameterError("batches on a cluster need dask.distributed: pip install 'dask[distributed]'") from e
    if scheduler is not None:
        try:
            return DaskExecutor(Client(scheduler, timeout="20s"))
        except (OSError, TimeoutError) as e:
            raise ParameterError(f"cannot reach the dask scheduler at {scheduler}: {e}") from e
    from ..models.device import physical_cores

    if torch_threads is None:
        torch_threads = max(1, physical_cores() // (workers * threads_per_worker))
    env = {"OMP_NUM_THREADS": str(torch_threads), "MKL_NUM_THREADS": str(torch_threads)}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None, silence_logs=logging.CRITICAL, memory_limit=memory_limit, env=env)
    return DaskExecutor(Client(cluster), cluster)


# ---------------------------------------------------------------- the batch
@dataclass
class BatchResult:
    """What :func:`run_batch_iter` returns.

    Attributes
    ----------
    report : pandas.DataFrame
        One row per file (:data:`REPORT_COLUMNS`); ``status`` is ``done``,
        ``skipped`` (finished by an earlier run) or ``failed``;
        ``segment_seconds`` / ``segment_cpu_seconds`` sum the wall / CPU
        time of the file's block tasks (in the workers),
        ``finished_after_s`` is the wall time from the start of the batch.
    objects : pandas.DataFrame or None
        Every file's objects (detection), leading ``file`` column.
    report_path, objects_path : Path or None
        Where they were written.
    seconds : float
        Wall time.
    """

    report: Any
    objects: Any
    report_path: Path
    objects_path: Path | None
    seconds: float

    @property
    def failed(self) -> list[str]:
        return [str(f) for f, s in zip(self.report["file"], self.report["status"], strict=True) if s == "failed"]


def _submit_job(ex: Any, job: bw.BlockJob) -> tuple[list, Any]:
    """Submit every task of a planned job; returns (all futures, the finish future)."""
    seg = [ex.submit(bw.segment_block, job, i) for i in job.active]
    offsets = ex.submit(bw.block_offsets, job, *seg)
    paste = [ex.submit(bw.paste_block, job, i, offsets) for i in job.paste_cores()]
    after = ex.submit(_barrier, *paste)
    futures = [*seg, offsets, *paste, after]
    for level in range(1, len(job.levels)):
        tiles = [ex.submit(bw.pyramid_block, job, level, t, after) for t in job.pyramid_tiles_needed(level)]
        after = ex.submit(_barrier, *tiles)
        futures += [*tiles, after]
    finish = ex.submit(bw.finish_job, job, offsets, after)
    return [*futures, finish], finish


def _barrier(*_results: Any) -> int:
    """A task that waits for its arguments (so later tasks depend on one future, not hundreds)."""
    return len(_results)


def _plan_or_skip(source: SourceSpec, out: str, name: str, options: dict) -> tuple[bw.BlockJob, dict | None]:
    """Plan a file's job; with its summary when an earlier run finished it with the same settings."""
    job = bw.plan_job(source, out, name=name, **options)
    return job, (bw.read_summary(job) if bw.is_complete(job) else None)


def run_batch_iter(sources: Sequence[SourceSpec | str | os.PathLike], out: str | os.PathLike, *,
                   executor: Any = None, names: Sequence[str] | None = None, cancel: CancelToken | None = None,
                   **plan_options: Any) -> Generator[Progress, None, BatchResult]:
    """Segment (and measure) every source block by block on ``executor``; yields progress.

    Parameters
    ----------
    sources : sequence of SourceSpec or path
        Images (paths are ``SourceSpec(path=...)``, pyramid level 0).
    out : str or path-like
        Output folder: per file ``<name>.zarr`` and ``<name>_objects.csv``;
        ``batch_report.csv`` and ``objects.csv`` for the whole batch.
    executor : InlineExecutor or DaskExecutor, optional
        From :func:`make_executor`; default inline (this process).
    names : sequence of str, optional
        Output stems, one per source (default: file stems; must be unique).
    cancel : CancelToken, optional
        Checked as tasks finish.
    **plan_options
        See :func:`~napari_medseg.batch.blockwise.plan_job` (``model``,
        ``detect``, ``tissue``, ``block_size``, ``device``...).  ``tissue`` is
        a mode (``"auto"``, the default, ``"on"`` or ``"none"``), found per
        file; a mask array is not accepted here (one mask per file: plan
        those files one by one).

    Yields
    ------
    Progress
        Steps = finished tasks (the total grows as files are planned);
        ``info`` has ``done``, ``failed``, ``skipped`` file counts.

    Returns
    -------
    BatchResult
    """
    import pandas as pd

    t0 = time.perf_counter()
    if not isinstance(plan_options.get("tissue", "auto"), str | None):
        raise ParameterError("a batch takes a tissue mode (auto, on, none), not a mask; run one file with its mask "
                             "instead")
    specs = [s if isinstance(s, SourceSpec) else SourceSpec(path=str(s)) for s in sources]
    if not specs:
        raise ParameterError("no input files")
    names = list(names) if names is not None else [Path(s.path).stem.split(".")[0] if s.path else f"image_{k}"
                                                    for k, s in enumerate(specs)]
    if len(names) != len(specs) or len(set(names)) != len(names):
        raise ParameterError(f"output names must be unique, one per input; got {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ex = executor if executor is not None else InlineExecutor()
    rows: dict[str, dict] = {}
    role: dict[Any, tuple[str, str]] = {}  # future -> (file name, "plan" | "task" | "finish")
    plans = []
    for spec, name in zip(specs, names, strict=True):
        f = ex.submit(_plan_or_skip, spec, str(out), name, plan_options)
        role[f] = (name, "plan")
        plans.append(f)
    done = ex.completed(plans)
    total = len(plans)
    for step, fut in enumerate(done, 1):
        name, what = role.pop(fut)
        err = fut.exception()
        if name in rows and what != "plan":
            pass  # the file already failed: its other tasks do not count
        elif err is not None:
            if what in ("plan", "finish") or name not in rows:
                rows[name] = _row(name, "failed", t0, error=_message(err))
        elif what == "plan":
            job, summary = fut.result()
            if summary is not None:
                rows[name] = _row(name, "skipped", t0, summary)
            else:
                futures, finish = _submit_job(ex, job)
                for f in futures:
                    role[f] = (name, "finish" if f is finish else "task")
                    done.add(f)
                total += len(futures)
        elif what == "finish":
            rows[name] = _row(name, "done", t0, fut.result())
        counts = {s: sum(r["status"] == s for r in rows.values()) for s in ("done", "skipped", "failed")}
        yield Progress(step, total, f"{counts['done'] + counts['skipped']}/{len(specs)} files done, "
                       f"{counts['failed']} failed", {"stage": "batch", **counts})
        if cancel is not None:
            cancel.raise_if_cancelled()
    report = pd.DataFrame([rows[n] for n in names], columns=list(REPORT_COLUMNS))
    report_path = out / "batch_report.csv"
    from ..io.atomic import atomic_write

    atomic_write(report_path, lambda tmp: report.to_csv(tmp, index=False))
    objects, objects_path = None, None
    if plan_options.get("detect", True):
        from ..analysis.objects import write_objects_csv

        tables = []
        for r in rows.values():
            if r["status"] != "failed" and r["table"]:
                t = pd.read_csv(r["table"])
                t.insert(0, "file", r["file"])
                tables.append(t)
        objects = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame({"file": [], "id": []})
        objects_path = write_objects_csv(out / "objects.csv", objects)
    return BatchResult(report, objects, report_path, objects_path, time.perf_counter() - t0)


def _row(name: str, status: str, t_start: float, summary: dict | None = None, error: str = "") -> dict:
    s = summary or {}
    return {"file": name, "status": status, "objects": s.get("objects"),
            "off_tissue_objects": s.get("off_tissue_objects"), "blocks": s.get("blocks"),
            "active_blocks": s.get("active_blocks"), "skipped_blocks": s.get("skipped_blocks"),
            "tissue": s.get("tissue"), "tissue_fraction": s.get("tissue_fraction"), "segment_seconds": s.get("segment_seconds"),
            "segment_cpu_seconds": s.get("segment_cpu_seconds"),
            "finished_after_s": round(time.perf_counter() - t_start, 3),
            "labels": s.get("labels", ""), "table": s.get("table", ""), "error": error}


def _message(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
