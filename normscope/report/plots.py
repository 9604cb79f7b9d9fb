"""SVG plots for the HTML reports: numbers already in a result in, an SVG string out.

Output is deterministic and self-contained: a fixed `svg.hashsalt`, text kept as `<text>` (no font
paths), no date or matplotlib version in the file, and no XML declaration, DOCTYPE or namespace
URLs, so that it can be inlined into a page. Figures are `matplotlib.figure.Figure` objects on an Agg
canvas: pyplot and its global figure registry are never touched, and style settings live only inside
an `rc_context` that restores them. Arranging numbers (which cell, which bar) is the caller's job;
these helpers compute no statistic.

Example:
    >>> svg = heatmap([[1.0, 1657.0]], rows=["post_ffn"], cols=["0", "1"], colorbar="max |gain|")
    >>> svg.startswith("<svg") and "1657" in svg
    True
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .fmt import num, visible

__all__ = ["heatmap", "bars", "dots", "tradeoff", "depth_lines", "curves", "scope_ids", "COLORS"]

# matplotlib's tab10, spelled out so that a user's matplotlibrc cannot change a report
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
MISSING = "#e4e4e4"  # heatmap cells without a tensor (or non-positive on a log scale)
# text.parse_math off: labels are tensor names, and a `$` pair in one would be parsed as TeX (or fail to parse)
_RC = {"svg.hashsalt": "normscope", "svg.fonttype": "none", "text.parse_math": False, "font.family": "sans-serif",
       "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"], "font.size": 9.0,
       "axes.titlesize": 10.0, "axes.labelsize": 9.0, "xtick.labelsize": 8.0, "ytick.labelsize": 8.0,
       "legend.fontsize": 8.0, "axes.spines.top": False, "axes.spines.right": False}
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}

Value = float | None


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Any, list[str]]]:
    """A Figure on an Agg canvas inside the house style; the SVG text lands in the yielded list."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(fig)
        out: list[str] = []
        yield fig, out
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata=_NO_METADATA)
        out.append(_tidy(buf.getvalue()))


def _tidy(svg: str) -> str:
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and the DOCTYPE (with its DTD URL)
    svg = re.sub(r'\s+xmlns(?::xlink)?="[^"]*"', "", svg)  # inline SVG in HTML needs neither
    svg = svg.replace("xlink:href=", "href=")  # SVG 2 `href`, understood by every current browser
    # matplotlib's global `*{stroke-linejoin…}` rule would leak into the page; report.css scopes it
    svg = re.sub(r"<style[^>]*>.*?</style>", "", svg, flags=re.S)
    svg = re.sub(r"<defs>\s*</defs>\s*", "", svg)
    return re.sub(r"[ \t]*\n\s*", "\n", svg).strip() + "\n"


def scope_ids(svg: str, prefix: str) -> str:
    """Prefix every id in `svg` (and the references to them) so that several SVGs share a page."""
    return re.sub(r'(\bid="|url\(#|\bhref="#)', lambda m: m.group(1) + prefix, svg)


def _shown(*texts: Any) -> list[Any]:
    """Each label, list of labels or mapping's keys with control characters made visible: a name reaches the SVG
    text (and matplotlib's warnings about glyphs it lacks, on stderr) as it is shown everywhere else."""
    out: list[Any] = []
    for t in texts:
        if isinstance(t, str):
            out.append(visible(t))
        elif isinstance(t, Mapping):
            out.append({visible(k): v for k, v in t.items()})
        else:
            out.append([visible(x) for x in t])
    return out


