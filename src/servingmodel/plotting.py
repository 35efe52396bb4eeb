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

from .evaluate import TARGETS

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
            for xv, yv, c in zip(sub[x], sub[y], sub["concurrency"]):
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
        return {"color": base["color"], "linestyle": "none", "marker": base["marker"], "markersize": 7}
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
    """A reference level: a horizontal line at y = value (``axis="y"``) or a vertical one at x = value."""
    if axis == "y":
        ax.axhline(float(value), label=label, **role_style("reference"))
    elif axis == "x":
        ax.axvline(float(value), label=label, **role_style("reference"))
    else:
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")


def bars(
    ax, labels, values, label: str | None = None, *, deployments=None, series: int | None = None, bottom=None
) -> None:
    """Bars at positions 0..n-1 (stacked on ``bottom``), coloured per deployment or as one series."""
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
    """Label the axes (with units), set the scales, and place the legend (``outside``, ``inside`` or ``none``).

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
                f"({_fmt(float(a))},{_fmt(float(b))})" for a, b in zip(np.atleast_1d(xs), np.atleast_1d(ys))
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


def predicted_vs_measured(pred, meas, quantity: str = "tok_s_per_gpu"):
    """Two panels: predicted against measured (log-log, with y = x) and the residual against concurrency.

    ``pred`` holds ``pred_<quantity>`` aligned with ``meas`` (same index);
    points are coloured and marked by family. Returns the figure.
    """
    from .measurements import FAMILIES

    fig, (ax1, ax2) = new_figure(ncols=2)
    label = {
        "tok_s_per_gpu": "throughput per GPU (tok/s/GPU)",
        "tok_s_per_user": "throughput per user (tok/s/user)",
    }
    for fam in FAMILIES:
        m = (meas["family"] == fam).to_numpy()
        if not m.any():
            continue
        st = deployment_style(meas.loc[m, "deployment"].iloc[-1])
        kw = dict(ls="none", marker=st["marker"], color=st["color"], label=fam)
        y = pred.loc[m, "pred_" + quantity].to_numpy(float)
        x = meas.loc[m, quantity].to_numpy(float)
        ax1.plot(x, y, **kw)
        ax2.plot(meas.loc[m, "concurrency"].to_numpy(float), y / x - 1.0, **kw)
    top = 1.2 * max(float(meas[quantity].max()), float(np.nanmax(pred["pred_" + quantity].to_numpy(float))))
    bottom = 0.8 * min(
        float(meas[quantity].min()), float(np.nanmin(pred["pred_" + quantity].to_numpy(float)))
    )
    ax1.plot([bottom, top], [bottom, top], color="0.3", ls="--", lw=1, label="y = x")
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="measured " + label[quantity],
        ylabel="predicted " + label[quantity],
    )
    ax2.axhline(0.0, color="0.3", ls="--", lw=1, label="no error")
    ax2.set(xscale="log", xlabel=X_CONCURRENCY, ylabel="residual, predicted / measured - 1")
    ax1.legend(loc="upper left")
    fig.tight_layout()
    return fig


def panel_label(ax, text: str) -> None:
    """Name a panel of a multi-panel figure inside its axes (the house style has no titles)."""
    ax.text(0.98, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize="small")


def model_vs_measured_panels(meas, curves, x: str = "tok_s_per_user", y: str = "tok_s_per_gpu"):
    """One panel per family: measured points (markers) and the model's curves (lines), same colours.

    ``curves`` holds ``pred_<x>`` and ``pred_<y>`` per deployment and
    concurrency (see :func:`servingmodel.fullmodel.model_curves`).
    """
    from .measurements import FAMILIES

    fams = [f for f in FAMILIES if (meas["family"] == f).any()]
    ncols = 2
    nrows = (len(fams) + 1) // 2
    fig, axes = new_figure(ncols=ncols, nrows=nrows, squeeze=False)
    for ax, fam in zip(axes.ravel(), fams):
        sub = meas[meas["family"] == fam]
        for dep in dict.fromkeys(sub["deployment"]):
            st = deployment_style(dep)
            m = sub[sub["deployment"] == dep].sort_values("concurrency")
            c = curves[curves["deployment"] == dep].sort_values("concurrency")
            ax.plot(
                c["pred_" + x].to_numpy(float),
                c["pred_" + y].to_numpy(float),
                color=st["color"],
                linestyle=st["linestyle"],
                marker=None,
                label=f"{dep} model",
            )
            ax.plot(
                m[x].to_numpy(float),
                m[y].to_numpy(float),
                color=st["color"],
                linestyle="none",
                marker=st["marker"],
                label=f"{dep} measured",
            )
        ax.set_xlabel(X_PER_USER if x == "tok_s_per_user" else x)
        ax.set_ylabel(Y_PER_GPU if y == "tok_s_per_gpu" else y)
        ax.set_ylim(bottom=0)
        panel_label(ax, fam)
    for ax in axes.ravel()[len(fams) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def ladder_figure(ladder, metric: str = "gpu"):
    """Median and 90th-percentile throughput error of every rung of the error ladder, over all points,
    with the median TTFT error where the rung predicts one (log scale)."""
    rows = ladder[ladder["group"] == "all"]
    fig, ax = new_figure()
    xs = np.arange(len(rows))
    ax.plot(
        xs,
        100 * rows[f"{metric}_median"].to_numpy(float),
        marker="o",
        color="0.2",
        label="throughput, median",
    )
    ax.plot(
        xs,
        100 * rows[f"{metric}_p90"].to_numpy(float),
        marker="s",
        color="0.55",
        linestyle="--",
        label="throughput, 90th percentile",
    )
    if "ttft_median" in rows.columns:
        ttft = 100 * rows["ttft_median"].to_numpy(float)
        ok = np.isfinite(ttft)
        ax.plot(xs[ok], ttft[ok], marker="^", color="0.4", linestyle=":", label="TTFT, median")
    ax.set_xticks(xs)
    ax.set_xticklabels(rows["rung"].tolist(), rotation=25, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("absolute relative error (%)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def stacked_bars(ax, labels, parts: dict, ylabel: str) -> None:
    """Stacked bars: one bar per label, one segment per entry of ``parts`` (name -> values)."""
    bottom = np.zeros(len(labels))
    colors = sns.color_palette("colorblind", len(parts))
    for (name, vals), col in zip(parts.items(), colors):
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
    for i, ((name, vals), col) in enumerate(zip(series.items(), colors)):
        ax.bar(xs + (i - (n - 1) / 2) * width, np.asarray(vals, float), width, label=name, color=col)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def tradeoff_panels(frames, titles):
    """One throughput trade-off panel per frame (shared axes, log per-user axis) and one legend for all."""
    fig, axes = new_figure(ncols=len(frames), sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, f, title in zip(axes, frames, titles):
        plot_curves(ax, f, "tok_s_per_user", "tok_s_per_gpu", label_points=False)
        tradeoff_axes(ax, log_x=True)
        panel_label(ax, title)
        if ax is not axes[0]:
            ax.set_ylabel("")
    axes[0].set_ylim(0, 1.05 * max(f["tok_s_per_gpu"].max() for f in frames))
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = sorted(handles, key=lambda lab: int(lab.split(" x ")[0][2:]))
    axes[-1].legend(
        [handles[lab] for lab in order], order, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False
    )
    fig.tight_layout()
    return fig


def ttft_timeline(deployment: str, arrival_s, ttft_s, references: dict):
    """Each replayed request's TTFT against the time it was sent, with horizontal reference levels.

    ``references`` maps a label (for example ``"lone prefill"``) to a TTFT in
    seconds, drawn as a dashed line. Returns the figure.
    """
    fig, ax = new_figure()
    st = deployment_style(deployment)
    order = np.argsort(np.asarray(arrival_s, float), kind="stable")
    ax.plot(
        np.asarray(arrival_s, float)[order],
        np.asarray(ttft_s, float)[order],
        ls="none",
        marker=st["marker"],
        color=st["color"],
        label=f"{deployment}, replayed requests",
    )
    styles = ["-", "--", "-.", ":"]
    if len(references) > len(styles):
        raise ValueError(f"at most {len(styles)} reference levels, got {len(references)}")
    greys = np.linspace(0.1, 0.5, max(len(references), 1))
    for (name, value), g, ls in zip(references.items(), greys, styles):
        ax.axhline(float(value), color=str(g), ls=ls, lw=1.2, label=name)
    ax.set(xlabel="time the request was sent (s)", ylabel="time to first token (s)")
    ax.set_ylim(bottom=0)
    legend_outside(ax)
    return fig


def ttft_models_vs_measured(meas, models: dict):
    """Predicted TTFT of several models against the measured TTFT (log-log, with y = x and a band as wide as the latency target).

    ``models`` maps a model name to predicted TTFTs in ms, aligned with the
    rows of ``meas`` that published a TTFT (``mean_ttft_ms``). One marker per
    model; the colour of each point is its deployment family's. Returns the figure.
    """
    from .measurements import FAMILIES

    fig, ax = new_figure()
    x = meas["mean_ttft_ms"].to_numpy(float) / 1e3
    markers = ["o", "X", "P", "*"]
    for (name, values), mk in zip(models.items(), markers):
        y = np.asarray(values, float) / 1e3
        for fam in FAMILIES:
            m = (meas["family"] == fam).to_numpy()
            if not m.any():
                continue
            color = deployment_style(meas.loc[m, "deployment"].iloc[-1])["color"]
            ax.plot(
                x[m],
                y[m],
                ls="none",
                marker=mk,
                color=color,
                label=f"{name}, {fam}",
                markerfacecolor="none" if mk == "o" else color,
            )
    lo, hi = 0.8 * float(np.nanmin(x)), 1.25 * float(np.nanmax(x))
    ax.plot([lo, hi], [lo, hi], label="y = x", **role_style("reference"))
    b = TARGETS.latency_median
    ax.fill_between(
        [lo, hi],
        [(1 - b) * lo, (1 - b) * hi],
        [(1 + b) * lo, (1 + b) * hi],
        color="0.85",
        lw=0,
        label=f"within {100 * b:.0f} %",
    )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="measured time to first token (s)",
        ylabel="predicted time to first token (s)",
    )
    legend_outside(ax)
    return fig
