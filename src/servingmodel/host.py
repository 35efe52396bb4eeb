"""CPU-limited pods: the host term of each engine step (chapter 06, hypothesis H5).

A pod whose CPU limit is below the number of busy vLLM processes (N
tensor-parallel workers plus the API server and the engine core) makes every
engine step wait for the host. Each of the E processes beyond the cores waits
behind a run queue whose length grows as P / C (P busy processes on C cores);
the model charges ``host_penalty_s`` per unit of that oversubscription E x P / C.

Names, one per idea: ``cpu_limited`` is the profile's flag (the term applies),
``host_penalty_s`` the fitted constant per unit of oversubscription, and
``host_step_s`` the per-step total.
"""

from __future__ import annotations

import numpy as np

from . import checks


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


def host_step_s(tp, *, cpu_cores, cpu_limited, host_penalty_s: float, processes_besides_workers: float):
    """Host time added to every engine step: ``host_penalty_s`` x E x P / C where the pod is ``cpu_limited``.

    Arrays broadcast; ``cpu_limited`` is a flag (bool or 0/1).
    """
    checks.nonnegative("host_penalty_s", host_penalty_s)
    flag = np.asarray(cpu_limited, float)
    if np.any((flag != 0) & (flag != 1)):
        raise ValueError(f"cpu_limited must be a flag (0 or 1), got {cpu_limited!r}")
    return host_penalty_s * oversubscription(tp, cpu_cores, processes_besides_workers) * flag
