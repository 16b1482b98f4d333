"""The loss curve: raw loss plus an EMA, held-out evaluations as marked points, x in steps, optional log
scale, redrawn at most once a second."""

from __future__ import annotations

import math
import time
from typing import Optional

from textual_plotext import PlotextPlot

EMA_ALPHA = 0.9
REDRAW_S = 1.0  # the fastest a streaming curve is redrawn
# Drawing the curve is most of the app's CPU while a run streams in (~35 ms a redraw at 100x30 on a
# 2-core machine, against ~6 ms for everything else a tick): on such a machine every ms taken from a
# core stalls training's parallel regions on both. So a streaming curve is redrawn at most as often as
# keeps its drawing under this share of one core (every ~3.5 s there; capped at MAX_REDRAW_S). Key
# presses, a resize and new runs redraw at once.
CURVE_CPU_SHARE = 0.01
MAX_REDRAW_S = 5.0
EVAL_MARKER = "●"  # evaluations are few: single marked points, visible among the braille lines
EVAL_COLOR = "orange"
XLABEL_FROM = 16  # rows: below this the x axis label moves into the title, leaving the rows to the plot


def _log10(v: float) -> float:
    return math.log10(v) if v > 0 else float("nan")


class _Ema:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing), one value at a time."""

    def __init__(self, alpha: float = EMA_ALPHA) -> None:
        self.alpha, self.avg, self.weight = alpha, 0.0, 0.0

    def __call__(self, v: float) -> float:
        self.avg = self.alpha * self.avg + (1 - self.alpha) * v
        self.weight = self.alpha * self.weight + (1 - self.alpha)
        return self.avg / self.weight


class Series:
    """One run's finite points with their EMAs, kept up to date as points arrive, so a redraw only
    picks points instead of recomputing over a history that grows to hundreds of thousands of steps."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.values: dict[bool, list[float]] = {False: [], True: []}  # keyed by log scale
        self.smoothed: dict[bool, list[float]] = {False: [], True: []}
        self._ema = {False: _Ema(), True: _Ema()}

    def add(self, step: float, loss: float) -> None:
        if not math.isfinite(loss):  # a NaN/inf step is reported elsewhere; it cannot be drawn
            return
        self.steps.append(step)
        for log, v in ((False, loss), (True, _log10(loss))):
            self.values[log].append(v)
            self.smoothed[log].append(self._ema[log](v))


