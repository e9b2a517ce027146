"""Separate K and V cache types (--k-dtype, --v-dtype; --kv-dtype sets both) and the engines' rules for them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc import ModelSpec, Workload, estimate_kv
from kvcalc.errors import InvalidInput
from kvcalc.presets import load_model
from kvcalc.spec import Engine
from kvcalc.units import DType

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
    result = cli("size", "--model", "llama3-8b", "--seq", "64", "--k-dtype", "q3_k")
    assert result.exit_code == 2 and "unknown dtype 'q3_k'" in result.stderr


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


def test_vllm_int8_per_token_head_and_nvfp4_caches(cli) -> None:
    # int8_per_token_head: one int8 per value and an fp32 scale per token per KV head, for K and for V
    # (vLLM's INT8_CONFIG, scale_dtype float32); nvfp4: 16 E2M1 values in 8 bytes + one E4M3 scale per 16.
    # llama3.1-8b: 32 layers, 8 KV heads of 128.
    def per_token(dtype: str) -> int:
        return cli.json("size", "--model", "llama3.1-8b", "--seq", "1", "--engine", "vllm", "--kv-dtype", dtype)["kv"][
            "bytes_per_token"
        ]

    assert per_token("int8_per_token_head") == 32 * 2 * (8 * 128 + 8 * 4) == 67_584
    assert per_token("nvfp4") == 32 * 2 * 8 * 128 * 9 // 16 == 36_864


def test_nvfp4_weights(cli) -> None:
    doc = cli.json("size", "--model", "llama3.1-8b", "--seq", "1", "--weight-dtype", "nvfp4")
    assert doc["weights"]["bytes"] == 8_030_261_248 * 9 // 16  # 8,030,261,248 params, 9 B per 16
