"""The full model: every term of chapters 03 to 07 composed, switchable for the error ladder.

One vLLM instance at tensor parallelism N is described by its prefill time,
its decode-step time as a function of batch, and its KV-cache batch limit. A
deployment is a set of instances behind a router; the benchmark is a closed
loop of C requests. :class:`~servingmodel.setup.Features` switches each
refinement on, so the same code produces every row of the error ladder
(chapter 09). Every function takes a :class:`~servingmodel.setup.Setup` first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import checks, comm, host, kvcache, prefill, queueing, roofline, routing
from .layout import Layout, benchmark_profile, layout_of
from .measurements import DEPLOYMENT_COLUMNS
from .setup import ALL_FEATURES, Features, ModelParams, Setup
from .specs import GIB, constant, get_gpu, get_model

#: A scalar or a numpy array of aligned points.
Values = float | np.ndarray


def roofline_terms(setup: Setup) -> dict:
    """Keyword arguments of a decode step's roofline for ``setup``: efficiencies, overhead, dtypes."""
    p = setup.params
    return {
        "bandwidth_efficiency": p.bandwidth_efficiency,
        "kv_bandwidth_efficiency": p.kv_bandwidth_efficiency,
        "compute_efficiency": p.compute_efficiency,
        "step_overhead_s": p.step_overhead_for(setup.model),
        "weight_dtype": setup.weight_dtype,
        "kv_dtype": setup.kv_dtype,
    }


@dataclass(frozen=True)
class Instance:
    """The physics of one vLLM instance for one workload (scalars or aligned arrays)."""

    setup: Setup
    features: Features
    tp: Values
    isl: Values
    osl: Values
    prefill_s: Values
    max_batch: Values
    host_step_s: Values

    def decode_step_s(self, batch):
        """Decode-step time at batch B: overhead + host + all-reduces + roofline."""
        s, p = self.setup, self.setup.params
        ctx = kvcache.mean_context_tokens(self.isl, self.osl)
        t = roofline.decode_step_time_s(s.model, s.gpu, self.tp, batch, ctx, **roofline_terms(s))
        if self.features.communication:
            t = t + comm.decode_comm_time_s(
                s.model,
                s.gpu,
                self.tp,
                batch,
                latency_s=p.allreduce_latency_s,
                link_efficiency=p.link_efficiency,
            )
        return t + self.host_step_s

    def steady_state(self, n):
        """Closed-loop steady state with ``n`` requests present (see :func:`queueing.closed_loop`)."""
        osl = int(np.max(self.osl)) if np.ndim(self.osl) == 0 else self.osl
        return queueing.closed_loop(
            n,
            self.max_batch,
            self.prefill_s,
            self.decode_step_s,
            osl,
            interference=self.features.prefill_interference,
        )

    def tok_s(self, n):
        return self.steady_state(n)["tok_s"]


def make_instance(setup: Setup, *, tp, isl, osl, features: Features = ALL_FEATURES) -> Instance:
    """Build the physics of one instance (prefill time, batch limit, host time per step)."""
    return instance_arrays(setup, tp=tp, isl=isl, osl=osl, features=features)


