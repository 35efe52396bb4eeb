"""Prefill/decode disaggregation as a closed loop of three pools (chapter 07).

In true disaggregated serving a request visits three stations in turn:

1. the prefill pool: ``p_replicas`` instances at ``p_tp``, each prefilling one
   prompt at a time in the prefill time of :func:`fullmodel.make_instance`;
2. the KV transfer: the prompt's KV cache (``isl`` tokens) moves from the
   prefill instance to a decode instance over a network link;
3. the decode pool: ``d_replicas`` instances at ``d_tp`` that only decode, at
   most the KV-cache batch limit each, with no prefill interference.

The benchmark keeps C requests in flight. Mean-field closed loop: find the
request rate lambda at which the requests present in the three stations add up
to C (bisection). Throughput can never exceed the slowest pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import gammaincc

from . import checks, kvcache, queueing
from .fullmodel import Instance, Prediction, make_instance, predict_aggregated
from .layout import Layout
from .setup import ALL_FEATURES, Features, Setup
from .specs import ModelSpec, constant, dtype_bytes

TRANSFER_BANDWIDTHS = {"rdma": "kv_transfer_rdma_gb_s", "tcp": "kv_transfer_tcp_gb_s"}
_BISECT_ITERS = 200


def transfer_bandwidth_bytes_s(kind: str = "rdma") -> float:
    """KV-transfer bandwidth (bytes/s) of an RDMA-class or TCP-class link, from
    ``data/parameters.csv``.
    """
    key = str(kind).strip().lower()
    if key not in TRANSFER_BANDWIDTHS:
        raise ValueError(f"unknown transfer kind {kind!r}; expected one of {sorted(TRANSFER_BANDWIDTHS)}")
    return constant(TRANSFER_BANDWIDTHS[key]) * 1e9


def kv_transfer_bytes(model: ModelSpec, isl, *, kv_dtype: str = "bf16"):
    """Bytes of KV cache a prefill hands to decode: every layer's K and V for the ``isl``
    prompt tokens.
    """
    s = np.asarray(isl, float)
    if np.any(s < 1):
        raise ValueError(f"isl must be at least 1, got {isl!r}")
    return 2.0 * model.num_layers * model.num_kv_heads * model.head_dim * dtype_bytes(kv_dtype) * s


def kv_transfer_time_s(model: ModelSpec, isl, transfer_bytes_s, *, kv_dtype: str = "bf16"):
    """Time to move one prompt's KV cache over a link of ``transfer_bytes_s`` bytes/s."""
    bw = np.asarray(transfer_bytes_s, float)
    if np.any(~(bw > 0)) or np.any(~np.isfinite(bw)):
        raise ValueError(f"transfer_bytes_s must be a positive finite number, got {transfer_bytes_s!r}")
    return kv_transfer_bytes(model, isl, kv_dtype=kv_dtype) / bw


# Pools up to this many servers use Erlang B's recursion (exact, cost linear in the pool);
# larger ones use the closed form through the regularised incomplete gamma function, whose
# cost does not depend on the pool size. The two agree to 1e-12 where both are used
# (tests/unit/test_disagg.py), so the switch changes no number on the benchmark's pools.
ERLANG_RECURSION_MAX_SERVERS = 64


