"""The full model: every term of chapters 03 to 07 composed, switchable for the error ladder.

One vLLM instance at tensor parallelism N is described by its prefill time,
its decode-step time as a function of batch, and its KV-cache batch limit. A
deployment is a set of instances behind a router; the benchmark is a closed
loop of C requests. :class:`Features` switches each refinement on, so the
same code produces every row of the error ladder (chapter 09).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import checks, comm, deployment, kvcache, prefill, queueing, roofline
from .specs import (
    GIB,
    GpuSpec,
    ModelSpec,
    Profile,
    constant,
    get_gpu,
    get_model,
    get_profile,
    parameter_facts,
)

FITTED_PARAMETERS = (
    "bandwidth_efficiency",
    "kv_bandwidth_efficiency",
    "compute_efficiency",
    "allreduce_latency_s",
    "memory_reserve_gib",
    "host_penalty_s",
)


@dataclass(frozen=True)
class ModelParams:
    """The model's parameters: the six fitted ones (:data:`FITTED_PARAMETERS`) and the fixed ones."""

    bandwidth_efficiency: float
    kv_bandwidth_efficiency: float
    compute_efficiency: float
    step_overhead_s: float  # per engine step, whatever the model's depth
    step_overhead_per_layer_s: float  # per engine step and transformer layer
    allreduce_latency_s: float
    memory_reserve_gib: float
    host_penalty_s: float
    link_efficiency: float

    def __post_init__(self):
        for name in (
            "bandwidth_efficiency",
            "kv_bandwidth_efficiency",
            "compute_efficiency",
            "link_efficiency",
        ):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0 < v <= 1):
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        for name in (
            "step_overhead_s",
            "step_overhead_per_layer_s",
            "allreduce_latency_s",
            "memory_reserve_gib",
            "host_penalty_s",
        ):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be non-negative, got {v!r}")

    @classmethod
    def nominal(cls) -> ModelParams:
        """Every parameter at its sourced nominal value (``data/parameters.csv``)."""
        facts = parameter_facts()
        return cls(**{f.name: facts[f.name].nominal for f in dataclasses.fields(cls)})

    def step_overhead_for(self, model: ModelSpec) -> float:
        """Fixed time per engine step outside the roofline for ``model``: per step plus per layer (BLIS's law)."""
        return self.step_overhead_s + self.step_overhead_per_layer_s * model.num_layers

    def with_fitted(self, values) -> ModelParams:
        return dataclasses.replace(self, **dict(zip(FITTED_PARAMETERS, map(float, values))))

    def fitted_vector(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in FITTED_PARAMETERS], float)


@dataclass(frozen=True)
class Features:
    """Which refinements are on. Each chapter switches one more on."""

    kv_limit: bool = True  # chapter 04: KV capacity and queueing
    prefill_interference: bool = True  # chapter 05: chunked prefill shares the instance
    communication: bool = True  # chapter 06: two all-reduces per layer
    deployment: bool = True  # chapters 06-07: host penalty, routing, benchmark ramp and tail


ROOFLINE_ONLY = Features(kv_limit=False, prefill_interference=False, communication=False, deployment=False)
LADDER_FEATURES = (
    ("+ bandwidth roofline", ROOFLINE_ONLY),
    ("+ KV capacity and queueing", Features(True, False, False, False)),
    ("+ prefill", Features(True, True, False, False)),
    ("+ communication", Features(True, True, True, False)),
    ("+ deployment differences", Features(True, True, True, True)),
)


@dataclass(frozen=True)
class Instance:
    """The physics of one vLLM instance for one workload (scalars or aligned arrays)."""

    model: ModelSpec
    gpu: GpuSpec
    tp: object
    isl: object
    osl: object
    prefill_s: object
    max_batch: object
    params: ModelParams
    features: Features
    host_s: object
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"

    def decode_step_s(self, batch):
        """Decode-step time at batch B: overhead + host + all-reduces + roofline."""
        ctx = kvcache.mean_context_tokens(self.isl, self.osl)
        t = roofline.decode_step_time_s(
            self.model,
            self.gpu,
            self.tp,
            batch,
            ctx,
            bandwidth_efficiency=self.params.bandwidth_efficiency,
            kv_bandwidth_efficiency=self.params.kv_bandwidth_efficiency,
            compute_efficiency=self.params.compute_efficiency,
            step_overhead_s=self.params.step_overhead_for(self.model),
            weight_dtype=self.weight_dtype,
            kv_dtype=self.kv_dtype,
        )
        if self.features.communication:
            t = t + comm.decode_comm_time_s(
                self.model,
                self.gpu,
                self.tp,
                batch,
                self.params.allreduce_latency_s,
                self.params.link_efficiency,
            )
        return t + self.host_s

    def steady_state(self, n):
        """Closed-loop steady state with ``n`` requests present (see :func:`queueing.closed_loop`)."""
        return (
            queueing.closed_loop(
                n,
                self.max_batch,
                self.prefill_s,
                self.decode_step_s,
                int(np.max(self.osl)),
                interference=self.features.prefill_interference,
            )
            if np.ndim(self.osl) == 0
            else queueing.closed_loop(
                n,
                self.max_batch,
                self.prefill_s,
                self.decode_step_s,
                self.osl,
                interference=self.features.prefill_interference,
            )
        )

    def tok_s(self, n):
        return self.steady_state(n)["tok_s"]


