"""The full model: every term of chapters 03 to 07 composed, switchable for the error ladder.

One vLLM instance at tensor parallelism N is described by its prefill time,
its decode-step time as a function of batch, and its KV-cache batch limit. A
deployment is a set of instances behind a router; the benchmark is a closed
loop of C requests. :class:`Features` switches each refinement on, so the
same code produces every row of the error ladder (chapter 08).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import comm, deployment, kvcache, prefill, queueing, roofline
from .specs import GIB, GpuSpec, ModelSpec, Profile, constant, get_gpu, get_model, get_profile, parameter_facts

FITTED_PARAMETERS = (
    "bandwidth_efficiency",
    "compute_efficiency",
    "step_overhead_s",
    "allreduce_latency_s",
    "memory_reserve_gib",
    "host_penalty_s",
)


@dataclass(frozen=True)
class ModelParams:
    """The model's parameters (the six fitted ones and the fixed link efficiency)."""

    bandwidth_efficiency: float
    compute_efficiency: float
    step_overhead_s: float
    allreduce_latency_s: float
    memory_reserve_gib: float
    host_penalty_s: float
    link_efficiency: float

    def __post_init__(self):
        for name in ("bandwidth_efficiency", "compute_efficiency", "link_efficiency"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0 < v <= 1):
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        for name in ("step_overhead_s", "allreduce_latency_s", "memory_reserve_gib", "host_penalty_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be non-negative, got {v!r}")

    @classmethod
    def nominal(cls) -> "ModelParams":
        """Every parameter at its sourced nominal value (``data/parameters.csv``)."""
        facts = parameter_facts()
        return cls(**{f.name: facts[f.name].nominal for f in dataclasses.fields(cls)})

    def with_fitted(self, values) -> "ModelParams":
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
            self.model, self.gpu, self.tp, batch, ctx,
            bandwidth_efficiency=self.params.bandwidth_efficiency,
            compute_efficiency=self.params.compute_efficiency,
            step_overhead_s=self.params.step_overhead_s,
            weight_dtype=self.weight_dtype, kv_dtype=self.kv_dtype,
        )
        if self.features.communication:
            t = t + comm.decode_comm_time_s(self.model, self.gpu, self.tp, batch, self.params.allreduce_latency_s,
                                            self.params.link_efficiency)
        return t + self.host_s

    def steady_state(self, n):
        """Closed-loop steady state with ``n`` requests present (see :func:`queueing.closed_loop`)."""
        return queueing.closed_loop(n, self.max_batch, self.prefill_s, self.decode_step_s, int(np.max(self.osl)),
                                    interference=self.features.prefill_interference) \
            if np.ndim(self.osl) == 0 else queueing.closed_loop(
                n, self.max_batch, self.prefill_s, self.decode_step_s, self.osl,
                interference=self.features.prefill_interference)

    def tok_s(self, n):
        return self.steady_state(n)["tok_s"]


def make_instance(model: ModelSpec, gpu: GpuSpec, tp, isl, osl, profile: Profile, params: ModelParams,
                  features: Features, weight_dtype: str = "bf16", kv_dtype: str = "bf16") -> Instance:
    """Build the physics of one instance (prefill time, batch limit, host penalty)."""
    compute_dtype = "fp8" if weight_dtype == "fp8" else "bf16"
    t_pf = prefill.prefill_compute_time_s(model, gpu, tp, isl, params.compute_efficiency, compute_dtype)
    budget = constant("max_num_batched_tokens")
    if features.communication:
        t_pf = t_pf + comm.prefill_comm_time_s(model, gpu, tp, isl, budget, params.allreduce_latency_s,
                                               params.link_efficiency)
    # every prefill chunk is an engine step that pays the fixed overhead
    t_pf = t_pf + prefill.prefill_chunks(isl, budget) * params.step_overhead_s
    if features.kv_limit:
        cap = kvcache.kv_capacity_tokens(gpu, model, tp, profile.gpu_memory_utilization,
                                         params.memory_reserve_gib * GIB, weight_dtype, kv_dtype)
        bmax = kvcache.max_batch(cap, isl, osl)
    else:
        bmax = np.full(np.shape(np.asarray(tp) + np.asarray(isl)), np.inf) if np.ndim(tp) or np.ndim(isl) else np.inf
    host = deployment.host_penalty_s(tp, profile, params.host_penalty_s, constant("processes_besides_workers")) \
        if features.deployment else np.zeros_like(np.asarray(tp, float))
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
        elif self.kind == "disaggregated":
            for f in ("p_tp", "p_replicas", "d_tp", "d_replicas"):
                v = getattr(self, f)
                if not (v and v >= 1):
                    raise ValueError(f"a disaggregated layout needs {f} >= 1")
        else:
            raise ValueError(f"unknown kind {self.kind!r}; expected 'aggregated' or 'disaggregated'")

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


