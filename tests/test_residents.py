"""Tenants of GPU memory beside the target's weights and KV cache: a speculative draft model (its
weights a budget term; its KV per token beside the target's in vLLM's one pool, whose page is the
sum of every layer's: vllm/v1/kv_cache_interface.py UniformTypeKVCacheSpecs.page_size_bytes)."""

from __future__ import annotations

import pytest

LLAMA3_8B_TOKEN = 32 * 2 * 8 * 128 * 2  # 131,072 B: layers * (K + V) * KV heads * head_dim * bf16
LLAMA32_1B_TOKEN = 16 * 2 * 8 * 64 * 2  # 32,768 B: the draft's 16 layers, head_dim 64
LLAMA32_1B_WEIGHTS = 1_235_814_400 * 2  # published count (tied embeddings), bf16

FIT = ["fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "8k"]


def test_draft_weights_are_a_budget_term_and_its_kv_shares_the_pool(cli) -> None:
    plain = cli.json(*FIT)
    drafted = cli.json(*FIT, "--speculative-model", "llama3.2-1b")
    (term,) = [t for t in drafted["budget"]["terms"] if t["name"].startswith("draft model weights")]
    assert term["bytes"] == LLAMA32_1B_WEIGHTS
    assert "UniformTypeKVCacheSpecs" in term["source"]
    usable = drafted["budget"]["usable_bytes"]
    assert usable == plain["budget"]["usable_bytes"] - LLAMA32_1B_WEIGHTS
    per_token = LLAMA3_8B_TOKEN + LLAMA32_1B_TOKEN
    assert drafted["max_batch"] == usable // (per_token * 8192)
    logged = {line["name"]: line["value"] for line in drafted["engine_log"]}
    assert logged["gpu_kv_cache_tokens"] == usable // (16 * per_token) * 16  # one group, the page summed over every layer


def test_draft_shows_in_explain(cli) -> None:
    result = cli(*FIT, "--speculative-model", "llama3.2-1b", "--explain")
    assert result.exit_code == 0, result.output
    assert "draft model weights (llama3.2-1b) = 1,235,814,400 params * bf16" in result.stdout
    assert "its KV, 16 layers * 2,048 B per token per layer on one GPU = 32,768 B, shares the target's pool" in result.stdout
    assert "(kvcalc.residents)" in result.stdout


def test_draft_splits_over_the_targets_tp(cli) -> None:
    doc = cli.json(*FIT, "--tp", "2", "--speculative-model", "llama3.2-1b")
    (term,) = [t for t in doc["budget"]["terms"] if t["name"].startswith("draft model weights")]
    assert term["bytes"] == LLAMA32_1B_WEIGHTS // 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "hf", "--speculative-model", "llama3.2-1b"], "--speculative-model is not modelled for --engine hf"),
        (["--speculative-model", "gemma2-9b"], "a draft with sliding-window or state layers is not modelled"),
        (["--speculative-model", "qwen3-0.6b"], "its vocabulary (151,936) differs from llama3.1-8b's (128,256)"),
        (["--speculative-model", "no-such-model"], "unknown model 'no-such-model'"),
    ],
)
def test_bad_draft_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli("fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", *args)
    assert result.exit_code == 2
    assert expected in result.stderr


LORA_FIT = ["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm"]
# llama3-8b, one slot of rank 16 in bf16, per layer: A = 3h + H*d + 2h + I = 38,912 values, B = (H + 2 Hkv)*d + h + 2I + h = 43,008
LLAMA3_8B_LORA = 32 * 1 * 16 * 2 * (38_912 + 43_008)  # 83,886,080 B: 80 MiB


def test_lora_slots_hand_worked(cli) -> None:
    plain = cli.json(*LORA_FIT)
    doc = cli.json(*LORA_FIT, "--max-loras", "1")
    assert doc["budget"]["lora_bytes"] == LLAMA3_8B_LORA
    assert doc["budget"]["usable_bytes"] == plain["budget"]["usable_bytes"] - LLAMA3_8B_LORA
    assert plain["budget"]["lora_bytes"] == 0
    (term,) = [t for t in doc["budget"]["terms"] if t["name"] == "LoRA slots"]
    assert "vllm/lora/layers/base_linear.py create_lora_weights" in term["source"]