def _plain_log(axis: Any) -> None:
    """Tick labels of a log axis as plain numbers (1000, 1e+05): matplotlib's default writes TeX
    (`$\\mathdefault{10^{5}}$`), which with text.parse_math off reaches the page as that literal text."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        # LogFormatter decides which ticks get a label (minor ones when the axis spans under a decade); the label
        # is the number as Python writes it (0.01, 1000, 1e+05), not LogFormatter's 1e−02
        def __call__(self, x: float, pos: Any = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    axis.set_major_formatter(Plain(10))
    axis.set_minor_formatter(Plain(10, labelOnlyBase=False))


def _luminance(rgba: Sequence[float]) -> float:
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def heatmap(values: Sequence[Sequence[Value]], rows: Sequence[str], cols: Sequence[str], *, title: str = "",
            xlabel: str = "", ylabel: str = "", colorbar: str = "", log: bool = True, annotate: int = 5,
            fmt: Callable[[float], str] = num, cmap: str = "viridis", lowest: bool = False) -> str:
    """A grid of values (rows × cols) as coloured cells; the `annotate` largest cells (`lowest`: smallest, e.g. the
    worst SQNR) carry their value, and so does every cell tied with the last of them.

    Args:
        values: values[i][j] for row i, column j; None for no tensor there.
        log: logarithmic colour scale (cells <= 0 are drawn as missing).
        annotate: how many of the largest cells to label with `fmt(value)`.

    Returns:
        The SVG text, ready to inline.
    """
    import matplotlib
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize

    rows, cols, title, xlabel, ylabel, colorbar = _shown(rows, cols, title, xlabel, ylabel, colorbar)
    grid = np.array([[math.nan if v is None else float(v) for v in row] for row in values], dtype=float)
    grid = grid.reshape(len(rows), len(cols))
    shown = np.isfinite(grid) & ((grid > 0) if log else True)
    masked = np.ma.masked_array(grid, ~shown)
    # 64 levels: indistinguishable by eye, and the vector colour bar stays small
    colours = matplotlib.colormaps[cmap].resampled(64).with_extremes(bad=MISSING)
    if shown.any():
        lo, hi = float(grid[shown].min()), float(grid[shown].max())
        hi = hi if hi > lo else (lo * 10 if log else lo + 1)
        scale = LogNorm(lo, hi) if log else Normalize(lo, hi)
    else:
        scale = Normalize(0, 1)
    width = min(max(2.0 + 0.42 * len(cols), 4.5), 11.0)
    height = min(max(1.2 + 0.3 * len(rows), 2.2), 9.0)
    with _figure(width, height) as (fig, out):
        ax = fig.add_subplot()
        mesh = ax.pcolormesh(masked, cmap=colours, norm=scale, edgecolors="white", linewidth=0.5)
        every = math.ceil(len(cols) / 40) or 1  # at most 40 column labels (80-layer models stay legible)
        ax.set_xticks(np.arange(0, len(cols), every) + 0.5, list(cols)[::every],
                      rotation=90 if max(map(len, cols), default=0) > 3 else 0)
        ax.set_yticks(np.arange(len(rows)) + 0.5, list(rows))
        ax.invert_yaxis()
        ax.tick_params(length=0)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if shown.any():
            bar = fig.colorbar(mesh, ax=ax, label=colorbar, pad=0.01, fraction=0.04)
            bar.solids.set_rasterized(False)  # vector, not an embedded PNG
            if log:
                _plain_log(bar.ax.yaxis)
        # rank the shown cells for labelling, largest first (row-major order breaks ties)
        order = sorted(zip(*np.nonzero(shown)), key=lambda ij: (grid[ij] if lowest else -grid[ij], ij))
        labelled = order[:annotate]
        if labelled:  # a cell equal to the last labelled one is labelled too: ties are never left to the order
            labelled += [ij for ij in order[annotate:] if grid[ij] == grid[labelled[-1]]]
        for i, j in labelled:
            dark = _luminance(colours(scale(grid[i, j]))) < 0.5
            ax.text(j + 0.5, i + 0.5, fmt(float(grid[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if dark else "black", gid=f"cell-{i}-{j}")
    return out[0]


def bars(labels: Sequence[str], series: Mapping[str, Sequence[Value]], *, xlabel: str = "", title: str = "",
         log: bool = False, fmt: Callable[[float], str] | None = num) -> str:
    """Horizontal bars: one group per label (top to bottom), one bar per series (e.g. error per scheme).

    Args:
        series: name -> one value per label (None: no bar).
        fmt: labels each bar end with its value; None for no labels.
    """
    import numpy as np

    labels, series, xlabel, title = _shown(labels, series, xlabel, title)
    k = max(len(series), 1)
    step = 0.8 / k
    height = min(max(0.8 + len(labels) * (0.22 + 0.12 * k), 1.8), 14.0)
    with _figure(8.0, height) as (fig, out):
        ax = fig.add_subplot()
        y = np.arange(len(labels))
        for n, (name, vals) in enumerate(series.items()):
            pos = [float(y[i]) - 0.4 + step * (n + 0.5) for i, v in enumerate(vals) if v is not None]
            data = [v for v in vals if v is not None]
            drawn = ax.barh(pos, [float(v) for v in data], height=step * 0.9, color=COLORS[n % len(COLORS)],
                            label=name)
            if fmt is not None:
                ax.bar_label(drawn, [fmt(v) for v in data], padding=2, fontsize=7)
        ax.set_yticks(y, list(labels))
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
            _plain_log(ax.xaxis)
        ax.margins(x=0.12)
        ax.set(title=title, xlabel=xlabel)
        if len(series) > 1:
            ax.legend(loc="best", frameon=False)
    return out[0]


def dots(labels: Sequence[str], series: Mapping[str, Sequence[Value]], *, xlabel: str = "", title: str = "",
         fmt: Callable[[float], str] | None = None) -> str:
    """One row per label (top to bottom), one marker per series: values compared where they lie, on an axis that
    starts near the data (bars would have to start at 0, and a few dB of difference would vanish).

    Args:
        series: name -> one value per label (None: no marker).
        fmt: labels each marker with its value; None for no labels.
    """
    import numpy as np

    labels, series, xlabel, title = _shown(labels, series, xlabel, title)
    height = min(max(1.0 + len(labels) * 0.24, 1.8), 14.0)
    markers = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">")
    with _figure(8.0, height) as (fig, out):
        ax = fig.add_subplot()
        y = np.arange(len(labels))
        for n, (name, vals) in enumerate(series.items()):
            at = [(float(v), float(y[i])) for i, v in enumerate(vals) if v is not None]
            if not at:
                continue
            xs, ys = zip(*at)
            ax.plot(xs, ys, linestyle="none", marker=markers[n % len(markers)], markersize=5,
                    color=COLORS[n % len(COLORS)], label=name)
            if fmt is not None:
                for x0, y0 in at:
                    ax.annotate(fmt(x0), (x0, y0), xytext=(4, 2), textcoords="offset points", fontsize=6.5,
                                color=COLORS[n % len(COLORS)])
        ax.set_yticks(y, list(labels))
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.grid(axis="x", color="#e4e4e4", linewidth=0.6)
        ax.grid(axis="y", color="#f0f0f0", linewidth=0.6)
        ax.margins(x=0.06)
        ax.set(title=title, xlabel=xlabel)
        if len(series) > 1:
            ax.legend(loc="best", frameon=False)
    return out[0]


def tradeoff(points: Mapping[str, tuple[float, float]], front: Sequence[str] = (), *, xlabel: str = "",
             ylabel: str = "", title: str = "", log: bool = False) -> str:
    """Labelled points (x, y), e.g. a scheme's bits per weight against its SQNR; the labels in `front` (the
    schemes no other beats, in x order) are joined by a line, so the Pareto front shows.
    """
    points, front, xlabel, ylabel, title = _shown(points, front, xlabel, ylabel, title)
    with _figure(8.0, 4.0) as (fig, out):
        ax = fig.add_subplot()
        if len(front) > 1:
            ax.plot([points[k][0] for k in front], [points[k][1] for k in front], color="#999999", linewidth=1.0,
                    linestyle="--", zorder=1, label="best at each size")
        for n, (label, (x, y)) in enumerate(points.items()):
            on = label in front
            ax.plot([x], [y], marker="o", markersize=7 if on else 5, linestyle="none", zorder=2,
                    color=COLORS[n % len(COLORS)], markerfacecolor=COLORS[n % len(COLORS)] if on else "white")
            ax.annotate(label, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7.5)
        ax.grid(color="#e4e4e4", linewidth=0.6)
        ax.margins(x=0.15, y=0.12)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if log:
            ax.set_yscale("log")
            _plain_log(ax.yaxis)
        if len(front) > 1:
            ax.legend(loc="best", frameon=False)
    return out[0]


def _lines(ax: Any, xs: Sequence[Sequence[float]], series: Mapping[str, Sequence[Value]]) -> None:
    for n, ((name, vals), x) in enumerate(zip(series.items(), xs)):
        y = [math.nan if v is None else float(v) for v in vals]  # NaN leaves a gap in the line
        ax.plot(x, y, color=COLORS[n % len(COLORS)], marker="o", markersize=3, linewidth=1.4, label=name)
    if len(series) > 1:
        ax.legend(loc="best", frameon=False)


def _toward(ax: Any, x: Sequence[float], toward: float) -> None:
    import numpy as np

    below = [v for v in x if v < toward]
    # the last point (toward itself) one decade beyond the closest one below it
    c = (toward - max(below)) / 10 if below else 1.0

    def forward(v: Any) -> Any:
        # defined a little beyond `toward` too, so that the axis margin can show the last point whole
        return -np.log10(np.maximum(toward - np.asarray(v, dtype=float) + c, c * 1e-3))

    def inverse(y: Any) -> Any:
        return toward + c - 10.0 ** (-np.asarray(y, dtype=float))

    ax.set_xscale("function", functions=(forward, inverse))
    ax.set_xticks(list(x), [f"{v:g}" for v in x])
    ax.set_xticks([], minor=True)
    lo, hi = forward(min(x)), forward(max(x))
    pad = 0.04 * (hi - lo) if hi > lo else 0.5
    ax.set_xlim(inverse(lo - pad), inverse(hi + pad))


def depth_lines(series: Mapping[str, Sequence[Value]], *, ylabel: str = "", title: str = "",
                log: bool = False) -> str:
    """Per-layer values against relative depth 0..1, so that models of different depth overlay (compare).

    Args:
        series: name -> one value per layer, layer 0 first (None: no value at that layer).
    """
    series, ylabel, title = _shown(series, ylabel, title)
    xs = [[i / (len(v) - 1) if len(v) > 1 else 0.0 for i in range(len(v))] for v in series.values()]
    with _figure(8.0, 3.4) as (fig, out):
        ax = fig.add_subplot()
        _lines(ax, xs, series)
        ax.set(title=title, xlabel="relative depth (layer / (layers − 1))", ylabel=ylabel, xlim=(-0.02, 1.02))
        if log:
            ax.set_yscale("log")
            _plain_log(ax.yaxis)
    return out[0]


def curves(x: Sequence[float], series: Mapping[str, Sequence[Value]], *, xlabel: str = "", ylabel: str = "",
           title: str = "", log: bool = False, xscale: str = "linear", marks: Mapping[str, float] | None = None,
           integer_x: bool = False, levels: Mapping[str, float] | None = None, toward: float | None = None) -> str:
    """Several y series over one x axis (e.g. a clip sweep: error against the clipping percentile).

    Args:
        xscale: a matplotlib scale name for x ("linear", "log", …).
        marks: label -> x position drawn as a dashed vertical line (e.g. the chosen percentile).
        integer_x: ticks on whole numbers only (layers).
        levels: label -> y value drawn as a dashed horizontal line (e.g. the largest float16).
        toward: x approaches this value (a percentile approaching 100): the axis is the log of the distance to it,
            so 99, 99.9, 99.99 and 100 lie apart; each x is a tick.
    """
    series, marks, levels, xlabel, ylabel, title = _shown(series, marks or {}, levels or {}, xlabel, ylabel, title)
    with _figure(8.0, 3.4) as (fig, out):
        ax = fig.add_subplot()
        _lines(ax, [list(x)] * len(series), series)
        for n, (label, at) in enumerate(marks.items()):
            ax.axvline(at, color="#555555", linestyle="--", linewidth=0.9)
            ax.annotate(label, (at, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -10 - 10 * n),
                        textcoords="offset points", fontsize=7, color="#333333")
        for label, at in levels.items():
            ax.axhline(at, color="#b3261e", linestyle="--", linewidth=0.9)
            ax.annotate(label, (0.0, at), xycoords=("axes fraction", "data"), xytext=(3, 3),
                        textcoords="offset points", fontsize=7, color="#b3261e")
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.set_xscale(xscale)
        if toward is not None:
            _toward(ax, list(x), toward)
        if integer_x:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            ax.set_yscale("log")
            _plain_log(ax.yaxis)
    return out[0]
