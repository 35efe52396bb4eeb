"""What-if questions for the calibrated model: vectorised sweeps, Pareto frontiers, best
configurations
(chapter 11).

Everything here is a *prediction* of the calibrated model. It composes
:func:`fullmodel.predict_arrays` (aggregated serving, vectorised over numpy
arrays) and :func:`disagg.predict_disaggregated` (true prefill/decode
disaggregation, point by point); it adds no physics of its own.

The maximum-throughput regime ("unlimited" concurrency) is defined as the
smallest concurrency at which every instance's KV-cache batch is just full:
``ceil(replicas x max_batch)`` for aggregated serving and
``ceil(d_replicas x max_batch of a decode instance)`` for disaggregated
serving. In the closed loop's steady state more requests in flight than that
only queue: throughput stays at its ceiling while TTFT grows. The benchmark's
run is finite, though (``prompts_per_slot`` x C prompts, with a first wave and
a tail, :func:`queueing.drain_factor`), and the share its tail costs shrinks as
C grows, so :func:`sweep` at that concurrency is a little below the long-run
maximum throughput of an unlimited queue: :func:`long_run_ceiling` and
:func:`long_run_ceiling_disaggregated` give that maximum, the limit of the
sweeps' throughput as the concurrency grows without bound.

Every function takes a :class:`~servingmodel.setup.Setup` first;
:func:`setup_for` builds one from names with the calibrated parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import checks, disagg, kvcache
from .calibrated import calibrated_params
from .fullmodel import instance_arrays, make_instance, predict_arrays
from .layout import Layout
from .measurements import deployment_label
from .setup import ALL_FEATURES, Features, ModelParams, Setup
from .specs import GIB, GpuSpec, ModelSpec, Profile, check_tp, get_gpu, get_model, tp_problem

#: Columns of every frame this module returns, in order.
SWEEP_COLUMNS = [
    "model",
    "gpu",
    "profile",
    "weight_dtype",
    "kv_dtype",
    "kind",
    "deployment",
    "tp",
    "replicas",
    "p_tp",
    "p_replicas",
    "d_tp",
    "d_replicas",
    "num_gpus",
    "isl",
    "osl",
    "concurrency",
    "output_tok_s",
    "tok_s_per_gpu",
    "tok_s_per_user",
    "ttft_ms",
    "tpot_ms",
    "max_batch",
    "fits",
]
#: Default concurrency grid of :func:`candidates`: powers of two, 1 to 1024.
DEFAULT_CONCURRENCIES = tuple(2**k for k in range(11))


def setup_for(
    model: str | ModelSpec,
    gpu: str | GpuSpec,
    profile: str | Profile,
    params: ModelParams | None = None,
    *,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
) -> Setup:
    """A :class:`Setup` from names (any alias the registry knows) or spec objects; ``params``
    defaults to
    the calibrated parameters (``data/calibrated_parameters.csv``)."""
    params = calibrated_params() if params is None else params
    return Setup.of(model, gpu, profile, params, weight_dtype=weight_dtype, kv_dtype=kv_dtype)


def _check_tp(setup: Setup, name: str, tp: np.ndarray) -> None:
    check_tp(setup.model, tp, setup.gpu, name)


def _check_workload(isl: np.ndarray, osl: np.ndarray) -> None:
    checks.whole("isl", isl, 1)
    checks.whole("osl", osl, 2)


def _check_concurrency(c: np.ndarray) -> None:
    given = c[~np.isnan(c)]
    if np.any(~np.isfinite(given)) or np.any(given < 1) or np.any(given != np.round(given)):
        raise ValueError(
            "concurrency must be whole numbers >= 1 (NaN or None: the maximum-throughput regime)"
        )


def instance_max_batch(setup: Setup, *, tp, isl, osl, features: Features = ALL_FEATURES):
    """KV-cache batch limit of one instance (requests of mean context), and whether one request
    fits.

    Returns ``(max_batch, fits)`` as arrays broadcast over the inputs.
    """
    tp, isl, osl = np.broadcast_arrays(*(np.asarray(v, float) for v in (tp, isl, osl)))
    _check_tp(setup, "tp", tp)
    _check_workload(isl, osl)
    inst = instance_arrays(setup, tp=tp, isl=isl, osl=osl, features=features)
    bmax = np.broadcast_to(np.asarray(inst.max_batch, float), tp.shape)
    fits = bmax * kvcache.mean_context_tokens(isl, osl) >= isl + osl
    return bmax, fits


def saturating_concurrency(max_batch, instances):
    """The maximum-throughput concurrency: ``ceil(instances x max_batch)``, at least 1."""
    b = np.asarray(max_batch, float)
    if np.any(np.isinf(b)):
        raise ValueError("the maximum-throughput regime needs a finite KV batch limit (features.kv_limit on)")
    checks.nonnegative("max_batch", b)
    n = checks.whole("instances", instances, 1)
    return np.maximum(np.ceil(n * b - 1e-9), 1.0)


def long_run_ceiling(
    setup: Setup, *, tp, replicas=1, isl, osl, features: Features = ALL_FEATURES
) -> np.ndarray:
    """Output tok/s of aggregated serving with an unlimited queue, in the long run: its maximum
    throughput.

    The limit of :func:`sweep`'s ``output_tok_s`` as the concurrency grows
    without bound, hence at least its value at any concurrency: every instance
    holds its full KV batch all the time, whatever the routing, and the
    benchmark's first wave and tail, a share of its finite run of
    ``prompts_per_slot`` x C prompts that shrinks as C grows, vanish. That is
    ``replicas`` x one instance's closed-loop steady state at its KV batch
    limit. Inputs broadcast and flatten as in :func:`sweep`; NaN where an
    instance cannot hold one request.
    """
    tp, reps, isl, osl = (
        np.array(a.ravel())
        for a in np.broadcast_arrays(*(np.asarray(v, float) for v in (tp, replicas, isl, osl)))
    )
    _check_tp(setup, "tp", tp)
    checks.whole("replicas", reps, 1)
    _check_workload(isl, osl)
    inst = instance_arrays(setup, tp=tp, isl=isl, osl=osl, features=features)
    bmax = np.broadcast_to(np.asarray(inst.max_batch, float), tp.shape)
    if np.any(np.isinf(bmax)):
        raise ValueError("the maximum throughput needs a finite KV batch limit (features.kv_limit on)")
    fits = bmax * kvcache.mean_context_tokens(isl, osl) >= isl + osl
    full = np.where(fits, bmax, 1.0)
    # n >= max_batch requests present keep the batch at max_batch (queueing.closed_loop needs n >=
    # 1)
    tok = dataclasses.replace(inst, max_batch=full).tok_s(np.maximum(full, 1.0))
    return np.where(fits, reps * np.asarray(tok, float), np.nan)


def long_run_ceiling_disaggregated(
    setup: Setup,
    *,
    p_tp,
    p_replicas,
    d_tp,
    d_replicas,
    isl,
    osl,
    features: Features = ALL_FEATURES,
    transfer_bytes_s: float | None = None,
) -> np.ndarray:
    """Output tok/s of true P/D disaggregation with an unlimited queue, in the long run: its maximum
    throughput.

    The limit of :func:`sweep_disaggregated`'s ``output_tok_s`` as the
    concurrency grows without bound, hence at least its value at any
    concurrency: OSL x the request rate of the slowest of the three pools of
    :func:`disagg.pool_capacities` (prefill, KV transfer, decode at its KV
    batch limit), with no first wave or tail. Same inputs and KV link as
    :func:`sweep_disaggregated` (point by point); NaN where it does not fit.
    """
    ptp, prep, dtp, drep, _, isl, osl = _pd_inputs(setup, p_tp, p_replicas, d_tp, d_replicas, 1.0, isl, osl)
    bw = disagg.transfer_bandwidth_bytes_s("rdma") if transfer_bytes_s is None else float(transfer_bytes_s)
    out = np.full(ptp.size, np.nan)
    for i in range(ptp.size):
        s, o = int(isl[i]), int(osl[i])
        p_inst, d_inst = (
            make_instance(setup, tp=int(t), isl=s, osl=o, features=features) for t in (ptp[i], dtp[i])
        )
        ctx = float(kvcache.mean_context_tokens(s, o))
        d_bmax = float(d_inst.max_batch)
        if not np.isfinite(d_bmax):
            raise ValueError("the maximum throughput needs a finite KV batch limit (features.kv_limit on)")
        # as in sweep_disaggregated: a prefill instance holds one prompt, a decode instance one
        # whole request
        if float(p_inst.max_batch) * ctx < s or d_bmax * ctx < s + o:
            continue
        t_x = float(disagg.kv_transfer_time_s(setup.model, s, bw, kv_dtype=setup.kv_dtype))
        caps = disagg.pool_capacities(
            float(p_inst.prefill_s),
            int(prep[i]),
            t_x,
            int(min(prep[i], drep[i])),
            d_inst.decode_step_s,
            o,
            int(drep[i]),
            d_bmax,
        )
        out[i] = o * min(caps.values())
    return out


def insufficient_memory_reason(setup: Setup, *, tp, isl, osl) -> str | None:
    """Why one instance at ``tp`` cannot hold one request (None when it can), from
    :mod:`kvcache`.
    """
    try:
        kvcache.check_deployment_fits(
            setup.model,
            setup.gpu,
            int(tp),
            int(isl),
            int(osl),
            gpu_memory_utilization=setup.profile.gpu_memory_utilization,
            memory_reserve_bytes=setup.params.memory_reserve_gib * GIB,
            weight_dtype=setup.weight_dtype,
            kv_dtype=setup.kv_dtype,
        )
    except kvcache.InsufficientMemoryError as e:
        return str(e)
    return None


@dataclass(frozen=True)
class FitTerms:
    """What decides whether one instance holds one request: the bytes per GPU that do not depend on
    the request (weight shard and reserve), the KV bytes per token per GPU, the GPU's memory, and the
    KV capacity of each larger TP inside one node."""

    fixed_bytes: float
    kv_bytes_per_token: float
    memory_bytes: float
    larger_tps: tuple  # ((tp, KV tokens it holds), ...) at the setup's profile


def fit_terms(setup: Setup, *, tp: int) -> FitTerms:
    """:class:`FitTerms` of one instance at ``tp`` for ``setup`` (compute once, use for many rows)."""
    m, g = setup.model, setup.gpu
    fixed = float(kvcache.weight_bytes_per_gpu(m, tp, weight_dtype=setup.weight_dtype))
    fixed += setup.params.memory_reserve_gib * GIB
    kvpt = float(kvcache.kv_bytes_per_token_per_gpu(m, tp, kv_dtype=setup.kv_dtype))
    larger = tuple((t, float(kv_capacity_tokens(setup, tp=t))) for t in node_tps(m, g) if t > tp)
    return FitTerms(fixed, kvpt, g.memory_bytes, larger)


def fit_hint(setup: Setup, terms: FitTerms, *, tp: int, request_tokens: int, profiles: dict) -> str:
    """What would make an instance at ``tp`` hold one request of ``request_tokens``: the memory
    utilisation it needs, (weights + reserve + the request's KV cache) / memory, and a profile of
    ``profiles`` that has it; above 1, the smallest larger TP inside one node that holds it."""
    need = (terms.fixed_bytes + request_tokens * terms.kv_bytes_per_token) / terms.memory_bytes
    if need <= 1:
        having = sorted(n for n, p in profiles.items() if p.gpu_memory_utilization >= need)
        where = f" (profile {', '.join(having)} has it)" if having else ""
        return (
            f"it fits with gpu_memory_utilization >= {need:.3f}, above the {setup.profile.name} profile's "
            f"{setup.profile.gpu_memory_utilization:g}{where}; give a gpu_memory_utilization column or "
            "choose such a profile"
        )
    for t, cap in terms.larger_tps:
        if cap >= request_tokens:
            return f"no memory utilisation fits at TP{tp}; TP{t} holds one request"
    return f"no memory utilisation or TP inside one {setup.gpu.name} node holds one request"


def kv_capacity_tokens(setup: Setup, *, tp) -> float:
    """KV-cache tokens one instance at ``tp`` holds (:func:`kvcache.kv_capacity_tokens` for ``setup``)."""
    return kvcache.kv_capacity_tokens(
        setup.model,
        setup.gpu,
        tp,
        gpu_memory_utilization=setup.profile.gpu_memory_utilization,
        memory_reserve_bytes=setup.params.memory_reserve_gib * GIB,
        weight_dtype=setup.weight_dtype,
        kv_dtype=setup.kv_dtype,
    )


def sweep(
    setup: Setup, *, tp, replicas=1, concurrency=None, isl, osl, features: Features = ALL_FEATURES
) -> pd.DataFrame:
    """Predict many aggregated scenarios at once (numpy arrays, broadcast together).

    ``tp``, ``replicas``, ``concurrency``, ``isl`` and ``osl`` are scalars or
    arrays that broadcast to one shape; the result has one row per scenario
    (flattened in C order). ``concurrency`` None or NaN means the
    maximum-throughput regime (see the module docstring). Routing follows the
    setup's profile: balanced profiles are computed in one vectorised pass;
    random routing is exact too (:func:`fullmodel.predict_arrays` solves its
    closed network), but point by point and so slower. A scenario whose
    instance cannot hold one request keeps its row with ``fits`` False and
    NaN predictions.
    """
    c_in = np.nan if concurrency is None else concurrency
    tp, reps, c, isl, osl = (
        a.ravel()
        for a in np.broadcast_arrays(*(np.asarray(v, float) for v in (tp, replicas, c_in, isl, osl)))
    )
    tp, reps, c, isl, osl = (np.array(a) for a in (tp, reps, c, isl, osl))  # writable copies
    _check_tp(setup, "tp", tp)
    checks.whole("replicas", reps, 1)
    _check_workload(isl, osl)
    _check_concurrency(c)
    unset = np.isnan(c)
    if unset.any():
        bmax, fits = instance_max_batch(
            setup, tp=tp[unset], isl=isl[unset], osl=osl[unset], features=features
        )
        c[unset] = np.where(fits, saturating_concurrency(bmax, reps[unset]), 1.0)
    out = predict_arrays(setup, features=features, concurrency=c, isl=isl, osl=osl, tp_a=tp, count_a=reps)
    nan = np.full(tp.size, np.nan)
    return _frame_of_arrays(setup, "aggregated", (tp, reps, nan, nan, nan, nan), isl, osl, c, out)


def layout_grid(
    setup: Setup, *, layouts, concurrencies, isl, osl, features: Features = ALL_FEATURES
) -> pd.DataFrame:
    """:func:`sweep` of every aggregated layout ``(tp, replicas)`` of ``layouts`` at every
    concurrency of
    ``concurrencies`` (rows layout by layout); ``concurrencies`` None gives each layout's
    maximum-throughput row instead."""
    tp = np.array([t for t, _ in layouts], float)
    reps = np.array([r for _, r in layouts], float)
    if concurrencies is None:
        return sweep(setup, tp=tp, replicas=reps, concurrency=None, isl=isl, osl=osl, features=features)
    grid = np.asarray(concurrencies, float)[None, :]
    return sweep(
        setup,
        tp=tp[:, None],
        replicas=reps[:, None],
        concurrency=grid,
        isl=isl,
        osl=osl,
        features=features,
    )


def _frame_of_arrays(setup: Setup, kind, layout, isl, osl, c, out: dict) -> pd.DataFrame:
    """:func:`_sweep_frame` from a vectorised predictor's arrays (times in s, ``fits`` flags)."""
    fits = np.asarray(out["fits"], bool)
    return _sweep_frame(
        setup,
        kind,
        layout,
        isl,
        osl,
        c,
        out["output_tok_s"],
        np.asarray(out["ttft_s"], float) * 1e3,
        np.asarray(out["tpot_s"], float) * 1e3,
        np.where(fits, out["max_batch"], np.nan),
        fits,
    )


def _sweep_frame(
    setup: Setup, kind, layout, isl, osl, c, total, ttft_ms, tpot_ms, max_batch, fits
) -> pd.DataFrame:
    """The result frame of every sweep (:data:`SWEEP_COLUMNS`); ``layout`` = (tp, replicas, p_tp,
    p_replicas,
    d_tp, d_replicas) arrays, NaN where a field does not apply to ``kind``."""
    names = ("tp", "replicas", "p_tp", "p_replicas", "d_tp", "d_replicas")
    fields = dict(zip(names, (np.asarray(a, float) for a in layout), strict=True))
    own = names[:2] if kind == "aggregated" else names[2:]  # whole numbers; the others stay NaN
    n = c.size
    gpus = np.nan_to_num(fields["tp"] * fields["replicas"]) + np.nan_to_num(
        fields["p_tp"] * fields["p_replicas"] + fields["d_tp"] * fields["d_replicas"]
    )
    total = np.asarray(total, float)
    return pd.DataFrame(
        {
            "model": [setup.model.name] * n,
            "gpu": [setup.gpu.name] * n,
            "profile": [setup.profile.name] * n,
            "weight_dtype": [setup.weight_dtype] * n,
            "kv_dtype": [setup.kv_dtype] * n,
            "kind": [kind] * n,
            "deployment": [deployment_label(kind, *row) for row in zip(*fields.values(), strict=True)],
            **{k: (v.astype(int) if k in own else v) for k, v in fields.items()},
            "num_gpus": gpus.astype(int),
            "isl": isl.astype(int),
            "osl": osl.astype(int),
            "concurrency": c.astype(int),
            "output_tok_s": total,
            "tok_s_per_gpu": total / gpus,
            "tok_s_per_user": total / c,
            "ttft_ms": np.asarray(ttft_ms, float),
            "tpot_ms": np.asarray(tpot_ms, float),
            "max_batch": np.asarray(max_batch, float),
            "fits": np.asarray(fits, bool),
        },
        columns=SWEEP_COLUMNS,
    )


def sweep_disaggregated(
    setup: Setup,
    *,
    p_tp,
    p_replicas,
    d_tp,
    d_replicas,
    concurrency=None,
    isl,
    osl,
    features: Features = ALL_FEATURES,
    transfer_bytes_s: float | None = None,
) -> pd.DataFrame:
    """Predict true prefill/decode-disaggregated scenarios (:func:`disagg.predict_disaggregated`,
    point by
    point).

    Same conventions and columns as :func:`sweep`. ``concurrency`` None or NaN
    means ``ceil(d_replicas x max_batch of a decode instance)``. A scenario
    fits only if a decode instance holds one whole request and a prefill
    instance holds one prompt.
    """
    ptp, prep, dtp, drep, c, isl, osl = _pd_inputs(
        setup, p_tp, p_replicas, d_tp, d_replicas, concurrency, isl, osl
    )
    # a prefill instance must hold one prompt (isl tokens), a decode instance one whole request
    p_bmax, _ = instance_max_batch(setup, tp=ptp, isl=isl, osl=osl, features=features)
    p_fits = p_bmax * kvcache.mean_context_tokens(isl, osl) >= isl
    d_bmax, d_fits = instance_max_batch(setup, tp=dtp, isl=isl, osl=osl, features=features)
    unset = np.isnan(c)
    c[unset] = np.where(d_fits[unset], saturating_concurrency(d_bmax[unset], drep[unset]), 1.0)
    n = ptp.size
    res = np.full((n, 5), np.nan)
    fits = p_fits & d_fits
    for i in np.flatnonzero(fits):
        layout = Layout(
            "disaggregated",
            p_tp=int(ptp[i]),
            p_replicas=int(prep[i]),
            d_tp=int(dtp[i]),
            d_replicas=int(drep[i]),
        )
        try:
            pr = disagg.predict_disaggregated(
                setup,
                layout,
                isl=int(isl[i]),
                osl=int(osl[i]),
                concurrency=float(c[i]),
                features=features,
                transfer_bytes_s=transfer_bytes_s,
            )
        except kvcache.InsufficientMemoryError:
            fits[i] = False
            continue
        res[i] = (pr.output_tok_s, pr.ttft_s * 1e3, pr.tpot_s * 1e3, pr.max_batch, 0.0)
    nan = np.full(n, np.nan)
    return _sweep_frame(
        setup,
        "disaggregated",
        (nan, nan, ptp, prep, dtp, drep),
        isl,
        osl,
        c,
        res[:, 0],
        res[:, 1],
        res[:, 2],
        res[:, 3],
        fits,
    )


def _pd_inputs(setup: Setup, p_tp, p_replicas, d_tp, d_replicas, concurrency, isl, osl):
    """Broadcast and check the layout and workload arrays of a P/D sweep."""
    c_in = np.nan if concurrency is None else concurrency
    ptp, prep, dtp, drep, c, isl, osl = (
        np.array(a.ravel())
        for a in np.broadcast_arrays(
            *(np.asarray(v, float) for v in (p_tp, p_replicas, d_tp, d_replicas, c_in, isl, osl))
        )
    )
    _check_tp(setup, "p_tp", ptp)
    _check_tp(setup, "d_tp", dtp)
    checks.whole("p_replicas", prep, 1)
    checks.whole("d_replicas", drep, 1)
    _check_workload(isl, osl)
    _check_concurrency(c)
    return ptp, prep, dtp, drep, c, isl, osl


def sweep_served_aggregated(
    setup: Setup,
    *,
    p_tp,
    p_replicas,
    d_tp,
    d_replicas,
    concurrency,
    isl,
    osl,
    features: Features = ALL_FEATURES,
) -> pd.DataFrame:
    """The P/D layouts of :func:`sweep_disaggregated` with every pod serving whole requests
    (vectorised).

    This is how the benchmark's dashed deployments actually ran (chapter 07):
    the ``p_replicas`` pods at ``p_tp`` and the ``d_replicas`` pods at
    ``d_tp`` all prefill and decode. Same columns as :func:`sweep`, with the
    P/D layout in ``p_tp`` ... ``d_replicas``; ``concurrency`` is required.
    """
    if concurrency is None or np.any(np.isnan(np.asarray(concurrency, float))):
        raise ValueError("concurrency is required for a P/D layout served aggregated")
    ptp, prep, dtp, drep, c, isl, osl = _pd_inputs(
        setup, p_tp, p_replicas, d_tp, d_replicas, concurrency, isl, osl
    )
    out = predict_arrays(
        setup,
        features=features,
        concurrency=c,
        isl=isl,
        osl=osl,
        tp_a=ptp,
        count_a=prep,
        tp_b=dtp,
        count_b=drep,
    )
    nan = np.full(c.size, np.nan)
    return _frame_of_arrays(setup, "disaggregated", (nan, nan, ptp, prep, dtp, drep), isl, osl, c, out)


def pool_ceilings(
    setup: Setup, *, layouts, isl: int, osl: int, features: Features = ALL_FEATURES
) -> pd.DataFrame:
    """Throughput per GPU that each pool of a true P/D layout could sustain on its own.

    ``layouts`` is a list of (p_tp, p_replicas, d_tp, d_replicas). Columns:
    ``deployment``, ``prefill_ceiling_tok_s_per_gpu`` (the prefill pool
    feeding prompts as fast as it computes them) and
    ``decode_ceiling_tok_s_per_gpu`` (the decode pool at its KV batch limit);
    true P/D can never beat the smaller of the two.
    """
    rows = []
    for ptp, prep, dtp, drep in layouts:
        _pd_inputs(setup, ptp, prep, dtp, drep, 1, isl, osl)
        gpus = ptp * prep + dtp * drep
        p_inst, d_inst = (make_instance(setup, tp=n, isl=isl, osl=osl, features=features) for n in (ptp, dtp))
        rows.append(
            {
                "deployment": deployment_label("disaggregated", None, None, ptp, prep, dtp, drep),
                "prefill_ceiling_tok_s_per_gpu": disagg.prefill_pool_ceiling_tok_s(p_inst, prep) / gpus,
                "decode_ceiling_tok_s_per_gpu": disagg.decode_pool_ceiling_tok_s(d_inst, drep) / gpus,
            }
        )
    return pd.DataFrame(rows)


def pareto_frontier(df: pd.DataFrame, x: str = "tok_s_per_user", y: str = "tok_s_per_gpu") -> pd.DataFrame:
    """The non-dominated rows of ``df``, maximising both ``x`` and ``y``, sorted by ``x``.

    A row is dominated when another row is at least as good in both columns
    and strictly better in one. Rows with a NaN in ``x`` or ``y`` (scenarios
    that do not fit) are never on the frontier; exact ties are all kept.
    """
    if df.empty:
        return df.copy()
    xs = df[x].to_numpy(float)
    ys = df[y].to_numpy(float)
    ok = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
    xs, ys = xs[ok], ys[ok]
    order = np.lexsort((-ys, -xs))  # x descending, then y descending
    xs, ys, ok = xs[order], ys[order], ok[order]
    # start of each group of equal x: that row has the group's largest y
    new = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(new) - 1
    group_max = ys[new]
    # best y among all rows with strictly larger x
    better_x = np.r_[-np.inf, np.maximum.accumulate(group_max)[:-1]]
    keep = (ys == group_max[group]) & (ys > better_x[group])
    return df.iloc[np.sort(ok[keep])].sort_values([x, y], ascending=[True, False], kind="stable")


def node_tps(model: ModelSpec, gpu: GpuSpec) -> tuple[int, ...]:
    """Tensor-parallel sizes that fit inside one node of ``gpu`` and split the attention heads of
    ``model``
    evenly (:func:`servingmodel.specs.tp_problem`)."""
    m = get_model(model) if isinstance(model, str) else model
    g = get_gpu(gpu) if isinstance(gpu, str) else gpu
    return tuple(t for t in range(1, g.gpus_per_node + 1) if tp_problem(m, t, g) is None)


def layouts_for(num_gpus: int, tps, *, disaggregated: bool = True) -> list[Layout]:
    """Every layout that uses exactly ``num_gpus`` GPUs with each instance's TP in ``tps``.

    Aggregated: ``tp x (num_gpus / tp)``. Disaggregated: ``p_replicas`` at
    ``p_tp`` plus ``d_replicas`` at ``d_tp``, at least one of each.
    """
    if not (int(num_gpus) == num_gpus and num_gpus >= 1):
        raise ValueError(f"num_gpus must be a whole number >= 1, got {num_gpus!r}")
    out = [Layout("aggregated", tp=t, replicas=num_gpus // t) for t in tps if num_gpus % t == 0]
    if disaggregated:
        for pt in tps:
            for pr in range(1, num_gpus // pt + 1):
                rest = num_gpus - pt * pr
                for dt in tps:
                    if rest >= dt and rest % dt == 0:
                        out.append(
                            Layout(
                                "disaggregated",
                                p_tp=pt,
                                p_replicas=pr,
                                d_tp=dt,
                                d_replicas=rest // dt,
                            )
                        )
    return out


def candidates(
    setup: Setup,
    *,
    num_gpus: int = 16,
    isl,
    osl,
    concurrencies=DEFAULT_CONCURRENCIES,
    tps=None,
    disaggregated: bool = True,
    features: Features = ALL_FEATURES,
    transfer_bytes_s: float | None = None,
) -> pd.DataFrame:
    """Every layout of :func:`layouts_for` at every concurrency (columns of :func:`sweep`).

    ``tps`` defaults to :func:`node_tps`; a TP that cannot form a group of the model on the GPU is
    refused.
    """
    tps = node_tps(setup.model, setup.gpu) if tps is None else tuple(tps)
    _check_tp(setup, "tensor-parallel size", np.asarray(tps, float))
    cs = np.asarray(concurrencies, float)
    lays = layouts_for(num_gpus, tps, disaggregated=disaggregated)
    agg = [lay for lay in lays if lay.kind == "aggregated"]
    pd_ = [lay for lay in lays if lay.kind == "disaggregated"]
    frames = []
    if agg:
        tp = np.repeat([lay.tp for lay in agg], cs.size)
        reps = np.repeat([lay.replicas for lay in agg], cs.size)
        frames.append(
            sweep(
                setup,
                tp=tp,
                replicas=reps,
                concurrency=np.tile(cs, len(agg)),
                isl=isl,
                osl=osl,
                features=features,
            )
        )
    if pd_:
        col = {
            f: np.repeat([getattr(lay, f) for lay in pd_], cs.size)
            for f in ("p_tp", "p_replicas", "d_tp", "d_replicas")
        }
        frames.append(
            sweep_disaggregated(
                setup,
                **col,
                concurrency=np.tile(cs, len(pd_)),
                isl=isl,
                osl=osl,
                features=features,
                transfer_bytes_s=transfer_bytes_s,
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SWEEP_COLUMNS)


def meets_objective(
    df: pd.DataFrame,
    *,
    min_tok_s_per_user: float | None = None,
    max_ttft_ms: float | None = None,
    max_tpot_ms: float | None = None,
) -> pd.Series:
    """Rows that fit and satisfy every given latency objective (None: no constraint)."""
    for name, v in (
        ("min_tok_s_per_user", min_tok_s_per_user),
        ("max_ttft_ms", max_ttft_ms),
        ("max_tpot_ms", max_tpot_ms),
    ):
        if v is not None:
            checks.nonnegative(name, v)
    ok = df["fits"].astype(bool) & df["tok_s_per_gpu"].notna()
    if min_tok_s_per_user is not None:
        ok &= df["tok_s_per_user"] >= min_tok_s_per_user
    if max_ttft_ms is not None:
        ok &= df["ttft_ms"] <= max_ttft_ms
    if max_tpot_ms is not None:
        ok &= df["tpot_ms"] <= max_tpot_ms
    return ok


def best_configuration(
    setup: Setup,
    *,
    num_gpus: int = 16,
    isl,
    osl,
    min_tok_s_per_user: float | None = None,
    max_ttft_ms: float | None = None,
    max_tpot_ms: float | None = None,
    concurrencies=DEFAULT_CONCURRENCIES,
    tps=None,
    disaggregated: bool = True,
    features: Features = ALL_FEATURES,
    transfer_bytes_s: float | None = None,
    candidates_df: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Pareto frontier of the configurations of ``num_gpus`` GPUs that meet a latency objective.

    Enumerates aggregated TP in ``tps`` (default :func:`node_tps`) with replicas filling the GPUs
    and
    every prefill/decode split (true disaggregation), at every concurrency
    of ``concurrencies``; keeps the scenarios that fit and meet every given
    objective (per-user throughput at least ``min_tok_s_per_user``, TTFT at
    most ``max_ttft_ms``, TPOT at most ``max_tpot_ms``); returns their
    Pareto frontier (per-user vs per-GPU throughput) sorted by per-GPU
    throughput, best first: row 0 is the configuration that serves the most
    tokens per GPU within the objective. Empty when nothing meets it.
    ``candidates_df`` reuses a frame from :func:`candidates`.
    """
    cand = (
        candidates_df
        if candidates_df is not None
        else candidates(
            setup,
            num_gpus=num_gpus,
            isl=isl,
            osl=osl,
            concurrencies=concurrencies,
            tps=tps,
            disaggregated=disaggregated,
            features=features,
            transfer_bytes_s=transfer_bytes_s,
        )
    )
    ok = meets_objective(
        cand,
        min_tok_s_per_user=min_tok_s_per_user,
        max_ttft_ms=max_ttft_ms,
        max_tpot_ms=max_tpot_ms,
    )
    front = pareto_frontier(cand[ok])
    return front.sort_values(
        ["tok_s_per_gpu", "tok_s_per_user"], ascending=[False, False], kind="stable"
    ).reset_index(drop=True)
