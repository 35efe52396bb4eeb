"""The facts registry: lookups by any of a thing's names, and refusal of
unknown names, non-physical values and unsourced facts."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from servingmodel import specs
from servingmodel.paths import DATA_DIR
from servingmodel.specs import GpuSpec, ModelSpec, SpecError, UnknownNameError

GPU_KW = dict(
    name="test-gpu",
    memory_bytes=80e9,
    hbm_bandwidth_bytes_s=3.35e12,
    bf16_flops=989e12,
    fp8_flops=1979e12,
    link_bytes_s=450e9,
    gpus_per_node=8,
)
MODEL_KW = dict(
    name="test-model",
    num_layers=80,
    hidden_size=8192,
    num_heads=64,
    num_kv_heads=8,
    head_dim=128,
    ffn_size=28672,
    vocab_size=128256,
    num_params=70.55e9,
    max_context=131072,
)


@pytest.mark.parametrize(
    "name",
    [
        "Llama-3.1-70B",
        "meta-llama/Llama-3.1-70B-Instruct",
        "LLAMA-3.1-70b",
        "  meta-llama/llama-3.1-70b-instruct ",
    ],
)
def test_model_lookup_by_short_name_hf_id_any_case(name):
    assert specs.get_model(name) is specs.get_model("Llama-3.1-70B")
    assert specs.get_model(name).name == "Llama-3.1-70B"


@pytest.mark.parametrize("name", ["H100-SXM", "NVIDIA-H100-80GB-HBM3", "h100", "nvidia-h100-80gb-hbm3"])
def test_gpu_lookup_by_short_name_benchmark_label_any_case(name):
    assert specs.get_gpu(name).name == "H100-SXM"


def test_facts_are_converted_to_si_units_on_load():
    """The loader turns each file unit into SI (TB/s and TFLOP/s into bytes and FLOP per second, GB/s into
    bytes per second); the derived model sizes follow from the architecture by hand."""
    raw = (
        pd.read_csv(DATA_DIR / "gpus.csv", dtype=str)
        .query("gpu == 'H100-SXM'")
        .set_index("quantity")["value"]
    )
    gpu, model = specs.get_gpu("H100"), specs.get_model("Llama-3.1-70B")
    assert gpu.hbm_bandwidth_bytes_s == pytest.approx(float(raw["hbm_bandwidth_tb_s"]) * 1e12)
    assert gpu.flops("bf16") == pytest.approx(float(raw["bf16_dense_tflop_s"]) * 1e12)
    assert gpu.link_bytes_s == pytest.approx(float(raw["link_gb_s_per_direction"]) * 1e9)
    assert gpu.memory_bytes == pytest.approx(float(raw["memory_gib"]) * 2**30)
    assert model.weight_bytes("bf16") == pytest.approx(2 * model.num_params)
    assert model.kv_bytes_per_token("bf16") == 2 * 80 * 8 * 128 * 2  # K and V, 80 layers, 8 KV heads of 128


@pytest.mark.parametrize(
    "lookup, name, known",
    [
        (specs.get_model, "Llama-4-70B", "Llama-3.1-70B"),
        (specs.get_gpu, "H800", "H100-SXM"),
        (specs.get_profile, "no-such-profile", "llm-d-standalone"),
    ],
)
def test_unknown_name_lists_known_names(lookup, name, known):
    with pytest.raises(UnknownNameError) as info:
        lookup(name)
    assert name in str(info.value) and known in str(info.value)
    assert isinstance(info.value, SpecError)


def test_unknown_dtype():
    with pytest.raises(SpecError, match="dtype"):
        specs.get_model("Llama-3.1-70B").weight_bytes("int3")


def test_valid_specs_construct():
    assert GpuSpec(**GPU_KW).memory_bytes == 80e9
    assert ModelSpec(**MODEL_KW).kv_bytes_per_token() == 327_680


@pytest.mark.parametrize("field", [k for k in GPU_KW if k != "name"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_gpu_spec_rejects_non_physical_values(field, value):
    with pytest.raises(SpecError, match=field):
        GpuSpec(**{**GPU_KW, field: value})


@pytest.mark.parametrize("field", [k for k in MODEL_KW if k != "name"])
@pytest.mark.parametrize("value", [0, -8])
def test_model_spec_rejects_non_physical_values(field, value):
    with pytest.raises(SpecError, match=field):
        ModelSpec(**{**MODEL_KW, field: value})


def test_model_spec_rejects_heads_not_divisible_by_kv_heads():
    with pytest.raises(SpecError, match="multiple"):
        ModelSpec(**{**MODEL_KW, "num_kv_heads": 7})


def copy_data(tmp_path):
    for f in DATA_DIR.glob("*.csv"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def blank_source(path, row: int) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, "source"] = ""
    frame.to_csv(path, index=False)


def test_copied_facts_load(tmp_path):
    data = copy_data(tmp_path)
    assert specs.get_gpu("H100", data_dir=data).hbm_bandwidth_bytes_s == pytest.approx(3.35e12)


@pytest.mark.parametrize(
    "filename, lookup",
    [
        ("gpus.csv", lambda d: specs.get_gpu("H100", data_dir=d)),
        ("models.csv", lambda d: specs.get_model("Llama-3.1-70B", data_dir=d)),
        ("profiles.csv", lambda d: specs.profiles(data_dir=d)),
        ("parameters.csv", lambda d: specs.parameter_facts(data_dir=d)),
    ],
)
def test_fact_without_source_is_refused(tmp_path, filename, lookup):
    data = copy_data(tmp_path)
    blank_source(data / filename, 1)
    with pytest.raises(SpecError) as info:
        lookup(data)
    assert filename in str(info.value) and "source" in str(info.value) and "row 3" in str(info.value)


def test_non_numeric_fact_is_refused(tmp_path):
    data = copy_data(tmp_path)
    frame = pd.read_csv(data / "gpus.csv", dtype=str, keep_default_na=False)
    frame.loc[(frame["gpu"] == "H100-SXM") & (frame["quantity"] == "hbm_bandwidth_tb_s"), "value"] = "fast"
    frame.to_csv(data / "gpus.csv", index=False)
    with pytest.raises(SpecError, match="not a number"):
        specs.get_gpu("H100", data_dir=data)


@pytest.mark.parametrize(
    "value, message", [("16.5", "whole number"), ("0", "plausible range"), ("big", "not a number")]
)
def test_bad_kv_block_size_is_refused(tmp_path, value, message):
    data = copy_data(tmp_path)
    frame = pd.read_csv(data / "profiles.csv", dtype=str, keep_default_na=False)
    frame.loc[
        (frame["profile"] == "llm-d-standalone") & (frame["quantity"] == "kv_block_tokens"), "value"
    ] = value
    frame.to_csv(data / "profiles.csv", index=False)
    with pytest.raises(SpecError, match=message) as info:
        specs.profiles(data_dir=data)
    assert "profiles.csv" in str(info.value) and "kv_block_tokens" in str(info.value)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("memory_reserve_gib", "wide", "not a number"),
        ("memory_reserve_gib", "-1", "must be positive"),
        ("step_overhead_s", "0.001", "only a fitted parameter"),
    ],
)
def test_bad_prior_is_refused(tmp_path, name, value, message):
    data = copy_data(tmp_path)
    frame = pd.read_csv(data / "parameters.csv", dtype=str, keep_default_na=False)
    frame.loc[frame["name"] == name, "prior_sd"] = value
    frame.to_csv(data / "parameters.csv", index=False)
    with pytest.raises(SpecError, match=message) as info:
        specs.parameter_facts(data_dir=data)
    assert "parameters.csv" in str(info.value) and "prior_sd" in str(info.value)


def test_missing_facts_file(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        specs.get_gpu("H100", data_dir=tmp_path)


def _edit_long(path, key, entity, quantity, value):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[(frame[key] == entity) & (frame["quantity"] == quantity), "value"] = value
    frame.to_csv(path, index=False)


def test_fractional_architecture_fact_is_refused(tmp_path):
    data = copy_data(tmp_path)
    _edit_long(data / "models.csv", "model", "Llama-3.1-70B", "num_layers", "80.9")
    with pytest.raises(SpecError, match="num_layers .* whole number"):
        specs.get_model("Llama-3.1-70B", data_dir=data)


def test_alias_naming_two_gpus_is_refused(tmp_path):
    data = copy_data(tmp_path)
    frame = pd.read_csv(data / "gpus.csv", dtype=str, keep_default_na=False)
    sel = (frame["gpu"] == "H200") & (frame["quantity"] == "aliases")
    frame.loc[sel, "value"] = frame.loc[sel, "value"] + ";H100"
    frame.to_csv(data / "gpus.csv", index=False)
    with pytest.raises(SpecError, match="names both"):
        specs.get_gpu("H100", data_dir=data)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda f: f.assign(name=f["name"].where(f["name"] != "max_num_seqs", "step_overhead_s")),
            "given twice",
        ),
        (lambda f: f.assign(name=f["name"].where(f["name"] != "max_num_seqs", "")), "empty"),
        (
            lambda f: f.assign(
                nominal=f["nominal"].where(f["name"] != "kv_transfer_rdma_gb_s", "-50"),
                low=f["low"].where(f["name"] != "kv_transfer_rdma_gb_s", "-60"),
            ),
            "non-negative",
        ),
        (lambda f: f.assign(nominal=f["nominal"].where(f["name"] != "max_num_seqs", "inf")), "finite"),
    ],
)
def test_bad_parameter_rows_are_refused(tmp_path, edit, message):
    data = copy_data(tmp_path)
    frame = pd.read_csv(data / "parameters.csv", dtype=str, keep_default_na=False)
    edit(frame).to_csv(data / "parameters.csv", index=False)
    with pytest.raises(SpecError, match=message):
        specs.parameter_facts(data_dir=data)


def test_dtypes_come_from_the_parameter_file():
    assert all(specs.dtype_bytes(d) == specs.constant(f"dtype_bytes_{d}") for d in specs.dtypes())
    with pytest.raises(SpecError, match="unknown dtype 'int4'"):
        specs.dtype_bytes("int4")
