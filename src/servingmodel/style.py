"""The book's house style: one place for themes, colours, markers and labels.

Chapters never set styles; they call :func:`set_style` once (in a hidden
preamble cell) and draw with the helpers here. A chapter that composes its own
figure says what each series *is* (a measured deployment, a model curve, a
reference level, ...) through :func:`draw`, :func:`reference` and
:func:`bars`, and :func:`finish` labels the axes; the colours, markers and
line styles of each role live here. Every figure is followed by a hidden cell
that calls :func:`figure_summary`, so the plotted numbers are part of what
nbval compares.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

X_PER_USER = "throughput per user (output tok/s/user)"
Y_PER_GPU = "throughput per GPU (output tok/s/GPU)"
X_CONCURRENCY = "concurrency (requests in flight)"

FAMILY_PALETTE = {"TP2": "Blues", "TP4": "Greens", "TP8": "Oranges", "disaggregated": "Purples"}
FAMILY_MARKER = {"TP2": "o", "TP4": "s", "TP8": "D", "disaggregated": "^"}
_DISAGG_ORDER = (
    "1P-TP4 + 3D-TP4",
    "2P-TP4 + 2D-TP4",
    "3P-TP4 + 1D-TP4",
    "2P-TP4 + 1D-TP8",
    "1P-TP8 + 1D-TP8",
)
_MAX_REPLICAS = {"TP2": 8, "TP4": 4, "TP8": 2}
REFERENCE_COLOR = "0.3"  # reference levels: y = x, ridge points, limits, objectives
HIGHLIGHT_COLOR = "tab:red"  # the one point a figure is about
SERIES_PALETTE = "colorblind"  # series that are not deployments (contexts, cost terms, ...)
SERIES_MARKERS = ("o", "s", "D", "^", "v", "P")
ROLES = ("curve", "model", "model-part", "measured", "reference", "highlight", "cloud")


def set_style() -> None:
    """Apply the book's seaborn theme and figure defaults (called once per chapter)."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    plt.rcParams.update(
        {
            "figure.figsize": (8.0, 5.0),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "axes.titlesize": "medium",
            "legend.fontsize": "small",
            "lines.linewidth": 1.6,
            "lines.markersize": 5,
            "svg.hashsalt": "servingmodel",
        }
    )


def family_of(deployment: str) -> str:
    """Family of a deployment label (``TP4 x 2`` -> ``TP4``; P/D labels -> ``disaggregated``)."""
    if "P-TP" in deployment:
        return "disaggregated"
    fam = deployment.split(" x ")[0]
    if fam not in _MAX_REPLICAS:
        raise ValueError(f"unknown deployment label {deployment!r}")
    return fam


def deployment_style(deployment: str) -> dict:
    """Colour, marker and line style of one deployment (same everywhere in the book)."""
    fam = family_of(deployment)
    cmap = sns.color_palette(FAMILY_PALETTE[fam], as_cmap=True)
    if fam == "disaggregated":
        idx = _DISAGG_ORDER.index(deployment) if deployment in _DISAGG_ORDER else 0
        shade = 0.45 + 0.5 * idx / (len(_DISAGG_ORDER) - 1)
        ls = "--"
    else:
        n = int(deployment.split(" x ")[1])
        top = _MAX_REPLICAS[fam]
        shade = 0.45 + 0.5 * (n - 1) / max(top - 1, 1)
        ls = "-"
    return {"color": cmap(shade), "marker": FAMILY_MARKER[fam], "linestyle": ls}


def plot_curves(
    ax,
    df,
    x: str,
    y: str,
    *,
    label_points: bool = True,
    deployments=None,
    alpha: float = 1.0,
    line: bool = True,
    suffix: str = "",
    linestyle=None,
    marker=None,
) -> None:
    """Draw one curve per deployment of ``df`` (sorted by concurrency), in the house style.

    ``df`` needs columns ``deployment``, ``concurrency``, ``x`` and ``y``.
    Points are labelled by concurrency when ``label_points`` is true.
    """
    order = deployments if deployments is not None else list(dict.fromkeys(df["deployment"]))
    for dep in order:
        sub = df[df["deployment"] == dep].sort_values("concurrency")
        if sub.empty:
            continue
        st = deployment_style(dep)
        if linestyle is not None:
            st["linestyle"] = linestyle
        if marker is not None:
            st["marker"] = marker
        if not line:
            st["linestyle"] = "none"
        ax.plot(sub[x].to_numpy(float), sub[y].to_numpy(float), label=dep + suffix, alpha=alpha, **st)
        if label_points:
            for xv, yv, c in zip(sub[x], sub[y], sub["concurrency"], strict=True):
                ax.annotate(
                    f"{int(c)}",
                    (float(xv), float(yv)),
                    textcoords="offset points",
                    xytext=(3, 3),
                    fontsize=6,
                    color=st["color"],
                )


