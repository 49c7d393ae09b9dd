"""Closing the viewer right after opening our docks, or while a job runs, never crashes napari.

Every dock starts background work when it opens (the device probe imports
torch) or on Run (a job in a worker thread).  Closing the viewer must cancel
it, wait (bounded) for its thread, and never call back into a deleted widget;
a process that closes its viewer and exits must exit cleanly (before the fix
PyQt aborted it: ``RuntimeError: wrapped C/C++ object of type
WorkerBaseSignals has been deleted`` in the worker thread, then ``Aborted``).

Run with ``xvfb-run -a python -m pytest tests/napari/test_close_while_busy.py -q``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import QThreadPool  # noqa: E402

from napari_medseg.models.testing import make_random_model  # noqa: E402

pytestmark = pytest.mark.napari

RUN_TIMEOUT = 120_000  # ms; 2 CPU cores shared with other jobs
SRC = Path(__file__).resolve().parents[2] / "src"


def _dock_names() -> list[str]:
    """Every dock widget our manifest contributes (a new dock is covered without editing this test)."""
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-medseg")
    return [w.display_name for w in manifest.contributions.widgets]


def _threads() -> int:
    return QThreadPool.globalInstance().activeThreadCount()


#: Qt counts a pool thread active until just after its run() returned, which is when the close's
#: wait ends: a short grace for that bookkeeping (far below the 2 s probes and the 1 s steps).
SETTLE_MS = 500


def _assert_pool_settles(qtbot) -> None:
    qtbot.waitUntil(lambda: _threads() == 0, timeout=SETTLE_MS)


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "models"
    make_random_model(d / "tiny", name="tiny", in_channels=1, seed=1)
    monkeypatch.setenv("MEDSEG_MODELS_DIR", str(d))
    return d


def test_every_dock_closes_with_the_viewer_at_once(make_napari_viewer, models_dir, qtbot, monkeypatch) -> None:
    import napari_medseg.models.device as device

    def cold_probe():  # as slow as a first `import torch`; instant once torch is loaded
        time.sleep(2.0)
        return ["auto", "cpu"]

    monkeypatch.setattr(device, "available_devices", cold_probe)
    # earlier tests' workers share Qt's global pool (2 threads on 2 cores): start from an idle pool,
    # or their leftover time is counted against this close's bounded wait (seen in the full suite)
    qtbot.waitUntil(lambda: _threads() == 0, timeout=RUN_TIMEOUT)
    viewer = make_napari_viewer()
    names = _dock_names()
    assert {"Segment", "Objects", "Train", "Evaluate", "Lesions", "Classify", "Slide"} <= set(names)
    widgets = [viewer.window.add_plugin_dock_widget("napari-medseg", name)[1] for name in names]
    assert _threads() > 0  # the probes run
    viewer.close()
    _assert_pool_settles(qtbot)  # closing waited for them
    qtbot.wait(300)  # a late callback into a deleted dock would raise here (pytest-qt fails the test)
    assert len(widgets) == len(names)


@pytest.fixture
def slow_tiles(monkeypatch) -> None:
    """Each step of a segmentation takes 1 s, like a tile batch on a slow CPU (the worker is busy between yields)."""
    import napari_medseg.inference.dispatch as dispatch

    real = dispatch.segment_any_iter

    def slow(*args, **kwargs):
        gen = real(*args, **kwargs)
        try:
            while True:
                p = next(gen)
                time.sleep(1.0)
                yield p
        except StopIteration as stop:
            return stop.value

    monkeypatch.setattr(dispatch, "segment_any_iter", slow)


def _start_segmenting(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).normal(10, 2, (96, 96)).astype(np.float32), name="img")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Segment")
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    widget.tile_size.setValue(32)
    widget.run()
    qtbot.waitUntil(lambda: widget._job.pbar is not None and widget._job.pbar.n >= 1, timeout=RUN_TIMEOUT)
    assert widget.running
    return viewer, dock, widget


def test_closing_the_viewer_while_segmenting(make_napari_viewer, models_dir, slow_tiles, qtbot) -> None:
    viewer, _dock, widget = _start_segmenting(make_napari_viewer, qtbot)
    job = widget._job
    progressed, ended = [], []
    job._on_progress, job._on_done = progressed.append, ended.append  # what would reach the dock from now on
    viewer.close()
    _assert_pool_settles(qtbot)  # cancelled and waited for
    assert job.cancel_requested and not job.running
    qtbot.wait(1200)  # the step in flight when the viewer closed still yields: it must not reach the dock
    assert progressed == [] and ended == []


def test_a_removed_dock_is_cancelled_when_the_viewer_closes(make_napari_viewer, models_dir, slow_tiles,
                                                            qtbot) -> None:
    """napari keeps a removed dock's widget alive; its job ends as cancelled (not as an error) on close."""
    viewer, dock, widget = _start_segmenting(make_napari_viewer, qtbot)
    viewer.window.remove_dock_widget(dock)
    viewer.close()  # napari cancels its tasks: worker.quit()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT)
    assert widget.status.text().startswith("Cancelled"), widget.status.text()
    widget.deleteLater()
    qtbot.wait(50)


