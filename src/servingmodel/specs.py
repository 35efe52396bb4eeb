"""Hardware, model, deployment-profile and parameter facts, loaded from ``data/``.

Every number used by the model lives in a CSV file of ``data/`` with its
source; this module turns those files into small frozen dataclasses and checks
that each value is physical. Names are case-insensitive; models accept their
Hugging Face id, GPUs the benchmark's label.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pint

from .paths import DATA_DIR, DATA_ENV, read_table

GIB = 2**30
PARAMS_TOLERANCE = 0.02  # a model's parameter count must agree with its architecture within 2 %
DTYPE_PREFIX = "dtype_bytes_"  # data/parameters.csv rows dtype_bytes_<dtype> give the bytes per value


class SpecError(ValueError):
    """A data file or a requested name that the model cannot use."""


class UnknownNameError(SpecError):
    """A model, GPU or profile name that is not in the registry."""


def _check_positive_fields(spec, what: str) -> None:
    """Every field but ``name`` must be a finite positive number."""
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        if f.name == "name" or isinstance(v, bool):
            continue
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise SpecError(f"{what} {spec.name}: {f.name} must be a positive number, got {v!r}")


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator: memory, bandwidth, dense throughput and interconnect."""

    name: str
    memory_bytes: float
    hbm_bandwidth_bytes_s: float
    bf16_flops: float
    fp8_flops: float
    link_bytes_s: float  # per direction, per GPU
    gpus_per_node: int  # GPUs in one NVLink/NVSwitch (or PCIe) node: a TP group stays inside one

    def __post_init__(self):
        _check_positive_fields(self, "GPU")

    def flops(self, dtype: str) -> float:
        """Dense tensor throughput for the given compute dtype."""
        check_dtype(dtype)
        return self.bf16_flops if dtype == "bf16" else self.fp8_flops


@dataclass(frozen=True)
class ModelSpec:
    """A dense decoder-only transformer (Llama family)."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_size: int
    vocab_size: int
    num_params: float
    max_context: int
    tied_embeddings: bool = False  # the LM head shares the input embedding's weights

    def __post_init__(self):
        _check_positive_fields(self, "model")
        if self.num_heads % self.num_kv_heads:
            raise SpecError(f"model {self.name}: num_heads must be a multiple of num_kv_heads")
        if self.head_dim * self.num_heads != self.hidden_size:
            raise SpecError(
                f"model {self.name}: head_dim x num_heads = {self.head_dim} x {self.num_heads} = "
                f"{self.head_dim * self.num_heads}, not the hidden size {self.hidden_size}"
            )
        counted = self.architecture_params()
        if abs(self.num_params / counted - 1) > PARAMS_TOLERANCE:
            raise SpecError(
                f"model {self.name}: num_params = {self.num_params:.4g} but the architecture has "
                f"{counted:.4g} parameters (more than {100 * PARAMS_TOLERANCE:g} % apart; "
                "a count in billions?)"
            )

    def architecture_params(self) -> float:
        """Parameters the architecture implies: per layer the Q, K, V and O projections, the three MLP
        matrices (gated) and two norms, plus the final norm, the input embedding and the LM head (once
        in all when the two are tied)."""
        d, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        layer = 2 * d * d + 2 * d * kv + 3 * d * self.ffn_size + 2 * d
        embeddings = (1 if self.tied_embeddings else 2) * self.vocab_size * d
        return float(self.num_layers * layer + embeddings + d)

    def weight_bytes(self, dtype: str = "bf16") -> float:
        """Bytes of all weights stored in ``dtype``."""
        return self.num_params * dtype_bytes(dtype)

    def kv_bytes_per_token(self, dtype: str = "bf16") -> float:
        """Bytes of K and V cache one token occupies across all layers (whole model)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes(dtype)

    def embedding_params(self) -> float:
        """Parameters of the input embedding table (a lookup, no FLOPs)."""
        return float(self.vocab_size * self.hidden_size)