def make_instance(
    model: ModelSpec,
    gpu: GpuSpec,
    tp,
    isl,
    osl,
    profile: Profile,
    params: ModelParams,
    features: Features,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
) -> Instance:
    """Build the physics of one instance (prefill time, batch limit, host penalty)."""
    return make_instance_arrays(
        model,
        gpu,
        tp,
        isl,
        osl,
        profile.gpu_memory_utilization,
        profile.cpu_cores,
        profile.host_penalty,
        params,
        features,
        weight_dtype,
        kv_dtype,
    )


def make_instance_arrays(
    model: ModelSpec,
    gpu: GpuSpec,
    tp,
    isl,
    osl,
    gpu_memory_utilization,
    cpu_cores,
    host_penalty,
    params: ModelParams,
    features: Features,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
) -> Instance:
    """:func:`make_instance` with the profile given as (broadcastable) arrays, for vectorised sweeps."""
    compute_dtype = "fp8" if weight_dtype == "fp8" else "bf16"
    t_pf = prefill.prefill_compute_time_s(model, gpu, tp, isl, params.compute_efficiency, compute_dtype)
    budget = constant("max_num_batched_tokens")
    if features.communication:
        t_pf = t_pf + comm.prefill_comm_time_s(
            model, gpu, tp, isl, budget, params.allreduce_latency_s, params.link_efficiency
        )
    # every prefill chunk is an engine step that pays the fixed overhead
    t_pf = t_pf + prefill.prefill_chunks(isl, budget) * params.step_overhead_for(model)
    util = np.asarray(gpu_memory_utilization, float)
    if np.any(~((util > 0) & (util <= 1))):
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
    shape = np.broadcast(np.asarray(tp), np.asarray(isl), np.asarray(osl), util).shape
    if features.kv_limit:
        cap = kvcache.kv_capacity_tokens(
            gpu, model, tp, util, params.memory_reserve_gib * GIB, weight_dtype, kv_dtype
        )
        bmax = np.broadcast_to(
            np.minimum(kvcache.max_batch(cap, isl, osl), constant("max_num_seqs")), shape
        ).astype(float)
    else:
        bmax = np.full(shape, np.inf)
    if features.deployment:
        over = deployment.oversubscription(tp, cpu_cores, constant("processes_besides_workers"))
        host = params.host_penalty_s * over * np.asarray(host_penalty, float)
    else:
        host = np.zeros(shape)
    if not shape:
        t_pf, bmax, host = float(t_pf), float(bmax), float(host)
    return Instance(model, gpu, tp, isl, osl, t_pf, bmax, params, features, host, weight_dtype, kv_dtype)


@dataclass(frozen=True)
class Layout:
    """How the GPUs of a deployment are split into instances."""

    kind: str  # "aggregated" or "disaggregated"
    tp: int | None = None
    replicas: int | None = None
    p_tp: int | None = None
    p_replicas: int | None = None
    d_tp: int | None = None
    d_replicas: int | None = None

    def __post_init__(self):
        if self.kind == "aggregated":
            if not (self.tp and self.replicas and self.tp >= 1 and self.replicas >= 1):
                raise ValueError("an aggregated layout needs tp >= 1 and replicas >= 1")
            fields = ("tp", "replicas")
        elif self.kind == "disaggregated":
            for f in ("p_tp", "p_replicas", "d_tp", "d_replicas"):
                v = getattr(self, f)
                if not (v and v >= 1):
                    raise ValueError(f"a disaggregated layout needs {f} >= 1")
            fields = ("p_tp", "p_replicas", "d_tp", "d_replicas")
        else:
            raise ValueError(f"unknown kind {self.kind!r}; expected 'aggregated' or 'disaggregated'")
        for f in fields:
            checks.whole(f, getattr(self, f), 1)

    @property
    def num_gpus(self) -> int:
        if self.kind == "aggregated":
            return self.tp * self.replicas
        return self.p_tp * self.p_replicas + self.d_tp * self.d_replicas

    def instance_tps(self) -> list[int]:
        """TP size of every instance (a P/D layout served aggregated: all its pods)."""
        if self.kind == "aggregated":
            return [self.tp] * self.replicas
        return [self.p_tp] * self.p_replicas + [self.d_tp] * self.d_replicas


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
        host_s=pick(instance.host_s),
    )


