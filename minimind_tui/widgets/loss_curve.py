"""The loss curve: raw loss plus an EMA, x in steps, optional log scale, redrawn at most twice a second."""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

EMA_ALPHA = 0.9
REDRAW_S = 1.0  # each redraw costs the UI thread ~10-20 ms on a small CPU: once a second is plenty


def ema(values: list[float], alpha: float = EMA_ALPHA) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing)."""
    out, avg, weight = [], 0.0, 0.0
    for v in values:
        avg = alpha * avg + (1 - alpha) * v
        weight = alpha * weight + (1 - alpha)
        out.append(avg / weight)
    return out


def downsample(xs: list, ys: list, limit: int) -> tuple[list, list]:
    """At most `limit` points, evenly strided, always keeping the last one."""
    if len(xs) <= limit or limit < 2:
        return xs, ys
    stride = math.ceil(len(xs) / limit)
    idx = list(range(0, len(xs) - 1, stride)) + [len(xs) - 1]
    return [xs[i] for i in idx], [ys[i] for i in idx]


class LossCurve(PlotextPlot):
    """Curves keyed by name; `add_point` only marks the plot dirty, a timer rebuilds it."""

    def __init__(self, title: str = "loss", **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        self.log_scale = False
        self.smoothing = True
        self._dirty = True

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(REDRAW_S, self._redraw_if_dirty)

    def add_point(self, step: int, loss: float, name: str = "loss") -> None:
        xs, ys = self.series.setdefault(name, ([], []))
        xs.append(step)
        ys.append(loss)
        self._dirty = True

    def set_series(self, name: str, steps: list[int], losses: list[float]) -> None:
        self.series[name] = (list(steps), list(losses))
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
        scale = (lambda v: math.log10(v) if v > 0 else float("nan")) if self.log_scale else (lambda v: v)
        limit = max(2 * max(self.size.width, 20), 40)
        for name, (xs, ys) in self.series.items():
            finite = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
            if not finite:
                continue
            fx, fy = [x for x, _ in finite], [scale(y) for _, y in finite]
            px, py = downsample(fx, fy, limit)
            label = name if len(self.series) > 1 else "raw"
            plt.plot(px, py, marker="braille", label=label)
            if self.smoothing and len(fy) > 2:
                sx, sy = downsample(fx, ema(fy), limit)
                plt.plot(sx, sy, marker="braille", label=f"{label} EMA")
        plt.title(self.title + (" (log10)" if self.log_scale else ""))
        plt.xlabel("step")
        self.refresh()