def test_closing_the_viewer_while_training_keeps_the_checkpoint(make_napari_viewer, models_dir, qtbot,
                                                               monkeypatch) -> None:
    from napari_medseg.models.spec import load_model

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    lab = np.zeros((64, 64), np.int32)
    for k, (cy, cx) in enumerate(rng.integers(8, 56, (6, 2)), start=1):
        lab[cy - 3:cy + 4, cx - 3:cx + 4] = k
    viewer.add_image((np.where(lab > 0, 180.0, 30.0) + rng.normal(0, 8, lab.shape)).astype(np.float32), name="cells")
    viewer.add_labels(lab, name="painted")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Train")
    qtbot.waitUntil(lambda: widget.device_picker.ready, timeout=60_000)
    widget.scratch.setChecked(True)
    widget.minutes.setValue(0)
    widget.epochs.setValue(500)
    widget.name_edit.setText("closed-mid-run")
    widget.train()
    job = widget._job
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 1, timeout=RUN_TIMEOUT)
    folder = widget.model_path
    ended = []
    job._on_done = ended.append
    viewer.close()
    assert not job.running  # cancelled, the checkpoint written
    _assert_pool_settles(qtbot)  # and the thread ended
    _, card = load_model(folder)
    assert card.training["cancelled"] is True and card.training["epochs"] >= 1
    qtbot.wait(300)
    assert ended == []


def test_widgets_start_threads_only_through_the_worker_module() -> None:
    """One mechanism owns every thread (cancel, disconnect, bounded wait on close): no bare worker in a widget."""
    import re

    pattern = re.compile(r"\b(create_worker|thread_worker|QThread|QThreadPool|threading\.Thread|QRunnable)\b")
    napari_layer = SRC / "napari_medseg" / "_napari"
    found = [f"{path.relative_to(SRC)}:{n}" for path in sorted(napari_layer.rglob("*.py")) if path.name != "_worker.py"
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == []


SCRIPT = """
import numpy as np
import napari

viewer = napari.Viewer(show=False)
viewer.add_image(np.zeros((64, 64), np.float32), name="img")
docks = {{name: viewer.window.add_plugin_dock_widget("napari-medseg", name)[1] for name in {names!r}}}
docks["Segment"].run()  # loads torch and the model in its worker thread
viewer.close()
print("closed")
"""


def test_a_script_that_closes_its_viewer_at_once_exits_cleanly(models_dir, tmp_path) -> None:
    """Interpreter exit with our threads still starting (cold torch import) must not abort."""
    script = tmp_path / "close_at_once.py"
    script.write_text(textwrap.dedent(SCRIPT.format(names=_dock_names())))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "closed" in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_a_job_whose_thread_ended_is_not_running_once_its_owner_is_deleted(qtbot) -> None:
    """A dock cancelled in its closeEvent may stop before it is deleted; its queued end goes with it.

    The job must then still say it is over (it said ``running`` forever: a race the full suite hit).
    """
    import threading

    from qtpy import sip
    from qtpy.QtCore import QObject

    from napari_medseg._napari._worker import ProgressJob
    from napari_medseg.progress import Progress

    def gen(token):
        while not token.cancelled:
            yield Progress(0, 0, "waiting")
            threading.Event().wait(0.01)

    owner = QObject()
    ended = []
    job = ProgressJob(lambda: gen(job.token), ended.append, owner=owner)
    job.start()
    qtbot.waitUntil(lambda: job.worker is not None and job.running, timeout=5_000)
    job.cancel()
    assert job.worker._ended.wait(5.0)  # the thread is over; its `finished` is still queued (no event loop ran)
    sip.delete(owner)  # as a viewer closing deletes its docks: queued signals to the owner's world are dropped
    assert not job.running and ended == []
    _assert_pool_settles(qtbot)
