"""Step-level replay of the benchmark: vLLM's scheduler, one engine step at a time (chapter 08).

The mean-field model of chapters 04 to 07 describes averages. This module
replays a whole benchmark run instead: C clients in a closed loop sending
``prompts_per_slot`` x C prompts in all, routed to the instances, each
instance running the scheduling policy of vLLM V1 with chunked prefill:

* every step has a budget of ``max_num_batched_tokens`` tokens;
* requests already running are served first, in the order they were admitted:
  one token for each decoding request, the next chunk of the prompt for one
  still in prefill;
* waiting requests are admitted first come, first served while budget,
  ``max_num_seqs`` and the KV cache allow; a request is admitted only when the
  free KV cache holds its whole prompt. (vLLM checks the blocks of the first
  chunk only, but a request admitted without room for the rest preempts
  itself at its next chunk and, with prefix caching on, waits until the rest
  fits; admitting it with room for the whole prompt skips that wasted chunk);
* a step whose running requests need more KV cache than is left preempts the
  most recently admitted request, which later recomputes its prompt and the
  tokens it has generated.

Each step lasts the model's decode-step time for its decoding requests plus
the prefill time of its prompt tokens, with the calibrated physics of
:mod:`servingmodel.fullmodel`. Stretches of steps without any prefill are
advanced in one go up to the next event, so a run costs a few operations per
request, not per token.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .fullmodel import Instance, make_instance
from .kvcache import mean_context_tokens
from .layout import Layout, benchmark_setup, layout_of
from .prefill import prefill_chunks
from .setup import Setup
from .specs import constant

ROUTINGS = ("random", "balanced", "stale", "stale-herd")


@dataclass(frozen=True)
class Engine:
    """The timing of one instance as the replay needs it, all in seconds and tokens."""

    isl: int
    osl: int
    prefill_s_per_token: float  # prompt compute and its all-reduces, per token
    idle_step_s: float  # a step without any decoding request: fixed overhead and host time
    decode_step_s: tuple  # decode_step_s[b] for b = 0 .. max_running (index 0 unused)
    kv_capacity_tokens: float
    max_running: int
    max_num_batched_tokens: int

    def __post_init__(self):
        if self.isl < 1 or self.osl < 2:
            raise ValueError(f"need isl >= 1 and osl >= 2, got isl={self.isl}, osl={self.osl}")
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be at least 1")
        for name in ("prefill_s_per_token", "idle_step_s", "kv_capacity_tokens"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and non-negative, got {v!r}")
        if self.kv_capacity_tokens < self.isl + self.osl:
            raise ValueError(
                f"the KV cache holds {self.kv_capacity_tokens:.0f} tokens, fewer than one request "
                f"of {self.isl + self.osl}"
            )
        if self.max_running < 1 or len(self.decode_step_s) != self.max_running + 1:
            raise ValueError("decode_step_s must give the step time for every batch 0 .. max_running")
        steps = np.asarray(self.decode_step_s[1:], float)
        if not np.all(np.isfinite(steps) & (steps > 0)):
            raise ValueError("decode_step_s must be finite and positive for every batch 1 .. max_running")

    def step_s(self, n_decode: int, n_prompt_tokens: int) -> float:
        """Duration of one step with ``n_decode`` decoding requests and ``n_prompt_tokens`` prompt tokens."""
        if not 0 <= n_decode <= self.max_running or n_prompt_tokens < 0:
            raise ValueError(
                f"need 0 <= n_decode <= {self.max_running} and n_prompt_tokens >= 0, "
                f"got {n_decode}, {n_prompt_tokens}"
            )
        base = self.decode_step_s[n_decode] if n_decode else self.idle_step_s
        return base + n_prompt_tokens * self.prefill_s_per_token


def engine_from_instance(instance: Instance, max_num_batched_tokens: int, max_num_seqs: int) -> Engine:
    """The replay's view of a scalar :class:`servingmodel.fullmodel.Instance`.

    The KV capacity in tokens is the model's batch limit times the mean
    context it was derived from; the prefill time per token is the lone
    prefill without the per-chunk step overheads it was computed with (vLLM's
    default budget; each replayed step pays its own overhead, whatever
    ``max_num_batched_tokens`` the replay uses).
    """
    isl, osl = int(instance.isl), int(instance.osl)
    overhead = instance.setup.params.step_overhead_for(instance.setup.model)
    default_chunks = float(prefill_chunks(isl, int(constant("max_num_batched_tokens"))))
    pf = (float(instance.prefill_s) - default_chunks * overhead) / isl
    capacity = float(instance.max_batch) * float(mean_context_tokens(isl, osl))
    max_running = int(min(max_num_seqs, np.floor(capacity / isl) + 1))
    steps = np.asarray(instance.decode_step_s(np.arange(1, max_running + 1, dtype=float)), float)
    return Engine(
        isl,
        osl,
        pf,
        overhead + float(instance.host_step_s),
        (0.0, *map(float, steps)),
        capacity,
        max_running,
        int(max_num_batched_tokens),
    )


@dataclass(frozen=True)
class RunResult:
    """What the benchmark client would report for one replayed run, plus the per-request record."""

    output_tok_s: float  # all output tokens over the run's duration (ramp and tail included)
    mean_ttft_s: float
    mean_tpot_s: float  # per request: (end-to-end - TTFT) / (OSL - 1), then averaged
    duration_s: float
    requests: int
    preemptions: int
    arrival_s: np.ndarray  # per request, in order of completion
    ttft_s: np.ndarray
    peak_running: int  # most requests one instance held in its KV cache at once (over all runs)

    def ttft_by_arrival_s(self) -> np.ndarray:
        """Each request's TTFT in the order the requests were sent (ties in completion order)."""
        return self.ttft_s[np.argsort(self.arrival_s, kind="stable")]