@dataclass(frozen=True)
class Profile:
    """How a deployment was run: memory utilisation, CPU cores, routing, and whether its CPU limit binds.

    ``cpu_limited`` says whether the pod's CPU limit can starve the engine
    (the host term of :mod:`servingmodel.host` applies); the fitted constant of
    that term is ``ModelParams.host_penalty_s`` and its per-step total
    ``host_step_s``.
    """

    name: str
    description: str
    gpu_memory_utilization: float
    cpu_cores: float
    routing: str
    cpu_limited: bool
    vllm_version: str = (
        ""  # the vLLM release the pods ran, where known (for the text; the model does not use it)
    )
    kv_block_tokens: int | None = None  # vLLM's KV-cache block size, where known (likewise)

    def __post_init__(self):
        if not 0 < self.gpu_memory_utilization <= 1:
            raise SpecError(f"profile {self.name}: gpu_memory_utilization must be in (0, 1]")
        if self.kv_block_tokens is not None and self.kv_block_tokens < 1:
            raise SpecError(f"profile {self.name}: kv_block_tokens must be a positive whole number")
        if not self.cpu_cores > 0:
            raise SpecError(f"profile {self.name}: cpu_cores must be positive")
        if self.routing not in ("random", "balanced"):
            raise SpecError(
                f"profile {self.name}: routing must be 'random' or 'balanced', got {self.routing!r}"
            )


@dataclass(frozen=True)
class ParameterFact:
    """One model parameter: its nominal (sourced) value, plausible range and source.

    ``prior_sd`` (fitted parameters only, else None) makes the nominal value a
    Gaussian prior of that standard deviation in the calibration.
    """

    name: str
    nominal: float
    low: float
    high: float
    unit: str
    fitted: bool
    source: str
    prior_sd: float | None = None


@cache
def _dtype_table(path: Path) -> dict[str, float]:
    facts = _parameter_table(path)
    return {n[len(DTYPE_PREFIX) :]: f.nominal for n, f in facts.items() if n.startswith(DTYPE_PREFIX)}


def dtypes(data_dir: Path | None = None) -> dict[str, float]:
    """Known precisions and their bytes per value, from the ``dtype_bytes_<dtype>`` rows of
    ``data/parameters.csv``.
    """
    return dict(_dtype_table(_parameters_path(data_dir)))


def check_dtype(dtype: str) -> str:
    known = _dtype_table(_parameters_path(None))
    if dtype not in known:
        raise SpecError(f"unknown dtype {dtype!r}; expected one of {sorted(known)}")
    return dtype


def compute_dtype(weight_dtype: str) -> str:
    """Tensor-core precision of the matrix multiplications for weights in ``weight_dtype``:
    fp8 weights run on the fp8 tensor cores, everything else on bf16 ones."""
    return "fp8" if check_dtype(weight_dtype) == "fp8" else "bf16"


def dtype_bytes(dtype: str) -> float:
    return _dtype_table(_parameters_path(None))[check_dtype(dtype)]


def tp_problem(model: ModelSpec, tp: int, gpu: GpuSpec | None = None, name: str = "tensor-parallel size"):
    """Why ``tp`` GPUs cannot form one tensor-parallel group of ``model`` (on ``gpu``), or None when they can.

    The one rule of the package: a whole number >= 1 that divides the
    model's attention heads (each GPU holds whole heads) and, given a GPU,
    fits inside one node (the model has no inter-node links).
    """
    if not (isinstance(tp, (int, float)) and math.isfinite(tp) and tp == int(tp) and tp >= 1):
        return f"{name} must be a whole number >= 1, got {tp!r}"
    t = int(tp)
    if model.num_heads % t:
        return f"{name} {t} must divide the {model.num_heads} attention heads of {model.name}"
    if gpu is not None and t > gpu.gpus_per_node:
        return (
            f"{name} {t} exceeds the {gpu.gpus_per_node} GPUs of one {gpu.name} node (gpus_per_node, "
            "data/gpus.csv): a tensor-parallel group must stay inside one node, as the model has no "
            "inter-node links"
        )
    return None


def check_tp(model: ModelSpec, tp, gpu: GpuSpec | None = None, name: str = "tensor-parallel size") -> None:
    """Raise ``ValueError`` with :func:`tp_problem`'s reason for the first bad value of ``tp`` (scalar or
    array).
    """
    a = np.asarray(tp, dtype=float)
    values = (float(a),) if a.ndim == 0 else np.unique(a.ravel())
    for v in values:
        problem = tp_problem(model, float(v), gpu, name)
        if problem:
            raise ValueError(problem)


