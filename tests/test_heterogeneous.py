"""Heterogeneous attention: Llama 4's chunked local layers beside global ones, Gemma-3n's layers that
share earlier caches, and per-kind KV shapes (Gemma-4-style global layers). Figures by hand from the
presets' published configs, each named."""

from __future__ import annotations

import re

import pytest

from kvcalc import ModelSpec, Workload, estimate_kv
from kvcalc.errors import InvalidInput
from kvcalc.presets import load_model
from kvcalc.spec import Engine

from .conftest import HF_CONFIGS

PER_TOKEN = 2 * 8 * 128 * 2  # Llama 4: 8 KV heads of 128, K and V, bf16 = 4,096 B per token per layer


def test_llama4_chunked_layers_hold_one_chunk() -> None:
    # meta-llama/Llama-4-Scout-17B-16E: 36 RoPE layers chunked at 8192, 12 global (every 4th).
    kv = estimate_kv(load_model("llama4-scout"), Workload(seq=131_072))
    assert kv.bytes_per_sequence == 36 * PER_TOKEN * 8192 + 12 * PER_TOKEN * 131_072
    short = estimate_kv(load_model("llama4-scout"), Workload(seq=4096))
    assert short.bytes_per_sequence == 48 * PER_TOKEN * 4096  # below one chunk every layer holds all


def test_vllm_chunked_layers_keep_a_chunk_and_the_tokens_in_flight() -> None:
    # vllm/v1/kv_cache_interface.py ChunkedLocalAttentionSpec: cdiv(min(C + max_num_batched_tokens, s), block)
    # blocks, no extra block (a sliding layer's reservation adds one): min(8192 + 8192, 131072) = 16384 tokens.
    kv = estimate_kv(load_model("llama4-scout"), Workload(seq=131_072, engine=Engine(name="vllm")))
    chunked = next(g for g in kv.groups if g.kind == "chunked")
    assert chunked.tokens_held == 16_384
    assert kv.bytes_per_sequence == 36 * PER_TOKEN * 16_384 + 12 * PER_TOKEN * 131_072


def test_transformers_chunked_cache_is_refused() -> None:
    with pytest.raises(InvalidInput, match="chunked-attention cache"):
        estimate_kv(load_model("llama4-scout"), Workload(seq=10, engine=Engine(name="hf")))


def test_gemma3n_shared_layers_keep_no_cache() -> None:
    # google/gemma-3n-E4B: 35 layers, num_kv_shared_layers 15: layers 0-19 keep caches (16 sliding of 512,
    # 4 global), 2 KV heads of 256 in bf16 = 2,048 B per token per layer.
    kv = estimate_kv(load_model("gemma3n-e4b"), Workload(seq=32_768))
    assert kv.bytes_per_token == 20 * 2048
    assert kv.bytes_per_sequence == 16 * 2048 * 512 + 4 * 2048 * 32_768
    assert [(g.kind, g.layers, g.shared) for g in kv.groups] == [
        ("sliding", 16, False), ("full", 4, False), ("sliding", 12, True), ("full", 3, True),
    ]  # fmt: skip


def test_per_kind_shapes() -> None:
    # A Gemma-4-style model: global layers with 4 KV heads of 512, sliding ones with 8 of 256.
    model = ModelSpec.model_validate(
        {
            "name": "g", "layers": 6, "heads": 16, "kv_heads": 8, "head_dim": 256, "sliding_window": 1024,
            "layer_pattern": ["sliding"] * 5 + ["full"], "attention_shapes": {"full": {"kv_heads": 4, "head_dim": 512}},
        }
    )  # fmt: skip
    kv = estimate_kv(model, Workload(seq=4096))
    assert kv.bytes_per_token == 5 * 2 * 8 * 256 * 2 + 2 * 4 * 512 * 2
    assert kv.bytes_per_sequence == 5 * 8192 * 1024 + 8192 * 4096
    assert estimate_kv(model, Workload(seq=4096, tp=8)).bytes_per_token == 8 * (5 * 2 * 256 * 2 + 2 * 512 * 2)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"layer_pattern": ["chunked", "full"]}, "layer_pattern has chunked layers but attention_chunk_size is not set"),
        ({"kv_shared_layers": 2}, "kv_shared_layers (2) must leave a layer with its own cache"),
        ({"attention_shapes": {"sliding": {"kv_heads": 2}}}, "attention_shapes.sliding is given but no layer is sliding"),
        ({"attention_shapes": {"full": {"kv_heads": 3}}}, "heads (4) must be divisible by attention_shapes.full.kv_heads (3)"),
    ],
)
def test_bad_heterogeneous_descriptions(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelSpec.model_validate({"name": "m", "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 32, **fields})


@pytest.mark.parametrize("name", ["llama4-scout", "gemma3n-e4b"])
@pytest.mark.parametrize("engine", ["textbook", "vllm", "llamacpp"])
def test_config_json_import_matches_the_preset(name: str, engine: str) -> None:
    preset, imported = load_model(name), load_model(str(HF_CONFIGS / f"{name}-config.json"))
    assert imported.layer_kinds() == preset.layer_kinds()
    work = Workload(seq=65_536, batch=2, engine=Engine(name=engine))
    assert estimate_kv(imported, work).bytes_per_batch == estimate_kv(preset, work).bytes_per_batch


def test_maverick_moe_every_other_layer() -> None:
    # interleave_moe_layer_step 2: layers 1, 3, ... route to 128 experts of 8192 (24 MoE layers).
    model = load_model("llama4-maverick")
    assert model.moe is not None and [model.moe.is_moe_layer(i) for i in range(4)] == [False, True, False, True]


def test_cli_size_shows_chunked_and_shared_groups(cli) -> None:
    result = cli("size", "--model", "llama4-scout", "--seq", "131072", "--explain")
    assert result.exit_code == 0, result.output
    assert "chunked C=8,192" in result.stdout and "chunked local attention C=8192, 36 layers" in result.stdout
    assert "min(s, C) = min(131072, 8192)" in result.stdout
    result = cli("size", "--model", "gemma3n-e4b", "--seq", "32768")
    assert "(shares an earlier cache)" in result.stdout
