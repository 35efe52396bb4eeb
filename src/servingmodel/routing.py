"""Routing: how requests spread over the replicas of a deployment (chapter 06).

A plain Kubernetes Service routes each new connection to a random replica, so
replicas are unevenly loaded; a load-aware router (the llm-d scheduler)
balances them. Both are exact closed-network results for identical replicas.
"""

from __future__ import annotations

import numpy as np

from . import checks


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
    """The first len(x) terms of the convolution of ``x`` with ``f``, where f[j] = f[head] for every j >=
    head.
    """
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
