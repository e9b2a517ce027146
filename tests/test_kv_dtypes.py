"""Separate K and V cache types (--k-dtype, --v-dtype; --kv-dtype sets both) and the engines' rules for them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc import ModelSpec, Workload, estimate_kv
from kvcalc.errors import InvalidInput
from kvcalc.presets import load_model
from kvcalc.spec import Engine
from kvcalc.units import PACKING, DType, parse_dtype

from .conftest import TEST_PRESETS

LLAMACPP_TYPES = [DType.fp16, DType.q8_0, DType.q4_0, DType.q4_1, DType.q5_0, DType.q5_1, DType.iq4_nl]


def test_llama3_8b_k_q8_0_v_q4_0_on_llamacpp(cli) -> None:
    # llama3-8b: 8 KV heads of 128 = 1,024 values per row: K q8_0 32 blocks of 34 B = 1,088 B,
    # V q4_0 32 blocks of 18 B = 576 B (ggml-common.h block_q8_0 / block_q4_0); 32 layers, n_ctx 32,768.
    doc = cli.json(
        "size", "--model", "llama3-8b", "--engine", "llamacpp", "--seq", "32768", "--k-dtype", "q8_0", "--v-dtype", "q4_0"
    )
    assert doc["kv"]["bytes_per_token"] == 32 * (1088 + 576)
    assert doc["kv"]["bytes_per_sequence"] == 32 * (1088 + 576) * 32_768
    assert (doc["kv"]["kv_dtype"], doc["kv"]["v_dtype"]) == ("q8_0", "q4_0")


def test_kv_dtype_sets_both_and_k_or_v_overrides_one() -> None:
    model = load_model("llama3-8b")
    both = estimate_kv(model, Workload(seq=1, kv_dtype="q8_0", engine=Engine(name="llamacpp")))
    assert both.bytes_per_token == 32 * 2 * 1088 and both.v_dtype is None
    v_only = estimate_kv(model, Workload(seq=1, kv_dtype="q8_0", v_dtype="q4_0", engine=Engine(name="llamacpp")))
    assert v_only.bytes_per_token == 32 * (1088 + 576)


def test_llamacpp_swa_layers_take_the_same_types() -> None:
    # src/llama-kv-cache-iswa.cpp (llama.cpp 02c28f53): the SWA cache is built with the same type_k and
    # type_v as the base cache. tiny-swa: 2 KV heads of 32 = 64 values: q8_0 2 blocks (68 B), q4_0 2 blocks (36 B).
    model = load_model(str(TEST_PRESETS / "tiny-swa.yaml"))
    kv = estimate_kv(model, Workload(seq=256, k_dtype="q8_0", v_dtype="q4_0", engine=Engine(name="llamacpp", swa_full=False)))
    assert {g.kind: g.bytes_per_token_per_layer for g in kv.groups} == {"sliding": 68 + 36, "full": 68 + 36}


def test_llamacpp_quantized_k_without_flash_attention_is_allowed_v_is_not() -> None:
    # llama_init_from_model refuses only a quantized V without flash attention.
    model = load_model("llama3-8b")
    no_fa = Engine(name="llamacpp", flash_attn=False)
    assert estimate_kv(model, Workload(seq=256, k_dtype="q8_0", engine=no_fa)).bytes_per_token == 32 * (1088 + 2048)
    with pytest.raises(InvalidInput, match="quantized V cache requires flash_attn"):
        estimate_kv(model, Workload(seq=256, v_dtype="q8_0", engine=no_fa))


@pytest.mark.parametrize(
    "engine, message",
    [
        ("vllm", "--engine vllm keeps K and V in one --kv-cache-dtype"),
        ("hf", "--engine hf caches K and V in one dtype"),
    ],
)
def test_engines_with_one_cache_dtype_refuse_a_split(cli, engine: str, message: str) -> None:
    result = cli("size", "--model", "llama3-8b", "--seq", "64", "--engine", engine, "--k-dtype", "fp8", "--v-dtype", "bf16")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_k_dtype_is_one_line(cli) -> None:
    result = cli("size", "--model", "llama3-8b", "--seq", "64", "--k-dtype", "q3_kx")
    assert result.exit_code == 2 and "unknown dtype 'q3_kx'" in result.stderr


@given(
    st.sampled_from([1, 2, 4, 8]), st.sampled_from([32, 64, 96, 128]), st.sampled_from(LLAMACPP_TYPES),
    st.sampled_from(LLAMACPP_TYPES), st.integers(1, 20_000),
)  # fmt: skip
def test_split_types_cost_the_mean_of_each_type(kv_heads: int, head_dim: int, k: DType, v: DType, seq: int) -> None:
    """With d_k = d_v, a K row in one type and a V row in another cost half of each type's K+V."""
    model = ModelSpec(name="m", layers=4, heads=8, kv_heads=kv_heads, head_dim=head_dim)
    split = estimate_kv(model, Workload(seq=seq, k_dtype=k, v_dtype=v)).bytes_per_batch
    same_k = estimate_kv(model, Workload(seq=seq, kv_dtype=k)).bytes_per_batch
    same_v = estimate_kv(model, Workload(seq=seq, kv_dtype=v)).bytes_per_batch
    assert 2 * split == same_k + same_v


