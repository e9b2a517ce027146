"""The model presets added for the published decode rows that waited for them (issue 25, issue 21's
follow-up): KV bytes and parameters worked by hand from each published config.json, and the names the
sources write mapped to them by benchmarks/import_decode_cases.py (or left out, with the reason)."""

from __future__ import annotations

from typing import Any

import pytest

from kvcalc.kvcache import estimate_kv
from kvcalc.presets import load_model
from kvcalc.spec import Workload
from kvcalc.weights import count_params
from tests.scripts import load_script

importer = load_script("benchmarks/import_decode_cases.py")


# KV bytes per token, 2 bytes per element (bf16 or fp16): K and V of every attention layer's KV heads.
@pytest.mark.parametrize(
    ("preset", "per_token"),
    [
        # https://huggingface.co/Qwen/Qwen3.5-0.8B/blob/main/config.json: 24 layers, every 4th full attention
        # (6), 2 KV heads of 256; the 18 Gated DeltaNet layers keep a fixed state, no KV
        ("qwen3.5-0.8b", 6 * 2 * 2 * 256 * 2),
        # Qwen/Qwen3.5-4B and -9B: 32 layers, 8 full-attention layers of 4 KV heads x 256
        ("qwen3.5-4b", 8 * 2 * 4 * 256 * 2),
        ("qwen3.5-9b", 8 * 2 * 4 * 256 * 2),
        # https://huggingface.co/meta-llama/Llama-2-13b-hf/blob/main/config.json: 40 layers, MHA, 40 heads x 128
        ("llama2-13b", 40 * 2 * 40 * 128 * 2),
        # https://huggingface.co/01-ai/Yi-6B/blob/main/config.json: 32 layers, 4 KV heads x 128
        ("yi-6b", 32 * 2 * 4 * 128 * 2),
        # https://huggingface.co/baidu/ERNIE-4.5-21B-A3B-PT/blob/main/config.json: 28 layers, 4 KV heads, 2560 / 20 = 128
        ("ernie-4.5-21b-a3b", 28 * 2 * 4 * 128 * 2),
        # https://huggingface.co/LiquidAI/LFM2-8B-A1B/blob/main/config.json: 6 attention layers of 8 KV heads x 64
        ("lfm2-8b-a1b", 6 * 2 * 8 * 64 * 2),
        ("lfm2.5-8b-a1b", 6 * 2 * 8 * 64 * 2),
        # https://huggingface.co/Qwen/Qwen2-57B-A14B-Instruct/blob/main/config.json: 28 layers, 4 KV heads x 128
        ("qwen2-57b-a14b", 28 * 2 * 4 * 128 * 2),
        # https://huggingface.co/google/gemma-4-12B-it/blob/main/config.json: 40 sliding layers of 8 KV heads x 256,
        # 8 global layers of 1 KV head x 512 (K and V both cached)
        ("gemma4-12b", 40 * 2 * 8 * 256 * 2 + 8 * 2 * 1 * 512 * 2),
    ],
)
def test_kv_per_token_is_the_configs(preset: str, per_token: int) -> None:
    model = load_model(preset)
    one, thousand = (estimate_kv(model, Workload(seq=s)).bytes_per_sequence for s in (1, 1001))
    assert one == per_token
    if model.sliding_window is None:  # no window: every token costs the same
        assert thousand - one == 1000 * per_token


def test_gemma4_12b_sliding_layers_stop_at_their_window() -> None:
    # at 4096 tokens the 40 sliding layers hold their 1024-token window, the 8 global layers all 4096
    kv = estimate_kv(load_model("gemma4-12b"), Workload(seq=4096)).bytes_per_sequence
    assert kv == 40 * 1024 * 2 * 8 * 256 * 2 + 8 * 4096 * 2 * 1 * 512 * 2