class _Request:
    __slots__ = ("arrival_s", "prefill_left", "generated", "held", "first_token_s", "chunk")

    def __init__(self, arrival_s: float, isl: int):
        self.arrival_s = arrival_s
        self.prefill_left = isl  # prompt tokens (plus, after a preemption, generated ones) still to compute
        self.generated = 0
        self.held = 0  # tokens in the KV cache
        self.first_token_s = None
        self.chunk = 0  # tokens scheduled in the current step


class _Instance:
    def __init__(self, engine: Engine):
        self.e = engine
        self.running: list[_Request] = []
        self.waiting: deque[_Request] = deque()
        self.used_tokens = 0
        self.now_s = 0.0
        self.version = 0
        self.preemptions = 0
        self.peak_running = 0
        self.segment = None  # (kind, start_s, step_s, steps)

    def present(self) -> int:
        return len(self.running) + len(self.waiting)

    def _preempt_newest(self) -> _Request:
        victim = self.running.pop()
        self.used_tokens -= victim.held
        victim.held = 0
        victim.chunk = 0
        victim.prefill_left = self.e.isl + victim.generated  # recompute the prompt and what it generated
        self.waiting.appendleft(victim)
        self.preemptions += 1
        return victim

    def plan(self) -> float | None:
        """Schedule the next step (or run of decode-only steps) at ``now_s``; returns its end, None when
        idle.
        """
        e = self.e
        budget = e.max_num_batched_tokens
        free = e.kv_capacity_tokens - self.used_tokens
        k = 0
        while k < len(self.running):  # running requests first, oldest first
            r = self.running[k]
            need = 1 if r.prefill_left == 0 else min(r.prefill_left, budget)
            if need == 0:
                r.chunk = 0
                k += 1
                continue
            if need > free:
                victim = self._preempt_newest()
                free = e.kv_capacity_tokens - self.used_tokens - sum(x.chunk for x in self.running[:k])
                if victim is r:
                    break
                continue
            r.chunk = need
            free -= need
            budget -= need
            k += 1
        if k < len(self.running):
            for r in self.running[k:]:
                r.chunk = 0
        while self.waiting and budget > 0 and len(self.running) < e.max_running:  # then waiting, FIFO
            r = self.waiting[0]
            c = min(r.prefill_left, budget)
            if r.prefill_left > free:  # room for the whole prompt (see the module docstring)
                break
            self.waiting.popleft()
            r.chunk = c
            free -= c
            budget -= c
            self.running.append(r)
        self.peak_running = max(self.peak_running, len(self.running))
        decoding = [r for r in self.running if r.prefill_left == 0 and r.chunk]
        nd = len(decoding)
        prefill_tokens = sum(r.chunk for r in self.running if r.prefill_left > 0)
        if prefill_tokens:
            self.segment = ("mixed", self.now_s, e.step_s(nd, prefill_tokens), 1)
        elif nd:
            steps = min(e.osl - r.generated for r in decoding)
            room = int((e.kv_capacity_tokens - self.used_tokens) // nd)
            self.segment = ("decode", self.now_s, e.decode_step_s[nd], max(1, min(steps, room)))
        else:
            self.segment = None
            return None
        _, start, step, steps = self.segment
        return start + step * steps

    def finish(self, end_s: float) -> list[_Request]:
        """Apply the planned segment, ending at ``end_s``; returns the requests that completed."""
        kind, _, _, steps = self.segment
        self.segment = None
        self.now_s = end_s
        done = []
        for r in list(self.running):
            if not r.chunk:
                continue
            if r.prefill_left == 0:
                r.generated += steps
                r.held += steps
                self.used_tokens += steps
            else:
                r.prefill_left -= r.chunk
                r.held += r.chunk
                self.used_tokens += r.chunk
                if r.prefill_left == 0:
                    r.generated += 1  # the step that ends the prefill samples a token
                    if r.first_token_s is None:
                        r.first_token_s = end_s
            r.chunk = 0
            if r.prefill_left == 0 and r.generated >= self.e.osl:
                self.running.remove(r)
                self.used_tokens -= r.held
                done.append(r)
        return done


def _least_loaded(loads, rng) -> int:
    """Index of the smallest load, ties broken at random."""
    loads = np.asarray(loads)
    ties = np.flatnonzero(loads == loads.min())
    return int(ties[rng.integers(len(ties))]) if len(ties) > 1 else int(ties[0])


class StaleRouter:
    """A load-aware router that sees the instances' loads only as of its last snapshot.

    The first request to arrive once the snapshot is at least ``refresh_s``
    old (or when there is none) takes a new snapshot of the loads; each
    request goes to the least-loaded instance in the current snapshot. With
    ``herd`` the tie between equally loaded instances is broken once per
    snapshot, so every request until the next one lands on the same
    instance (the behaviour llm-d-router pull request 2515 describes: a burst
    that sees the same scores and the same shuffle picks one pod); without it,
    ties are broken request by request. Two simplifications favour the
    router over a scrape on a fixed clock: the snapshot is taken at an
    arrival, so its first user sees exact loads, and a load counts every
    request present (running or waiting), where the llm-d scorers read queue
    length and KV-cache use. ``first_target`` fixes the instance the first
    snapshot picks (it must be among the least loaded), so that a caller can
    average over where an opening burst lands instead of sampling it.
    """

    def __init__(self, refresh_s: float, rng, herd: bool = False, first_target: int | None = None):
        refresh_s = float(refresh_s)
        if not (np.isfinite(refresh_s) and refresh_s > 0):
            raise ValueError(f"refresh_s must be positive, got {refresh_s!r}")
        self.refresh_s, self.rng, self.herd, self.first_target = refresh_s, rng, bool(herd), first_target
        self.taken_s, self.loads, self.target = -np.inf, None, 0

    def pick(self, t: float, loads) -> int:
        if t - self.taken_s >= self.refresh_s:
            first = self.loads is None
            self.taken_s, self.loads = t, np.asarray(loads).copy()
            self.target = _least_loaded(self.loads, self.rng)
            if (
                first and self.first_target is not None
            ):  # the tie of the first snapshot, decided by the caller
                if self.loads[self.first_target] != self.loads.min():
                    raise ValueError(
                        f"first_target {self.first_target} is not among the least-loaded instances"
                    )
                self.target = int(self.first_target)
            return self.target
        return self.target if self.herd else _least_loaded(self.loads, self.rng)


def replay(
    engines,
    concurrency: int,
    prompts: int,
    routing: str = "balanced",
    seed: int = 0,
    refresh_s: float | None = None,
    burst_target: int | None = None,
) -> RunResult:
    """Replay one benchmark run: ``concurrency`` clients, ``prompts`` requests in all, over ``engines``.

    ``routing`` is ``"random"`` (each request to a uniformly random instance,
    like a plain Kubernetes Service), ``"balanced"`` (to the instance with
    the fewest requests present, ties broken at random, like a load-aware
    router that sees every pod's state at once), ``"stale"`` or
    ``"stale-herd"`` (a :class:`StaleRouter` whose snapshot ages
    ``refresh_s``, by default ``router_refresh_s`` of
    ``data/parameters.csv``, breaking ties per request or, herding, per
    snapshot). ``burst_target`` (``"stale-herd"`` only) is the instance the
    opening burst goes to. Deterministic for a given ``seed``.
    """
    engines = list(engines)
    if not engines:
        raise ValueError("need at least one engine")
    if routing not in ROUTINGS:
        raise ValueError(f"unknown routing {routing!r}; expected one of {ROUTINGS}")
    if refresh_s is not None and not routing.startswith("stale"):
        raise ValueError(f"refresh_s applies to stale routing only, not {routing!r}")
    if burst_target is not None and routing != "stale-herd":
        raise ValueError(f"burst_target applies to stale-herd routing only, not {routing!r}")
    if burst_target is not None and not 0 <= burst_target < len(engines):
        raise ValueError(f"burst_target must name one of the {len(engines)} instances, got {burst_target!r}")
    if concurrency < 1 or prompts < concurrency:
        raise ValueError(
            f"need 1 <= concurrency <= prompts, got concurrency={concurrency}, prompts={prompts}"
        )
    osl = engines[0].osl
    if any(e.osl != osl or e.isl != engines[0].isl for e in engines):
        raise ValueError("all engines must serve the same workload (isl, osl)")
    rng = np.random.default_rng(seed)
    inst = [_Instance(e) for e in engines]
    heap: list = []
    ttfts, tpots, arrivals = [], [], []
    issued = 0

    def schedule(i: _Instance, idx: int):
        end = i.plan()
        i.version += 1
        if end is not None:
            heapq.heappush(heap, (end, idx, i.version))

    stale = (
        StaleRouter(
            constant("router_refresh_s") if refresh_s is None else refresh_s,
            rng,
            herd=routing == "stale-herd",
            first_target=burst_target,
        )
        if routing.startswith("stale")
        else None
    )

    def route(t: float):
        nonlocal issued
        if routing == "random":
            idx = int(rng.integers(len(inst)))
        elif stale is not None:
            idx = stale.pick(t, [i.present() for i in inst])
        else:
            idx = _least_loaded([i.present() for i in inst], rng)
        target = inst[idx]
        target.waiting.append(_Request(t, target.e.isl))
        issued += 1
        return idx

    touched = {route(0.0) for _ in range(concurrency)}
    for idx in sorted(touched):
        schedule(inst[idx], idx)
    end_s = 0.0
    while heap:
        t, idx, version = heapq.heappop(heap)
        i = inst[idx]
        if version != i.version:
            continue
        done = i.finish(t)
        end_s = max(end_s, t)
        targets = set()
        for r in done:
            ttfts.append(r.first_token_s - r.arrival_s)
            arrivals.append(r.arrival_s)
            tpots.append((t - r.first_token_s) / (osl - 1))
            if issued < prompts:
                targets.add(route(t))
        for j in sorted(targets - {idx}):
            other = inst[j]
            if other.segment is None:
                other.now_s = t
                schedule(other, j)
            elif other.segment[0] == "decode":
                kind, start, step, steps = other.segment
                k = max(1, int(np.ceil((t - start) / step - 1e-9)))
                if k < steps:  # the run is cut at the first step boundary after the arrival
                    other.segment = (kind, start, step, k)
                    other.version += 1
                    heapq.heappush(heap, (start + step * k, j, other.version))
        schedule(i, idx)
    if issued != prompts or len(ttfts) != prompts:
        raise RuntimeError(f"replay ended with {len(ttfts)} of {prompts} requests complete")
    return RunResult(
        prompts * osl / end_s,
        float(np.mean(ttfts)),
        float(np.mean(tpots)),
        end_s,
        prompts,
        sum(i.preemptions for i in inst),
        np.array(arrivals),
        np.array(ttfts),
        max(i.peak_running for i in inst),
    )


def engines_for(
    setup: Setup, layout: Layout, *, isl: int, osl: int, max_num_batched_tokens: int | None = None
) -> list[Engine]:
    """One :class:`Engine` per instance of ``layout`` (a P/D layout: all its pods, serving aggregated)."""
    budget = int(
        constant("max_num_batched_tokens") if max_num_batched_tokens is None else max_num_batched_tokens
    )
    engines = {}
    for tp in set(layout.instance_tps()):
        inst = make_instance(setup, tp=tp, isl=isl, osl=osl)
        engines[tp] = engine_from_instance(inst, budget, int(constant("max_num_seqs")))
    return [engines[tp] for tp in layout.instance_tps()]


def replay_runs(
    setup: Setup,
    layout: Layout,
    *,
    isl: int,
    osl: int,
    concurrency: int,
    seeds: int | None = None,
    max_num_batched_tokens: int | None = None,
    routing: str | None = None,
    refresh_s: float | None = None,
) -> list[RunResult]:
    """Replay the benchmark at one point, as the harness ran it (``prompts_per_slot`` x C prompts), once per
    seed.

    With one instance nothing is random and there is one run; with more, the
    routing draws random numbers and there are ``seeds`` runs (``replay_seeds``
    of ``data/parameters.csv`` by default); behind the herding stale router,
    ``seeds`` runs with the opening burst on each instance in turn, since
    that one tie decides the run. ``max_num_batched_tokens``
    overrides vLLM's token budget per step (chapter 08 varies it); ``routing``
    overrides the profile's (chapter 08 tries the stale routers on the llm-d
    pods, with ``refresh_s`` as in :func:`replay`).
    """
    if concurrency < 1 or int(concurrency) != concurrency:
        raise ValueError(f"concurrency must be a whole number of at least 1, got {concurrency!r}")
    engines = engines_for(setup, layout, isl=isl, osl=osl, max_num_batched_tokens=max_num_batched_tokens)
    prompts = int(constant("prompts_per_slot")) * int(concurrency)
    n = 1 if len(engines) == 1 else int(seeds if seeds is not None else constant("replay_seeds"))
    if n < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds!r}")
    routing = routing or setup.profile.routing
    if routing == "stale-herd" and len(engines) > 1:
        # where the opening burst lands decides the run; average over every instance instead of sampling it
        return [
            replay(engines, int(concurrency), prompts, routing, seed=s, refresh_s=refresh_s, burst_target=k)
            for k in range(len(engines))
            for s in range(n)
        ]
    return [
        replay(engines, int(concurrency), prompts, routing, seed=s, refresh_s=refresh_s) for s in range(n)
    ]