def predict_aggregated(model: ModelSpec, gpu: GpuSpec, isl: int, osl: int, layout: Layout, concurrency: float,
                       profile: Profile, params: ModelParams, features: Features = Features(),
                       weight_dtype: str = "bf16", kv_dtype: str = "bf16") -> Prediction:
    """Predict one point: every instance serves prefill and decode (aggregated serving).

    A disaggregated layout is treated as its pods serving aggregated (the
    reading of the dashed curves tested in chapter 07).
    """
    if not concurrency >= 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    tps = layout.instance_tps()
    kinds = sorted(set(tps))
    inst = {t: make_instance(model, gpu, t, isl, osl, profile, params, features, weight_dtype, kv_dtype) for t in kinds}
    for t, i in inst.items():
        if features.kv_limit and not float(i.max_batch) * kvcache.mean_context_tokens(isl, osl) >= isl + osl:
            raise kvcache.InsufficientMemoryError(
                f"{model.name} at TP{t} on {gpu.name} ({profile.name}) cannot hold one request of {isl + osl} tokens")
    r = len(tps)
    n = concurrency / r
    random = features.deployment and profile.routing == "random" and r > 1
    if random and len(kinds) == 1:
        total = deployment.random_routing_throughput(int(concurrency), r, inst[kinds[0]].tok_s)
    else:
        total = float(sum(float(inst[t].tok_s(max(n, 1.0))) * min(n, 1.0) for t in tps))
    weights, ttft, tpot, drain = [], [], [], []
    for t in tps:
        ss = inst[t].steady_state(max(n, 1.0))
        b, t_pf = float(ss["batch"]), float(inst[t].prefill_s)
        tt = float(ss["ttft_s"])
        if features.deployment:
            tt += float(queueing.prefill_contention_s(b, t_pf, ss["service_s"]))
            tt += float(queueing.first_wave_delay_s(b, t_pf, constant("prompts_per_slot")))
            drain.append(float(queueing.drain_factor(b, ss["service_s"], ss["tok_s"],
                                                     constant("prompts_per_slot") * max(n, 1.0), osl)))
        weights.append(float(ss["tok_s"]))
        ttft.append(tt)
        tpot.append(float(ss["tpot_s"]))
    w = np.array(weights) / np.sum(weights)
    if drain:
        total *= float(np.dot(w, drain))
    return Prediction(
        output_tok_s=total,
        tok_s_per_gpu=total / layout.num_gpus,
        tok_s_per_user=total / concurrency,
        ttft_s=float(np.dot(w, ttft)),
        tpot_s=float(np.dot(w, tpot)),
        max_batch=float(np.min([float(inst[t].max_batch) for t in kinds])),
    )


def layout_of(row) -> Layout:
    """The layout of one measurement row (pandas row or mapping)."""
    def get(c):
        v = row[c]
        return None if pd.isna(v) else int(v)

    return Layout(row["kind"], get("tp"), get("replicas"), get("p_tp"), get("p_replicas"), get("d_tp"), get("d_replicas"))


def benchmark_profile(row) -> Profile:
    """The benchmark's pods: standalone for aggregated rows, modelservice for the llm-d ones."""
    return get_profile("llm-d-standalone" if row["kind"] == "aggregated" else "llm-d-modelservice")


def predict_measurements(df: pd.DataFrame, params: ModelParams, features: Features = Features(),
                         predictor=None) -> pd.DataFrame:
    """Predict every measured point; returns the deployment columns plus ``pred_*`` columns."""
    predictor = predictor or predict_aggregated
    rows = []
    for _, r in df.iterrows():
        model, gpu = get_model(r["model"]), get_gpu(r["gpu"])
        p = predictor(model, gpu, int(r["isl"]), int(r["osl"]), layout_of(r), float(r["concurrency"]),
                      benchmark_profile(r), params, features)
        rows.append({
            "pred_output_tok_s": p.output_tok_s,
            "pred_tok_s_per_gpu": p.tok_s_per_gpu,
            "pred_tok_s_per_user": p.tok_s_per_user,
            "pred_ttft_ms": p.ttft_s * 1e3,
            "pred_tpot_ms": p.tpot_s * 1e3,
            "pred_max_batch": p.max_batch,
        })
    out = pd.DataFrame(rows, index=df.index)
    keep = ["deployment", "family", "kind", "tp", "replicas", "p_tp", "p_replicas", "d_tp", "d_replicas", "concurrency"]
    return pd.concat([df[[c for c in keep if c in df.columns]], out], axis=1)