def _qwen35_text_params(
    h: int, layers: int, heads: int, kv_heads: int, inter: int, k_heads: int, v_heads: int, tied: bool
) -> int:
    """Qwen3.5's text decoder by hand (transformers models/qwen3_5: Qwen3_5Attention with its output gate,
    Qwen3_5GatedDeltaNet), head_dim 256, linear head dims 128, conv kernel 4, vocab 248320, every 4th layer full."""
    d, kd, vocab = 256, 128, 248320
    attention = h * heads * d * 2 + 2 * h * kv_heads * d + heads * d * h + 2 * d  # q+gate, k, v, o, q/k norms
    conv = 2 * k_heads * kd + v_heads * kd  # q, k, v channels of the depthwise conv
    deltanet = h * conv + h * v_heads * kd + 2 * h * v_heads + conv * 4 + 2 * v_heads + kd + v_heads * kd * h
    per_layer = 3 * h * inter + 2 * h  # MLP and the two norms
    full = layers // 4
    return full * attention + (layers - full) * deltanet + layers * per_layer + vocab * h * (1 if tied else 2) + h


@pytest.mark.parametrize(
    ("preset", "shapes"),
    [
        ("qwen3.5-0.8b", (1024, 24, 8, 2, 3584, 16, 16, True)),
        ("qwen3.5-4b", (2560, 32, 16, 4, 9216, 16, 32, True)),
        ("qwen3.5-9b", (4096, 32, 16, 4, 12288, 16, 32, False)),
    ],
)
def test_qwen35_params_are_the_configs_counted_by_hand(preset: str, shapes: tuple) -> None:
    # kvcalc counts no recurrent mixer's parameters, so a hybrid preset carries its count: it must be the config's
    assert load_model(preset).params == _qwen35_text_params(*shapes)


@pytest.mark.parametrize(("preset", "vocab"), [("lfm2-8b-a1b", 65536), ("lfm2.5-8b-a1b", 128000)])
def test_lfm2_moe_params_are_the_safetensors_headers_counted_by_hand(preset: str, vocab: int) -> None:
    h = 2048
    conv = 3 * h * h + h * h + h * 3  # in_proj (B, C, x), out_proj, depthwise conv of kernel 3
    attention = h * h + 2 * 512 * h + h * h + 2 * 64  # q, k, v (8 heads x 64), out, q/k layernorms
    expert = 3 * 1792 * h
    moe_own = 32 * h + 32  # router and expert_bias
    shared = vocab * h + h + 24 * 2 * h + 18 * conv + 6 * attention + 2 * 3 * 7168 * h + 22 * moe_own
    model = load_model(preset)
    assert (model.params, model.active_params) == (shared + 22 * 32 * expert, shared + 22 * 4 * expert)


@pytest.mark.parametrize(
    ("preset", "total", "active"),
    [
        # 2 * 32000 * 5120 (untied) + 40 * (4 * 5120^2 + 3 * 5120 * 13824 + 2 * 5120) + 5120: Meta's 13,015,864,320
        ("llama2-13b", 13_015_864_320, 13_015_864_320),
        # 2 * 64000 * 4096 + 32 * (2 * 4096^2 + 2 * 4096 * 512 + 3 * 4096 * 11008 + 2 * 4096) + 4096
        ("yi-6b", 6_061_035_520, 6_061_035_520),
        # tied 103424 * 2560; layer 0 dense (12288); 27 MoE layers of 64 experts of 1536, 2 shared, top-6, router
        ("ernie-4.5-21b-a3b", 21_825_436_160, 3_352_148_480),
        # untied 151936 * 3584; 28 MoE layers of 64 experts of 2560, top-8, a shared expert of 20480, router
        ("qwen2-57b-a14b", 57_408_429_568, 14_249_041_408),
    ],
)
def test_counted_presets_give_the_shapes_totals(preset: str, total: int, active: int) -> None:
    params = count_params(load_model(preset))
    assert params is not None and (params.total, params.active) == (total, active)