def _random_routing_total(instance: Instance, concurrency, replicas, idx) -> np.ndarray:
    """Exact random-routing throughput for the points ``idx`` (product-form closed network)."""
    c = np.asarray(concurrency, float)[idx].astype(int)
    r = np.asarray(replicas, float)[idx].astype(int)
    kmax = int(c.max())
    k = np.arange(1, kmax + 1, dtype=float)[None, :]
    tok = np.asarray(_expand(instance, idx, k).tok_s(np.broadcast_to(k, (len(idx), kmax))), float)
    out = np.empty(len(idx))
    for i in range(len(idx)):
        p = deployment.random_routing_occupancy(c[i], r[i], lambda kk, row=tok[i]: row[: len(kk)])
        out[i] = r[i] * np.dot(p[1:], tok[i, : c[i]])
    return out


def predict_arrays(
    model: ModelSpec,
    gpu: GpuSpec,
    params: ModelParams,
    features: Features,
    *,
    concurrency,
    isl,
    osl,
    tp_a,
    count_a,
    tp_b=1,
    count_b=0,
    gpu_memory_utilization,
    cpu_cores,
    host_penalty,
    random_routing,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
) -> dict:
    """Vectorised prediction of many points that share a model and a GPU.

    A point is ``count_a`` instances at ``tp_a`` plus ``count_b`` at ``tp_b``
    (a P/D layout served aggregated), all serving prefill and decode, with
    ``concurrency`` requests in a closed loop. With fewer requests than
    instances, each request lands on any instance with equal chance, so the
    latencies are averaged per request and each user's throughput is OSL over
    the mean request time (a harmonic mean of the instances' speeds); with at
    least one request per instance, per completed request, which weights each
    instance by its throughput. Returns a dict of arrays:
    ``output_tok_s``, ``ttft_s``, ``tpot_s``, ``max_batch`` and ``fits``
    (False where an instance cannot hold one request; its numbers are NaN).
    """
    arrs = np.broadcast_arrays(
        *(
            np.asarray(v, float)
            for v in (
                concurrency,
                isl,
                osl,
                tp_a,
                count_a,
                tp_b,
                count_b,
                gpu_memory_utilization,
                cpu_cores,
                host_penalty,
                random_routing,
            )
        )
    )
    c, isl_, osl_, ta, ca, tb, cb, util, cores, host, rnd = (a.ravel() for a in arrs)
    checks.whole("concurrency", c, 1)
    checks.nonnegative("host_penalty", host)
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
        inst = make_instance_arrays(
            model, gpu, tp, isl_, osl_, util, cores, host, params, features, weight_dtype, kv_dtype
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
    model: ModelSpec,
    gpu: GpuSpec,
    isl: int,
    osl: int,
    layout: Layout,
    concurrency: float,
    profile: Profile,
    params: ModelParams,
    features: Features = Features(),
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
) -> Prediction:
    """Predict one point: every instance serves prefill and decode (aggregated serving).

    A disaggregated layout is treated as its pods serving aggregated (the
    reading of the dashed curves tested in chapter 07). Raises
    :class:`kvcache.InsufficientMemoryError` when an instance cannot hold one request.
    """
    if not concurrency >= 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    if layout.kind == "aggregated":
        ta, ca, tb, cb = layout.tp, layout.replicas, 1, 0
    else:
        ta, ca, tb, cb = layout.p_tp, layout.p_replicas, layout.d_tp, layout.d_replicas
    out = predict_arrays(
        model,
        gpu,
        params,
        features,
        concurrency=concurrency,
        isl=isl,
        osl=osl,
        tp_a=ta,
        count_a=ca,
        tp_b=tb,
        count_b=cb,
        gpu_memory_utilization=profile.gpu_memory_utilization,
        cpu_cores=profile.cpu_cores,
        host_penalty=float(profile.host_penalty),
        random_routing=float(profile.routing == "random"),
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
    )
    if not bool(out["fits"]):
        raise kvcache.InsufficientMemoryError(
            f"{model.name} on {gpu.name} ({profile.name}, layout {layout}) cannot hold one request of "
            f"{isl + osl} tokens in an instance's KV cache"
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


def layout_of(row) -> Layout:
    """The layout of one measurement row (pandas row or mapping)."""

    def get(c):
        v = row[c]
        return None if pd.isna(v) else int(v)

    return Layout(
        row["kind"],
        get("tp"),
        get("replicas"),
        get("p_tp"),
        get("p_replicas"),
        get("d_tp"),
        get("d_replicas"),
    )


def benchmark_profile(row) -> Profile:
    """The benchmark's pods: standalone for aggregated rows, modelservice for the llm-d ones."""
    return get_profile("llm-d-standalone" if row["kind"] == "aggregated" else "llm-d-modelservice")


def predict_measurements(
    df: pd.DataFrame, params: ModelParams, features: Features = Features(), predictor=None
) -> pd.DataFrame:
    """Predict every measured point; returns the deployment columns plus ``pred_*`` columns.

    With the default predictor the points are computed together, vectorised;
    another ``predictor`` (same signature as :func:`predict_aggregated`) is
    called point by point.
    """
    keep = [
        "deployment",
        "family",
        "kind",
        "tp",
        "replicas",
        "p_tp",
        "p_replicas",
        "d_tp",
        "d_replicas",
        "concurrency",
    ]
    out = pd.DataFrame(index=df.index, columns=PRED_COLUMNS, dtype=float)
    if predictor is not None:
        for i, r in df.iterrows():
            p = predictor(
                get_model(r["model"]),
                get_gpu(r["gpu"]),
                int(r["isl"]),
                int(r["osl"]),
                layout_of(r),
                float(r["concurrency"]),
                benchmark_profile(r),
                params,
                features,
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
                get_model(mname),
                get_gpu(gname),
                params,
                features,
                concurrency=grp["concurrency"].to_numpy(float),
                isl=grp["isl"].to_numpy(float),
                osl=grp["osl"].to_numpy(float),
                tp_a=ta,
                count_a=ca,
                tp_b=tb,
                count_b=cb,
                gpu_memory_utilization=[p.gpu_memory_utilization for p in profs],
                cpu_cores=[p.cpu_cores for p in profs],
                host_penalty=[float(p.host_penalty) for p in profs],
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
    return pd.concat([df[[c for c in keep if c in df.columns]], out], axis=1)


PRED_COLUMNS = [
    "pred_output_tok_s",
    "pred_tok_s_per_gpu",
    "pred_tok_s_per_user",
    "pred_ttft_ms",
    "pred_tpot_ms",
    "pred_max_batch",
]


CURVE_CONCURRENCIES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256)


def model_curves(
    meas: pd.DataFrame,
    params: ModelParams,
    concurrencies=CURVE_CONCURRENCIES,
    features: Features = Features(),
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


def decode_step_breakdown(
    model: ModelSpec,
    gpu: GpuSpec,
    tp: int,
    batch: float,
    isl: int,
    osl: int,
    profile: Profile,
    params: ModelParams,
) -> dict:
    """The parts of one decode step of the full model, in seconds (chapter 10).

    ``weights_s`` and ``kv_s`` (the HBM reads), ``overhead_s`` (fixed per step),
    ``allreduce_s`` (the 2L all-reduces) and ``host_s`` (CPU starvation); their
    sum is the step time whenever decode is memory-bound, as it is here.
    """
    ctx = kvcache.mean_context_tokens(isl, osl)
    terms = roofline.decode_time_terms_s(
        model,
        gpu,
        tp,
        batch,
        ctx,
        bandwidth_efficiency=params.bandwidth_efficiency,
        kv_bandwidth_efficiency=params.kv_bandwidth_efficiency,
        compute_efficiency=params.compute_efficiency,
        step_overhead_s=params.step_overhead_for(model),
    )
    ar = comm.decode_comm_time_s(model, gpu, tp, batch, params.allreduce_latency_s, params.link_efficiency)
    host = deployment.host_penalty_s(
        tp, profile, params.host_penalty_s, constant("processes_besides_workers")
    )
    inst = make_instance(model, gpu, tp, isl, osl, profile, params, Features())
    parts = {
        "weights_s": float(terms["weights_s"]),
        "kv_s": float(terms["kv_s"]),
        "overhead_s": float(params.step_overhead_for(model)),
        "allreduce_s": float(ar),
        "host_s": float(host),
    }
    parts["step_s"] = float(inst.decode_step_s(batch))
    return parts
