"""N-gram speculation (--speculative-model ngram, vLLM's speculative_config method ngram): no model,
so no weights and no KV (V1 vllm/v1/spec_decode/ngram_proposer.py; V0 spec_decode/ngram_worker.py,
whose get_cache_block_size_bytes is 0, vLLM 0.8.4), no lookahead slots (vllm/config/vllm.py
num_lookahead_tokens, 0.30.0; scheduler.py 0.9.1-0.27.1), CUDA graphs for K + 1 query tokens
(uniform_decode_query_len, 0.30.0) and the V1 model runner (_get_v2_model_runner_unsupported_features,
0.27.1 and 0.30.0); decode's rounds with no draft step."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc.engines.vllm import CUDA_GRAPH_EACH_BYTES, CUDA_GRAPH_FIRST_BYTES, capture_sizes

FIT = ["fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "8k"]
DECODE = ["decode", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "4k", "--batch", "8"]
NGRAM = ["--speculative-model", "ngram", "--num-speculative-tokens"]
# https://github.com/vllm-project/vllm/issues/16883: vLLM 0.8.4 (V0), Qwen2.5-Coder-32B-Instruct at TP 4, n-gram K 300,
# eager, one rank of a 44.32 GiB GPU: "the current vLLM instance can use total_gpu_memory (44.32GiB) x
# gpu_memory_utilization (0.90) = 39.89GiB"
ISSUE_16883 = [
    "fit", "--model", "qwen2.5-coder-32b", "--memory", "44.32GiB", "--tp", "4", "--seq", "131072", "--engine", "vllm",
    "--vllm-version", "0.8.4", "--gpu-memory-utilization", "0.9", "--max-num-batched-tokens", "131072",
    "--max-num-seqs", "8", "--enforce-eager",
]  # fmt: skip


def _term(doc: dict, name: str) -> dict:
    (term,) = [t for t in doc["budget"]["terms"] if t["name"] == name]
    return term


def test_ngram_is_a_budget_line_of_no_bytes_with_its_source(cli) -> None:
    doc = cli.json(*FIT, *NGRAM, "4")
    term = _term(doc, "n-gram speculation")
    assert term["bytes"] == 0
    assert "ngram_proposer.py" in term["source"] and "num_lookahead_tokens" in term["source"]


def test_ngram_takes_nothing_from_the_kv_cache_of_the_published_v0_run(cli) -> None:
    """vllm#16883: the V0 spec-decode worker keeps the target's profile (NGramWorker sizes no cache), so
    with n-gram the budget is a plain V0 run's, 300 proposals or not (0.8.4 runs n-gram on V0: a V0
    release's plain run, 0.7.3 with the same flags, is the same budget); the 131,072-token contexts hold no
    lookahead blocks (8 GiB per sequence per GPU: 64 layers * 2 * 2 KV heads * 128 * 2 B * 131,072)."""
    plain_v0 = [arg if arg != "0.8.4" else "0.7.3" for arg in ISSUE_16883]
    plain = cli.json(*plain_v0)["budget"]
    doc = cli.json(*ISSUE_16883, *NGRAM, "300")
    assert doc["budget"]["usable_bytes"] == plain["usable_bytes"]
    assert cli.json(*ISSUE_16883, *NGRAM, "4")["budget"]["usable_bytes"] == plain["usable_bytes"]
    assert doc["bytes_per_sequence_per_gpu"] == 64 * 2 * 2 * 128 * 2 * 131072


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 64), st.sampled_from([1000, 8192, 8191]))
def test_ngram_holds_no_lookahead_blocks(k: int, seq: int) -> None:
    """Whatever K, a sequence holds cdiv(s, 16) blocks, as without speculation (a draft model holds cdiv(s + K, 16))."""
    from tests.conftest import Cli

    cli = Cli()
    base = ["fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", str(seq), "--enforce-eager"]
    plain, doc = cli.json(*base), cli.json(*base, *NGRAM, str(k))
    assert doc["bytes_per_sequence_per_gpu"] == plain["bytes_per_sequence_per_gpu"] == -(-seq // 16) * 16 * 32 * 2 * 8 * 128 * 2
    assert doc["budget"]["usable_bytes"] == plain["budget"]["usable_bytes"]


def test_ngram_on_vllm_0_8_runs_v0s_rules(cli) -> None:
    """vLLM 0.8.4's _is_v1_supported_oracle falls back to V0 for n-gram (_warn_or_fallback("ngram"), engine/arg_utils.py
    of the 0.8.4 wheel): V0's batch defaults (256 seqs, max(max_model_len, 2048) tokens: chunked prefill stays off
    with speculative decoding, _set_default_args_v0) and sampler, as 0.7.3 budgets; 0.9.2 runs it on V1."""
    qwen = ["fit", "--model", "qwen2.5-7b", "--gpu", "h100-sxm", "--seq", "32768", "--engine", "vllm", *NGRAM, "4"]
    v0 = cli.json(*qwen, "--vllm-version", "0.7.3")
    on_084 = cli.json(*qwen, "--vllm-version", "0.8.4")
    on_092 = cli.json(*qwen, "--vllm-version", "0.9.2")
    assert on_084["budget"]["usable_bytes"] == v0["budget"]["usable_bytes"] != on_092["budget"]["usable_bytes"]
    peak = _term(on_084, "activation peak")["formula"]
    assert "T = max_num_batched_tokens 32,768 tokens over R = min(max_num_seqs 256, T)" in peak and "V0 engine's sampler" in peak
    assert "max_num_seqs 1,024" in _term(on_092, "activation peak")["formula"]


def test_ngram_k_beyond_the_context_exits_2(cli) -> None:
    """vLLM proposes at most max_model_len - the tokens so far (ngram_proposer.py, k = min(k, max_model_len - total_token))."""
    for command in (FIT, [*DECODE, "--acceptance-rate", "0.6"]):
        result = cli(*command, *NGRAM, "100000000")
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
        assert "--num-speculative-tokens 100,000,000: must be from 1 to --seq - 1" in result.stderr


def test_ngram_graph_line_names_the_size_it_captures(cli) -> None:
    """K = 1000: no multiple of 1,001 is within 512, so the one size is query_len itself (capture_sizes)."""
    doc = cli.json(*FIT, "--vllm-version", "0.21.0", *NGRAM, "1000", "--explain")
    assert capture_sizes(1024, 1001) == [1001]
    assert "1 PIECEWISE sizes up to 1,001" in _term(doc, "CUDA graphs")["formula"]


def test_ngram_graphs_are_captured_for_k_plus_one_tokens(cli) -> None:
    """uniform_decode_query_len = 1 + K for every method: K = 4 captures multiples of 5 (H100: max_num_seqs 1,024)."""
    doc = cli.json(*FIT, *NGRAM, "4")
    count = len(capture_sizes(1024, 5))
    assert _term(doc, "CUDA graphs")["bytes"] == CUDA_GRAPH_FIRST_BYTES + 2 * (count - 1) * CUDA_GRAPH_EACH_BYTES


def test_ngram_keeps_the_v1_runner(cli) -> None:
    """vLLM 0.30 profiles a dense model with the V2 runner, but not with n-gram speculation."""
    plain = cli.json(*FIT, "--vllm-version", "0.30.0")
    doc = cli.json(*FIT, "--vllm-version", "0.30.0", *NGRAM, "3", "--explain")
    assert "V2" in _term(plain, "activation peak")["formula"].split("model runner ")[1][:3]
    assert "n-gram lookup (speculative method ngram) keeps the V1 runner" in _term(doc, "activation peak")["formula"]


def test_ngram_decode_has_no_draft_step(cli) -> None:
    """A round is the target's verification of K + 1 tokens alone: per token = verify / (1 + a + ... + a^K)."""
    doc = cli.json(*DECODE, *NGRAM, "4", "--acceptance-rate", "0.5")
    spec = doc["speculative"]
    assert spec["draft"] == "n-gram lookup" and spec["draft_step_seconds"] == 0
    assert spec["round_seconds"] == spec["verify_seconds"]
    assert spec["seconds_per_token"] == pytest.approx(spec["verify_seconds"] / (1 + 0.5 + 0.25 + 0.125 + 0.0625))
    assert any("draft step = 0 s" in line and "ngram_proposer.py" in line for line in spec["explain"])


def test_ngram_decode_refuses_the_engines_fit_refuses(cli) -> None:
    sglang = [arg if arg != "vllm" else "sglang" for arg in DECODE]
    result = cli(*sglang, *NGRAM, "3", "--acceptance-rate", "0.6")
    assert result.exit_code == 2
    assert "--speculative-model ngram is modelled for --engine vllm and textbook, not sglang" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--speculative-model", "ngram"], "--speculative-model ngram: give --num-speculative-tokens"),
        (["--engine", "sglang", *NGRAM, "3"], "--speculative-model ngram is modelled for --engine vllm and textbook, not sglang"),
        (["--engine", "trtllm", *NGRAM, "3"], "--speculative-model ngram is modelled for --engine vllm and textbook, not trtllm"),
        ([*NGRAM, "0"], "--num-speculative-tokens must be a positive"),
    ],
)
def test_bad_ngram_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli(
        "fit",
        "--model",
        "llama3.1-8b",
        "--gpu",
        "h100-sxm",
        "--seq",
        "8k",
        *(["--engine", "vllm"] if "--engine" not in args else []),
        *args,
    )
    assert result.exit_code == 2
    assert expected in result.stderr