def instance_arrays(
    setup: Setup,
    *,
    tp,
    isl,
    osl,
    features: Features = ALL_FEATURES,
    gpu_memory_utilization=None,
    cpu_cores=None,
    cpu_limited=None,
) -> Instance:
    """:func:`make_instance` for aligned arrays of points, for vectorised sweeps.

    ``gpu_memory_utilization``, ``cpu_cores`` and ``cpu_limited`` override the
    setup's profile point by point (broadcastable arrays); None keeps the profile's.
    """
    s, p, prof = setup, setup.params, setup.profile
    util = np.asarray(
        prof.gpu_memory_utilization if gpu_memory_utilization is None else gpu_memory_utilization
    )
    cores = prof.cpu_cores if cpu_cores is None else cpu_cores
    limited = float(prof.cpu_limited) if cpu_limited is None else cpu_limited
    t_pf = prefill.prefill_compute_time_s(
        s.model, s.gpu, tp, isl, compute_efficiency=p.compute_efficiency, compute_dtype=s.compute_dtype
    )
    budget = constant("max_num_batched_tokens")
    if features.communication:
        t_pf = t_pf + comm.prefill_comm_time_s(
            s.model,
            s.gpu,
            tp,
            isl,
            max_num_batched_tokens=budget,
            latency_s=p.allreduce_latency_s,
            link_efficiency=p.link_efficiency,
        )
    # every prefill chunk is an engine step that pays the fixed overhead
    t_pf = t_pf + prefill.prefill_chunks(isl, budget) * p.step_overhead_for(s.model)
    util = np.asarray(util, float)
    if np.any(~((util > 0) & (util <= 1))):
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
    shape = np.broadcast(np.asarray(tp), np.asarray(isl), np.asarray(osl), util).shape
    if features.kv_limit:
        cap = kvcache.kv_capacity_tokens(
            s.model,
            s.gpu,
            tp,
            gpu_memory_utilization=util,
            memory_reserve_bytes=p.memory_reserve_gib * GIB,
            weight_dtype=s.weight_dtype,
            kv_dtype=s.kv_dtype,
        )
        bmax = np.broadcast_to(
            np.minimum(kvcache.max_batch(cap, isl, osl), constant("max_num_seqs")), shape
        ).astype(float)
    else:
        bmax = np.full(shape, np.inf)
    if features.deployment:
        host_s = host.host_step_s(
            tp,
            cpu_cores=cores,
            cpu_limited=limited,
            host_penalty_s=p.host_penalty_s,
            processes_besides_workers=constant("processes_besides_workers"),
        )
    else:
        host_s = np.zeros(shape)
    if not shape:
        t_pf, bmax, host_s = float(t_pf), float(bmax), float(host_s)
    return Instance(setup, features, tp, isl, osl, t_pf, bmax, host_s)


@dataclass(frozen=True)
class Prediction:
    output_tok_s: float
    tok_s_per_gpu: float
    tok_s_per_user: float
    ttft_s: float
    tpot_s: float
    max_batch: float


def _expand(instance: Instance, idx, k):
    """The same instance physics restricted to points ``idx`` and broadcast against batch grid ``k``."""

    def pick(v):
        a = np.asarray(v)
        return a[idx][:, None] if a.ndim else a

    return dataclasses.replace(
        instance,
        tp=pick(instance.tp),
        isl=pick(instance.isl),
        osl=pick(instance.osl),
        prefill_s=pick(instance.prefill_s),
        max_batch=pick(instance.max_batch),
        host_step_s=pick(instance.host_step_s),
    )


#: Instance throughputs evaluated at once by the random-routing solution (points x requests), which
#: bounds its memory whatever the number of points and their concurrency.
RANDOM_ROUTING_CHUNK = 2_000_000


def _random_routing_total(instance: Instance, concurrency, replicas, idx) -> np.ndarray:
    """Exact random-routing throughput for the points ``idx`` (product-form closed network)."""
    c_all = np.asarray(concurrency, float)[idx].astype(int)
    r_all = np.asarray(replicas, float)[idx].astype(int)
    out = np.empty(len(idx))
    order = np.argsort(c_all, kind="stable")  # similar concurrencies together: chunks stay rectangular
    start = 0
    while start < len(order):
        kmax = int(c_all[order[start]])
        stop = start + 1
        while stop < len(order) and (stop - start + 1) * int(c_all[order[stop]]) <= RANDOM_ROUTING_CHUNK:
            kmax = int(c_all[order[stop]])
            stop += 1
        part = order[start:stop]
        sel = np.asarray(idx)[part]
        k = np.arange(1, kmax + 1, dtype=float)[None, :]
        tok = np.asarray(_expand(instance, sel, k).tok_s(np.broadcast_to(k, (len(sel), kmax))), float)
        for j, i in enumerate(part):
            c, r = c_all[i], r_all[i]
            p = routing.random_routing_occupancy(c, r, lambda kk, row=tok[j]: row[: len(kk)])
            out[i] = r * np.dot(p[1:], tok[j, :c])
        start = stop
    return out


