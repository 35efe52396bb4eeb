"""The stored calibration: ``data/calibrated_parameters.csv``, written by ``make calibrate`` (chapter 09).

Reading it needs no optimiser, so the command line and the what-if studies
import this module and not :mod:`servingmodel.calibrate` (scipy's optimiser
takes a fifth of a second to import).
"""

from __future__ import annotations

from pathlib import Path

from .paths import data_dir, read_table
from .setup import FITTED_PARAMETERS, ModelParams
from .specs import SpecError, parameter_facts

CALIBRATED_FILE = "calibrated_parameters.csv"


def calibrated_params(path=None) -> ModelParams:
    """The calibrated parameters stored by ``make calibrate`` (fixed ones at their nominal values)."""
    path = path or data_dir() / CALIBRATED_FILE
    if not Path(path).exists():
        raise SpecError(f"{path}: no calibrated parameters; run `make calibrate`")
    table = read_table(path, SpecError)
    for col in ("parameter", "fitted"):
        if col not in table.columns:
            raise SpecError(
                f"{path}: no column {col!r} (columns: {list(table.columns)}); run `make calibrate`"
            )
    facts = parameter_facts()
    values = {}
    for i, (name, text) in enumerate(zip(table["parameter"], table["fitted"], strict=True)):
        row = i + 2
        if name in values:
            raise SpecError(f"{path}, row {row}: parameter {name!r} given twice")
        try:
            v = float(text)
        except ValueError:
            raise SpecError(f"{path}, row {row}, column 'fitted': {text!r} is not a number") from None
        if name in facts and not facts[name].low <= v <= facts[name].high:
            raise SpecError(
                f"{path}, row {row}: {name} = {v} is outside its plausible range "
                f"[{facts[name].low}, {facts[name].high}]; run `make calibrate`"
            )
        values[name] = v
    missing = [n for n in FITTED_PARAMETERS if n not in values]
    if missing:
        raise SpecError(f"{path}: missing calibrated parameter(s) {missing}; run `make calibrate`")
    return ModelParams.nominal().with_fitted([values[n] for n in FITTED_PARAMETERS])