def replay_point(setup: Setup, layout: Layout, **kw) -> RunResult:
    """:func:`replay_runs` (same keyword arguments) averaged over its seeds; the per-request record is the
    first run's."""
    runs = replay_runs(setup, layout, **kw)
    first = runs[0]
    return RunResult(
        float(np.mean([r.output_tok_s for r in runs])),
        float(np.mean([r.mean_ttft_s for r in runs])),
        float(np.mean([r.mean_tpot_s for r in runs])),
        float(np.mean([r.duration_s for r in runs])),
        first.requests,
        int(round(np.mean([r.preemptions for r in runs]))),
        first.arrival_s,
        first.ttft_s,
        max(r.peak_running for r in runs),
    )


def replay_measurements(
    meas, params, seeds: int | None = None, routing: str | None = None, refresh_s: float | None = None
):
    """Replay every measured point; returns the deployment columns plus ``replay_*`` columns.

    ``replay_output_tok_s``, ``replay_tok_s_per_gpu``, ``replay_ttft_ms``,
    ``replay_tpot_ms`` and ``replay_preemptions`` (per replay, averaged over seeds).
    ``routing`` overrides every point's profile routing (None keeps it);
    ``refresh_s`` goes with the stale routings.
    """
    rows = []
    for _, r in meas.iterrows():
        res = replay_point(
            benchmark_setup(r, params),
            layout_of(r),
            isl=int(r["isl"]),
            osl=int(r["osl"]),
            concurrency=int(r["concurrency"]),
            seeds=seeds,
            routing=routing,
            refresh_s=refresh_s,
        )
        rows.append(
            {
                "replay_output_tok_s": res.output_tok_s,
                "replay_tok_s_per_gpu": res.output_tok_s / r["num_gpus"],
                "replay_ttft_ms": res.mean_ttft_s * 1e3,
                "replay_tpot_ms": res.mean_tpot_s * 1e3,
                "replay_preemptions": res.preemptions,
            }
        )
    keep = [c for c in ("deployment", "family", "concurrency") if c in meas.columns]
    return pd.concat([meas[keep], pd.DataFrame(rows, index=meas.index)], axis=1)


def as_prediction(replayed, meas):
    """The replay in the columns of :func:`servingmodel.fullmodel.predict_measurements`, to score it the same
    way.
    """
    if not replayed.index.equals(meas.index):
        raise ValueError("replays and measurements must describe the same points (same index)")
    out = meas[[c for c in ("deployment", "family", "concurrency") if c in meas.columns]].copy()
    tok = replayed["replay_output_tok_s"].to_numpy(float)
    out["pred_output_tok_s"] = tok
    out["pred_tok_s_per_gpu"] = tok / meas["num_gpus"].to_numpy(float)
    out["pred_tok_s_per_user"] = tok / meas["concurrency"].to_numpy(float)
    out["pred_ttft_ms"] = replayed["replay_ttft_ms"].to_numpy(float)
    out["pred_tpot_ms"] = replayed["replay_tpot_ms"].to_numpy(float)
    return out


def with_replayed_ttft(pred, replayed):
    """The book's final prediction: the mean-field model, with the TTFT of the step-level replay."""
    if not pred.index.equals(replayed.index):
        raise ValueError("predictions and replays must describe the same points (same index)")
    out = pred.copy()
    out["pred_ttft_ms"] = replayed["replay_ttft_ms"].to_numpy(float)
    return out