def series_color(index: int):
    """Colour of the index-th series that is not a deployment."""
    if index < 0:
        raise ValueError(f"series index must be non-negative, got {index}")
    return sns.color_palette(SERIES_PALETTE, max(index + 1, 8))[index]


def role_style(role: str, deployment: str | None = None, series: int | None = None) -> dict:
    """Matplotlib keywords for one series, from what it is.

    Roles: ``curve`` (line and markers), ``model`` (solid line, no markers),
    ``model-part`` (dotted line: one term of a model), ``measured`` (markers
    only), ``reference`` (thin dashed grey), ``highlight`` (a large red star),
    ``cloud`` (small translucent markers, for scatter). The colour comes from
    ``deployment`` (its house colour and marker), else from ``series`` (the
    index into the series palette), else it is neutral.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role == "reference":
        return {"color": REFERENCE_COLOR, "linestyle": "--", "linewidth": 1.0, "marker": ""}
    if role == "highlight":
        return {"color": HIGHLIGHT_COLOR, "linestyle": "none", "marker": "*", "markersize": 15}
    if deployment is not None:
        base = deployment_style(deployment)
    elif series is not None:
        base = {
            "color": series_color(series),
            "marker": SERIES_MARKERS[series % len(SERIES_MARKERS)],
            "linestyle": "-",
        }
    else:
        base = {"color": REFERENCE_COLOR, "marker": "o", "linestyle": "-"}
    if role == "model":
        return {"color": base["color"], "linestyle": "-", "marker": ""}
    if role == "model-part":
        return {"color": base["color"], "linestyle": ":", "marker": ""}
    if role == "measured":
        return {
            "color": base["color"],
            "linestyle": "none",
            "marker": base["marker"],
            "markersize": 7,
        }
    if role == "cloud":
        return {"color": base["color"], "marker": base["marker"], "s": 14, "alpha": 0.45}
    return base  # curve


def draw(
    ax,
    x,
    y,
    label: str,
    *,
    role: str = "curve",
    deployment: str | None = None,
    series: int | None = None,
    markevery=None,
) -> None:
    """Draw one series in the style of its role (see :func:`role_style`)."""
    st = role_style(role, deployment, series)
    x, y = np.asarray(x, float), np.asarray(y, float)
    if role == "cloud":
        ax.scatter(x, y, label=label, **st)
    else:
        ax.plot(x, y, label=label, markevery=markevery, **st)


def reference(ax, value: float, label: str, *, axis: str = "y") -> None:
    """A reference level: a horizontal line at y = value (``axis="y"``) or a vertical one at x
    = value.
    """
    if axis == "y":
        ax.axhline(float(value), label=label, **role_style("reference"))
    elif axis == "x":
        ax.axvline(float(value), label=label, **role_style("reference"))
    else:
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")


def bars(
    ax,
    labels,
    values,
    label: str | None = None,
    *,
    deployments=None,
    series: int | None = None,
    bottom=None,
) -> None:
    """Bars at positions 0..n-1 (stacked on ``bottom``), coloured per deployment or as one
    series.
    """
    v = np.asarray(values, float)
    if deployments is not None:
        color = [deployment_style(d)["color"] for d in deployments]
    else:
        color = series_color(series if series is not None else 0)
    ax.bar(np.arange(len(v)), v, width=0.5, bottom=bottom, color=color, label=label)
    ax.set_xticks(np.arange(len(v)), [str(lab) for lab in labels])


def finish(
    ax,
    *,
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    log_y: bool = False,
    xticks=None,
    zero_based: bool = True,
    legend: str = "outside",
) -> None:
    """Label the axes (with units), set the scales, and place the legend (``outside``, ``inside`` or
    ``none``).

    ``xticks`` (numbers) puts one labelled tick at each value and no minor
    ticks; ``zero_based`` starts the y axis at 0 on a linear scale.
    """
    if log_x:
        ax.set_xscale("log", base=2 if xticks is not None else 10)
    if log_y:
        ax.set_yscale("log")
    if xticks is not None:
        ticks = list(xticks)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if zero_based and not log_y:
        ax.set_ylim(bottom=0)
    if legend == "outside":
        legend_outside(ax)
    elif legend == "inside":
        ax.legend(loc="best", fontsize="small")
    elif legend != "none":
        raise ValueError(f"legend must be 'outside', 'inside' or 'none', got {legend!r}")


def tidy(fig):
    """Final layout of a composed figure (returns it)."""
    fig.tight_layout()
    return fig


def tradeoff_axes(ax, *, log_x: bool = False) -> None:
    """Axis labels (with units) of the throughput-per-GPU versus throughput-per-user plot."""
    ax.set_xlabel(X_PER_USER)
    ax.set_ylabel(Y_PER_GPU)
    if log_x:
        ax.set_xscale("log")
    ax.set_ylim(bottom=0)


def legend_outside(ax, ncol: int = 1) -> None:
    """Legend to the right of the axes, small, in plotting order."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=ncol, frameon=False)


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "nan"
    return f"{v:.3g}"