# ggml/src/ggml-common.h (ggml-org/llama.cpp): bytes per 256-value super-block -> bits per weight
GGUF_TENSOR_TYPES = [
    (DType.q2_k, 84, 2.625), (DType.q3_k, 110, 3.4375), (DType.q4_k, 144, 4.5), (DType.q5_k, 176, 5.5),
    (DType.q6_k, 210, 6.5625), (DType.iq1_s, 50, 1.5625), (DType.iq1_m, 56, 1.75), (DType.iq2_xxs, 66, 2.0625),
    (DType.iq2_xs, 74, 2.3125), (DType.iq2_s, 82, 2.5625), (DType.iq3_xxs, 98, 3.0625), (DType.iq3_s, 110, 3.4375),
    (DType.iq4_xs, 136, 4.25), (DType.tq1_0, 54, 1.6875), (DType.tq2_0, 66, 2.0625),
]  # fmt: skip


@pytest.mark.parametrize("dtype, block_bytes, bits", GGUF_TENSOR_TYPES, ids=[t[0].value for t in GGUF_TENSOR_TYPES])
def test_gguf_tensor_types_have_their_block_sizes(dtype: DType, block_bytes: int, bits: float) -> None:
    assert PACKING[dtype].bytes_for(256) == block_bytes
    assert PACKING[dtype].bytes_for(4096 * 256) * 8 / (4096 * 256) == bits


def test_every_dtype_is_named_and_sized() -> None:
    for dtype in DType:
        assert parse_dtype(dtype.value.upper()) is dtype and PACKING[dtype].bytes_for(1024) > 0


@pytest.mark.parametrize(
    "kv_dtype, engine, per_token",
    [
        # NVFP4: 16 e2m1 values in 8 B + one fp8 scale = 9 B per 16; llama3-8b rows of 8 * 128 = 1,024 values
        ("nvfp4", "textbook", 32 * 2 * (1024 // 16 * 9)),
        ("nvfp4", "vllm", 32 * 2 * (1024 // 16 * 9)),
        ("fp4_e2m1", "sglang", 32 * 2 * (1024 // 16 * 9)),  # SGLang's spelling
        # vLLM int8_per_token_head: 1 B per value + one fp32 scale per token and KV head, K and V each
        ("int8_per_token_head", "vllm", 32 * 2 * (1024 + 8 * 4)),
        ("fp8_per_token_head", "vllm", 32 * 2 * (1024 + 8 * 4)),
        ("mxfp4", "textbook", 32 * 2 * (1024 // 32 * 17)),
    ],
)
def test_four_bit_and_per_head_cache_types(kv_dtype: str, engine: str, per_token: int) -> None:
    kv = estimate_kv(load_model("llama3-8b"), Workload(seq=16, kv_dtype=parse_dtype(kv_dtype), engine=Engine(name=engine)))
    assert kv.bytes_per_token == per_token


def test_nvfp4_is_0_5625_bytes_per_value() -> None:
    assert PACKING[DType.nvfp4].bytes_for(16 * 1000) / (16 * 1000) == 0.5625


@pytest.mark.parametrize(
    "name, gib",
    [("q4_k_m", "4.58"), ("q5_k_m", "5.33"), ("q3_k_m", "3.74"), ("q2_k_s", "2.96")],
)
def test_gguf_mix_names_give_llama_quantizes_typical_file(cli, name: str, gib: str) -> None:
    # tools/quantize/quantize.cpp QUANT_OPTIONS: "Q4_K_M 4.58G @ Llama-3-8B" and so on; llama3-8b's
    # 8,030,261,248 params are that reference, so the weights are its size exactly
    doc = cli.json("size", "--model", "llama3-8b", "--seq", "8", "--weight-dtype", name)
    assert doc["weights"]["bytes"] == round(Decimal(gib) * 2**30)


def test_a_weight_format_is_not_a_cache_type(cli) -> None:
    result = cli("size", "--model", "llama3-8b", "--seq", "8", "--kv-dtype", "q4_k_m")
    assert result.exit_code == 2
    assert "q4_k_m is a format of weights, not of a KV cache" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_fp8_block_weights_carry_one_scale_per_128x128() -> None:
    # DeepSeek-V3's weight_block_size [128, 128]: 1 B per weight + a 4-byte fp32 scale per 16,384
    assert PACKING[DType.fp8_block].bytes_for(7168 * 2048) == 7168 * 2048 + 7168 * 2048 // 16384 * 4
