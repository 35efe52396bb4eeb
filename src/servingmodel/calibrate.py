"""Calibration: fit the global parameters to all measured points at once (chapter 09).

Least squares on log errors of throughput (per-GPU and per-user throughput
share the same log error, since both are output throughput over a fixed
count), plus the log errors of the measured TPOT values, which pin down the
decode step, and of the TTFTs measured at concurrency 1, where the first
token waits for one lone prefill and nothing else. Under load the prefill
cost and the KV-read cost both grow with the batch in the same way, so
loaded points alone cannot tell them apart; the lone prefills can (chapter 09).
The TTFTs under load are not fitted: they are the out-of-sample check of the
step-level replay (chapter 08). Bounds are the plausible ranges of
``data/parameters.csv``; the fit reports whether any parameter ended at a
bound, and an uncertainty for each from the Jacobian. A parameter with a
``prior_sd`` there (the memory reserve) also gets a weak Gaussian prior at its
sourced value, which matters only where the data leave it unidentified, as
when the TP2 family is held out.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from tqdm import tqdm

from .calibrated import CALIBRATED_FILE, calibrated_params  # noqa: F401 (the stored fit, re-exported)
from .fullmodel import predict_measurements
from .measurements import MeasurementError, load_measurements
from .paths import data_dir
from .setup import ALL_FEATURES, FITTED_PARAMETERS, Features, ModelParams
from .specs import SpecError, parameter_facts

LATENCY_WEIGHT = 1.0  # weight of a TPOT residual relative to a throughput residual
TTFT_WEIGHT = 1.0  # weight of a lone-prefill TTFT residual (concurrency 1); loaded TTFTs are never fitted
BOUND_TOLERANCE = 1e-3  # a parameter within this fraction of its range from a bound counts as "at the bound"


@dataclass(frozen=True)
class FitResult:
    params: ModelParams
    stderr: dict  # name -> one standard error
    at_bound: tuple  # names of parameters that ended at a bound of their range
    cost: float
    n_residuals: int
    nfev: int
    success: bool
    noise: float = float("nan")  # residual scale of the fit without priors (the priors' weight)
    priors: dict = dataclasses.field(default_factory=dict)  # name -> (mean, sd) used
    unserved: int = 0  # residuals the model could not compute at the solution (charged UNSERVED_RESIDUAL)
    names: tuple = FITTED_PARAMETERS  # the parameters fitted; the others stayed at the start values


def parameter_bounds(names: tuple[str, ...] = FITTED_PARAMETERS) -> tuple[np.ndarray, np.ndarray]:
    """Plausible range of each parameter of ``names`` (``data/parameters.csv``): arrays of lows and highs."""
    facts = parameter_facts()
    lo = np.array([facts[n].low for n in names], float)
    hi = np.array([facts[n].high for n in names], float)
    return lo, hi


UNSERVED_RESIDUAL = 10.0  # log error charged to a point the model cannot serve (about a factor of 22 000)


def residuals(
    pred: pd.DataFrame,
    meas: pd.DataFrame,
    latency_weight: float = LATENCY_WEIGHT,
    ttft_weight: float = TTFT_WEIGHT,
) -> np.ndarray:
    """:func:`log_residuals` with every non-finite one replaced by :data:`UNSERVED_RESIDUAL`.

    The optimiser must be able to step through parameters at which a
    deployment cannot hold the model (zero throughput, infinite latency);
    such a point counts as a very large miss. :class:`FitResult` reports how
    many remain at the solution, so none can hide there.
    """
    out = log_residuals(pred, meas, latency_weight, ttft_weight)
    return np.where(np.isfinite(out), out, UNSERVED_RESIDUAL)


def unserved_residuals(
    pred: pd.DataFrame,
    meas: pd.DataFrame,
    latency_weight: float = LATENCY_WEIGHT,
    ttft_weight: float = TTFT_WEIGHT,
) -> int:
    """How many of :func:`log_residuals` the model could not compute (a zero or missing prediction)."""
    return int(np.sum(~np.isfinite(log_residuals(pred, meas, latency_weight, ttft_weight))))


def log_residuals(
    pred: pd.DataFrame,
    meas: pd.DataFrame,
    latency_weight: float = LATENCY_WEIGHT,
    ttft_weight: float = TTFT_WEIGHT,
) -> np.ndarray:
    """Log residuals: one per throughput point, one per measured TPOT, one per TTFT measured at concurrency 1.

    Non-finite where the model cannot serve a point (see :func:`residuals`).
    """
    lone = (meas["concurrency"] == 1).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        r = [np.log(pred["pred_output_tok_s"].to_numpy(float) / meas["output_tok_s"].to_numpy(float))]
        for p, m, w, only in (
            ("pred_tpot_ms", "mean_tpot_ms", latency_weight, None),
            ("pred_ttft_ms", "mean_ttft_ms", ttft_weight, lone),
        ):
            if w > 0:
                has = meas[m].notna().to_numpy() if only is None else meas[m].notna().to_numpy() & only
                r.append(w * np.log(pred[p].to_numpy(float)[has] / meas[m].to_numpy(float)[has]))
    return np.concatenate(r)


def sourced_priors(names: tuple[str, ...] = FITTED_PARAMETERS) -> dict:
    """Name -> (mean, standard deviation) of every parameter of ``names`` with a prior in
    ``data/parameters.csv``.
    """
    facts = parameter_facts()
    return {n: (facts[n].nominal, facts[n].prior_sd) for n in names if facts[n].prior_sd is not None}


def prior_residuals(x, priors: dict, noise: float, names: tuple[str, ...] = FITTED_PARAMETERS) -> np.ndarray:
    """One residual per prior: ``noise`` x (value - mean) / sd.

    A prior counts as one more measurement of its parameter. Scaling by the
    data's own residual scale ``noise`` keeps the squared sum a (scaled)
    negative log posterior: with perfect data the prior has no weight at all.
    """
    values = dict(zip(names, x, strict=True))
    unknown = sorted(set(priors) - set(names))
    if unknown:
        raise ValueError(f"prior on unknown parameter(s) {unknown}; fitted ones: {', '.join(names)}")
    out = []
    for name, (mean, sd) in priors.items():
        if not (np.isfinite(sd) and sd > 0):
            raise ValueError(f"prior standard deviation of {name} must be positive, got {sd!r}")
        out.append(noise * (values[name] - mean) / sd)
    return np.array(out, float)


def fit(
    meas: pd.DataFrame,
    start: ModelParams | None = None,
    features: Features = ALL_FEATURES,
    latency_weight: float = LATENCY_WEIGHT,
    ttft_weight: float = TTFT_WEIGHT,
    priors: dict | None = None,
    *,
    names: tuple[str, ...] = FITTED_PARAMETERS,
    predictor=None,
    on_evaluation: Callable[[], object] | None = None,
) -> FitResult:
    """Fit the parameters ``names`` (default: all of :data:`FITTED_PARAMETERS`) to ``meas`` (deterministic).

    The others stay at ``start`` (default: the nominal values). ``predictor``
    is the model that predicts a point (None: the vectorised aggregated model
    of :func:`~servingmodel.fullmodel.predict_measurements`; chapter 07 fits
    :func:`~servingmodel.disagg.predict_disaggregated` the same way).
    ``priors`` maps a parameter to (mean, sd); None takes the sourced ones of
    the parameters fitted (:func:`sourced_priors`), ``{}`` fits without any.
    With priors the fit runs twice: once without, to measure the data's
    residual scale, then with the priors weighted by that scale
    (:func:`prior_residuals`). One optimiser and one set of tolerances serve
    every fit of the book. ``on_evaluation`` is called after each evaluation of the
    model on ``meas`` (the command's progress bar); it does not change the fit.
    """
    names = _check_names(names)
    if len(meas) == 0:
        raise ValueError("no measurements to fit")
    start = start or ModelParams.nominal()
    priors = sourced_priors(names) if priors is None else dict(priors)
    lo, hi = parameter_bounds(names)
    scale = hi - lo

    def params_at(z) -> ModelParams:
        return dataclasses.replace(start, **{n: float(v) for n, v in zip(names, lo + z * scale, strict=True)})

    def data_residuals(z):
        pred = predict_measurements(meas, params_at(z), features, predictor=predictor)
        if on_evaluation is not None:
            on_evaluation()
        return residuals(pred, meas, latency_weight, ttft_weight)

    def solve(fun, z0):
        return least_squares(
            fun, z0, bounds=(0.0, 1.0), x_scale=1.0, diff_step=1e-4, xtol=1e-10, ftol=1e-10, method="trf"
        )

    z0 = np.clip((np.array([getattr(start, n) for n in names], float) - lo) / scale, 0.02, 0.98)
    sol = solve(data_residuals, z0)
    n_data = sol.fun.size
    noise = float(np.sqrt(2 * sol.cost / max(n_data - len(z0), 1)))
    if priors:
        sol = solve(
            lambda z: np.concatenate(
                [data_residuals(z), prior_residuals(lo + z * scale, priors, noise, names)]
            ),
            sol.x,
        )
    x = lo + sol.x * scale
    params = params_at(sol.x)
    pred = predict_measurements(meas, params, features, predictor=predictor)
    unserved = unserved_residuals(pred, meas, latency_weight, ttft_weight)
    dof = max(n_data - len(x), 1)
    s2 = 2 * sol.cost / dof
    jac = sol.jac / scale[None, :]
    try:
        cov = s2 * np.linalg.inv(jac.T @ jac)
        err = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        err = np.full(len(x), np.nan)
    at_bound = tuple(
        n for n, z in zip(names, sol.x, strict=True) if z < BOUND_TOLERANCE or z > 1 - BOUND_TOLERANCE
    )
    return FitResult(
        params,
        dict(zip(names, err, strict=True)),
        at_bound,
        float(sol.cost),
        int(n_data),
        int(sol.nfev),
        bool(sol.success),
        noise,
        priors,
        unserved,
        names,
    )


def _check_names(names) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [n for n in names if n not in FITTED_PARAMETERS]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"names must be a non-empty subset of {FITTED_PARAMETERS}, got {names!r}")
    return names


def parameter_table(result: FitResult) -> pd.DataFrame:
    """Fitted value, one-sigma uncertainty, nominal value, range, and whether it sits at a bound."""
    facts = parameter_facts()
    rows = []
    for n in result.names:
        f = facts[n]
        rows.append(
            {
                "parameter": n,
                "unit": f.unit,
                "nominal": f.nominal,
                "low": f.low,
                "high": f.high,
                "fitted": getattr(result.params, n),
                "stderr": result.stderr[n],
                "at_bound": n in result.at_bound,
            }
        )
    return pd.DataFrame(rows)


def throughput_errors(meas: pd.DataFrame, params: ModelParams) -> np.ndarray:
    """Absolute relative error of the predicted output throughput at each point of ``meas``."""
    pred = predict_measurements(meas, params)
    return np.abs(pred["pred_output_tok_s"].to_numpy(float) / meas["output_tok_s"].to_numpy(float) - 1)


def cross_validate(
    meas: pd.DataFrame,
    start: ModelParams | None = None,
    latency_weight: float = LATENCY_WEIGHT,
    priors: dict | None = None,
    *,
    names: tuple[str, ...] = FITTED_PARAMETERS,
) -> pd.DataFrame:
    """Leave one family out: refit without it, then predict it. One row per held-out family.

    Columns: ``held_out``, ``points``, ``median_abs_rel_err`` and ``p90_abs_rel_err``
    of throughput on the held-out family, ``at_bound``, ``unserved`` (residuals
    of the refit and of the held-out family that the model could not compute;
    a point it cannot serve counts once per residual it has), and
    each fitted parameter of the refit with its ``<name>_stderr``. ``priors`` and
    ``names`` (the parameters refitted) as in :func:`fit`.
    """
    rows = []
    for fam in list(dict.fromkeys(meas["family"])):
        train = meas[meas["family"] != fam]
        test = meas[meas["family"] == fam]
        res = fit(train, start, latency_weight=latency_weight, priors=priors, names=names)
        err = throughput_errors(test, res.params)
        held_out_unserved = unserved_residuals(predict_measurements(test, res.params), test, latency_weight)
        row = {
            "held_out": fam,
            "points": len(test),
            "median_abs_rel_err": float(np.median(err)),
            "p90_abs_rel_err": float(np.quantile(err, 0.9)),
            "at_bound": ", ".join(res.at_bound),
            "unserved": res.unserved + held_out_unserved,
        }
        for n in res.names:
            row[n] = getattr(res.params, n)
            row[n + "_stderr"] = res.stderr[n]
        rows.append(row)
    return pd.DataFrame(rows)


def held_out_with(
    meas: pd.DataFrame, cv: pd.DataFrame, family: str, start: ModelParams | None = None, **overrides
) -> float:
    """Median |error| on held-out ``family`` with its refit parameters (from :func:`cross_validate`'s ``cv``)
    except ``overrides`` (name=value): how much of a held-out miss one parameter's value carries."""
    rows = cv[cv["held_out"] == family]
    if len(rows) != 1:
        raise ValueError(f"cv has no single row for family {family!r}; held out: {', '.join(cv['held_out'])}")
    unknown = sorted(set(overrides) - set(FITTED_PARAMETERS))
    if unknown:
        raise ValueError(
            f"unknown fitted parameter(s) {unknown}; fitted ones: {', '.join(FITTED_PARAMETERS)}"
        )
    params = (start or ModelParams.nominal()).with_fitted(
        rows.iloc[0][list(FITTED_PARAMETERS)].to_numpy(float)
    )
    params = dataclasses.replace(params, **{k: float(v) for k, v in overrides.items()})
    return float(np.median(throughput_errors(meas[meas["family"] == family], params)))


def prior_sensitivity(
    meas: pd.DataFrame, family: str, name: str, sds, start: ModelParams | None = None
) -> pd.DataFrame:
    """Hold ``family`` out and refit with a prior on ``name`` of each standard deviation in ``sds``.

    The prior's mean is the sourced nominal value; ``np.inf`` means no prior.
    Columns: ``prior_sd``, the refit ``value`` and its ``stderr``, and the
    held-out family's ``median_abs_rel_err`` and ``p90_abs_rel_err``.
    """
    if family not in set(meas["family"]):
        raise ValueError(f"unknown family {family!r}; known: {', '.join(dict.fromkeys(meas['family']))}")
    if name not in FITTED_PARAMETERS:
        raise ValueError(f"{name!r} is not a fitted parameter; fitted ones: {', '.join(FITTED_PARAMETERS)}")
    mean = parameter_facts()[name].nominal
    train, test = meas[meas["family"] != family], meas[meas["family"] == family]
    rows = []
    for sd in sds:
        res = fit(train, start, priors={} if np.isinf(sd) else {name: (mean, float(sd))})
        err = throughput_errors(test, res.params)
        rows.append(
            {
                "prior_sd": float(sd),
                "value": getattr(res.params, name),
                "stderr": res.stderr[name],
                "median_abs_rel_err": float(np.median(err)),
                "p90_abs_rel_err": float(np.quantile(err, 0.9)),
            }
        )
    return pd.DataFrame(rows)


def replace_params(params: ModelParams, **kw) -> ModelParams:
    return dataclasses.replace(params, **kw)


def write_calibrated(result: FitResult, path=None) -> None:
    """Store a fit in ``data/calibrated_parameters.csv`` (the project command ``make calibrate``)."""
    path = path or data_dir() / CALIBRATED_FILE
    table = parameter_table(result)
    table["fitted"] = table["fitted"].map(lambda v: f"{v:.6g}")
    table["stderr"] = table["stderr"].map(lambda v: f"{v:.3g}")
    table[["parameter", "fitted", "stderr", "unit", "at_bound"]].to_csv(path, index=False)


def main() -> int:
    """``make calibrate``: fit every parameter to the measurements and store the fit.

    A progress bar on stderr counts the model evaluations (their number is not known in
    advance: the optimiser stops when it converges). A data file that cannot be used is an
    error message and exit code 2, never a traceback.
    """
    try:
        meas = load_measurements()
        with tqdm(desc="calibrating", unit=" model evaluations", file=sys.stderr, disable=None) as bar:
            result = fit(meas, on_evaluation=bar.update)
        write_calibrated(result)
    except (SpecError, MeasurementError, ValueError, OSError) as e:
        print(f"servingmodel calibrate: error: {e}", file=sys.stderr)
        return 2
    print(parameter_table(result).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