def predict_arrays(
    setup: Setup,
    *,
    features: Features = ALL_FEATURES,
    concurrency,
    isl,
    osl,
    tp_a,
    count_a,
    tp_b=1,
    count_b=0,
    gpu_memory_utilization=None,
    cpu_cores=None,
    cpu_limited=None,
    random_routing=None,
) -> dict:
    """Vectorised prediction of many points that share a model, a GPU and the dtypes of ``setup``.

    A point is ``count_a`` instances at ``tp_a`` plus ``count_b`` at ``tp_b``
    (a P/D layout served aggregated), all serving prefill and decode, with
    ``concurrency`` requests in a closed loop. The profile's memory
    utilisation, CPU cores, CPU limit and routing may be overridden point by
    point (None keeps the setup's profile). With fewer requests than
    instances, each request lands on any instance with equal chance, so the
    latencies are averaged per request and each user's throughput is OSL over
    the mean request time (a harmonic mean of the instances' speeds); with at
    least one request per instance, per completed request, which weights each
    instance by its throughput. Returns a dict of arrays:
    ``output_tok_s``, ``ttft_s``, ``tpot_s``, ``max_batch`` and ``fits``
    (False where an instance cannot hold one request; its numbers are NaN).
    """
    prof = setup.profile
    profile_values = (
        prof.gpu_memory_utilization if gpu_memory_utilization is None else gpu_memory_utilization,
        prof.cpu_cores if cpu_cores is None else cpu_cores,
        float(prof.cpu_limited) if cpu_limited is None else cpu_limited,
        float(prof.routing == "random") if random_routing is None else random_routing,
    )
    arrs = np.broadcast_arrays(
        *(
            np.asarray(v, float)
            for v in (concurrency, isl, osl, tp_a, count_a, tp_b, count_b, *profile_values)
        )
    )
    c, isl_, osl_, ta, ca, tb, cb, util, cores, limited, rnd = (a.ravel() for a in arrs)
    checks.whole("concurrency", c, 1)
    checks.nonnegative("cpu_limited", limited)
    if np.any(ca < 1) or np.any(cb < 0):
        raise ValueError("instance counts must be at least 1 (count_b at least 0)")
    reps = ca + cb
    n = c / reps
    m, share = np.maximum(n, 1.0), np.minimum(n, 1.0)
    total = np.zeros_like(c)
    time_per_tok = np.zeros_like(
        c
    )  # sum over instances of (count / reps) / tok: below one request per instance
    wsum = np.zeros_like(c)
    ttft, tpot, drain = np.zeros_like(c), np.zeros_like(c), np.zeros_like(c)
    bmin = np.full_like(c, np.inf)
    fits = np.ones(c.shape, bool)
    ctx = kvcache.mean_context_tokens(isl_, osl_)
    first = None
    for tp, count in ((ta, ca), (tb, cb)):
        active = count > 0
        if not active.any():
            continue
        inst = instance_arrays(
            setup,
            tp=tp,
            isl=isl_,
            osl=osl_,
            features=features,
            gpu_memory_utilization=util,
            cpu_cores=cores,
            cpu_limited=limited,
        )
        ok = np.asarray(inst.max_batch) * ctx >= isl_ + osl_
        fits &= ok | ~active
        safe = dataclasses.replace(inst, max_batch=np.where(ok, inst.max_batch, 1.0))
        ss = safe.steady_state(m)
        tok = np.where(active, ss["tok_s"], 0.0)
        total += count * tok * share
        time_per_tok += np.where(active, count / reps / np.where(active, ss["tok_s"], 1.0), 0.0)
        w = np.where(n < 1, count, count * tok)  # per request: equal chance below one request per instance
        tt = ss["ttft_s"]
        if features.deployment:
            tt = tt + queueing.prefill_contention_s(ss["batch"], safe.prefill_s, ss["service_s"])
            tt = tt + queueing.first_wave_delay_s(ss["batch"], safe.prefill_s, constant("prompts_per_slot"))
            drain += w * queueing.drain_factor(
                ss["batch"],
                ss["service_s"],
                np.maximum(ss["tok_s"], 1e-300),
                constant("prompts_per_slot") * m,
                osl_,
            )
        ttft += w * tt
        tpot += w * ss["tpot_s"]
        wsum += w
        bmin = np.where(active, np.minimum(bmin, np.where(ok, safe.max_batch, np.nan)), bmin)
        if first is None:
            first = safe
    total = np.where(n < 1, c / time_per_tok, total)
    if features.deployment:
        rand_idx = np.flatnonzero((rnd > 0) & (reps > 1) & (cb == 0) & fits)
        if rand_idx.size:
            total[rand_idx] = _random_routing_total(first, c, ca, rand_idx)
        total = total * drain / wsum
    nan = np.where(fits, 1.0, np.nan)
    shape = arrs[0].shape
    return {
        "output_tok_s": (total * nan).reshape(shape),
        "ttft_s": (ttft / wsum * nan).reshape(shape),
        "tpot_s": (tpot / wsum * nan).reshape(shape),
        "max_batch": bmin.reshape(shape),
        "fits": fits.reshape(shape),
    }


