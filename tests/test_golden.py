"""Golden figures, each with its source, through the core and through the CLI."""

from __future__ import annotations

import json

import pytest

from kvcalc import ModelSpec, Workload, count_params, estimate_kv
from kvcalc.capacity import budget, fit
from kvcalc.latency import decode
from kvcalc.presets import load_gpu, load_model
from kvcalc.spec import GpuSpec
from kvcalc.units import DType, GiB

from .conftest import HF_CONFIGS, TEST_PRESETS


def seven_b(kv_heads: int) -> ModelSpec:
    return ModelSpec(name="7b", layers=32, heads=32, kv_heads=kv_heads, head_dim=128, dtype="fp16")


# Source: shared/seeds (MHA/GQA/MQA notes), a 7B with 32 layers, 32 heads of 128, fp16, 1024 tokens.
@pytest.mark.parametrize("kv_heads, expected", [(32, 536_870_912), (8, 134_217_728), (1, 16_777_216)])
def test_seed_7b_cache_at_1024_tokens(kv_heads: int, expected: int) -> None:
    assert estimate_kv(seven_b(kv_heads), Workload(seq=1024)).bytes_per_sequence == expected


# Source: shared/seeds, hidden 512, 8 heads of 64, int8: per token per layer MHA 1024, 4 KV heads 512, MQA 128.
@pytest.mark.parametrize("kv_heads, expected", [(8, 1024), (4, 512), (1, 128)])
def test_seed_per_token_per_layer_int8(kv_heads: int, expected: int) -> None:
    model = ModelSpec(name="tiny", layers=1, heads=8, kv_heads=kv_heads, hidden=512, dtype="int8")
    assert estimate_kv(model, Workload(seq=1)).groups[0].bytes_per_token_per_layer == expected


def test_seed_through_cli(cli) -> None:
    doc = cli.json("size", "--model", TEST_PRESETS / "seed-7b.yaml", "--seq", "1024")
    assert doc["kv"]["bytes_per_sequence"] == 536_870_912


def test_llama3_8b_published_shape() -> None:
    # Source: meta-llama/Meta-Llama-3-8B config.json; 2 * 32 layers * 8 KV heads * 128 * 2 B = 131,072 B per token.
    model = load_model("llama3-8b")
    kv = estimate_kv(model, Workload(seq=8192))
    assert kv.bytes_per_token == 131_072
    assert kv.bytes_per_sequence == 1 * GiB
    # Published parameter count 8,030,261,248 (Meta's model card), recomputed from the shapes.
    assert count_params(model.model_copy(update={"params": None})).total == 8_030_261_248


def test_llama3_8b_max_batch_57_on_80gib() -> None:
    # Derivation: 80 GiB * 0.9 = 77,309,411,328; minus 16,060,522,496 B of bf16 weights = 61,248,888,832;
    # / 1 GiB per 8192-token sequence = 57.04 -> 57.
    model, work = load_model("llama3-8b"), Workload(seq=8192)
    report = fit(model, work, budget(model, work, 80 * GiB, utilization=0.9, reserve_bytes=0))
    assert report.budget.usable_bytes == 61_248_888_832
    assert report.max_batch == 57


def test_llama3_8b_decode_5_11_ms_on_3_35_tbps() -> None:
    # Derivation: (16,060,522,496 + 1,073,741,824) B / 3.35e12 B/s = 5.1147 ms, bandwidth-bound.
    gpu = GpuSpec(name="g", memory_bytes=80 * GiB, bandwidth_bytes_per_s=3_350_000_000_000, bf16_flops=989 * 10**12)
    step = decode(load_model("llama3-8b"), Workload(seq=8192), gpu)
    assert step.roofline.bytes_moved == 16_060_522_496 + 1_073_741_824
    assert step.seconds_per_token == pytest.approx(5.1147e-3, rel=1e-4)
    assert step.roofline.bound == "memory"


def test_h100_preset_bandwidth_gives_same_decode() -> None:
    gpu = load_gpu("h100-sxm")
    assert gpu.bandwidth_bytes_per_s == 3_350_000_000_000


# Source: shared/reference/models.md worked figures (bf16, textbook, per token).
@pytest.mark.parametrize(
    "preset, per_token",
    [("llama3-70b", 327_680), ("deepseek-v3", 70_272), ("gpt2", 73_728), ("llama2-7b", 524_288)],
)
def test_reference_per_token_bytes(preset: str, per_token: int) -> None:
    model = load_model(preset)
    assert estimate_kv(model, Workload(seq=1)).bytes_per_token == per_token


def test_deepseek_v3_decompressed_heads_would_be_4_997_120() -> None:
    # Source: models.md: 61 x 128 x (192 + 128) x 2 = 4,997,120 B per token without the latent.
    model = load_model("deepseek-v3").model_copy(update={"mla": None})
    assert estimate_kv(model, Workload(seq=1)).bytes_per_token == 4_997_120


