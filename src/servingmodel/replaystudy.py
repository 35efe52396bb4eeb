"""The step replay as a study of the benchmark: whole requests and stale routers (chapter 08).

Each function replays measured points with :mod:`servingmodel.stepsim` under a
changed assumption (the memory reserve, the router, its scrape interval) and
returns a small table next to the measurements. Chapter 10 reads the TP2
plateau from :func:`whole_request_plateau`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import checks, stepsim
from .fullmodel import make_instance, predict_aggregated
from .kvcache import full_requests_that_fit
from .layout import Layout, benchmark_setup, layout_of, measured_point, workload
from .setup import ModelParams, Setup
from .specs import constant
from .stepsim import engine_from_instance, replay_point


def reserve_staircase(
    setup: Setup, layout: Layout, *, isl: int, osl: int, concurrency: int, reserves_gib
) -> pd.DataFrame:
    """Replay one point with the memory reserve set to each of ``reserves_gib`` in turn (chapter
    08).

    Whole requests make the replay's throughput a staircase in the reserve,
    where the mean-field model's fractional batch is a ramp. One row per
    reserve: ``reserve_gib``, ``whole_requests_that_fit`` (at their final
    length), the replay's ``replay_tok_s_per_gpu``, ``preemptions`` and
    ``peak_running`` (requests one instance held at once), and the mean-field
    ``meanfield_tok_s_per_gpu``.
    """
    if layout.kind != "aggregated":
        raise ValueError(f"reserve_staircase replays an aggregated layout, got {layout.kind!r}")
    rows = []
    for reserve in reserves_gib:
        q = setup.with_params(memory_reserve_gib=float(reserve))
        engine = engine_from_instance(
            make_instance(q, tp=layout.tp, isl=isl, osl=osl),
            int(constant("max_num_batched_tokens")),
            int(constant("max_num_seqs")),
        )
        run = replay_point(q, layout, isl=isl, osl=osl, concurrency=concurrency)
        mf = predict_aggregated(q, layout, isl=isl, osl=osl, concurrency=concurrency)
        rows.append(
            {
                "reserve_gib": float(reserve),
                "whole_requests_that_fit": int(full_requests_that_fit(engine.kv_capacity_tokens, isl, osl)),
                "replay_tok_s_per_gpu": run.output_tok_s / layout.num_gpus,
                "preemptions": run.preemptions,
                "peak_running": run.peak_running,
                "meanfield_tok_s_per_gpu": mf.tok_s_per_gpu,
            }
        )
    return pd.DataFrame(rows)


def whole_request_plateau(
    meas: pd.DataFrame,
    params: ModelParams,
    deployment: str = "TP2 x 1",
    concurrency: int = 32,
    reserves_gib=None,
) -> dict:
    """The measured plateau of one deployment read as a whole number of requests (chapters 08 and
    10).

    Replays the measured point with the memory reserve at each of
    ``reserves_gib`` (:func:`reserve_staircase`; by
    default 0.1 GiB steps from 0.7 GiB below to 0.1 GiB above the calibrated
    reserve, rounded to 0.1 GiB) and at the calibrated reserve. Returns
    ``table`` (the staircase), ``steps`` (for each number of requests
    running without preemption: the replayed
    tok/s/GPU and the largest reserve that allows it), ``measured`` (tok/s/GPU),
    ``matched`` (the step nearest the measurement) and ``calibrated`` (the
    replay's row at the calibrated reserve).
    """
    r = measured_point(meas, deployment, concurrency)
    setup, lay, (isl, osl) = benchmark_setup(r, params), layout_of(r), workload(r)
    if reserves_gib is None:
        reserves_gib = np.round(params.memory_reserve_gib + np.arange(-7, 2) / 10, 1)
    point = dict(isl=isl, osl=osl, concurrency=concurrency)
    table = reserve_staircase(setup, lay, **point, reserves_gib=reserves_gib)
    calibrated = reserve_staircase(setup, lay, **point, reserves_gib=[params.memory_reserve_gib]).iloc[0]
    clean = table[table["preemptions"] == 0]
    if clean.empty:
        raise ValueError(f"every replay of {deployment!r} preempts; no step of the staircase is clean")
    steps = (
        clean.groupby("peak_running")
        .agg(
            replay_tok_s_per_gpu=("replay_tok_s_per_gpu", "max"),
            max_reserve_gib=("reserve_gib", "max"),
        )
        .reset_index()
    )
    measured = float(r["tok_s_per_gpu"])
    matched = steps.loc[(steps["replay_tok_s_per_gpu"] - measured).abs().idxmin()]
    return {
        "table": table,
        "steps": steps,
        "measured": measured,
        "matched": matched,
        "calibrated": calibrated,
    }


STALE_ROUTINGS = ("stale", "stale-herd")


def stale_router_ttft(
    meas: pd.DataFrame,
    params: ModelParams,
    seeds: int | None = None,
    refresh_s: float | None = None,
) -> pd.DataFrame:
    """The llm-d pods' loaded points with a published TTFT, replayed behind each router (chapter
    08).

    Columns: ``deployment``, ``concurrency``, ``measured_ttft_ms`` and
    ``measured_output_tok_s``, then ``<router>_ttft_ms`` and
    ``<router>_output_tok_s`` for ``balanced``, ``stale`` and ``stale_herd``;
    the stale routers scrape pod state every ``refresh_s`` (default
    ``router_refresh_s``; :class:`servingmodel.stepsim.StaleRouter`).
    """
    pts = meas[meas["mean_ttft_ms"].notna() & (meas["concurrency"] > 1) & (meas["family"] == "disaggregated")]
    if pts.empty:
        raise ValueError("no loaded llm-d point with a published TTFT")
    out = pd.DataFrame(
        {
            "deployment": pts["deployment"],
            "concurrency": pts["concurrency"],
            "measured_ttft_ms": pts["mean_ttft_ms"],
            "measured_output_tok_s": pts["output_tok_s"],
        }
    )
    for routing in ("balanced",) + STALE_ROUTINGS:
        rep = stepsim.replay_measurements(
            pts,
            params,
            seeds,
            routing=routing,
            refresh_s=None if routing == "balanced" else refresh_s,
        )
        key = routing.replace("-", "_")
        out[f"{key}_ttft_ms"] = rep["replay_ttft_ms"]
        out[f"{key}_output_tok_s"] = rep["replay_output_tok_s"]
    return out


def stale_router_sensitivity(
    meas: pd.DataFrame, params: ModelParams, refreshes_s, seeds: int | None = None
) -> pd.DataFrame:
    """The stale routers' replay of the llm-d pods for each scrape interval in ``refreshes_s``
    (chapter 08).

    Covers every llm-d point at a concurrency where one of them published a
    loaded TTFT. One row per router and point: ``router`` (``balanced``,
    ``stale`` or ``stale-herd``), ``refresh_ms`` (NaN for balanced),
    ``deployment``, ``concurrency``, ``ttft_error`` (replay / measured - 1,
    NaN without a published TTFT) and ``tok_error`` (output throughput, likewise).
    """
    llmd = meas[meas["family"] == "disaggregated"]
    loads = set(llmd.loc[llmd["mean_ttft_ms"].notna() & (llmd["concurrency"] > 1), "concurrency"])
    if not loads:
        raise ValueError("no loaded llm-d point with a published TTFT")
    pts = llmd[llmd["concurrency"].isin(loads)]
    runs = [
        (
            "balanced",
            float("nan"),
            stepsim.replay_measurements(pts, params, seeds, routing="balanced"),
        )
    ]
    for routing in STALE_ROUTINGS:
        for r in refreshes_s:
            runs.append(
                (
                    routing,
                    1e3 * float(r),
                    stepsim.replay_measurements(pts, params, seeds, routing=routing, refresh_s=float(r)),
                )
            )
    frames = [
        pd.DataFrame(
            {
                "router": name,
                "refresh_ms": ms,
                "deployment": pts["deployment"],
                "concurrency": pts["concurrency"],
                "ttft_error": rep["replay_ttft_ms"] / pts["mean_ttft_ms"] - 1,
                "tok_error": rep["replay_output_tok_s"] / pts["output_tok_s"] - 1,
            }
        )
        for name, ms, rep in runs
    ]
    return pd.concat(frames, ignore_index=True)


def stale_router_summary(sens: pd.DataFrame) -> pd.DataFrame:
    """One row per router and interval of :func:`stale_router_sensitivity`: the TTFT error at each
    published
    point (``ttft <deployment> @<C>``) and the least and greatest throughput error over the
    deployments at
    each concurrency (``tok min @<C>``, ``tok max @<C>``), all fractions."""
    keys = ["router", "refresh_ms"]
    sens = sens.assign(refresh_ms=sens["refresh_ms"].fillna(-1.0))  # groupby drops NaN keys
    ttft = sens.dropna(subset=["ttft_error"]).assign(
        col=lambda d: "ttft " + d["deployment"] + " @" + d["concurrency"].astype(str)
    )
    wide = ttft.pivot_table(index=keys, columns="col", values="ttft_error", sort=False)
    tok = (
        sens.groupby(keys + ["concurrency"], sort=False)["tok_error"]
        .agg(["min", "max"])
        .unstack("concurrency")
    )
    tok.columns = [f"tok {stat} @{c}" for stat, c in tok.columns]
    out = wide.join(tok).reset_index()
    out["refresh_ms"] = out["refresh_ms"].where(out["refresh_ms"] >= 0)
    return out


def opening_burst_share(
    meas: pd.DataFrame,
    params: ModelParams,
    deployment: str,
    concurrency: int,
    routing: str = "stale-herd",
    reference: str = "balanced",
    seeds: int | None = None,
) -> float:
    """Share of the extra TTFT of ``routing`` over ``reference`` that falls on the runs' first C
    requests.

    Pooled over all runs of :func:`servingmodel.stepsim.replay_runs` for each
    router at one measured point; the first C requests of a run are the
    closed loop's opening burst, all sent at once.
    """
    r = measured_point(meas, deployment, concurrency)
    setup, lay, (isl, osl) = benchmark_setup(r, params), layout_of(r), workload(r)
    first, total = {}, {}
    for k in (routing, reference):
        runs = [
            run.ttft_by_arrival_s()
            for run in stepsim.replay_runs(
                setup, lay, isl=isl, osl=osl, concurrency=concurrency, seeds=seeds, routing=k
            )
        ]
        first[k] = sum(t[:concurrency].sum() for t in runs) / len(runs)
        total[k] = sum(t.sum() for t in runs) / len(runs)
    extra = total[routing] - total[reference]
    if not extra > 0:
        raise ValueError(
            f"{routing} adds no wait over {reference} at {deployment!r}, concurrency {concurrency}"
        )
    return float((first[routing] - first[reference]) / extra)


def stale_router_gap_closed(summary: pd.DataFrame, router: str, refresh_ms: float, column: str) -> float:
    """Share of the balanced router's TTFT miss in ``column`` that ``router`` at ``refresh_ms``
    removes:
    1 - |its error| / |balanced error|, from :func:`stale_router_summary` (chapter 08)."""
    base = summary_row(summary, "balanced", None)[column]
    if not base != 0:
        raise ValueError(f"the balanced router has no miss to close in {column!r}")
    return float(1 - abs(summary_row(summary, router, refresh_ms)[column]) / abs(base))


def shortest_interval_within(summary: pd.DataFrame, router: str, column: str, tolerance: float):
    """The shortest scrape interval (ms) at which ``router`` brings ``column`` of
    :func:`stale_router_summary`
    within +-``tolerance`` (a fraction), with that error; None if no interval does (chapter 08)."""
    checks.positive("tolerance", tolerance)
    rows = summary[(summary["router"] == router) & summary["refresh_ms"].notna()].sort_values("refresh_ms")
    if rows.empty:
        raise ValueError(f"no row for router {router!r} with an interval")
    ok = rows[rows[column].abs() <= tolerance]
    if ok.empty:
        return None
    return float(ok["refresh_ms"].iloc[0]), float(ok[column].iloc[0])


def summary_row(summary: pd.DataFrame, router: str, refresh_ms):
    """The row of :func:`stale_router_summary` for ``router`` at ``refresh_ms`` (None: the balanced
    router).
    """
    at = summary["refresh_ms"].isna() if refresh_ms is None else np.isclose(summary["refresh_ms"], refresh_ms)
    rows = summary[(summary["router"] == router) & at]
    if len(rows) != 1:
        raise ValueError(
            f"expected one row for router {router!r} at interval {refresh_ms} ms, found {len(rows)}"
        )
    return rows.iloc[0]


def stale_router_throughput_shift(sens: pd.DataFrame, concurrency: int) -> pd.DataFrame:
    """Per router and interval of :func:`stale_router_sensitivity`: the least and greatest change of
    the
    throughput error against the balanced router's, over the deployments at ``concurrency`` (fractions)."""
    at = sens[sens["concurrency"] == concurrency]
    if at.empty:
        raise ValueError(f"no point at concurrency {concurrency}")
    base = at[at["router"] == "balanced"].set_index("deployment")["tok_error"]
    stale = at[at["router"] != "balanced"]
    shift = stale["tok_error"].to_numpy() - base.loc[stale["deployment"]].to_numpy()
    return (
        stale.assign(shift=shift)
        .groupby(["router", "refresh_ms"], sort=False)["shift"]
        .agg(["min", "max"])
        .reset_index()
    )


def router_throughput_by_load(
    meas: pd.DataFrame, params: ModelParams, seeds: int | None = None
) -> pd.DataFrame:
    """Throughput error of the step replay on every llm-d point, behind each router, by concurrency
    (chapter
    08).

    One row per router (``balanced``, ``stale``, ``stale-herd`` at the default
    interval) and concurrency: ``median``, ``min`` and ``max`` of replay /
    measured - 1 over the llm-d deployments, and ``n`` (deployments).
    """
    pts = meas[meas["family"] == "disaggregated"]
    if pts.empty:
        raise ValueError("no llm-d point")
    frames = []
    for routing in ("balanced",) + STALE_ROUTINGS:
        rep = stepsim.replay_measurements(pts, params, seeds, routing=routing)
        frames.append(
            pd.DataFrame(
                {
                    "router": routing,
                    "concurrency": pts["concurrency"],
                    "error": rep["replay_output_tok_s"] / pts["output_tok_s"] - 1,
                }
            )
        )
    both = pd.concat(frames, ignore_index=True)
    return (
        both.groupby(["router", "concurrency"], sort=False)["error"]
        .agg(["median", "min", "max", "size"])
        .rename(columns={"size": "n"})
        .reset_index()
    )