def predict_aggregated(
    setup: Setup, layout: Layout, *, isl: int, osl: int, concurrency: float, features: Features = ALL_FEATURES
) -> Prediction:
    """Predict one point: every instance serves prefill and decode (aggregated serving).

    A disaggregated layout is treated as its pods serving aggregated (the
    reading of the dashed curves tested in chapter 07). Raises
    :class:`kvcache.InsufficientMemoryError` when an instance cannot hold one request.
    """
    if not concurrency >= 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    ta, ca, tb, cb = layout.pools()
    out = predict_arrays(
        setup,
        features=features,
        concurrency=concurrency,
        isl=isl,
        osl=osl,
        tp_a=ta,
        count_a=ca,
        tp_b=tb,
        count_b=cb,
    )
    if not bool(out["fits"]):
        raise kvcache.InsufficientMemoryError(
            f"{setup.model.name} on {setup.gpu.name} ({setup.profile.name}, layout {layout}) cannot hold one "
            f"request of {isl + osl} tokens in an instance's KV cache"
        )
    total = float(out["output_tok_s"])
    return Prediction(
        total,
        total / layout.num_gpus,
        total / concurrency,
        float(out["ttft_s"]),
        float(out["tpot_s"]),
        float(out["max_batch"]),
    )


PRED_COLUMNS = [
    "pred_output_tok_s",
    "pred_tok_s_per_gpu",
    "pred_tok_s_per_user",
    "pred_ttft_ms",
    "pred_tpot_ms",
    "pred_max_batch",
]


