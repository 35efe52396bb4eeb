"""Corrupted copies of the facts files are refused with a message naming the file, the row and the problem.

Each edit below once loaded silently and shifted every prediction by a factor
of 2 to 1000 (the loaders ignored the unit column and checked no range); now
a value is read with its unit (pint), converted to the unit the model stores,
and checked against the plausible range of ``data/schema.csv``, and a
model's dimensions must agree with each other and with its parameter count.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from servingmodel import measurements, specs
from servingmodel.paths import DATA_DIR
from servingmodel.specs import SpecError


@pytest.fixture
def data(tmp_path):
    for f in DATA_DIR.glob("*.csv"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def edit(path, where: dict, **changes):
    """Set ``changes`` on the rows of ``path`` that match every column of ``where``."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows = pd.Series(True, index=frame.index)
    for column, value in where.items():
        rows &= frame[column] == value
    assert rows.sum() == 1, f"the edit must hit one row of {path.name}, hit {int(rows.sum())}"
    for column, value in changes.items():
        frame.loc[rows, column] = value
    frame.to_csv(path, index=False)


def load_all(data):
    specs.gpu_names(data_dir=data)
    specs.model_names(data_dir=data)
    specs.profiles(data_dir=data)
    specs.parameter_facts(data_dir=data)


H100 = {"gpu": "H100-SXM"}
L70 = {"model": "Llama-3.1-70B"}
SA = {"profile": "llm-d-standalone"}

CASES = [
    # (file, row selector, changes, message)
    ("gpus.csv", {**H100, "quantity": "hbm_bandwidth_tb_s"}, {"value": "3350"}, "plausible range"),
    ("gpus.csv", {**H100, "quantity": "memory_gib"}, {"value": "85e9"}, "plausible range"),
    ("gpus.csv", {**H100, "quantity": "memory_gib"}, {"unit": "GB/s"}, "is not a unit of"),
    ("gpus.csv", {**H100, "quantity": "memory_gib"}, {"unit": "furlongs"}, "unit"),
    (
        "gpus.csv",
        {**H100, "quantity": "memory_gib"},
        {"quantity": "memroy_gib"},
        "unknown quantity 'memroy_gib'",
    ),
    (
        "gpus.csv",
        {**H100, "quantity": "fp8_dense_tflop_s"},
        {"quantity": "bf16_dense_tflop_s"},
        "given twice",
    ),
    ("gpus.csv", {**H100, "quantity": "gpus_per_node"}, {"value": "7.5"}, "whole number"),
    ("models.csv", {**L70, "quantity": "head_dim"}, {"value": "96"}, "not the hidden size"),
    ("models.csv", {**L70, "quantity": "num_params"}, {"value": "70.55"}, "plausible range"),
    ("models.csv", {**L70, "quantity": "num_params"}, {"value": "80e9"}, "architecture"),
    ("models.csv", {**L70, "quantity": "num_layers"}, {"value": "80.5"}, "whole number"),
    ("models.csv", {**L70, "quantity": "max_context"}, {"unit": "GPUs"}, "is not a unit of"),
    ("profiles.csv", {**SA, "quantity": "gpu_memory_utilization"}, {"value": "95"}, "plausible range"),
    ("profiles.csv", {**SA, "quantity": "cpu_cores"}, {"unit": "GPUs"}, "is not a unit of"),
    ("parameters.csv", {"name": "dtype_bytes_fp8"}, {"nominal": "0"}, "plausible range"),
    ("parameters.csv", {"name": "max_num_seqs"}, {"nominal": "1.5"}, "whole number"),
    ("parameters.csv", {"name": "max_num_batched_tokens"}, {"nominal": "0"}, "plausible range"),
    ("parameters.csv", {"name": "prompts_per_slot"}, {"nominal": "0"}, "plausible range"),
    ("parameters.csv", {"name": "router_refresh_s"}, {"name": "router_refresh_ms"}, "unknown parameter"),
    ("parameters.csv", {"name": "step_overhead_s"}, {"unit": "tokens"}, "is not a unit of"),
]


@pytest.mark.parametrize("file, where, changes, message", CASES, ids=[f"{c[0]}:{c[3]}" for c in CASES])
def test_a_corrupted_fact_is_refused_naming_file_and_row(data, file, where, changes, message):
    edit(data / file, where, **changes)
    with pytest.raises(SpecError, match=message) as info:
        load_all(data)
    assert file in str(info.value), str(info.value)


def test_a_missing_quantity_is_named(data):
    frame = pd.read_csv(data / "gpus.csv", dtype=str, keep_default_na=False)
    frame = frame[~((frame["gpu"] == "H100-SXM") & (frame["quantity"] == "hbm_bandwidth_tb_s"))]
    frame.to_csv(data / "gpus.csv", index=False)
    with pytest.raises(SpecError, match="H100-SXM has no 'hbm_bandwidth_tb_s'"):
        specs.gpu_names(data_dir=data)


def test_a_value_in_another_unit_is_converted_not_misread(data):
    """Memory in bytes, a step overhead in milliseconds and a bandwidth in GB/s give the same model."""
    gib = specs.get_gpu("H100").memory_bytes
    edit(data / "gpus.csv", {**H100, "quantity": "memory_gib"}, value=repr(gib), unit="B")
    edit(data / "gpus.csv", {**H100, "quantity": "hbm_bandwidth_tb_s"}, value="3350", unit="GB/s")
    edit(
        data / "parameters.csv", {"name": "step_overhead_s"}, nominal="0.126", low="0", high="0.5", unit="ms"
    )
    gpu = specs.get_gpu("H100", data_dir=data)
    assert gpu.memory_bytes == pytest.approx(gib)
    assert gpu.hbm_bandwidth_bytes_s == pytest.approx(3.35e12)
    fact = specs.parameter_facts(data_dir=data)["step_overhead_s"]
    assert (fact.nominal, fact.high, fact.unit) == (pytest.approx(0.126e-3), pytest.approx(0.5e-3), "s")


def test_every_registry_model_agrees_with_its_architecture():
    for name in specs.model_names():
        m = specs.get_model(name)
        assert abs(m.num_params / m.architecture_params() - 1) < specs.PARAMS_TOLERANCE, name
        assert m.head_dim * m.num_heads == m.hidden_size, name


def test_every_quantity_of_every_facts_file_is_in_the_schema():
    schema = specs.schema()
    for file in ("gpus.csv", "models.csv", "profiles.csv"):
        frame = pd.read_csv(DATA_DIR / file, dtype=str, keep_default_na=False)
        assert set(frame["quantity"]) <= {q for f, q in schema if f == file}, file
    names = pd.read_csv(DATA_DIR / "parameters.csv", dtype=str)["name"]
    assert set(names) <= {q for f, q in schema if f == "parameters.csv"}


def test_a_measurement_row_with_an_unknown_gpu_names_file_row_and_column(tmp_path):
    frame = pd.read_csv(measurements.MEASUREMENTS_FILE, dtype=str, keep_default_na=False)
    frame.loc[3, "gpu"] = "NVIDIA-H800"
    path = tmp_path / measurements.MEASUREMENTS_FILE.name
    frame.to_csv(path, index=False)
    with pytest.raises(
        measurements.MeasurementError, match=r"row 5, column 'gpu'.*unknown GPU 'NVIDIA-H800'"
    ):
        measurements.load_measurements(path)
