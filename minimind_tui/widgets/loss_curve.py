"""The loss curve: raw loss plus an EMA, x in steps, optional log scale, redrawn at most once a second."""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

EMA_ALPHA = 0.9
REDRAW_S = 1.0  # each redraw costs the UI thread ~10-20 ms on a small CPU: once a second is plenty


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
        self.steps: list[int] = []
        self.values: dict[bool, list[float]] = {False: [], True: []}  # keyed by log scale
        self.smoothed: dict[bool, list[float]] = {False: [], True: []}
        self._ema = {False: _Ema(), True: _Ema()}

    def add(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):  # a NaN/inf step is reported elsewhere; it cannot be drawn
            return
        self.steps.append(step)
        for log, v in ((False, loss), (True, _log10(loss))):
            self.values[log].append(v)
            self.smoothed[log].append(self._ema[log](v))


def stride_indices(n: int, limit: int) -> range | list[int]:
    """At most `limit` evenly strided indices of n points, always keeping the last one."""
    if n <= limit or limit < 2:
        return range(n)
    stride = math.ceil(n / limit)
    return list(range(0, n - 1, stride)) + [n - 1]


class LossCurve(PlotextPlot):
    """Curves keyed by name, drawn in insertion order; `add_point` only marks the plot dirty, a timer
    rebuilds it."""

    def __init__(self, title: str = "loss", **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.series: dict[str, Series] = {}
        self.log_scale = False
        self.smoothing = True
        self._dirty = True

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(REDRAW_S, self._redraw_if_dirty)

    def add_point(self, step: int, loss: float, name: str = "loss") -> None:
        self.series.setdefault(name, Series()).add(step, loss)
        self._dirty = True

    def set_series(self, name: str, steps: list[int], losses: list[float]) -> None:
        series = self.series[name] = Series()
        for step, loss in zip(steps, losses):
            series.add(step, loss)
        self._dirty = True

    def remove_series(self, name: str) -> None:
        if self.series.pop(name, None) is not None:
            self._dirty = True

    def bring_to_front(self, name: str) -> None:
        """Draw this curve last, over the others."""
        if name in self.series:
            self.series[name] = self.series.pop(name)
            self._dirty = True

    def clear(self) -> None:
        self.series.clear()
        self._dirty = True

    def toggle_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        self._dirty = True

    def toggle_smoothing(self) -> None:
        self.smoothing = not self.smoothing
        self._dirty = True

    def _redraw_if_dirty(self) -> None:
        if self._dirty:
            self._dirty = False
            self.rebuild()

    def rebuild(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        # plotext's own log axis breaks on rebuilds: plot log10(loss) on a linear axis instead
        limit = max(2 * max(self.size.width, 20), 40)
        for name, series in self.series.items():
            if not series.steps:
                continue
            idx = stride_indices(len(series.steps), limit)
            xs = [series.steps[i] for i in idx]
            label = name if len(self.series) > 1 else "raw"
            plt.plot(xs, [series.values[self.log_scale][i] for i in idx], marker="braille", label=label)
            if self.smoothing and len(series.steps) > 2:
                plt.plot(xs, [series.smoothed[self.log_scale][i] for i in idx], marker="braille", label=f"{label} EMA")
        plt.title(self.title + (" (log10)" if self.log_scale else ""))
        plt.xlabel("step")
        self.refresh()