# --- units and the schema of the facts files ------------------------------------------------------


def _registry() -> pint.UnitRegistry:
    """The units the facts files use, and only those (a full registry takes 0.1 s to build at every start).

    Information in bytes with SI and binary prefixes, time in seconds, FLOPs, plain fractions and flags,
    and counted things as dimensions of their own, so that tokens never pass for GPUs.
    """
    reg = pint.UnitRegistry(None)
    for prefix in (
        "kilo- = 1e3 = k-",
        "mega- = 1e6 = M-",
        "giga- = 1e9 = G-",
        "tera- = 1e12 = T-",
        "peta- = 1e15 = P-",
        "milli- = 1e-3 = m-",
        "micro- = 1e-6 = u- = µ-",
        "nano- = 1e-9 = n-",
        "kibi- = 2**10 = Ki-",
        "mebi- = 2**20 = Mi-",
        "gibi- = 2**30 = Gi-",
        "tebi- = 2**40 = Ti-",
    ):
        reg.define(prefix)
    reg.define("second = [time] = s = sec")
    reg.define("byte = [information] = B = bytes")
    reg.define("FLOP = [flop] = FLOPs")
    reg.define("fraction = []")
    reg.define("flag = []")
    for one, many in (
        ("token", "tokens"),
        ("GPU", "GPUs"),
        ("core", "cores"),
        ("parameter", "parameters"),
        ("request", "requests"),
        ("replay", "replays"),
        ("process", "processes"),
    ):
        reg.define(f"{one} = [{one.lower()}] = {many}")
    return reg


UREG = _registry()


@dataclass(frozen=True)
class QuantitySchema:
    """What one quantity of a facts file must be: its unit, kind and plausible range, with the reason."""

    file: str
    quantity: str
    unit: str  # the unit the range is given in ("" for plain numbers and text)
    kind: str  # "number", "whole", "flag" or "text"
    low: float
    high: float
    reason: str


@cache
def _schema(path: Path) -> dict[tuple[str, str], QuantitySchema]:
    """``data/schema.csv``: every quantity of every facts file with its unit and plausible range."""
    df = read_table(path, SpecError)
    needed = ["file", "quantity", "unit", "kind", "low", "high", "reason"]
    if list(df.columns) != needed:
        raise SpecError(f"{path.name}: columns must be {needed}, got {list(df.columns)}")
    out = {}
    for i, r in df.iterrows():
        row = int(i) + 2
        key = (r["file"].strip(), r["quantity"].strip())
        if key in out:
            raise SpecError(f"{path.name}, row {row}: {key[1]!r} of {key[0]} given twice")
        kind = r["kind"].strip()
        if kind not in ("number", "whole", "flag", "text"):
            raise SpecError(f"{path.name}, row {row}, column 'kind': unknown kind {kind!r}")
        try:
            low = float(r["low"]) if r["low"].strip() else -math.inf
            high = float(r["high"]) if r["high"].strip() else math.inf
            if r["unit"].strip():
                UREG.Unit(r["unit"].strip())
        except (ValueError, pint.errors.PintError) as e:
            raise SpecError(f"{path.name}, row {row}: {e}") from None
        out[key] = QuantitySchema(*key, r["unit"].strip(), kind, low, high, r["reason"].strip())
    return out


def schema(data_dir: Path | None = None) -> dict[tuple[str, str], QuantitySchema]:
    """The facts files' schema: (file, quantity) -> unit, kind and plausible range with its reason."""
    return dict(_schema(_path(data_dir, "schema.csv")))


@cache
def unit_factor(from_unit: str, to_unit: str) -> float:
    """The number that turns a value in ``from_unit`` into ``to_unit`` (pint); ValueError if they do not
    fit."""
    try:
        return float(
            UREG.Quantity(1.0, from_unit or "dimensionless").to(to_unit or "dimensionless").magnitude
        )
    except pint.errors.DimensionalityError:
        raise ValueError(
            f"{from_unit or 'a plain number'} is not a unit of {to_unit or 'a plain number'}"
        ) from None
    except (pint.errors.PintError, ValueError, TypeError) as e:
        raise ValueError(f"unknown unit {from_unit!r} ({e})") from None


