"""The house plotting helpers: the text summary nbval compares, and the style of each deployment."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import pytest

from servingmodel import figures, style
from servingmodel.measurements import deployment_order, load_measurements


@pytest.fixture
def fig_ax():
    style.set_style()
    fig, ax = style.new_figure()
    yield fig, ax
    plt.close(fig)


def test_figure_summary_prints_every_line(fig_ax, capsys):
    fig, ax = fig_ax
    ax.plot([1, 2, 3], [10.0, 20.04, 1234.5], label="first")
    ax.plot([0.5], [7.0], label="second")
    ax.set_xlabel("x label")
    ax.set_ylabel("y label")
    ax.set_xscale("log")
    style.figure_summary(fig)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "axes 0: x=x label [log] y=y label [linear]"
    assert out[1] == "  line first: (1,10) (2,20) (3,1.23e+03)"
    assert out[2] == "  line second: (0.5,7)"
    assert len(out) == 3


def test_figure_summary_prints_scatter_points_and_skips_empty_axes(capsys):
    fig, (ax0, ax1) = style.new_figure(ncols=2)
    ax1.scatter([1.0, 2.0], [3.0, 4.0], label="pts")
    style.figure_summary(fig)
    plt.close(fig)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("axes 1:")
    assert out[1] == "  points pts: (1,3) (2,4)"


def test_plot_curves_draws_every_deployment(fig_ax, capsys):
    fig, ax = fig_ax
    df = load_measurements()
    order = deployment_order(df)
    style.plot_curves(ax, df, "tok_s_per_user", "tok_s_per_gpu", deployments=order)
    assert [ln.get_label() for ln in ax.lines] == order
    assert all(len(ln.get_xdata()) == 6 for ln in ax.lines)
    style.figure_summary(fig)
    lines = [s for s in capsys.readouterr().out.splitlines() if s.startswith("  line ")]
    assert len(lines) == 19 and lines[0].startswith("  line TP2 x 1: (33.6,16.8)")


def test_deployment_style_solid_aggregated_dashed_disaggregated_distinct_colours():
    df = load_measurements()
    kinds = df.drop_duplicates("deployment").set_index("deployment")["kind"]
    assert len(kinds) == 19
    styles = {dep: style.deployment_style(dep) for dep in kinds.index}
    for dep, kind in kinds.items():
        assert styles[dep]["linestyle"] == ("-" if kind == "aggregated" else "--"), dep
    colours = {mcolors.to_hex(st["color"], keep_alpha=True) for st in styles.values()}
    assert len(colours) == 19


def test_family_markers_differ():
    markers = {
        style.deployment_style(d)["marker"] for d in ("TP2 x 1", "TP4 x 1", "TP8 x 1", "1P-TP4 + 3D-TP4")
    }
    assert len(markers) == 4


def test_unknown_deployment_label():
    with pytest.raises(ValueError):
        style.family_of("TP16 x 1")


def test_tradeoff_panels_one_labelled_panel_per_frame(capsys):
    import pandas as pd

    f = pd.DataFrame(
        {
            "deployment": ["TP4 x 1"] * 2,
            "concurrency": [1, 8],
            "tok_s_per_user": [40.0, 30.0],
            "tok_s_per_gpu": [10.0, 60.0],
        }
    )
    fig = figures.tradeoff_panels([f, f.assign(tok_s_per_gpu=[20.0, 90.0])], ["H100", "H200"])
    assert len(fig.axes) == 2
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["H100", "H200"]
    style.figure_summary(fig)
    assert "(30,90)" in capsys.readouterr().out


def test_ttft_timeline_draws_requests_in_order_and_each_reference(capsys):
    fig = figures.ttft_timeline(
        "TP4 x 1", [2.0, 0.0, 1.0], [0.3, 0.1, 0.2], {"lone prefill": 0.1, "measured": 0.4}
    )
    style.figure_summary(fig)
    out = capsys.readouterr().out
    assert "line TP4 x 1, replayed requests: (0,0.1) (1,0.2) (2,0.3)" in out
    assert "line lone prefill: (0,0.1) (1,0.1)" in out and "line measured: (0,0.4) (1,0.4)" in out
    styles = {ln.get_linestyle() for ln in fig.axes[0].lines[1:]}
    assert len(styles) == 2  # each reference level has its own line style
    with pytest.raises(ValueError, match="at most 4 reference levels"):
        figures.ttft_timeline("TP4 x 1", [0.0], [0.1], {str(k): 0.1 * k for k in range(5)})
    plt.close("all")


def test_ttft_models_vs_measured_one_series_per_model_and_family(capsys):
    import pandas as pd

    meas = pd.DataFrame(
        {
            "deployment": ["TP4 x 1", "1P-TP8 + 1D-TP8"],
            "family": ["TP4", "disaggregated"],
            "mean_ttft_ms": [1000.0, 2000.0],
        }
    )
    fig = figures.ttft_models_vs_measured(meas, {"mean field": [900.0, 1500.0], "replay": [1100.0, 1900.0]})
    style.figure_summary(fig)
    out = capsys.readouterr().out
    for label, pt in (
        ("mean field, TP4", "(1,0.9)"),
        ("mean field, disaggregated", "(2,1.5)"),
        ("replay, TP4", "(1,1.1)"),
        ("replay, disaggregated", "(2,1.9)"),
    ):
        assert f"line {label}: {pt}" in out
    assert "[log]" in out and "measured time to first token (s)" in out
    plt.close("all")


def test_roles_fix_the_style_and_draw_records_the_data(capsys):
    fig, ax = style.new_figure()
    style.draw(ax, [1, 2], [3, 4], "TP4 x 1 measured", role="measured", deployment="TP4 x 1")
    style.draw(ax, [1, 2], [3.5, 4.5], "model", role="model", deployment="TP4 x 1")
    style.draw(ax, [1, 2], [1, 1], "cloud", role="cloud", series=2)
    style.reference(ax, 2.0, "limit", axis="x")
    style.finish(ax, xlabel="x (unit)", ylabel="y (unit)", log_x=True, xticks=[1, 2])
    measured, model, limit = ax.lines
    assert measured.get_linestyle() == "None" and measured.get_marker() == "s"  # TP4's marker, no line
    assert model.get_marker() in ("", "None") and model.get_color() == measured.get_color()
    assert limit.get_color() == style.REFERENCE_COLOR and limit.get_linestyle() == "--"
    assert ax.get_xscale() == "log" and ax.get_ylim()[0] == 0 and ax.get_legend() is not None
    style.figure_summary(fig)
    out = capsys.readouterr().out
    assert "x=x (unit) [log] y=y (unit) [linear]" in out
    assert "line TP4 x 1 measured: (1,3) (2,4)" in out and "points cloud: (1,1) (2,1)" in out


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda ax: style.draw(ax, [1], [1], "a", role="dashed"), "unknown role"),
        (lambda ax: style.reference(ax, 1.0, "a", axis="z"), "axis must be"),
        (lambda ax: style.finish(ax, xlabel="", ylabel="", legend="left"), "legend must be"),
        (lambda ax: style.series_color(-1), "non-negative"),
    ],
)
def test_plotting_helpers_refuse_unknown_options(call, message):
    fig, ax = style.new_figure()
    with pytest.raises(ValueError, match=message):
        call(ax)


def test_bars_one_colour_per_deployment(capsys):
    fig, ax = style.new_figure()
    style.bars(ax, ["TP2", "TP4"], [10.0, 20.0], deployments=["TP2 x 1", "TP4 x 1"])
    colours = {tuple(p.get_facecolor()) for p in ax.patches}
    assert len(colours) == 2 and [t.get_text() for t in ax.get_xticklabels()] == ["TP2", "TP4"]
    style.figure_summary(fig)
    assert "bars: (0,10) (1,20)" in capsys.readouterr().out