def test_lora_slots_scale_with_slots_rank_and_dtype(cli) -> None:
    doc = cli.json(*LORA_FIT, "--max-loras", "4", "--max-lora-rank", "64", "--lora-dtype", "fp32")
    assert doc["budget"]["lora_bytes"] == LLAMA3_8B_LORA * 4 * 4 * 2


def test_lora_slots_split_over_tp(cli) -> None:
    """tp 2: A of qkv and gate_up stays whole, B of o and down stays whole; the rest halves."""
    doc = cli.json(*LORA_FIT, "--tp", "2", "--max-loras", "1")
    a_values = 3 * 4096 + 4096 // 2 + 2 * 4096 + 14336 // 2
    b_values = 4096 // 2 + 2 * 4 * 128 + 4096 + 2 * 14336 // 2 + 4096
    assert doc["budget"]["lora_bytes"] == 32 * 16 * 2 * (a_values + b_values)


@pytest.mark.parametrize(("release", "taken"), [("0.6.6.post1", LLAMA3_8B_LORA), ("0.7.3", 0), ("0.8.0", LLAMA3_8B_LORA)])
def test_lora_slots_outside_the_budget_in_vllm_0_7(cli, release: str, taken: int) -> None:
    """vLLM 0.7.x sizes the KV cache without the LoRA slots (vllm-project/vllm#14450): V0's load_model
    creates them after measuring the weights, and 0.7.0's memory_profiling counts torch tensors allocated
    before the profile run in neither the peak nor non-torch (vllm/worker/model_runner.py, vllm/utils.py of
    the 0.7.0 and 0.7.3 wheels); 0.6.6.post1 held them in non_torch_increase, 0.8.0 in "Model loading took"."""
    args = [*LORA_FIT, "--vllm-version", release]
    plain, doc = cli.json(*args), cli.json(*args, "--max-loras", "1")
    assert doc["budget"]["lora_bytes"] == taken
    assert doc["budget"]["usable_bytes"] == plain["budget"]["usable_bytes"] - taken
    if not taken:
        result = cli(*args, "--max-loras", "1", "--explain")
        assert "vLLM 0.7.3 sizes it without the slots, which take their 83,886,080 B (80.00 MiB)" in result.stdout
        assert "vllm-project/vllm#14450" in result.stdout


def test_lora_published_qwen3_8b_t4_model_loading_includes_the_slots(cli) -> None:
    """vLLM 0.22, Qwen3-8B fp16 tp 2 on T4s with --enable-lora logged "Model loading took 7.71 GiB"
    (https://github.com/trietnguyeminh/Submission---EXACT--IJCNN/blob/12af0c4ba476b15c1fb004a9aba0bf1ad60a6dfc/download.txt):
    weights and LoRA slots land 0.03 GiB from it, the weights alone 0.08 GiB. (Its available KV,
    3.92 GiB, kvcalc misses by 1.5 GiB: the T4's modelled non-torch memory, not the slots.)"""
    args = ["fit", "--model", "qwen3-8b", "--gpu", "t4", "--tp", "2", "--engine", "vllm", "--weight-dtype", "fp16"]
    doc = cli.json(*args, "--gpu-memory-utilization", "0.85", "--seq", "8192", "--max-loras", "1")
    budget = doc["budget"]
    logged = 7.71 * 2**30
    with_slots = budget["weights_bytes"] + budget["lora_bytes"]
    assert abs(with_slots - logged) < abs(budget["weights_bytes"] - logged)
    assert abs(with_slots - logged) < 0.02 * budget["memory_bytes"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "sglang", "--max-loras", "1"], "--max-loras is modelled for --engine vllm and trtllm, not sglang"),
        (["--engine", "vllm", "--max-lora-rank", "8"], "--max-lora-rank and --lora-dtype need --max-loras"),
        (["--engine", "vllm", "--max-loras", "0"], "--max-loras must be a positive integer"),
    ],
)
def test_bad_lora_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", *args)
    assert result.exit_code == 2
    assert expected in result.stderr


def test_lora_on_moe_is_refused(cli) -> None:
    result = cli("fit", "--model", "mixtral-8x7b", "--gpu", "h100-sxm", "--tp", "2", "--engine", "vllm", "--max-loras", "1")
    assert result.exit_code == 2
    assert "are not the dense q/k/v/o and gated-MLP kvcalc sizes LoRA for" in result.stderr