def checked_value(
    path: Path, row: int, spec: QuantitySchema, text: str, unit: str, to_unit: str | None = None
):
    """A fact's value, parsed with its unit, checked against its schema and given in ``to_unit``.

    ``to_unit`` (default: the schema's unit) is the unit the model stores.
    Refuses a value that is not a number, a unit that does not fit the
    quantity, a value outside the plausible range and a fractional count,
    naming the file, row and column.
    """
    where = f"{path.name}, row {row}"
    try:
        v = float(text)
    except ValueError:
        raise SpecError(f"{where}, column 'value': {spec.quantity} = {text!r} is not a number") from None
    if not math.isfinite(v):
        raise SpecError(f"{where}, column 'value': {spec.quantity} = {text!r} is not finite")
    try:
        in_schema = v * unit_factor(unit, spec.unit)
        out = v * unit_factor(unit, to_unit if to_unit is not None else spec.unit)
    except ValueError as e:
        raise SpecError(f"{where}, column 'unit': {spec.quantity}: {e}") from None
    if not spec.low <= in_schema <= spec.high:
        shown = f"{in_schema:g} {spec.unit}".strip()
        raise SpecError(
            f"{where}, column 'value': {spec.quantity} = {shown} is outside its plausible range "
            f"[{spec.low:g}, {spec.high:g}] {spec.unit} ({spec.reason}; data/schema.csv)"
        )
    if spec.kind in ("whole", "flag") and in_schema != round(in_schema):
        raise SpecError(f"{where}, column 'value': {spec.quantity} = {text!r} must be a whole number")
    return out


def _read_long(path: Path, key: str) -> dict[str, dict[str, tuple[str, str, str, int]]]:
    """Read a long-format facts file: one row per (entity, quantity) with its unit and a source.

    Returns entity -> quantity -> (value, unit, source, row). Every quantity
    must be one of ``data/schema.csv`` for this file; a misspelt or unknown
    one is refused, naming the row.
    """
    df = read_table(path, SpecError)
    needed = [key, "quantity", "value", "unit", "source"]
    if list(df.columns) != needed:
        raise SpecError(f"{path.name}: columns must be {needed}, got {list(df.columns)}")
    known = sorted(q for f, q in _schema(path.parent / "schema.csv") if f == path.name)
    out: dict[str, dict[str, tuple[str, str, str, int]]] = {}
    for i, r in df.iterrows():
        row = int(i) + 2
        if not r[key].strip() or not r["quantity"].strip():
            raise SpecError(f"{path.name}, row {row}: empty {key} or quantity")
        if not r["source"].strip():
            raise SpecError(f"{path.name}, row {row}, column 'source': every fact needs a source")
        ent = out.setdefault(r[key].strip(), {})
        q = r["quantity"].strip()
        if q not in known:
            raise SpecError(
                f"{path.name}, row {row}, column 'quantity': unknown quantity {q!r}; "
                f"known: {', '.join(known)} "
                "(data/schema.csv)"
            )
        if q in ent:
            raise SpecError(f"{path.name}, row {row}: {q!r} given twice for {r[key]!r}")
        ent[q] = (r["value"].strip(), r["unit"].strip(), r["source"].strip(), row)
    return out


def _num(path: Path, ent: str, facts: dict, q: str, to_unit: str | None = None) -> float:
    """Quantity ``q`` of entity ``ent``, checked against the schema and converted to ``to_unit``."""
    if q not in facts:
        raise SpecError(f"{path.name}: {ent} has no {q!r}")
    text, unit, _, row = facts[q]
    spec = _schema(path.parent / "schema.csv")[(path.name, q)]
    return checked_value(path, row, spec, text, unit, to_unit)


def _whole_num(path: Path, ent: str, facts: dict, q: str) -> int:
    return int(_num(path, ent, facts, q))


def _aliases(facts: dict) -> list[str]:
    return [a.strip() for a in facts.get("aliases", ("",))[0].split(";") if a.strip()]


def _add_aliases(path: Path, names: dict, name: str, facts: dict) -> None:
    """Register ``name`` and its aliases (lower case); an alias that names two entries is an error."""
    for alias in [name, *_aliases(facts)]:
        key = alias.lower()
        if names.get(key, name) != name:
            raise SpecError(f"{path.name}: {alias!r} names both {names[key]!r} and {name!r}")
        names[key] = name


