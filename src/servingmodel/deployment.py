"""Deployment differences: CPU cores, routing and the benchmark's pods (chapter 06).

Two things outside the GPU shape the measured curves. A pod with fewer CPU
cores than busy vLLM processes (N tensor-parallel workers plus the API server
and the engine core) makes every engine step wait for the host (hypothesis H5):
each of the E processes beyond the cores waits behind a run queue whose length
grows as P / C (P busy processes on C cores), so a step pays
``penalty x E x P / C``.
A plain Kubernetes Service routes each new connection to a random replica, so
replicas are unevenly loaded; the llm-d scheduler balances them.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .specs import Profile


def busy_processes(tp, processes_besides_workers: float):
    """vLLM processes busy every step: one worker per GPU plus the API server and engine core."""
    return np.asarray(tp, float) + processes_besides_workers


def oversubscription(tp, cpu_cores, processes_besides_workers: float):
    """E x P / C: processes beyond the cores (E), weighted by the run-queue length per core (P / C)."""
    cores = checks.positive("cpu_cores", cpu_cores)
    checks.whole("tp", tp, 1)
    checks.nonnegative("processes_besides_workers", processes_besides_workers)
    busy = busy_processes(tp, processes_besides_workers)
    return np.maximum(busy - cores, 0.0) * busy / cores


def host_penalty_s(tp, profile: Profile, penalty_per_process_s: float, processes_besides_workers: float):
    """Extra time per engine step in a CPU-starved pod: ``penalty_per_process_s`` x E x P / C."""
    checks.nonnegative("penalty_per_process_s", penalty_per_process_s)
    if not profile.host_penalty:
        return np.zeros_like(np.asarray(tp, float))
    return penalty_per_process_s * oversubscription(tp, profile.cpu_cores, processes_besides_workers)


def balanced_throughput(concurrency, replicas, instance_tok_s):
    """Total tok/s when C requests are spread evenly over R identical replicas.

    ``instance_tok_s(n)`` is one replica's throughput with n >= 1 requests;
    below one request per replica only C replicas are busy.
    """
    c = np.asarray(concurrency, float)
    r = np.asarray(replicas, float)
    n = c / r
    return np.where(n >= 1, r * instance_tok_s(np.maximum(n, 1.0)), c * instance_tok_s(np.ones_like(n)))


def random_routing_occupancy(concurrency: int, replicas: int, completion_rate) -> np.ndarray:
    """Stationary distribution of requests at one replica under random routing.

    The closed network of R identical replicas with state-dependent completion
    rate mu(k) (requests/s with k present) has a product-form solution:
    P(k_1..k_R) is proportional to prod_i prod_{j<=k_i} 1/mu(j), with sum k_i = C.
    Returns p[k], the probability that a given replica holds k requests.
    """
    c, r = int(checks.whole("concurrency", concurrency, 1)), int(checks.whole("replicas", replicas, 1))
    if r == 1:
        p = np.zeros(c + 1)
        p[c] = 1.0
        return p
    mu = np.asarray(completion_rate(np.arange(1, c + 1, dtype=float)), float)
    if np.any(~(mu > 0)):
        raise ValueError("completion rates must be positive")
    # Scaling every mu(j) by the same constant leaves the distribution unchanged
    # (sum k_i = C is fixed); dividing by the largest rate keeps f bounded below by 1.
    f = np.concatenate([[1.0], np.cumprod(mu.max() / mu)])
    f = f / f.max()
    # A saturated replica completes at a constant rate, so f is constant from some index on;
    # convolving with that tail is a running sum, which keeps large C at O(C x head) instead of O(C^2).
    varying = np.flatnonzero(f != f[-1])
    head = int(varying[-1]) + 1 if varying.size else 0
    rest = f.copy()  # the other R-1 replicas together
    for _ in range(r - 2):
        rest = _convolve_constant_tail(rest, f, head)
        rest = rest / rest.max()
    p = f * rest[::-1]
    return p / p.sum()


def _convolve_constant_tail(x: np.ndarray, f: np.ndarray, head: int) -> np.ndarray:
    """The first len(x) terms of the convolution of ``x`` with ``f``, where f[j] = f[head] for every j >= head."""
    n = x.size
    out = np.convolve(f[:head], x)[:n] if head > 0 else np.zeros(n)
    if head < f.size:
        running = np.cumsum(x)
        out[head:] += f[head] * running[: n - head]
    return out


def random_routing_throughput(concurrency: int, replicas: int, instance_tok_s) -> float:
    """Total tok/s of R replicas behind random routing (exact for the product-form network)."""
    c = int(checks.whole("concurrency", concurrency, 1))
    tok = np.asarray(instance_tok_s(np.arange(1, c + 1, dtype=float)), float)
    p = random_routing_occupancy(c, replicas, lambda k: tok)
    return float(replicas * np.dot(p[1:], tok))


def implied_step_excess_s(per_user_tok_s, ttft_s, osl: int, model_step_s):
    """Time per decode step a measurement spends beyond the model's step (hypothesis H5, chapter 06).

    From a concurrency-1 point: TPOT implied = (OSL / per-user throughput - TTFT) / (OSL - 1),
    with a (predicted or measured) TTFT; the excess is that minus the model's decode-step time.
    """
    from .roofline import implied_tpot_s

    return implied_tpot_s(per_user_tok_s, ttft_s, osl) - np.asarray(model_step_s, float)


def implied_penalty_per_process_s(excess_s, tp, cpu_cores, processes_besides_workers: float):
    """Excess step time per unit of oversubscription E x P / C (NaN where no process is beyond the cores)."""
    over = oversubscription(tp, cpu_cores, processes_besides_workers)
    e = np.asarray(excess_s, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(over > 0, e / np.where(over > 0, over, 1.0), np.nan)


def least_squares_penalty_s(excess_s, oversubscription_units) -> float:
    """The penalty per unit of oversubscription that best fits measured excesses: least squares through zero,
    sum(u x e) / sum(u^2) over the pairs (chapter 06's diagnosis of H5)."""
    e = np.asarray(excess_s, float)
    u = np.asarray(oversubscription_units, float)
    if e.shape != u.shape or e.size == 0:
        raise ValueError("excess_s and oversubscription_units must be non-empty and of the same shape")
    if np.any(~np.isfinite(e)) or np.any(~(u >= 0)):
        raise ValueError("excesses must be finite and oversubscription non-negative")
    if not np.dot(u, u) > 0:
        raise ValueError("no pod is oversubscribed: the penalty is not identified")
    return float(np.dot(u, e) / np.dot(u, u))


def per_instance_time_per_token_s(output_tok_s, concurrency, instances):
    """Closed-loop time per output token of one request, at the per-instance load.

    With C requests spread over R instances, min(C, R) instances are busy with
    n = max(C / R, 1) requests each; a busy instance delivers
    ``output_tok_s / min(C, R)``, so each of its requests gets a token every
    n x min(C, R) / ``output_tok_s`` seconds (its prefill included).
    Returns (n, seconds per token).
    """
    x = np.asarray(output_tok_s, float)
    c = np.asarray(concurrency, float)
    r = np.asarray(instances, float)
    if np.any(~(x > 0)) or np.any(~(c >= 1)) or np.any(~(r >= 1)):
        raise ValueError("output_tok_s must be positive, concurrency and instances at least 1")
    n = np.maximum(c / r, 1.0)
    return n, n * np.minimum(c, r) / x


def paired_excess(meas, deployment: str, reference: str):
    """Measured time per output token of ``deployment`` minus ``reference`` at equal per-instance load.

    A model-free look at what a pod's setting costs (hypothesis H5): rows are
    the per-instance concurrencies both deployments were measured at, with
    each one's time per token and the difference, all in seconds.
    """
    import pandas as pd

    from .fullmodel import layout_of

    tables = []
    for name in (deployment, reference):
        rows = meas[meas["deployment"] == name]
        if rows.empty:
            known = ", ".join(dict.fromkeys(meas["deployment"]))
            raise ValueError(f"unknown deployment {name!r}; measured ones: {known}")
        instances = len(layout_of(rows.iloc[0]).instance_tps())
        n, t = per_instance_time_per_token_s(rows["output_tok_s"], rows["concurrency"], instances)
        tables.append(pd.Series(t, index=pd.Index(n, name="per_instance_concurrency")))
    both = pd.concat(tables, axis=1, keys=["time_per_token_s", "reference_time_per_token_s"], join="inner")
    both = both.sort_index()
    both["excess_s"] = both["time_per_token_s"] - both["reference_time_per_token_s"]
    return both.reset_index()
