"""A small live plot of training loss and validation score per epoch (QPainter, no matplotlib).

matplotlib is not a napari dependency, so this draws two polylines itself:
the training loss on a left axis scaled to its range, the validation score
(AP@0.5 or Dice) on a right axis fixed to [0, 1], epochs along the bottom.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOR = QColor(240, 160, 60)
VAL_COLOR = QColor(80, 170, 255)
BEST_COLOR = QColor(120, 220, 120)


class CurvePlot(QWidget):
    """Loss and validation score per epoch; :meth:`add_point` appends and repaints.

    Parameters
    ----------
    val_name : str
        Legend of the validation curve (``"val AP@0.5"``, ``"val Dice"``).
    """

    def __init__(self, val_name: str = "val score", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.val_name = val_name
        self.epochs: list[int] = []
        self.losses: list[float | None] = []
        self.scores: list[float | None] = []
        self.best_epoch: int | None = None
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Training loss (orange, left axis) and validation score (blue, right axis, 0-1) per epoch; "
                        "the green dot marks the kept (best) epoch")

    def clear(self, val_name: str | None = None) -> None:
        """Forget all points (a new run)."""
        if val_name is not None:
            self.val_name = val_name
        self.epochs.clear()
        self.losses.clear()
        self.scores.clear()
        self.best_epoch = None
        self.update()

    def add_point(self, epoch: int, loss: float | None, score: float | None, best_epoch: int | None = None) -> None:
        """Append one epoch's mean training loss and validation score (either may be None)."""
        self.epochs.append(int(epoch))
        self.losses.append(None if loss is None or not math.isfinite(loss) else float(loss))
        self.scores.append(None if score is None or not math.isfinite(score) else float(score))
        self.best_epoch = best_epoch
        self.update()

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:  # noqa: D102
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            fg = self.palette().color(self.foregroundRole())
            fm = p.fontMetrics()
            left, right, top, bottom = fm.horizontalAdvance("0.000") + 8, fm.horizontalAdvance("1.0") + 10, \
                fm.height() + 6, fm.height() + 8
            area = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
            p.setPen(QPen(fg, 1))
            p.drawRect(area)
            p.setPen(LOSS_COLOR)
            p.drawText(QPointF(left, fm.ascent() + 2), "loss")
            p.setPen(VAL_COLOR)
            p.drawText(QPointF(left + fm.horizontalAdvance("loss") + 12, fm.ascent() + 2), self.val_name)
            if not self.epochs:
                p.setPen(fg)
                p.drawText(area, Qt.AlignmentFlag.AlignCenter, "curves appear after the first epoch")
                return
            e0 = min(self.epochs[0], 1)  # 0 when the base model was scored before training
            n_max = max(self.epochs[-1], e0 + 1)
            losses = [v for v in self.losses if v is not None]
            lo, hi = (min(losses), max(losses)) if losses else (0.0, 1.0)
            if hi - lo < 1e-9:
                lo, hi = lo - 0.5, hi + 0.5

            def x_of(e: float) -> float:
                return area.left() + (e - e0) / max(n_max - e0, 1) * area.width()

            def y_of(v: float, a: float, b: float) -> float:
                return area.bottom() - (v - a) / (b - a) * area.height()

            p.setPen(fg)
            for v, y in ((hi, area.top()), (lo, area.bottom())):
                p.drawText(QRectF(0, y - fm.height() / 2, left - 4, fm.height()),
                           Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{v:.3g}")
            for v in (1.0, 0.0):
                y = y_of(v, 0.0, 1.0)
                p.drawText(QRectF(area.right() + 4, y - fm.height() / 2, right, fm.height()),
                           Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, f"{v:.1f}")
            p.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), fm.height()),
                       Qt.AlignmentFlag.AlignCenter, f"epoch ({e0}-{self.epochs[-1]})")
            for values, color, a, b in ((self.losses, LOSS_COLOR, lo, hi), (self.scores, VAL_COLOR, 0.0, 1.0)):
                pts = [QPointF(x_of(e), y_of(v, a, b)) for e, v in zip(self.epochs, values, strict=False) if v is not None]
                p.setPen(QPen(color, 2))
                if len(pts) > 1:
                    p.drawPolyline(QPolygonF(pts))
                for q in pts:
                    p.drawEllipse(q, 2.0, 2.0)
            if self.best_epoch in self.epochs:
                i = self.epochs.index(self.best_epoch)
                if self.scores[i] is not None:
                    p.setPen(QPen(BEST_COLOR, 2))
                    p.setBrush(BEST_COLOR)
                    p.drawEllipse(QPointF(x_of(self.best_epoch), y_of(self.scores[i], 0.0, 1.0)), 4.0, 4.0)
        finally:
            p.end()