@cache
def _gpu_registry(path: Path) -> tuple[dict[str, GpuSpec], dict[str, str]]:
    raw = _read_long(path, "gpu")
    specs, names = {}, {}
    for name, f in raw.items():
        specs[name] = GpuSpec(
            name=name,
            memory_bytes=_num(path, name, f, "memory_gib", "byte"),
            hbm_bandwidth_bytes_s=_num(path, name, f, "hbm_bandwidth_tb_s", "byte/s"),
            bf16_flops=_num(path, name, f, "bf16_dense_tflop_s", "FLOP/s"),
            fp8_flops=_num(path, name, f, "fp8_dense_tflop_s", "FLOP/s"),
            link_bytes_s=_num(path, name, f, "link_gb_s_per_direction", "byte/s"),
            gpus_per_node=_whole_num(path, name, f, "gpus_per_node"),
        )
        _add_aliases(path, names, name, f)
    return specs, names


@cache
def _model_registry(path: Path) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    raw = _read_long(path, "model")
    specs, names = {}, {}
    ints = (
        "num_layers",
        "hidden_size",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "ffn_size",
        "vocab_size",
        "max_context",
    )
    for name, f in raw.items():
        kw = {q: _whole_num(path, name, f, q) for q in ints}
        tied = bool(_num(path, name, f, "tied_embeddings")) if "tied_embeddings" in f else False
        try:
            specs[name] = ModelSpec(
                name=name, num_params=_num(path, name, f, "num_params"), tied_embeddings=tied, **kw
            )
        except SpecError as e:
            raise SpecError(f"{path.name}: {e}") from None
        _add_aliases(path, names, name, f)
    return specs, names


@cache
def _profile_registry(path: Path) -> dict[str, Profile]:
    raw = _read_long(path, "profile")
    out = {}
    for name, f in raw.items():
        try:
            hp = f["cpu_limited"][0]
            out[name] = Profile(
                name=name,
                description=f["description"][0],
                gpu_memory_utilization=_num(path, name, f, "gpu_memory_utilization"),
                cpu_cores=_num(path, name, f, "cpu_cores"),
                routing=f["routing"][0],
                cpu_limited=hp == "1",
                vllm_version=f.get("vllm_version", ("", ""))[0],
                kv_block_tokens=_whole_num(path, name, f, "kv_block_tokens")
                if "kv_block_tokens" in f
                else None,
            )
        except KeyError as e:
            raise SpecError(f"{path.name}: profile {name} has no {e.args[0]!r}") from None
        if hp not in ("0", "1"):
            raise SpecError(f"{path.name}: profile {name} cpu_limited must be 0 or 1, got {hp!r}")
    return out


def _resolve(kind: str, name: str, names: dict[str, str], specs: dict):
    key = str(name).strip().lower()
    if key not in names:
        known = ", ".join(sorted(specs))
        raise UnknownNameError(f"unknown {kind} {name!r}; known {kind}s: {known}")
    return specs[names[key]]


def get_gpu(name: str, data_dir: Path | None = None) -> GpuSpec:
    """Look up a GPU by short name or benchmark label (case-insensitive)."""
    specs, names = _gpu_registry(_path(data_dir, "gpus.csv"))
    return _resolve("GPU", name, names, specs)


def get_model(name: str, data_dir: Path | None = None) -> ModelSpec:
    """Look up a model by short name or Hugging Face id (case-insensitive)."""
    specs, names = _model_registry(_path(data_dir, "models.csv"))
    return _resolve("model", name, names, specs)


def get_profile(name: str, data_dir: Path | None = None) -> Profile:
    """Look up a deployment profile by name (case-insensitive)."""
    specs = _profile_registry(_path(data_dir, "profiles.csv"))
    return _resolve("profile", name, {k.lower(): k for k in specs}, specs)


def gpu_names(data_dir: Path | None = None) -> list[str]:
    return sorted(_gpu_registry(_path(data_dir, "gpus.csv"))[0])


def model_names(data_dir: Path | None = None) -> list[str]:
    return sorted(_model_registry(_path(data_dir, "models.csv"))[0])