def test_mtp_layers_as_the_draft_deepseek_v3(cli) -> None:
    """DeepSeek-V3's one MTP layer (num_nextn_predict_layers 1): a MoE decoder layer + eh_proj + norms,
    its embeddings and head shared; its MLA cache beside the 61 layers' (62 * 576 values * bf16)."""
    args = ["fit", "--model", "deepseek-v3", "--gpu", "h200", "--tp", "8", "--engine", "vllm", "--seq", "8k"]
    plain, mtp = cli.json(*args), cli.json(*args, "--speculative-model", "mtp")
    (term,) = [t for t in mtp["budget"]["terms"] if t["name"] == "draft model weights (deepseek-v3 MTP)"]
    assert mtp["budget"]["usable_bytes"] == plain["budget"]["usable_bytes"] - term["bytes"]
    assert mtp["bytes_per_sequence_per_gpu"] == 62 * 576 * 2 * 8192
    assert plain["bytes_per_sequence_per_gpu"] == 61 * 576 * 2 * 8192


def test_mtp_params_match_the_published_module_size() -> None:
    """DeepSeek-V3's card: 685B on the Hub = 671B main model + 14B MTP module (which stores its own
    embedding table and head): https://huggingface.co/deepseek-ai/DeepSeek-V3#model-downloads"""
    from kvcalc import presets
    from kvcalc.weights import mtp_params

    model = presets.load_model("deepseek-v3")
    params = mtp_params(model)
    assert params is not None
    with_tables = params.total + 2 * model.vocab * model.hidden
    assert with_tables == pytest.approx(14e9, rel=0.05)


@pytest.mark.parametrize("key", ["num_nextn_predict_layers", "mtp_num_hidden_layers"])
def test_mtp_layers_read_from_config(key: str) -> None:
    from kvcalc.hf_config import model_fields_from_hf

    config = {
        "model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 8, "hidden_size": 512,
        "intermediate_size": 1024, "vocab_size": 1000, key: 2,
    }  # fmt: skip
    assert model_fields_from_hf(config, "tiny", "test")["mtp_layers"] == 2


def test_mtp_refused_without_mtp_layers(cli) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--speculative-model", "mtp")
    assert result.exit_code == 2
    assert "--speculative-model mtp: llama3-8b has no MTP layers kvcalc can size" in result.stderr


def test_cpu_tier_hand_worked(cli) -> None:
    """64 GiB over tp 2 = 32 GiB per rank; llama3-8b keeps 65,536 B per token per rank: 32,768 blocks
    of 16 = 524,288 tokens; a 4,096-token prefix is 256 MiB per GPU, 4.19 ms at 64 GB/s."""
    doc = cli.json(
        "fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--tp", "2",
        "--kv-offloading-size", "64GiB", "--pcie-gb-per-s", "64", "--shared-prefix", "4k",
    )  # fmt: skip
    tier = doc["cpu_tier"]
    assert tier["bytes_per_rank"] == 32 * 2**30
    assert tier["bytes_per_token_per_rank"] == LLAMA3_8B_TOKEN // 2
    assert tier["tokens"] == 524_288 and tier["sequences"] == 524_288 // 8192
    assert tier["reload_bytes_per_rank"] == 4096 * LLAMA3_8B_TOKEN // 2
    assert tier["reload_seconds"] == pytest.approx(4096 * 65_536 / 64e9)


def test_cpu_tier_without_a_link_says_how_to_time_it(cli) -> None:
    result = cli(
        "fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--kv-offloading-size", "16GiB", "--explain"
    )
    assert result.exit_code == 0, result.output
    assert "give --pcie-gb-per-s, the host link's GB/s per GPU, to time it" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "sglang", "--kv-offloading-size", "8GiB"], "--kv-offloading-size is a vLLM option"),
        (["--engine", "sglang", "--lmcache-cpu-size", "5GiB"], "--lmcache-cpu-size is LMCache's, modelled beside --engine vllm"),
        (["--engine", "vllm", "--lmcache-cpu-size", "5GiB", "--kv-offloading-size", "8GiB"], "not both"),
        (["--engine", "vllm", "--pcie-gb-per-s", "64"], "--pcie-gb-per-s needs --kv-offloading-size"),
        (["--engine", "vllm", "--kv-offloading-size", "8GiB", "--pcie-gb-per-s", "0"], "must be positive"),
    ],
)
def test_bad_cpu_tier_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", *args)
    assert result.exit_code == 2
    assert expected in result.stderr
