"""RoPE's cos/sin table: vLLM and SGLang build it while the model loads and hold it on every GPU
(vllm/model_executor/layers/rotary_embedding/base.py RotaryEmbedding.__init__; sglang's
python/sglang/srt/layers/rotary_embedding.py keeps it fp32 on CUDA). Golden figures from those rules and
from the Llama 4 Scout start-up whose 2.53 GiB per GPU it explains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import ModelSpec, Workload
from kvcalc.capacity import budget
from kvcalc.spec import Engine
from kvcalc.units import GiB

# https://github.com/llm-d-incubation/llm-d-planner/blob/d3121e059da88662db39a926a3ead964be97359b/accuracy/results/v0.19.0/logs/meta-llama-llama-4-scout--h100-80gb--tp4pp1dp1--8192.log
# "Model loading took 53.12 GiB" per GPU at TP 4, where the checkpoint's parameters take 50.59 GiB: max_position_embeddings
# 10,485,760 rows of 128 dims in bf16 is 2.50 GiB, held whole on each GPU
SCOUT_TABLE = 10_485_760 * 128 * 2


def terms(doc: dict) -> dict[str, int]:
    return {term["name"]: term["bytes"] for term in doc["budget"]["terms"]}


def config(tmp_path: Path, **fields: object) -> str:
    base = {
        "model_type": "llama", "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
        "hidden_size": 1024, "intermediate_size": 2048, "vocab_size": 32000, "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
    }  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**base, **fields}))
    return str(path)


def test_llama4_scout_holds_a_2_5_gib_table_on_every_gpu(cli) -> None:
    doc = cli.json("fit", "--model", "llama4-scout", "--gpu", "h100-sxm", "--tp", "4", "--engine", "vllm", "--seq", "8192")
    assert terms(doc)["rotary cos/sin table"] == SCOUT_TABLE
    assert SCOUT_TABLE / GiB == 2.5
    one = cli.json("fit", "--model", "llama4-scout", "--gpu", "h200", "--tp", "8", "--engine", "vllm", "--seq", "8192")
    assert terms(one)["rotary cos/sin table"] == SCOUT_TABLE  # not sharded over TP


def test_sglang_keeps_the_table_in_fp32_on_cuda_and_in_the_model_dtype_on_rocm(cli) -> None:
    cuda = terms(cli.json("fit", "--model", "qwen3-8b", "--gpu", "h100-sxm", "--engine", "sglang"))
    rocm = terms(cli.json("fit", "--model", "qwen3-8b", "--gpu", "mi300x", "--engine", "sglang"))
    assert cuda["rotary cos/sin table"] == 40_960 * 128 * 4
    assert rocm["rotary cos/sin table"] == 40_960 * 128 * 2


def test_explain_names_the_formula_and_the_source(cli) -> None:
    result = cli("fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--explain")
    assert result.exit_code == 0, result.output
    line = " ".join(result.output.split())
    assert "rotary cos/sin table = positions * rotary dims * bytes (bf16, the model dtype) = 131,072 * 128 * 2" in line
    assert "rotary_embedding/base.py RotaryEmbedding.__init__" in line


def test_tables_the_model_files_build_their_own_way(cli) -> None:
    def table(model: str, *args: str) -> int:
        doc = cli.json("fit", "--model", model, "--gpu", "h200", "--engine", "vllm", *args)
        return next(t["bytes"] for t in doc["budget"]["terms"] if t["name"].startswith("rotary"))

    # minimax_text_01.py: max_model_len rows, get_rope(dtype=torch.float32), whatever max_position_embeddings (10,240,000)
    assert table("minimax-m1", "--tp", "8", "--seq", "8192") == 8192 * 64 * 4
    assert table("minimax-m1", "--tp", "8", "--seq", "65536") == 65_536 * 64 * 4
    # gpt_oss.py: get_rope(dtype=torch.float32), YaRN's original 4096 x factor 32 rows of 64 dims
    assert table("gpt-oss-20b") == 131_072 * 64 * 4
    # gemma4.py: one get_rope per layer type, the sliding layers' 256-wide heads and the full layers' 512-wide ones
    assert table("gemma4-31b") == 262_144 * (256 + 512) * 2


def test_models_without_rotary_attention_hold_no_table(cli) -> None:
    for model in ("gpt2", "jamba-1.5-mini", "kimi-linear-48b-a3b"):
        doc = cli.json("fit", "--model", model, "--gpu", "h200", "--engine", "vllm", "--seq", "1024")
        assert "rotary cos/sin table" not in terms(doc), model


@pytest.mark.parametrize(
    ("fields", "dims", "rows"),
    [
        ({"partial_rotary_factor": 0.5}, 64, None),  # GLM-4.5: half of each 128-wide head
        ({"rotary_dim": 32}, 32, None),  # MiniMax's and GPT-J's key
        ({"rotary_pct": 0.25}, 32, None),  # GPT-NeoX's
        ({"rope_scaling": {"rope_type": "linear", "factor": 4.0}}, None, [131_072]),  # LinearScalingRotaryEmbedding
        ({"rope_scaling": {"type": "dynamic", "factor": 2}}, None, [65_536]),
        ({"rope_scaling": {"type": "dynamic", "factor": 2, "alpha": 1.0}}, None, None),  # the alpha path: unscaled
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}}, None, None),
        ({"rope_scaling": {"rope_type": "longrope", "original_max_position_embeddings": 4096}}, None, [36_864]),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, None, None),  # Llama 3.1: max_position rows
        ({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.25}}, 32, None),  # transformers 5
        ({"position_embedding_type": "nope"}, 0, None),  # Granite-4.0-H
        ({"model_type": "gpt2", "n_positions": 1024}, 0, None),
    ],
)
def test_config_json_gives_the_rotated_dims_and_the_table_rows(cli, tmp_path, fields, dims, rows) -> None:
    doc = cli.json("size", "--model", config(tmp_path, **fields), "--seq", "1024")
    assert doc["model"].get("rotary_dims") == dims
    tables = doc["model"].get("rotary_tables")
    assert (tables and [t["rows"] for t in tables]) == rows


def test_gemma3_keeps_a_local_table_beside_its_scaled_global_one(cli, tmp_path) -> None:
    # vLLM gemma3.py: sliding layers rotate with rope_local_base_freq and no scaling, full layers with rope_scaling
    path = config(
        tmp_path, model_type="gemma3_text", head_dim=256, sliding_window=1024, max_position_embeddings=131072,
        rope_scaling={"rope_type": "linear", "factor": 8.0},
    )  # fmt: skip
    tables = cli.json("size", "--model", path, "--seq", "1024")["model"]["rotary_tables"]
    assert [t["rows"] for t in tables] == [131_072, 1_048_576]
    doc = cli.json("fit", "--model", path, "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "1024")
    assert terms(doc)["rotary cos/sin tables"] == (131_072 + 1_048_576) * 256 * 2


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"partial_rotary_factor": 1.5}, "partial_rotary_factor"),
        ({"partial_rotary_factor": "half"}, "partial_rotary_factor"),
        ({"rotary_dim": 31.5}, "rotary_dim"),
        ({"rope_scaling": {"rope_type": "linear", "factor": -2}}, "rope_scaling"),
        ({"rope_scaling": "linear"}, "rope_scaling"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": "4096"}}, "rope_scaling"),
        ({"rope_scaling": {"rope_type": "longrope", "original_max_position_embeddings": [1]}}, "rope_scaling"),
        ({"rope_scaling": {"rope_type": "longrope", "original_max_position_embeddings": -4096}}, "rope_scaling"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 1e-9}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 1e400}}, "rope_parameters"),
        ({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0}}, "rope_parameters"),
        ({"rope_parameters": {"full_attention": {"partial_rotary_factor": True}}}, "rope_parameters"),
        (
            {"original_max_position_embeddings": 8192.5, "rope_scaling": {"rope_type": "longrope"}},
            "original_max_position_embeddings",
        ),
        ({"max_position_embeddings": 2_000_000_000, "rope_scaling": {"rope_type": "linear", "factor": 8}}, "rope_scaling"),
    ],
)
def test_a_bad_rope_value_in_a_config_exits_2(cli, tmp_path, fields, key) -> None:
    result = cli("size", "--model", config(tmp_path, **fields), "--seq", "1024")
    assert result.exit_code == 2 and key in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("rotary_dims: 33", "rotary_dims"),
        ("rotary_dims: 256", "rotary_dims"),
        ("rotary_tables: []", "rotary_tables"),
        ("rotary_tables: [{rows: 0}]", "rotary_tables"),
        ("rotary_tables: [{rows: 4096, dims: 63}]", "rotary_tables"),
        ("rotary_tables: [{rows: everything}]", "rotary_tables"),
        ("mla: {kv_lora_rank: 512, qk_rope_head_dim: 64}\nrotary_dims: 128", "rotary_dims"),  # MLA rotates its rope part only
    ],
)
def test_a_preset_with_impossible_rotary_fields_exits_2(cli, tmp_path, extra, key) -> None:
    preset = tmp_path / "m.yaml"
    preset.write_text(
        f"name: m\nlayers: 2\nheads: 8\nkv_heads: 2\nhead_dim: 128\nmax_positions: 4096\n{extra}\nparams: 1000000000\n"
    )
    result = cli("size", "--model", str(preset), "--seq", "1024")
    assert result.exit_code == 2 and key in result.output and "Traceback" not in result.output, result.output


@settings(max_examples=40)
@given(
    st.sampled_from([4096, 131_072, 1_048_576, 10_485_760]),
    st.sampled_from([32, 64, 128]),
    st.sampled_from(["vllm", "sglang"]),
    st.sampled_from([1, 2, 4]),
)
def test_the_table_takes_exactly_its_bytes_from_the_kv_cache(positions: int, dims: int, engine: str, tp: int) -> None:
    model = ModelSpec(
        name="m", layers=8, heads=16, kv_heads=4, head_dim=128, hidden=2048, intermediate=4096, vocab=32000,
        max_positions=positions, rotary_dims=dims,
    )  # fmt: skip
    without = model.model_copy(update={"rotary_dims": 0})
    work = Workload(seq=2048, tp=tp, engine=Engine(name=engine))
    memory = 80 * GiB
    held = budget(model, work, memory, gpu_name="h100-sxm").usable_bytes
    free = budget(without, work, memory, gpu_name="h100-sxm").usable_bytes
    value_bytes = 4 if engine == "sglang" else 2  # SGLang on CUDA: fp32
    assert free - held == positions * dims * value_bytes