def test_gemma2_9b_sliding_layers_hold_the_window() -> None:
    # 42 layers alternate sliding (W=4096) and full; 8 KV heads of 256, bf16: 8192 B per token per layer.
    kv = estimate_kv(load_model("gemma2-9b"), Workload(seq=8192))
    per_layer = 2 * 8 * 256 * 2
    assert kv.bytes_per_sequence == 21 * per_layer * 4096 + 21 * per_layer * 8192


def test_q8_0_block_bytes() -> None:
    # llama.cpp block_q8_0: 32 int8 + one fp16 scale = 34 B per 32 values (ggml-common.h).
    model = load_model(str(TEST_PRESETS / "seed-7b.yaml"))
    kv = estimate_kv(model, Workload(seq=1, kv_dtype=DType.q8_0))
    assert kv.bytes_per_token == 32 * 2 * (32 * 128 // 32) * 34


def test_tp_replicates_kv_heads_beyond_their_count() -> None:
    # vLLM: each rank holds max(1, Hkv // tp) heads; llama3-8b at tp 16 keeps one head on each of 16 ranks.
    model = load_model("llama3-8b")
    kv = estimate_kv(model, Workload(seq=1, tp=16))
    assert kv.replicated_kv_heads
    assert kv.bytes_per_gpu == 32 * 2 * 1 * 128 * 2
    assert kv.bytes_per_token == 16 * kv.bytes_per_gpu


def test_paged_rounding_and_waste() -> None:
    model = load_model("llama3-8b")
    kv = estimate_kv(model, Workload(seq=1000, block_size=16))
    assert kv.bytes_per_sequence == 131_072 * 1008
    assert kv.paging_waste_bytes == 131_072 * 8


# DESIGN.md: group-wise int4 costs bits/8 + 4/G per value (G = 128: 68 B per 128 values). A row shorter
# than the group (head_dim 64) is one short group with its own fp16 scale and zero: 32 + 4 = 36 B.
@pytest.mark.parametrize("head_dim, expected", [(128, 2 * 68), (64, 2 * 36), (256, 2 * 136)])
def test_int4_rows_per_token_per_layer(head_dim: int, expected: int) -> None:
    model = ModelSpec(name="mqa", layers=1, heads=8, kv_heads=1, head_dim=head_dim, dtype="int4")
    assert estimate_kv(model, Workload(seq=1)).groups[0].bytes_per_token_per_layer == expected


# gpt-oss ships its routed experts in MXFP4 (17 B per 32 values) and the rest in bf16
# (shared/reference/models.md): 36 layers * 128 experts * 3 * 2880^2 = 114,661,785,600 expert params.
def test_gpt_oss_checkpoint_weights(cli) -> None:
    experts = 36 * 128 * 3 * 2880 * 2880
    rest = 116_829_156_672 - experts
    doc = cli.json("size", "--model", "gpt-oss-120b", "--seq", "8192")
    assert (doc["weights"]["dtype"], doc["weights"]["experts_dtype"]) == ("bf16", "mxfp4")
    assert doc["weights"]["bytes"] == rest * 2 + experts * 17 // 32 == 65_248_815_744
    everything_bf16 = cli.json("size", "--model", "gpt-oss-120b", "--seq", "8192", "--weight-dtype", "bf16")["weights"]
    assert (everything_bf16["bytes"], everything_bf16["experts_dtype"]) == (116_829_156_672 * 2, None)
    assert cli("fit", "--model", "gpt-oss-120b", "--gpu", "h100-sxm").exit_code == 0  # fits one 80 GB GPU, as served


def test_deepseek_v3_checkpoint_is_fp8_but_its_embeddings(cli) -> None:
    embeddings = 2 * 129_280 * 7_168  # input table and untied LM head, kept bf16 by the FP8 checkpoint
    weights = cli.json("size", "--model", "deepseek-v3", "--seq", "4096")["weights"]
    assert (weights["dtype"], weights["embeddings_dtype"]) == ("fp8", "bf16")
    assert weights["bytes"] == (671_026_419_200 - embeddings) * 1 + embeddings * 2 == 672_879_777_280


def test_gptq_config_keeps_its_embeddings_16_bit(cli, tmp_path) -> None:
    config = json.loads((HF_CONFIGS / "llama3-8b-config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    embeddings = 2 * 128_256 * 4_096  # untied: input table and LM head, bf16
    norms = 4_096 + 2 * 4_096 * 32  # final norm, two per layer: kept bf16 too
    layers = 8_030_261_248 - embeddings - norms  # GPTQ int4 per 128 values: 64 B packed + 2 B fp16 scale + 0.5 B qzeros
    bytes_ = -(-layers * 133 // 256) + (embeddings + norms) * 2
    assert cli.json("size", "--model", path, "--seq", "8")["weights"]["bytes"] == bytes_