def predict_measurements(
    df: pd.DataFrame, params: ModelParams, features: Features = ALL_FEATURES, predictor=None
) -> pd.DataFrame:
    """Predict every measured point; returns the deployment columns plus ``pred_*`` columns.

    With the default predictor the points are computed together, vectorised;
    another ``predictor`` (same signature as :func:`predict_aggregated`) is
    called point by point.
    """
    out = pd.DataFrame(index=df.index, columns=PRED_COLUMNS, dtype=float)
    if predictor is not None:
        for i, r in df.iterrows():
            setup = Setup(get_model(r["model"]), get_gpu(r["gpu"]), benchmark_profile(r), params)
            p = predictor(
                setup,
                layout_of(r),
                isl=int(r["isl"]),
                osl=int(r["osl"]),
                concurrency=float(r["concurrency"]),
                features=features,
            )
            out.loc[i] = [
                p.output_tok_s,
                p.tok_s_per_gpu,
                p.tok_s_per_user,
                p.ttft_s * 1e3,
                p.tpot_s * 1e3,
                p.max_batch,
            ]
    else:
        for (mname, gname), grp in df.groupby(["model", "gpu"], sort=False):
            agg = (grp["kind"] == "aggregated").to_numpy()
            profs = [benchmark_profile(r) for _, r in grp.iterrows()]
            ta = np.where(agg, grp["tp"].astype(float).fillna(0), grp["p_tp"].astype(float).fillna(0))
            ca = np.where(
                agg, grp["replicas"].astype(float).fillna(0), grp["p_replicas"].astype(float).fillna(0)
            )
            tb = np.where(agg, 1.0, grp["d_tp"].astype(float).fillna(1))
            cb = np.where(agg, 0.0, grp["d_replicas"].astype(float).fillna(0))
            res = predict_arrays(
                Setup(get_model(mname), get_gpu(gname), profs[0], params),
                features=features,
                concurrency=grp["concurrency"].to_numpy(float),
                isl=grp["isl"].to_numpy(float),
                osl=grp["osl"].to_numpy(float),
                tp_a=ta,
                count_a=ca,
                tp_b=tb,
                count_b=cb,
                gpu_memory_utilization=[p.gpu_memory_utilization for p in profs],
                cpu_cores=[p.cpu_cores for p in profs],
                cpu_limited=[float(p.cpu_limited) for p in profs],
                random_routing=[float(p.routing == "random") for p in profs],
            )
            gpus = grp["num_gpus"].to_numpy(float)
            out.loc[grp.index, "pred_output_tok_s"] = res["output_tok_s"]
            out.loc[grp.index, "pred_tok_s_per_gpu"] = res["output_tok_s"] / gpus
            out.loc[grp.index, "pred_tok_s_per_user"] = res["output_tok_s"] / grp["concurrency"].to_numpy(
                float
            )
            out.loc[grp.index, "pred_ttft_ms"] = res["ttft_s"] * 1e3
            out.loc[grp.index, "pred_tpot_ms"] = res["tpot_s"] * 1e3
            out.loc[grp.index, "pred_max_batch"] = res["max_batch"]
    return pd.concat([df[[c for c in DEPLOYMENT_COLUMNS if c in df.columns]], out], axis=1)


CURVE_CONCURRENCIES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256)


def model_curves(
    meas: pd.DataFrame,
    params: ModelParams,
    concurrencies=CURVE_CONCURRENCIES,
    features: Features = ALL_FEATURES,
) -> pd.DataFrame:
    """The model's curve of every measured deployment over a grid of concurrencies.

    Returns one row per (deployment, concurrency) with the deployment columns
    and ``pred_*`` columns, ready to draw next to the measured points.
    """
    deps = meas.drop_duplicates("deployment")
    grid = pd.concat([deps.assign(concurrency=int(c)) for c in concurrencies], ignore_index=True)
    grid = grid.sort_values(["deployment", "concurrency"], kind="stable").reset_index(drop=True)
    out = predict_measurements(grid, params, features)
    out["num_gpus"] = grid["num_gpus"].to_numpy()
    return out


def decode_step_breakdown(setup: Setup, *, tp: int, batch: float, isl: int, osl: int) -> dict:
    """The parts of one decode step of the full model, in seconds (chapter 10).

    ``weights_s`` and ``kv_s`` (the HBM reads), ``overhead_s`` (fixed per step),
    ``allreduce_s`` (the 2L all-reduces) and ``host_s`` (the host time of a
    CPU-limited pod); their sum is the step time whenever decode is
    memory-bound, as it is here.
    """
    s, p = setup, setup.params
    ctx = kvcache.mean_context_tokens(isl, osl)
    terms = roofline.decode_time_terms_s(s.model, s.gpu, tp, batch, ctx, **roofline_terms(s))
    ar = comm.decode_comm_time_s(
        s.model, s.gpu, tp, batch, latency_s=p.allreduce_latency_s, link_efficiency=p.link_efficiency
    )
    inst = make_instance(setup, tp=tp, isl=isl, osl=osl)
    parts = {
        "weights_s": float(terms["weights_s"]),
        "kv_s": float(terms["kv_s"]),
        "overhead_s": float(p.step_overhead_for(s.model)),
        "allreduce_s": float(ar),
        "host_s": float(inst.host_step_s),
    }
    parts["step_s"] = float(inst.decode_step_s(batch))
    return parts
