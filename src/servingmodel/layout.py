"""How a deployment's GPUs are split into instances, and how a measured point maps onto the model.

:class:`Layout` is the shape of one deployment (aggregated replicas, or
prefill and decode pools); :func:`layout_of`, :func:`benchmark_profile` and
:func:`benchmark_setup` read them off a row of the measurement frame, and
:func:`measured_point` is the one lookup of a measured point by deployment
and concurrency that every chapter and study uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import checks
from .setup import ModelParams, Setup
from .specs import Profile, get_gpu, get_model, get_profile

#: The benchmark's two kinds of pods (``data/profiles.csv``).
STANDALONE = "llm-d-standalone"
MODELSERVICE = "llm-d-modelservice"


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

    def pools(self) -> tuple[int, int, int, int]:
        """(tp_a, count_a, tp_b, count_b): the instances as two groups, the second empty when
        aggregated.
        """
        if self.kind == "aggregated":
            return self.tp, self.replicas, 1, 0
        return self.p_tp, self.p_replicas, self.d_tp, self.d_replicas


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
    return get_profile(STANDALONE if row["kind"] == "aggregated" else MODELSERVICE)


def benchmark_setup(row, params: ModelParams) -> Setup:
    """The setup of one measurement row: its model, GPU and pods, with ``params`` (bf16 weights and
    KV
    cache).
    """
    return Setup(get_model(row["model"]), get_gpu(row["gpu"]), benchmark_profile(row), params)


def measured_point(meas: pd.DataFrame, deployment: str, concurrency: int) -> pd.Series:
    """The one measured row of ``deployment`` at ``concurrency`` (with its index as the row's
    ``name``).
    """
    point = meas[(meas["deployment"] == deployment) & (meas["concurrency"] == concurrency)]
    if len(point) != 1:
        known = ", ".join(dict.fromkeys(meas["deployment"]))
        raise ValueError(
            f"expected one measured point of {deployment!r} at concurrency {concurrency}, found {len(point)} "
            f"(measured deployments: {known})"
        )
    return point.iloc[0]


def value_at(meas: pd.DataFrame, frame, deployment: str, concurrency: int, column: str | None = None):
    """The value of ``frame`` (aligned with ``meas``: same index) at one measured point.

    ``frame`` is a DataFrame (give ``column``) or a Series; the point is found
    with :func:`measured_point`, so a missing or ambiguous point is an error.
    """
    i = measured_point(meas, deployment, concurrency).name
    return frame.loc[i] if column is None else frame.loc[i, column]


def workload(row) -> tuple[int, int]:
    """(isl, osl) of a measurement row."""
    return int(row["isl"]), int(row["osl"])
