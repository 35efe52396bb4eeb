"""The book's composite figures: several panels or series drawn from model and measurement frames.

Each function returns a finished figure in the house style of
:mod:`servingmodel.style` (which owns every colour, marker and label); chapters
only call them and then :func:`servingmodel.style.figure_summary`.
"""

from __future__ import annotations

import numpy as np

from .evaluate import TARGETS
from .measurements import FAMILIES
from .style import (
    X_CONCURRENCY,
    X_PER_USER,
    Y_PER_GPU,
    deployment_style,
    legend_outside,
    new_figure,
    panel_label,
    plot_curves,
    role_style,
    tradeoff_axes,
)


def predicted_vs_measured(pred, meas, quantity: str = "tok_s_per_gpu"):
    """Two panels: predicted against measured (log-log, with y = x) and the residual against concurrency.

    ``pred`` holds ``pred_<quantity>`` aligned with ``meas`` (same index);
    points are coloured and marked by family. Returns the figure.
    """
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


def model_vs_measured_panels(meas, curves, x: str = "tok_s_per_user", y: str = "tok_s_per_gpu"):
    """One panel per family: measured points (markers) and the model's curves (lines), same colours.

    ``curves`` holds ``pred_<x>`` and ``pred_<y>`` per deployment and
    concurrency (see :func:`servingmodel.fullmodel.model_curves`).
    """
    fams = [f for f in FAMILIES if (meas["family"] == f).any()]
    ncols = 2
    nrows = (len(fams) + 1) // 2
    fig, axes = new_figure(ncols=ncols, nrows=nrows, squeeze=False)
    for ax, fam in zip(axes.ravel(), fams, strict=False):
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


def tradeoff_panels(frames, titles):
    """One throughput trade-off panel per frame (shared axes, log per-user axis) and one legend for all."""
    fig, axes = new_figure(ncols=len(frames), sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, f, title in zip(axes, frames, titles, strict=True):
        plot_curves(ax, f, "tok_s_per_user", "tok_s_per_gpu", label_points=False)
        tradeoff_axes(ax, log_x=True)
        panel_label(ax, title)
        if ax is not axes[0]:
            ax.set_ylabel("")
    axes[0].set_ylim(0, 1.05 * max(f["tok_s_per_gpu"].max() for f in frames))
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
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
    for (name, value), g, ls in zip(references.items(), greys, styles, strict=False):
        ax.axhline(float(value), color=str(g), ls=ls, lw=1.2, label=name)
    ax.set(xlabel="time the request was sent (s)", ylabel="time to first token (s)")
    ax.set_ylim(bottom=0)
    legend_outside(ax)
    return fig


def ttft_models_vs_measured(meas, models: dict):
    """Predicted TTFT of several models against the measured TTFT (log-log, with y = x and a band as wide as
    the latency target).

    ``models`` maps a model name to predicted TTFTs in ms, aligned with the
    rows of ``meas`` that published a TTFT (``mean_ttft_ms``). One marker per
    model; the colour of each point is its deployment family's. Returns the figure.
    """
    fig, ax = new_figure()
    x = meas["mean_ttft_ms"].to_numpy(float) / 1e3
    markers = ["o", "X", "P", "*"]
    for (name, values), mk in zip(models.items(), markers, strict=False):
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
