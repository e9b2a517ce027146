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
        (["--engine", "sglang", "--speculative-model", "llama3.2-1b"], "--speculative-model is not modelled for --engine sglang"),
        (["--speculative-model", "gemma2-9b"], "a draft with sliding-window or state layers is not modelled"),
        (["--speculative-model", "qwen3-0.6b"], "its vocabulary (151,936) differs from llama3.1-8b's (128,256)"),
        (["--speculative-model", "no-such-model"], "unknown model 'no-such-model'"),
    ],
)
def test_bad_draft_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli("fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", *args)
    assert result.exit_code == 2
    assert expected in result.stderr