class Points:
    """Sparse finite points (held-out evaluations), kept in both scales; no smoothing."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.values: dict[bool, list[float]] = {False: [], True: []}

    def add(self, step: float, loss: float) -> None:
        if not math.isfinite(loss):
            return
        self.steps.append(step)
        self.values[False].append(loss)
        self.values[True].append(_log10(loss))


def stride_indices(n: int, limit: int) -> range | list[int]:
    """At most `limit` evenly strided indices of n points, always keeping the last one."""
    if n <= limit or limit < 2:
        return range(n)
    stride = math.ceil(n / limit)
    return list(range(0, n - 1, stride)) + [n - 1]


class LossCurve(PlotextPlot):
    """Curves keyed by name, drawn in insertion order, each with its evaluations as marked points;
    `add_point` / `add_eval` only mark the plot dirty; a timer rebuilds it, or, with
    `redraw_every=None`, the owner calls `redraw_if_dirty()` on its own tick (one screen update a
    second instead of two: each costs the UI ~20 ms)."""

    def __init__(self, title: str = "loss", redraw_every: Optional[float] = REDRAW_S, **kwargs) -> None:
        super().__init__(**kwargs)
        self.redraw_every = redraw_every
        self._render_s = 0.0  # how long the last draw took
        self._drawn_at = -math.inf  # time.monotonic() of the last rebuild
        self.title = title
        self.series: dict[str, Series] = {}
        self.evals: dict[str, Points] = {}  # keyed by the same names as series
        self.log_scale = False
        self.smoothing = True
        self._dirty = True

    def on_mount(self) -> None:
        super().on_mount()
        if self.redraw_every is not None:
            self.set_interval(self.redraw_every, self.redraw_if_dirty)
        self.call_after_refresh(self.redraw_if_dirty)  # what was set while mounting shows at once

    def on_resize(self) -> None:
        self._dirty = True  # the x label goes into the title on short plots

    def add_point(self, step: int, loss: float, name: str = "loss") -> None:
        self.series.setdefault(name, Series()).add(step, loss)
        self._dirty = True

    def set_series(self, name: str, steps: list[float], losses: list[float]) -> None:
        series = self.series[name] = Series()
        for step, loss in zip(steps, losses):
            series.add(step, loss)
        self._dirty = True

    def add_eval(self, step: int, loss: float, name: str = "loss") -> None:
        self.evals.setdefault(name, Points()).add(step, loss)
        self._dirty = True

    def set_evals(self, name: str, points: list[tuple[float, float]]) -> None:
        evals = self.evals[name] = Points()
        for step, loss in points:
            evals.add(step, loss)
        self._dirty = True

    def rescale_steps(self, factor: float) -> None:
        """Every point's step times `factor`: the step axis changed units (a resume with another
        process count)."""
        held: list[Series | Points] = [*self.series.values(), *self.evals.values()]
        for points in held:
            points.steps = [step * factor for step in points.steps]
        self._dirty = True

    def remove_series(self, name: str) -> None:
        if (self.series.pop(name, None), self.evals.pop(name, None)) != (None, None):
            self._dirty = True

    def bring_to_front(self, name: str) -> None:
        """Draw this curve last, over the others."""
        if name in self.series:
            self.series[name] = self.series.pop(name)
            self._dirty = True
        if name in self.evals:
            self.evals[name] = self.evals.pop(name)

    def clear(self) -> None:
        self.series.clear()
        self.evals.clear()
        self._dirty = True

    def toggle_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        self._dirty = True
        self.redraw_if_dirty()  # a key press shows at once

    def toggle_smoothing(self) -> None:
        self.smoothing = not self.smoothing
        self._dirty = True
        self.redraw_if_dirty()  # a key press shows at once

    def redraw_if_dirty(self, streaming: bool = False) -> None:
        """Rebuild if anything changed; `streaming` (new points of a live run) keeps to the CPU budget."""
        if not self._dirty:
            return
        now = time.monotonic()
        if streaming and now - self._drawn_at < min(max(REDRAW_S, self._render_s / CURVE_CPU_SHARE), MAX_REDRAW_S):
            return
        self._dirty = False
        self._drawn_at = now
        self.rebuild()

    def render(self):
        start = time.perf_counter()
        try:
            return super().render()
        finally:
            self._render_s = time.perf_counter() - start

    def rebuild(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        # plotext's own log axis breaks on rebuilds: plot log10(loss) on a linear axis instead
        limit = max(2 * max(self.size.width, 20), 40)
        names = list(dict.fromkeys([*self.series, *self.evals]))
        several = len(names) > 1
        for name in names:
            series = self.series.get(name)
            label = name if several else "raw"
            if series is not None and series.steps:
                idx = stride_indices(len(series.steps), limit)
                xs = [series.steps[i] for i in idx]
                plt.plot(xs, [series.values[self.log_scale][i] for i in idx], marker="braille", label=label)
                if self.smoothing and len(series.steps) > 2:
                    plt.plot(xs, [series.smoothed[self.log_scale][i] for i in idx], marker="braille",
                             label=f"{label} EMA")
        for name in names:  # the marked points over every line
            points = self.evals.get(name)
            if points is not None and points.steps:
                idx = stride_indices(len(points.steps), max(self.size.width // 2, 10))
                plt.scatter([points.steps[i] for i in idx], [points.values[self.log_scale][i] for i in idx],
                            marker=EVAL_MARKER, color=EVAL_COLOR, label=f"{name} eval" if several else "eval")
        title = self.title + (" (log10)" if self.log_scale else "")
        if self.size.height >= XLABEL_FROM:
            plt.xlabel("step")
        else:
            title += " · x: step"
        plt.title(title)
        self.refresh()