def figure_summary(fig) -> None:
    """Print a compact, rounded text summary of every series plotted in ``fig``.

    Lines and scatter collections are listed per axes with their label and
    (x, y) values to three significant figures, plus axis labels and scales.
    nbval compares this text, so a change in any plotted number fails the test.
    """
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or (not ax.lines and not ax.collections and not ax.patches):
            continue
        print(
            f"axes {i}: x={ax.get_xlabel()!s} [{ax.get_xscale()}] y={ax.get_ylabel()!s} [{ax.get_yscale()}]"
        )
        for ln in ax.lines:
            xs, ys = ln.get_xdata(), ln.get_ydata()
            pts = " ".join(
                f"({_fmt(float(a))},{_fmt(float(b))})"
                for a, b in zip(np.atleast_1d(xs), np.atleast_1d(ys), strict=True)
            )
            print(f"  line {ln.get_label()}: {pts}")
        for col in ax.collections:
            offs = col.get_offsets()
            if len(offs) == 0:
                continue
            pts = " ".join(f"({_fmt(float(a))},{_fmt(float(b))})" for a, b in np.asarray(offs))
            print(f"  points {col.get_label()}: {pts}")
        bars = [p for p in ax.patches if hasattr(p, "get_height")]
        if bars:
            pts = " ".join(f"({_fmt(p.get_x() + p.get_width() / 2)},{_fmt(p.get_height())})" for p in bars)
            print(f"  bars: {pts}")


def new_figure(ncols: int = 1, nrows: int = 1, **kw):
    """A figure with the house default size scaled by the panel grid."""
    w, h = plt.rcParams["figure.figsize"]
    kw.setdefault(
        "figsize", (w * (1 if ncols == 1 else 0.62 * ncols), h * (1 if nrows == 1 else 0.8 * nrows))
    )
    return plt.subplots(nrows, ncols, **kw)


def panel_label(ax, text: str) -> None:
    """Name a panel of a multi-panel figure inside its axes (the house style has no titles)."""
    ax.text(0.98, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize="small")


def stacked_bars(ax, labels, parts: dict, ylabel: str) -> None:
    """Stacked bars: one bar per label, one segment per entry of ``parts`` (name -> values)."""
    bottom = np.zeros(len(labels))
    colors = sns.color_palette("colorblind", len(parts))
    for (name, vals), col in zip(parts.items(), colors, strict=True):
        v = np.asarray(vals, float)
        ax.bar(labels, v, bottom=bottom, label=name, color=col)
        bottom = bottom + v
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def grouped_bars(ax, labels, series: dict, ylabel: str) -> None:
    """Side-by-side bars: one group per label, one bar per entry of ``series`` (name -> values)."""
    n = len(series)
    width = 0.8 / n
    xs = np.arange(len(labels))
    colors = sns.color_palette("colorblind", n)
    for i, ((name, vals), col) in enumerate(zip(series.items(), colors, strict=True)):
        ax.bar(xs + (i - (n - 1) / 2) * width, np.asarray(vals, float), width, label=name, color=col)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
