"""What every prediction needs: the model's parameters, the refinements switched on, and one setup object.

:class:`ModelParams` holds the global parameters (the fitted ones of
:data:`FITTED_PARAMETERS` and the fixed ones, all in ``data/parameters.csv``);
:class:`Features` switches each refinement of chapters 04 to 07 on or off;
:class:`Setup` bundles the facts and parameters a prediction needs (model, GPU,
deployment profile, parameters and the weight and KV-cache dtypes), so that
the composition functions take one object instead of a long positional list.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .specs import (
    GpuSpec,
    ModelSpec,
    Profile,
    check_dtype,
    compute_dtype,
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
    host_penalty_s: float  # host time per step per unit of CPU oversubscription (servingmodel.host)
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
        """Fixed time per engine step outside the roofline for ``model``: per step plus per layer (BLIS's
        law).
        """
        return self.step_overhead_s + self.step_overhead_per_layer_s * model.num_layers

    def with_fitted(self, values) -> ModelParams:
        """These parameters with the fitted ones set to ``values`` (in the order of
        :data:`FITTED_PARAMETERS`).
        """
        values = [float(v) for v in values]
        if len(values) != len(FITTED_PARAMETERS):
            raise ValueError(f"need {len(FITTED_PARAMETERS)} fitted values, got {len(values)}")
        return dataclasses.replace(self, **dict(zip(FITTED_PARAMETERS, values, strict=True)))

    def fitted_vector(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in FITTED_PARAMETERS], float)


@dataclass(frozen=True)
class Features:
    """Which refinements are on. Each chapter switches one more on."""

    kv_limit: bool = True  # chapter 04: KV capacity and queueing
    prefill_interference: bool = True  # chapter 05: chunked prefill shares the instance
    communication: bool = True  # chapter 06: two all-reduces per layer
    deployment: bool = True  # chapters 06-07: host term, routing, benchmark ramp and tail


ALL_FEATURES = Features()
ROOFLINE_ONLY = Features(kv_limit=False, prefill_interference=False, communication=False, deployment=False)
LADDER_FEATURES = (
    ("+ bandwidth roofline", ROOFLINE_ONLY),
    ("+ KV capacity and queueing", Features(True, False, False, False)),
    ("+ prefill", Features(True, True, False, False)),
    ("+ communication", Features(True, True, True, False)),
    ("+ deployment differences", ALL_FEATURES),
)


@dataclass(frozen=True)
class Setup:
    """Everything a prediction needs besides the workload and the layout.

    ``model``, ``gpu`` and ``profile`` are facts from ``data/``; ``params`` the
    model's parameters (nominal, fitted or calibrated); ``weight_dtype`` and
    ``kv_dtype`` the precisions of the weights and of the KV cache.
    """

    model: ModelSpec
    gpu: GpuSpec
    profile: Profile
    params: ModelParams
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"

    def __post_init__(self):
        for name, kind in (
            ("model", ModelSpec),
            ("gpu", GpuSpec),
            ("profile", Profile),
            ("params", ModelParams),
        ):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"Setup.{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        check_dtype(self.weight_dtype)
        check_dtype(self.kv_dtype)

    @classmethod
    def of(
        cls,
        model: str | ModelSpec,
        gpu: str | GpuSpec,
        profile: str | Profile,
        params: ModelParams,
        *,
        weight_dtype: str = "bf16",
        kv_dtype: str = "bf16",
    ) -> Setup:
        """A setup from registry names (any alias ``data/`` knows) or spec objects."""
        return cls(
            model if isinstance(model, ModelSpec) else get_model(model),
            gpu if isinstance(gpu, GpuSpec) else get_gpu(gpu),
            profile if isinstance(profile, Profile) else get_profile(profile),
            params,
            weight_dtype,
            kv_dtype,
        )

    @property
    def compute_dtype(self) -> str:
        """The tensor-core precision of the matrix multiplications: fp8 weights run on fp8 tensor cores."""
        return compute_dtype(self.weight_dtype)

    def with_params(self, params: ModelParams | None = None, **changes) -> Setup:
        """This setup with other parameters (``params``) or with some parameters changed (``changes``)."""
        base = self.params if params is None else params
        return dataclasses.replace(self, params=dataclasses.replace(base, **changes) if changes else base)

    def with_profile(self, profile: str | Profile) -> Setup:
        return dataclasses.replace(
            self, profile=profile if isinstance(profile, Profile) else get_profile(profile)
        )