def profiles(data_dir: Path | None = None) -> dict[str, Profile]:
    return dict(_profile_registry(_path(data_dir, "profiles.csv")))


@cache
def _parameter_table(path: Path) -> dict[str, ParameterFact]:
    df = read_table(path, SpecError)
    needed = ["name", "nominal", "low", "high", "unit", "fitted", "prior_sd", "source"]
    if list(df.columns) != needed:
        raise SpecError(f"{path.name}: columns must be {needed}, got {list(df.columns)}")
    out = {}
    for i, r in df.iterrows():
        row = int(i) + 2
        name = r["name"].strip()
        if not name:
            raise SpecError(f"{path.name}, row {row}, column 'name': empty")
        if name in out:
            raise SpecError(f"{path.name}, row {row}: parameter {name!r} given twice")
        if not r["source"].strip():
            raise SpecError(f"{path.name}, row {row}, column 'source': every parameter needs a source")
        try:
            nominal = float(r["nominal"])
            low = float(r["low"]) if r["low"].strip() else nominal
            high = float(r["high"]) if r["high"].strip() else nominal
        except ValueError:
            raise SpecError(f"{path.name}, row {row}: nominal/low/high must be numbers") from None
        if not all(math.isfinite(v) and v >= 0 for v in (nominal, low, high)):
            raise SpecError(f"{path.name}, row {row}: nominal/low/high must be finite and non-negative")
        if not low <= nominal <= high:
            raise SpecError(f"{path.name}, row {row}: nominal {nominal} outside its range [{low}, {high}]")
        spec = _schema(path.parent / "schema.csv").get((path.name, name))
        if spec is None:
            known = sorted(q for f, q in _schema(path.parent / "schema.csv") if f == path.name)
            raise SpecError(
                f"{path.name}, row {row}, column 'name': unknown parameter {name!r}; "
                f"known: {', '.join(known)} "
                "(data/schema.csv)"
            )
        unit = r["unit"].strip()
        nominal, low, high = (checked_value(path, row, spec, repr(v), unit) for v in (nominal, low, high))
        if r["fitted"] not in ("yes", "no"):
            raise SpecError(f"{path.name}, row {row}, column 'fitted': must be yes or no")
        prior_sd = None
        if r["prior_sd"].strip():
            try:
                prior_sd = float(r["prior_sd"])
            except ValueError:
                raise SpecError(
                    f"{path.name}, row {row}, column 'prior_sd': not a number: {r['prior_sd']!r}"
                ) from None
            if not (math.isfinite(prior_sd) and prior_sd > 0):
                raise SpecError(
                    f"{path.name}, row {row}, column 'prior_sd': must be positive, got {prior_sd}"
                )
            if r["fitted"] != "yes":
                raise SpecError(
                    f"{path.name}, row {row}, column 'prior_sd': only a fitted parameter can have a prior"
                )
        if prior_sd is not None:
            prior_sd *= unit_factor(unit, spec.unit)
        out[name] = ParameterFact(
            name, nominal, low, high, spec.unit, r["fitted"] == "yes", r["source"].strip(), prior_sd
        )
    return out


@cache
def _file(root: str, name: str) -> Path:
    return Path(root) / name


def _path(data_dir: Path | None, name: str) -> Path:
    """``name`` in ``data_dir``, or in the package's data folder (``$SERVINGMODEL_DATA`` or ``data/``)."""
    return _file(str(data_dir) if data_dir is not None else os.environ.get(DATA_ENV) or str(DATA_DIR), name)


def _parameters_path(data_dir: Path | None) -> Path:
    return _path(data_dir, "parameters.csv")


def parameter_facts(data_dir: Path | None = None) -> dict[str, ParameterFact]:
    """All model parameters with nominal value, range and source."""
    return dict(_parameter_table(_parameters_path(data_dir)))


def constant(name: str, data_dir: Path | None = None) -> float:
    """A fixed (not fitted) constant from ``data/parameters.csv``."""
    facts = _parameter_table(_parameters_path(data_dir))
    if name not in facts:
        raise SpecError(f"unknown constant {name!r}; known: {', '.join(sorted(facts))}")
    return facts[name].nominal