def _row(**changes: Any) -> dict[str, Any]:
    """A collected row: one B200, batch 1, fp8 weights, vLLM."""
    row = {
        "group": "g", "url": "https://example.org/t", "engine": "vllm", "engine_version": "0.11.0", "backend": "",
        "enforce_eager": None, "gpu_name": "NVIDIA B200", "gpu_count": 1, "tp": 1, "model": "", "weight_format": "fp8",
        "kv_dtype": None, "batch": 1, "input_len": 128, "output_len": 256, "metric_as_published": "", "tokens_per_s": 1.0,
        "derived": "", "date": "2026-06-01", "note": "",
    }  # fmt: skip
    return {**row, **changes}


@pytest.mark.parametrize(
    ("model", "tp", "preset"),
    [
        ("deepseek-ai/DeepSeek-R1-0528", 8, "deepseek-r1"),  # R1's config, post-trained again
        ("deepseek-ai/DeepSeek-V3.1", 8, "deepseek-v3.1"),
        ("moonshotai/Kimi-K2.5", 8, "kimi-k2.5"),
        ("MiniMaxAI/MiniMax-M2.5", 2, "minimax-m2"),  # M2's config to the field
        ("zai-org/GLM-4.6", 4, "glm-4.7"),  # GLM-4.7's config to the field
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", 1, "llama4-scout"),
        ("Qwen/Qwen3-VL-235B-A22B-Instruct", 4, "qwen3-vl-235b-a22b"),
        ("Qwen3-4B-Instruct-2507-Q4_K_M.gguf", 1, "qwen3-4b-2507"),
        ("mistralai_Devstral-Small-2507-Q4_K_M.gguf", 1, "mistral-small-3.1"),
        ("microsoft_Phi-4-reasoning-plus-Q4_K_M.gguf", 1, "phi-4-reasoning"),
        ("Jackrong_Qwen3.5-4B-Neo-Q4_K_M.gguf", 1, "qwen3.5-4b"),  # a tune that names its base
        ("unsloth/Qwen3.5-0.8B-GGUF", 1, "qwen3.5-0.8b"),
        ("Qwen/Qwen3.5-9B", 1, "qwen3.5-9b"),
        ("meta-llama/Llama-2-13b-chat-hf", 1, "llama2-13b"),
        ("LLaMA-2-13B", 1, "llama2-13b"),
        ("01-ai/Yi-6B-Chat", 1, "yi-6b"),
        ("baidu_ERNIE-4.5-21B-A3B-PT-Q4_K_M.gguf", 1, "ernie-4.5-21b-a3b"),
        ("LiquidAI/LFM2-8B-A1B", 1, "lfm2-8b-a1b"),
        ("LiquidAI/LFM2.5-8B-A1B", 1, "lfm2.5-8b-a1b"),
        ("google/gemma-4-12B-it", 1, "gemma4-12b"),
        ("Qwen/Qwen2-57B-A14B-Instruct", 1, "qwen2-57b-a14b"),
    ],
)
def test_the_names_sources_write_map_to_the_new_presets(model: str, tp: int, preset: str) -> None:
    case = importer.convert(0, _row(model=model, tp=tp, gpu_count=tp))
    assert case.get("preset") == preset, case.get("excluded_because")


@pytest.mark.parametrize(
    "model",
    [
        "MiniMaxAI/MiniMax-M2.7",  # max_position 204800: not M2's config
        "zai-org/GLM-4.6V",  # the vision-language model, not GLM-4.6
        "Qwen/Qwen3.5-2B",  # no published config read whole
        "deepreinforce-ai/Ornith-1.0-35B-GGUF",  # its name does not state its base
        "poolside/Laguna-XS-2.1",  # query heads differ by layer (48 full, 64 sliding): not expressible
        "nvidia/NVIDIA-Nemotron-3-Nano-4B-BF16",  # no config read
    ],
)
def test_checkpoints_without_a_preset_of_their_shape_stay_out(model: str) -> None:
    case = importer.convert(0, _row(model=model))
    assert case["excluded_because"] == f"no kvcalc model preset of the shape of {model!r}"
