"""Closed-loop queueing: what happens to the requests that do not fit (chapter 04).

The benchmark keeps N requests in flight. An instance serves at most
``max_batch`` of them; the rest wait. Little's law ties the numbers together:
requests present = completion rate x time per request.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .specs import constant


def closed_loop(n, max_batch, prefill_s, decode_step_s, osl, *, interference: bool = True):
    """Steady state of one instance with ``n`` requests present (mean-field, arrays allowed).

    ``decode_step_s`` is a callable giving the decode-step time at batch B.
    With ``interference`` the B requests' prefills share the instance with
    decoding (chunked prefill), so one service lifetime lasts
    B x t_pf + (OSL - 1) x t_dec(B); without it, t_pf + (OSL - 1) x t_dec(B).

    Returns a dict of arrays: ``batch``, ``service_s`` (admission to last
    token), ``queue_wait_s``, ``tok_s`` (output tokens/s of the instance),
    ``tpot_s``, ``ttft_s`` (queue wait + prefill) and ``e2e_s``.
    """
    n = np.asarray(n, float)
    bmax = np.asarray(max_batch, float)
    if not np.all(np.isfinite(n) & (n >= 1)):
        raise ValueError(f"n must be at least 1 and finite (an idle instance has no steady state), got {n!r}")
    if not np.all(bmax > 0):
        raise ValueError("max_batch must be positive: this instance cannot hold one request")
    checks.nonnegative("prefill_s", prefill_s)
    osl = np.asarray(osl, float)
    if np.any(osl < 2):
        raise ValueError("osl must be at least 2")
    batch = np.minimum(n, bmax)
    t_dec = np.asarray(decode_step_s(batch), float)
    t_pf = np.asarray(prefill_s, float)
    share = batch if interference else 1.0
    service = share * t_pf + (osl - 1) * t_dec
    rate = batch / service  # requests completed per second
    queue_wait = np.maximum(n - batch, 0.0) / rate  # Little's law on the waiting line
    tpot = t_dec + (batch - 1.0) * t_pf / (osl - 1) if interference else t_dec
    ttft = queue_wait + t_pf
    return {
        "batch": batch,
        "service_s": service,
        "queue_wait_s": queue_wait,
        "tok_s": rate * osl,
        "tpot_s": tpot,
        "ttft_s": ttft,
        "e2e_s": queue_wait + service,
    }


def littles_law_population(rate_req_s, time_in_system_s):
    """Requests present = arrival (completion) rate x time in system."""
    return np.asarray(rate_req_s, float) * np.asarray(time_in_system_s, float)


def prefill_contention_s(batch, prefill_s, service_s):
    """Mean wait of a new prompt for the prefill slot, behind the other B - 1 requests' prompts.

    M/D/1 with utilisation (B - 1) t_pf / service, capped at ``prefill_slot_max_utilisation`` of
    ``data/parameters.csv``: a lone request never waits.
    """
    others = np.maximum(checks.nonnegative("batch", batch) - 1.0, 0.0)
    cap = constant("prefill_slot_max_utilisation")
    rho = np.minimum(
        others * checks.nonnegative("prefill_s", prefill_s) / checks.positive("service_s", service_s), cap
    )
    return rho / (2.0 * (1.0 - rho)) * np.asarray(prefill_s, float)


def first_wave_delay_s(batch, prefill_s, prompts_per_slot):
    """Extra mean TTFT from the first wave: all slots start at once and their prompts queue for prefill.

    The k-th prompt of the first wave waits (k - 1) prefills; averaged over the
    ``prompts_per_slot`` requests each slot sends, that adds
    (B - 1) / 2 x t_pf / prompts_per_slot.
    """
    checks.positive("prompts_per_slot", prompts_per_slot)
    return (
        (checks.nonnegative("batch", batch) - 1.0)
        / 2.0
        * checks.nonnegative("prefill_s", prefill_s)
        / prompts_per_slot
    )


def drain_factor(batch, service_s, tok_s, requests, osl):
    """Fraction of steady-state throughput the whole run achieves, counting the tail.

    When the last prompts are issued the batch drains from B to 0 over about
    one service time, at about half the steady-state rate: the run lasts
    requests x OSL / X + (service / 2) x (1 - 1/B).
    """
    b = np.asarray(batch, float)
    steady = np.asarray(requests, float) * osl / np.asarray(tok_s, float)
    return steady / (steady + np.asarray(service_s, float) / 2.0 * (1.0 - 1.0 / np.maximum(b, 1.0)))


def queue_wait_per_request_s(batch, service_s):
    """TTFT each extra waiting request adds in the closed loop (chapter 04): service time / batch = 1 /
    rate.
    """
    b = np.asarray(batch, float)
    if np.any(~(b > 0)):
        raise ValueError("batch must be positive")
    return np.asarray(service_s, float) / b