def erlang_b(servers: int, offered_load: float) -> float:
    """Blocking probability of an M/M/c/c loss system (``offered_load`` = lambda x service time),
    for a load below the number of servers (the stable region, the only one the model asks for).

    Exact recursion for small pools; for larger ones the closed form
    B(c, a) = Poisson(c; a) / P(Poisson(a) <= c), with the Poisson CDF written as the
    regularised upper incomplete gamma Q(c + 1, a).
    """
    c = int(servers)
    a = float(offered_load)
    if c < 1 or c != servers:
        raise ValueError(f"servers must be a whole number >= 1, got {servers!r}")
    if not (np.isfinite(a) and 0 <= a < c):
        raise ValueError(f"offered_load must be a number from 0 to below servers = {c}, got {offered_load!r}")
    if a == 0:
        return 0.0
    if c <= ERLANG_RECURSION_MAX_SERVERS:
        b = 1.0
        for k in range(1, c + 1):
            b = a * b / (k + a * b)
        return b
    # log Poisson(c; a) = c log a - a - log c!, rewritten so that nothing of size c cancels:
    # with a = c (1 - d), c log(a / c) + c - a = c (log1p(-d) + d), and Stirling's series gives
    # log c! - (c log c - c) = log(2 pi c) / 2 + 1/(12 c) - 1/(360 c^3) + 1/(1260 c^5), whose
    # next term is below 1e-16 for c > 64.
    d = (c - a) / c
    stirling = 0.5 * np.log(2 * np.pi * c) + 1 / (12 * c) - 1 / (360 * c**3) + 1 / (1260 * c**5)
    log_pmf = c * (np.log1p(-d) + d) - stirling
    return float(np.exp(log_pmf) / gammaincc(c + 1.0, a))


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue (``offered_load`` = lambda x service
    time).

    Returns 1 when the queue is unstable (load at or above the number of servers). Its cost
    does not grow with the pool beyond :data:`ERLANG_RECURSION_MAX_SERVERS` servers.
    """
    c = int(servers)
    a = float(offered_load)
    if c < 1 or c != servers:
        raise ValueError(f"servers must be a whole number >= 1, got {servers!r}")
    if not (np.isfinite(a) and a >= 0):
        raise ValueError(f"offered_load must be a non-negative number, got {offered_load!r}")
    if a >= c:
        return 1.0
    b = erlang_b(c, a)
    rho = a / c
    return b / (1.0 - rho + rho * b)


def mdc_wait_s(rate: float, service_s: float, servers: int) -> float:
    """Mean wait before service in a pool of ``servers`` with deterministic ``service_s``.

    M/D/c approximation: half the M/M/c wait (exact for one server by
    Pollaczek-Khinchine), Erlang-C / (c mu - lambda) / 2. Infinite at or above
    saturation.
    """
    if not (np.isfinite(rate) and rate >= 0):
        raise ValueError(f"rate must be a non-negative number, got {rate!r}")
    if not (np.isfinite(service_s) and service_s > 0):
        raise ValueError(f"service_s must be positive, got {service_s!r}")
    checks.whole("servers", servers, 1)
    cap = servers / service_s
    if rate >= cap:
        return float("inf")
    if rate == 0:
        return 0.0
    return 0.5 * erlang_c(servers, rate * service_s) / (cap - rate)


def decode_rate_per_instance(batch, decode_step_s, osl: int):
    """Requests/s one decode-only instance completes with ``batch`` requests decoding.

    A request stays for OSL - 1 steps; below one request the instance is idle
    part of the time, so the rate is batch / ((OSL - 1) t_dec(max(batch, 1))).
    """
    b = np.asarray(batch, float)
    if np.any(b < 0):
        raise ValueError("batch must be non-negative")
    if osl < 2:
        raise ValueError("osl must be at least 2")
    return b / ((osl - 1) * np.asarray(decode_step_s(np.maximum(b, 1.0)), float))


def decode_batch_for_rate(rate_per_instance: float, decode_step_s, osl: int, batch_cap: float) -> float:
    """Batch at which one decode instance completes ``rate_per_instance`` requests/s (bisection).

    Raises ``ValueError`` if the rate exceeds what ``batch_cap`` requests can sustain.
    """
    if not (np.isfinite(batch_cap) and batch_cap > 0):
        raise ValueError(f"batch_cap must be a positive finite number, got {batch_cap!r}")
    if not rate_per_instance >= 0:
        raise ValueError(f"rate_per_instance must be non-negative, got {rate_per_instance!r}")
    top = float(decode_rate_per_instance(batch_cap, decode_step_s, osl))
    if rate_per_instance > top * (1 + 1e-12):
        raise ValueError(
            f"rate {rate_per_instance!r} req/s exceeds the instance's {top!r} req/s at batch {batch_cap!r}"
        )
    lo, hi = 0.0, float(batch_cap)
    for _ in range(_BISECT_ITERS):
        mid = 0.5 * (lo + hi)
        if float(decode_rate_per_instance(mid, decode_step_s, osl)) < rate_per_instance:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(hi, 1.0):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class PDState:
    """Steady state of a P/D closed loop (rates in requests/s, times in s)."""

    rate: float
    prefill_capacity: float
    transfer_capacity: float
    decode_capacity: float
    bottleneck: str
    prefill_wait_s: float
    transfer_wait_s: float
    decode_wait_s: float
    decode_batch: float  # requests decoding per decode instance
    ttft_s: float
    tpot_s: float
    e2e_s: float

    def tok_s(self, osl: int) -> float:
        return self.rate * osl


def pool_capacities(
    prefill_s: float,
    p_replicas: int,
    transfer_s: float,
    links: int,
    decode_step_s,
    osl: int,
    d_replicas: int,
    decode_batch_cap: float,
) -> dict:
    """Requests/s each pool sustains when it alone is the limit."""
    checks.positive("prefill_s", prefill_s)
    checks.nonnegative("transfer_s", transfer_s)
    for name, v in (("p_replicas", p_replicas), ("links", links), ("d_replicas", d_replicas)):
        checks.whole(name, v, 1)
    return {
        "prefill": p_replicas / prefill_s,
        "transfer": links / transfer_s if transfer_s > 0 else float("inf"),
        "decode": d_replicas * float(decode_rate_per_instance(decode_batch_cap, decode_step_s, osl)),
    }


def closed_loop_pd(
    concurrency: float,
    *,
    prefill_s: float,
    p_replicas: int,
    transfer_s: float,
    links: int,
    decode_step_s,
    osl: int,
    d_replicas: int,
    max_batch: float,
) -> PDState:
    """Solve the P/D closed loop of ``concurrency`` requests (mean field, bisection on the rate).

    Requests present at rate lambda:
    N(lambda) = lambda (W_p + t_pf) + lambda (W_x + t_x) + d_replicas x b(lambda / d_replicas),
    where W are M/D/c waits and b is the decode batch that completes
    lambda / d_replicas requests/s. N grows with lambda; the solution of
    N(lambda) = C is found by bisection below the slowest pool's capacity.
    If decode is the bottleneck and N stays below C there, the excess requests
    wait for a decode slot (Little's law).
    """
    c = float(concurrency)
    if not c >= 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    for name, v in (("p_replicas", p_replicas), ("links", links), ("d_replicas", d_replicas)):
        if not (int(v) == v and v >= 1):
            raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")
    if not (np.isfinite(prefill_s) and prefill_s > 0):
        raise ValueError(f"prefill_s must be positive, got {prefill_s!r}")
    if not (np.isfinite(transfer_s) and transfer_s >= 0):
        raise ValueError(f"transfer_s must be non-negative, got {transfer_s!r}")
    if not max_batch > 0:
        raise ValueError("max_batch must be positive: the decode instance cannot hold one request")
    if osl < 2:
        raise ValueError("osl must be at least 2")
    # no instance can hold more than all C requests
    cap_b = float(min(max_batch, c))
    caps = pool_capacities(prefill_s, p_replicas, transfer_s, links, decode_step_s, osl, d_replicas, cap_b)
    bottleneck = min(caps, key=caps.get)
    lam_max = caps[bottleneck]

    # Arrival theorem (Schweitzer's approximation): an arriving request sees the
    # queues of the other C - 1 requests, so a lone request never waits.
    seen = (c - 1.0) / c

    def waits(lam):
        wp = mdc_wait_s(lam * seen, prefill_s, int(p_replicas))
        wx = mdc_wait_s(lam * seen, transfer_s, int(links)) if transfer_s > 0 else 0.0
        return wp, wx

    # the decode rate is monotone in the batch: tabulate it once and invert by interpolation
    grid_b = np.linspace(0.0, cap_b, 4097)
    grid_r = np.asarray(decode_rate_per_instance(grid_b, decode_step_s, osl), float)

    def population(lam):
        wp, wx = waits(lam)
        if not (np.isfinite(wp) and np.isfinite(wx)):
            return float("inf")
        b = float(np.interp(lam / d_replicas, grid_r, grid_b))
        return lam * (wp + prefill_s + wx + transfer_s) + d_replicas * b

    extra = {"prefill": 0.0, "transfer": 0.0, "decode": 0.0}
    n_at_max = population(lam_max)
    if n_at_max <= c:
        # saturated: the slowest pool runs flat out and the remaining requests queue in front of it
        lam = lam_max
        extra[bottleneck] = (c - n_at_max) / lam
    else:
        lo, hi = 0.0, lam_max
        for _ in range(_BISECT_ITERS):
            mid = 0.5 * (lo + hi)
            if population(mid) < c:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-13 * hi:
                break
        lam = lo
    wp, wx = waits(lam)
    wp, wx = wp + extra["prefill"], wx + extra["transfer"]
    decode_wait = extra["decode"]
    b = decode_batch_for_rate(lam / d_replicas, decode_step_s, osl, cap_b)
    tpot = float(decode_step_s(max(b, 1.0)))
    ttft = wp + prefill_s + wx + transfer_s + decode_wait
    return PDState(
        rate=lam,
        prefill_capacity=caps["prefill"],
        transfer_capacity=caps["transfer"],
        decode_capacity=caps["decode"],
        bottleneck=bottleneck,
        prefill_wait_s=wp,
        transfer_wait_s=wx,
        decode_wait_s=decode_wait,
        decode_batch=b,
        ttft_s=ttft,
        tpot_s=tpot,
        e2e_s=ttft + (osl - 1) * tpot,
    )


def decode_pool_ceiling_tok_s(instance: Instance, d_replicas: int = 1) -> float:
    """Output tok/s a decode-only pool sustains at its KV batch limit (no prefill work at all)."""
    if not (int(d_replicas) == d_replicas and d_replicas >= 1):
        raise ValueError(f"d_replicas must be a whole number >= 1, got {d_replicas!r}")
    bmax = float(instance.max_batch)
    if not (np.isfinite(bmax) and bmax > 0):
        raise ValueError("the decode instance needs a finite, positive KV batch limit (features.kv_limit on)")
    osl = int(instance.osl)
    return d_replicas * float(decode_rate_per_instance(bmax, instance.decode_step_s, osl)) * osl


def prefill_pool_ceiling_tok_s(instance: Instance, p_replicas: int = 1) -> float:
    """Output tok/s a prefill pool can feed: one prompt per prefill time per instance, OSL
    tokens each.
    """
    if not (int(p_replicas) == p_replicas and p_replicas >= 1):
        raise ValueError(f"p_replicas must be a whole number >= 1, got {p_replicas!r}")
    return p_replicas * int(instance.osl) / float(instance.prefill_s)


def predict_disaggregated(
    setup: Setup,
    layout: Layout,
    *,
    isl: int,
    osl: int,
    concurrency: float,
    features: Features = ALL_FEATURES,
    transfer_bytes_s: float | None = None,
) -> Prediction:
    """Predict one point as true prefill/decode disaggregation (same signature as
    ``predict_aggregated``).

    Aggregated layouts are passed to :func:`fullmodel.predict_aggregated`, so
    this function can predict a whole measurement frame. The KV transfer uses
    ``transfer_bytes_s`` (default: the RDMA-class bandwidth) on
    min(p_replicas, d_replicas) links in parallel. With ``features.deployment``
    the benchmark's first wave and tail are counted as in the aggregated model.
    """
    if not concurrency >= 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    if layout.kind != "disaggregated":
        return predict_aggregated(setup, layout, isl=isl, osl=osl, concurrency=concurrency, features=features)
    bw = transfer_bandwidth_bytes_s("rdma") if transfer_bytes_s is None else float(transfer_bytes_s)
    model, gpu, profile = setup.model, setup.gpu, setup.profile
    p_inst = make_instance(setup, tp=layout.p_tp, isl=isl, osl=osl, features=features)
    d_inst = make_instance(setup, tp=layout.d_tp, isl=isl, osl=osl, features=features)
    bmax = float(d_inst.max_batch)
    if features.kv_limit and not bmax * kvcache.mean_context_tokens(isl, osl) >= isl + osl:
        raise kvcache.InsufficientMemoryError(
            f"{model.name} at TP{layout.d_tp} on {gpu.name} ({profile.name}) cannot hold one request of "
            f"{isl + osl} tokens in a decode instance"
        )
    if features.kv_limit and not float(p_inst.max_batch) * kvcache.mean_context_tokens(isl, osl) >= isl:
        raise kvcache.InsufficientMemoryError(
            f"{model.name} at TP{layout.p_tp} on {gpu.name} ({profile.name}) cannot hold one prompt of "
            f"{isl} tokens in a prefill instance"
        )
    t_x = float(kv_transfer_time_s(model, isl, bw, kv_dtype=setup.kv_dtype))
    links = min(layout.p_replicas, layout.d_replicas)
    t_pf = float(p_inst.prefill_s)
    st = closed_loop_pd(
        concurrency,
        prefill_s=t_pf,
        p_replicas=layout.p_replicas,
        transfer_s=t_x,
        links=links,
        decode_step_s=d_inst.decode_step_s,
        osl=osl,
        d_replicas=layout.d_replicas,
        max_batch=bmax,
    )
    total = st.tok_s(osl)
    ttft = st.ttft_s
    if features.deployment:
        pps = constant("prompts_per_slot")
        ttft += float(queueing.first_wave_delay_s(concurrency, t_pf / layout.p_replicas, pps))
        # the tail: only requests in service drain slowly; the queued ones keep the pools busy until
        # they
        # start
        waits_s = st.prefill_wait_s + st.transfer_wait_s + st.decode_wait_s
        in_service = max(concurrency - st.rate * waits_s, 1.0)
        total *= float(queueing.drain_factor(in_service, st.e2e_s - waits_s, total, pps * concurrency, osl))
    return Prediction(
        output_tok_s=total,
        tok_s_per_gpu=total / layout.num_gpus,
        tok_s_per_user=total / concurrency,
        ttft_s=ttft,
        tpot_s=st.tpot_s,
        max_batch=bmax,
    )


def curve(
    setup: Setup,
    layout: Layout,
    *,
    isl: int,
    osl: int,
    concurrencies,
    features: Features = ALL_FEATURES,
    transfer_bytes_s: float | None = None,
) -> pd.DataFrame:
    """:func:`predict_disaggregated` of one layout at every concurrency of ``concurrencies``
    (chapter 07).

    Columns ``concurrency``, ``tok_s_per_gpu``, ``tok_s_per_user`` and ``ttft_s``.
    """
    rows = [
        predict_disaggregated(
            setup,
            layout,
            isl=isl,
            osl=osl,
            concurrency=float(c),
            features=features,
            transfer_bytes_s=transfer_bytes_s,
        )
        for c in concurrencies
    ]
    return pd.DataFrame(
        {
            "concurrency": np.asarray(concurrencies),
            "tok_s_per_gpu": [r.tok_s_per_gpu for r in rows],
            "tok_s_per_user": [r.tok_s_per_user for r in rows],
            "ttft_s": [r.ttft_s for r in rows],
        }
    )
