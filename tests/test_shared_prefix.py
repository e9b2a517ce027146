"""--shared-prefix: a prefix every sequence shares is held once for the batch, in the engine's whole
blocks (vLLM hashes full blocks only: https://docs.vllm.ai/en/latest/design/prefix_caching/; on
hybrid models the raised attention block, so a shorter prefix is never cached:
https://github.com/vllm-project/vllm/issues/40696), in size, fit and decode."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import presets
from kvcalc.kvcache import batch_bytes, settled, shared_prefix_tokens
from kvcalc.spec import Engine, Workload

LLAMA_TOKEN_BYTES = 32 * 2 * 8 * 128 * 2  # llama3-8b: layers * (K + V) * KV heads * head_dim * bf16 = 131,072 B


def test_size_golden_llama3_8b_vllm(cli) -> None:
    """Hand-worked: 4,000 tokens (250 whole blocks of 16) once, and 8 * 4,192 tokens of the sequences' own."""
    doc = cli.json("size", "--model", "llama3-8b", "--seq", "8k", "--batch", "8", "--engine", "vllm", "--shared-prefix", "4000")
    kv = doc["kv"]
    assert kv["shared_prefix_tokens"] == 4000
    assert kv["shared_prefix_bytes"] == 4000 * LLAMA_TOKEN_BYTES
    assert kv["bytes_per_batch"] == (4000 + 8 * 4192) * LLAMA_TOKEN_BYTES == 4_919_918_592


def test_only_whole_blocks_are_shared() -> None:
    """1,000 tokens in blocks of 16: 62 whole blocks (992 tokens) once; 8 tokens stay in each sequence's pages."""
    work = Workload(seq=2048, batch=4, shared_prefix=1000, engine=Engine(name="vllm"))
    assert shared_prefix_tokens(work) == 992
    model = presets.load_model("llama3-8b")
    assert batch_bytes(model, work).total == (992 + 4 * 1056) * LLAMA_TOKEN_BYTES  # 2048 - 992 = 1056, whole blocks


def test_the_last_token_is_each_sequences_own() -> None:
    """A prefix as long as the context still leaves each sequence its last token (vLLM caps a hit at num_tokens - 1)."""
    assert shared_prefix_tokens(Workload(seq=64, batch=2, shared_prefix=64)) == 63


def test_hybrid_prefix_shorter_than_a_block_is_never_cached(cli) -> None:
    """qwen3-next under vLLM: the attention block is raised to hold a state page, so 400 tokens share nothing."""
    args = ["size", "--model", "qwen3-next-80b-a3b", "--seq", "8k", "--batch", "8", "--engine", "vllm"]
    plain = cli.json(*args)["kv"]
    result = cli(*args, "--shared-prefix", "400", "--json")
    assert result.exit_code == 0
    assert "is shorter than one block of" in result.stderr and "vllm caches none of it" in result.stderr
    doc = cli.json(*args, "--shared-prefix", "400")["kv"]
    assert doc["shared_prefix_tokens"] == 0 and doc["bytes_per_batch"] == plain["bytes_per_batch"]
    longer = cli.json(*args, "--shared-prefix", "4000")["kv"]
    block = plain["block_size"]
    assert longer["shared_prefix_tokens"] == 3999 // block * block > 0
    explained = cli(*args, "--shared-prefix", "400", "--explain").stdout
    assert "shorter than one block: none of it is cached" in explained


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["llama3-8b", "gemma2-9b", "deepseek-v2-lite"]),
    st.sampled_from(["textbook", "vllm", "sglang", "trtllm"]),
    st.integers(2, 40_000),
    st.integers(1, 64),
    st.floats(0.0, 1.0),
)
def test_saving_is_the_prefix_once_instead_of_b_times(model: str, engine: str, seq: int, batch: int, share: float) -> None:
    """With the prefix held once, the batch saves (B - 1) * its whole blocks * the full-attention
    layers' bytes per token; window layers keep their own; one sequence saves nothing."""
    spec = presets.load_model(model)
    prefix = int(seq * share)
    plain = Workload(seq=seq, batch=batch, engine=Engine(name=engine))
    shared = plain.model_copy(update={"shared_prefix": prefix})
    held = shared_prefix_tokens(settled(spec, shared))  # in the engine's blocks for this model (vLLM: MLA pages of 64)
    full_bytes = batch_bytes(spec, Workload(seq=1, batch=1, tp=1)).total  # one token in every layer...
    if spec.name == "gemma2-9b":  # ...of which only the full-attention half shares
        full_bytes //= 2
    saved = batch_bytes(spec, plain).total - batch_bytes(spec, shared).total
    assert saved == (batch - 1) * held * full_bytes


def test_fit_max_batch_holds_the_prefix_once(cli) -> None:
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--shared-prefix", "6k")
    usable = doc["budget"]["usable_bytes"]
    assert doc["shared_prefix_tokens"] == 6144
    assert doc["shared_prefix_bytes_per_gpu"] == 6144 * LLAMA_TOKEN_BYTES
    # vLLM 0.21+: 0.92 of the h100-sxm preset's CUDA total (79.18 GiB)
    assert doc["max_batch"] == (usable - 6144 * LLAMA_TOKEN_BYTES) // (2048 * LLAMA_TOKEN_BYTES) == 205


def test_fit_sglang_pool_holds_the_prefix_once(cli) -> None:
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "sglang", "--shared-prefix", "6k")
    (pool,) = doc["pools"]
    assert doc["max_batch"] == (pool["tokens"] - 6144) // 2048


def test_decode_reads_the_prefix_per_sequence_but_fits_more(cli) -> None:
    """Paged attention reads every sequence's whole context; the prefix held once lets more sequences in."""
    args = ["decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--batch", "4", "--max-tpot-ms", "200"]
    plain, shared = cli.json(*args), cli.json(*args, "--shared-prefix", "6k")
    assert shared["decode"]["kv_read_bytes"] == plain["decode"]["kv_read_bytes"]
    assert shared["throughput"]["memory_batch"] > plain["throughput"]["memory_batch"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "hf", "--shared-prefix", "1k"], "--shared-prefix does not apply to --engine hf"),
        (["--engine", "llamacpp", "--shared-prefix", "1k"], "--shared-prefix does not apply to --engine llamacpp"),
        (["--shared-prefix", "9k"], "--shared-prefix 9,216 must be in [0, --seq 8,192]"),
    ],
)
def test_bad_shared_prefix_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli("size", "--model", "llama3-8b", "--seq", "8k", *args)
    assert result.exit_code == 2
    assert expected in result.stderr


def test_check_plan_counts_the_prefix_once(cli, tmp_path) -> None:
    """A CI plan with shared_prefix: 60 sequences of 8k do not fit vLLM's budget on an H100, with 6k of them shared they do."""
    plan = tmp_path / "plan.yaml"
    row = "  - {name: %s, model: llama3-8b, gpu: h100-sxm, engine: vllm, seq: 8k, batch: 60, %sexpect: {fits: true}}\n"
    plan.write_text("workloads:\n" + row % ("whole", "") + row % ("shared", "shared_prefix: 6k, "))
    result = cli("check", plan, "--json")
    assert result.exit_code == 1
    verdicts = {w["name"]: w["passed"] for w in json.loads(result.stdout)["workloads"]}
    assert verdicts == {"whole": False, "shared": True}
