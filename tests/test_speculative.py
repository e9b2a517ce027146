"""Speculative decoding: vLLM's lookahead slots for the K proposed tokens
(vllm/v1/core/sched/scheduler.py num_lookahead_tokens, vllm 00024d31), its CUDA-graph sizes in
multiples of K + 1 (vllm/config/vllm.py _set_cudagraph_sizes, compilation.py
adjust_cudagraph_sizes_for_spec_decode), an EAGLE-3 head read from its config.json
(vllm/model_executor/models/llama_eagle3.py, vllm 00bd1493), and decode's rounds of K draft steps
and one verification (Leviathan et al. 2023, eq. 1)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc.engines.vllm import CUDA_GRAPH_EACH_BYTES, CUDA_GRAPH_FIRST_BYTES, capture_sizes
from kvcalc.hf_config import model_fields_from_hf
from kvcalc.speculative import tokens_per_round

from .conftest import HF_CONFIGS

LLAMA3_8B_TOKEN = 32 * 2 * 8 * 128 * 2  # 131,072 B: layers * (K + V) * KV heads * head_dim * bf16
EAGLE3 = str(HF_CONFIGS / "eagle3" / "config.json")  # an EAGLE-3 head for Llama-3.1-8B (1 layer, draft vocab 32,000)
# one decoder layer: qkv from 2h (8,192 x 6,144) + o (4,096^2) + gated MLP (3 * 4,096 * 14,336) + 3 norms;
# fc 3h x h; final norm; LM head 32,000 x 4,096; embeddings shared with the target (llama_eagle3.py)
EAGLE3_PARAMS = 8192 * 6144 + 4096 * 4096 + 3 * 4096 * 14336 + 3 * 4096 + 3 * 4096 * 4096 + 4096 + 32000 * 4096
EAGLE3_TOKEN = 1 * 2 * 8 * 128 * 2  # its one attention layer: 4,096 B per token
FIT = ["fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "8k"]
DECODE = ["decode", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "4k", "--batch", "8"]


def test_eagle3_head_params_from_its_config() -> None:
    config = json.loads((HF_CONFIGS / "eagle3" / "config.json").read_text())
    fields = model_fields_from_hf(config, "eagle3", "test")
    assert fields["params"] == EAGLE3_PARAMS == 424_689_664
    assert fields["layers"] == 1 and fields["vocab"] == 128_256  # the target's vocabulary: the check passes
    assert "EAGLE-3" in fields["source"]


def test_eagle3_draft_in_the_budget_and_the_pool(cli) -> None:
    plain = cli.json(*FIT)
    doc = cli.json(*FIT, "--speculative-model", EAGLE3)
    (term,) = [t for t in doc["budget"]["terms"] if t["name"].startswith("draft model weights")]
    assert term["bytes"] == EAGLE3_PARAMS * 2  # bf16: 810 MiB
    assert doc["budget"]["usable_bytes"] == plain["budget"]["usable_bytes"] - EAGLE3_PARAMS * 2
    assert doc["max_batch"] == doc["budget"]["usable_bytes"] // ((LLAMA3_8B_TOKEN + EAGLE3_TOKEN) * 8192)


@pytest.mark.parametrize("k", [1, 4, 16])
def test_lookahead_slots_per_sequence(cli, k: int) -> None:
    """A running sequence of s tokens holds cdiv(s + K, 16) blocks: 8,192 + 4 needs one block more."""
    doc = cli.json(*FIT, "--speculative-model", "llama3.2-1b", "--num-speculative-tokens", str(k))
    per_token = LLAMA3_8B_TOKEN + 16 * 2 * 8 * 64 * 2  # the target's and llama3.2-1b's layers in one pool
    held = -(-(8192 + k) // 16) * 16
    assert doc["max_batch"] == doc["budget"]["usable_bytes"] // (held * per_token)


def test_lookahead_leaves_vllms_own_concurrency_formula(cli) -> None:
    """vLLM's "Maximum concurrency" divides by max_memory_usage_bytes, which has no lookahead slots."""
    doc = cli.json(*FIT, "--speculative-model", "llama3.2-1b", "--num-speculative-tokens", "4")
    logged = {line["name"]: line["value"] for line in doc["engine_log"]}
    blocks = logged["gpu_kv_cache_tokens"] // 16
    assert logged["max_concurrency"] == pytest.approx(blocks / (8192 // 16))


def test_cuda_graph_sizes_follow_the_query_length(cli) -> None:
    """H100 defaults: max_num_seqs 1,024; K = 4 captures multiples of 5 up to 512 (vllm.py caps at 512)."""
    doc = cli.json(*FIT, "--speculative-model", "llama3.2-1b", "--num-speculative-tokens", "4")
    (term,) = [t for t in doc["budget"]["terms"] if t["name"] == "CUDA graphs"]
    sizes = capture_sizes(1024, 5)
    assert all(size % 5 == 0 and size <= 512 for size in sizes) and sizes[0] == 5
    assert term["bytes"] == CUDA_GRAPH_FIRST_BYTES + 2 * (len(sizes) - 1) * CUDA_GRAPH_EACH_BYTES


@given(st.integers(1, 2048), st.integers(1, 16))
def test_capture_sizes_are_multiples_of_the_query_length(seqs: int, query: int) -> None:
    sizes = capture_sizes(seqs, query)
    assert sizes == sorted(set(sizes)) and sizes
    assert all(size % query == 0 for size in sizes)
    assert max(sizes) <= max(min(2 * seqs * query, 512), query)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--num-speculative-tokens", "4"], "--num-speculative-tokens needs --speculative-model"),
        (["--speculative-model", "llama3.2-1b", "--num-speculative-tokens", "0"], "--num-speculative-tokens must be a positive"),
    ],
)
def test_bad_speculative_tokens_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli(*FIT, *args)
    assert result.exit_code == 2
    assert expected in result.stderr


@given(st.integers(1, 32), st.floats(0, 1))
def test_tokens_per_round_between_one_and_k_plus_one(k: int, alpha: float) -> None:
    found = tokens_per_round(k, alpha)
    assert 1 <= found <= k + 1 + 1e-9
    assert tokens_per_round(k, min(1.0, alpha + 0.01)) >= found


def test_speculative_decode_formula(cli) -> None:
    """round = K * draft step + max(t_memory, (K + 1) * t_compute) + fixed; per token = round / (1 + a + ... + a^K)."""
    doc = cli.json(*DECODE, "--speculative-model", "llama3.2-1b", "--num-speculative-tokens", "4", "--acceptance-rate", "0.7")
    spec, step = doc["speculative"], doc["decode"]["expected"]
    fixed = step["step_seconds"] + step["overhead_seconds"] + step["expert_loop_seconds"] + step["tp_comm_seconds"]
    verify = max(step["memory_seconds"], 5 * step["compute_seconds"]) + fixed
    assert spec["verify_seconds"] == pytest.approx(verify)
    assert spec["tokens_per_round"] == pytest.approx(1 + 0.7 + 0.7**2 + 0.7**3 + 0.7**4)
    assert spec["round_seconds"] == pytest.approx(4 * spec["draft_step_seconds"] + verify)
    assert spec["seconds_per_token"] == pytest.approx(spec["round_seconds"] / spec["tokens_per_round"])
    assert spec["tokens_per_s"] == pytest.approx(8 / spec["seconds_per_token"])
    draft = cli.json("decode", "--model", "llama3.2-1b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "4k", "--batch", "8")
    assert spec["draft_step_seconds"] == pytest.approx(draft["decode"]["expected_seconds_per_token"])


def test_speculative_decode_rejecting_everything_is_slower(cli) -> None:
    doc = cli.json(*DECODE, "--speculative-model", "llama3.2-1b", "--num-speculative-tokens", "4", "--acceptance-rate", "0")
    assert doc["speculative"]["tokens_per_round"] == 1
    assert doc["speculative"]["speedup"] < 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--speculative-model", "llama3.2-1b"], "give --num-speculative-tokens, --acceptance-rate"),
        (["--acceptance-rate", "0.5"], "give --speculative-model, --num-speculative-tokens"),
        (
            ["--speculative-model", "llama3.2-1b", "--num-speculative-tokens", "4", "--acceptance-rate", "1.5"],
            "--acceptance-rate 1.5 must be in [0, 1]",
        ),
        (
            ["--speculative-model", "llama3.2-1b", "--num-speculative-tokens", "0", "--acceptance-rate", "0.5"],
            "--num-speculative-tokens 0: must be from 1 to --seq - 1 (4,095)",
        ),
        (
            ["--speculative-model", "mtp", "--num-speculative-tokens", "1", "--acceptance-rate", "0.5"],
            "decode --speculative-model mtp is not modelled",
        ),
        (
            ["--speculative-model", "qwen3-0.6b", "--num-speculative-tokens", "1", "--acceptance-rate", "0.5"],
            "its vocabulary (151,936) differs from llama3.1-8b's (128,256)",
        ),
    ],
)
def test_bad_speculative_decode_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli(*DECODE, *args)
    assert result.exit_code == 2
    assert expected in result.stderr


def test_speculative_decode_explained(cli) -> None:
    result = cli(
        *DECODE, "--speculative-model", "llama3.2-1b", "--num-speculative-tokens", "2", "--acceptance-rate", "0.5", "--explain"
    )
    assert result.exit_code == 0, result.output
    assert "tokens per round = 1 + alpha + ... + alpha^K = 1.75 (Leviathan et al. 2023, eq. 1)" in result.stdout


SGLANG_FIT = ["fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "sglang", "--seq", "8k"]


def _term(doc: dict, prefix: str) -> dict:
    (term,) = [t for t in doc["budget"]["terms"] if t["name"].startswith(prefix)]
    return term


def test_sglang_second_pool_outside_the_static_fraction(cli) -> None:
    """SGLang sizes the target's pool first; the draft's weights and a second pool of as many tokens
    come out of the 1 - mem_fraction_static share (model_runner_kv_cache_mixin.py init_memory, 001ccef0).
    The default fraction reserves 2 GiB more for EAGLE-style heads (server_args.py): 0.835 -> 0.81 on an H100."""
    plain = cli.json(*SGLANG_FIT, "--mem-fraction-static", "0.81")
    doc = cli.json(*SGLANG_FIT, "--speculative-model", EAGLE3)
    assert doc["budget"]["utilization"] == 0.81
    assert doc["budget"]["usable_bytes"] == plain["budget"]["usable_bytes"]  # the target's pool is as before
    tokens = doc["pools"][0]["tokens"]
    assert _term(doc, "draft KV pool")["bytes"] == tokens * EAGLE3_TOKEN
    assert _term(doc, "draft model weights")["bytes"] == EAGLE3_PARAMS * 2
    unused = _term(plain, "not used")["bytes"]
    assert _term(doc, "not used")["bytes"] == unused - EAGLE3_PARAMS * 2 - tokens * EAGLE3_TOKEN
    assert sum(t["bytes"] for t in doc["budget"]["terms"]) + doc["budget"]["usable_bytes"] == doc["budget"]["memory_bytes"]


def test_sglang_standalone_draft_reserves_6_gib(cli) -> None:
    """A draft model of its own is SGLang's STANDALONE algorithm: 6 GiB more reserved, 0.835 -> 0.76 on an H100."""
    doc = cli.json(*SGLANG_FIT, "--speculative-model", "llama3.2-1b")
    assert doc["budget"]["utilization"] == 0.76


def test_sglang_draft_that_overflows_the_headroom_exits_1(cli) -> None:
    result = cli(*SGLANG_FIT, "--speculative-model", "llama3.2-1b", "--mem-fraction-static", "0.95")
    assert result.exit_code == 1
    assert "the draft llama3.2-1b needs" in result.stderr and "lower --mem-fraction-static" in result.stderr


TRTLLM_FIT = ["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "trtllm"]
# llama3-8b on one rank, each module's in + out: q 4,096 + 4,096, k and v 4,096 + 1,024, dense 4,096 + 4,096,
# h_to_4h and gate 4,096 + 14,336, 4h_to_h 14,336 + 4,096: pageWidth 5,120 (the smallest), the largest 18,432 (4 slots)
TRT_SLOTS = 64 * 32 * 7 * 4 * 4  # rank 64 * layers * modules * max_loras 4 * cdiv(18,432, 5,120)
TRT_PER_PAGE = 32 * 8 * (2 + 1 + 1 + 2 + 4 + 4 + 4)  # layers * sum(min(8, R) * cdiv(module, 5,120)) = 4,608
TRT_LORA = -(-TRT_SLOTS // TRT_PER_PAGE) * TRT_PER_PAGE * 5120 * 2  # 50 pages, bf16: 2,359,296,000 B


def test_trtllm_lora_device_cache_hand_worked(cli) -> None:
    """peftCacheManager.cpp getPageManagerConfig / getMaxNumSlots (NVIDIA/TensorRT-LLM 2a9abd95): the cache
    is live in the profiling run, so the KV loses 0.9 of it and the unused tenth the rest."""
    plain = cli.json(*TRTLLM_FIT)
    doc = cli.json(*TRTLLM_FIT, "--max-loras", "4", "--max-lora-rank", "64")
    assert doc["budget"]["lora_bytes"] == _term(doc, "LoRA device cache")["bytes"] == TRT_LORA == 2_359_296_000
    taken = plain["budget"]["usable_bytes"] - doc["budget"]["usable_bytes"]
    assert taken == pytest.approx(0.9 * TRT_LORA, abs=1)
    assert _term(plain, "not used")["bytes"] - _term(doc, "not used")["bytes"] == TRT_LORA - taken
    assert sum(t["bytes"] for t in doc["budget"]["terms"]) + doc["budget"]["usable_bytes"] == doc["budget"]["memory_bytes"]


def test_trtllm_draft_adds_its_bytes_per_token(cli) -> None:
    """KvCacheCreator._get_kv_size_per_token adds the draft's: one token count for both."""
    doc = cli.json(*TRTLLM_FIT, "--speculative-model", "llama3.2-1b")
    (pool,) = doc["pools"]
    assert pool["bytes_per_token"] == LLAMA3_8B_TOKEN + 16 * 2 * 8 * 64 * 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-loras", "4"], "--max-loras with --engine trtllm: give --max-lora-rank"),
        (["--max-loras", "4", "--max-lora-rank", "8", "--lora-dtype", "fp32"], "--lora-dtype is vLLM's"),
    ],
)
def test_bad_trtllm_lora_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli(*TRTLLM_FIT, *args)
    assert result.exit_code == 2
    assert expected in result.stderr


def test_lmcache_cpu_tier_hand_worked(cli) -> None:
    """LMCache: every rank's engine its own max_local_cpu_size (int(size * 1024**3)), chunks of 256 tokens
    aligned to 4 KiB (lmcache/v1/config.py, cache_engine.py calculate_chunk_budget). llama3-8b at tp 2:
    65,536 B per token per rank, a chunk 16 MiB, 5 GiB holds 320 chunks on each rank."""
    doc = cli.json(
        "fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--tp", "2", "--lmcache-cpu-size", "5GiB"
    )
    tier = doc["cpu_tier"]
    assert tier["tier"] == "lmcache"
    assert tier["bytes_per_rank"] == 5 * 2**30 and tier["bytes"] == 2 * 5 * 2**30
    assert tier["tokens"] == 5 * 2**30 // (256 * 65_536) * 256 == 81_920


def test_size_takes_the_draft_into_its_budget(cli) -> None:
    """size --gpu budgets as fit does: the draft's weights, and its KV beside the target's (vLLM)."""
    args = ["size", "--model", "llama3.1-8b", "--seq", "8k", "--gpu", "h100-sxm", "--engine", "vllm"]
    plain, doc = cli.json(*args)["fit"], cli.json(*args, "--speculative-model", EAGLE3)["fit"]
    assert _term(doc, "draft model weights")["bytes"] == EAGLE3_PARAMS * 2
    assert doc["budget"]["usable_bytes"] == plain["budget"]["usable_bytes"] - EAGLE3_PARAMS * 2
    assert doc["max_batch"] == doc["budget"]["usable_bytes"] // ((LLAMA3_8B_TOKEN + EAGLE3_TOKEN) * 8192)


# EAGLE-1: vLLM calls a draft EAGLE-1 when its name holds "eagle-" (vllm/config/speculative.py, yuhuili/EAGLE-LLaMA3-Instruct-8B)
# and builds EagleLlamaForCausalLM (llama_eagle.py, 0.19.0): one Llama decoder layer without its input norm, fc 2h x h,
# the target's embedding table and LM head. Counted by hand for a one-layer head of Llama-3-8B's shapes:
EAGLE1_PARAMS = 4096 * 6144 + 4096 * 4096 + 3 * 4096 * 14336 + 4096 + 2 * 4096 * 4096  # qkv, o, MLP, one norm, fc


def eagle1_config(tmp_path, name: str = "EAGLE-llama3-8b", **changed: int) -> str:
    """A one-layer draft config.json of Llama-3-8B's shapes (the repository's copy with num_hidden_layers 1, and any
    `changed` fields) in a folder whose name holds "eagle-" or not."""
    config = json.loads((HF_CONFIGS / "llama3-8b-config.json").read_text())
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1, **changed}))
    return str(folder / "config.json")


def test_eagle1_head_counted_as_vllm_builds_it(cli, tmp_path) -> None:
    fit = ["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "8k"]
    plain = cli.json(*fit)
    doc = cli.json(*fit, "--speculative-model", eagle1_config(tmp_path))
    (term,) = [t for t in doc["budget"]["terms"] if t["name"].startswith("draft model weights")]
    assert term["bytes"] == EAGLE1_PARAMS * 2 == 503_324_672
    assert doc["budget"]["usable_bytes"] == plain["budget"]["usable_bytes"] - EAGLE1_PARAMS * 2
    assert doc["max_batch"] == doc["budget"]["usable_bytes"] // ((LLAMA3_8B_TOKEN + EAGLE3_TOKEN) * 8192)
    result = cli(*fit, "--speculative-model", eagle1_config(tmp_path, "EAGLE-again"), "--explain")
    assert (
        "= 251,662,336 params * bf16 = 503,324,672 B (an EAGLE-1 head as vllm/model_executor/models/llama_eagle.py"
        in result.stdout
    )


def test_a_draft_without_eagle_in_its_name_is_a_model_of_its_own(cli, tmp_path) -> None:
    """The same config under another name is a one-layer model with its own embedding table and LM head."""
    fit = ["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "8k"]
    doc = cli.json(*fit, "--speculative-model", eagle1_config(tmp_path, "tiny-llama"))
    (term,) = [t for t in doc["budget"]["terms"] if t["name"].startswith("draft model weights")]
    assert term["bytes"] > EAGLE1_PARAMS * 2 + 2 * 128256 * 4096 * 2 - 2 * 4096 * 4096 * 2


def test_eagle1_head_refused_where_not_modelled(cli, tmp_path) -> None:
    result = cli(
        "fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "sglang", "--speculative-model", eagle1_config(tmp_path)
    )
    assert result.exit_code == 2
    assert (
        "an EAGLE-1 head ('eagle-' in its name, vLLM's rule) is modelled for --engine vllm and textbook, not sglang"
        in result.stderr
    )


def test_eagle1_head_of_a_moe_config_is_refused(cli, tmp_path) -> None:
    folder = tmp_path / "EAGLE-deepseek"
    folder.mkdir()
    (folder / "config.json").write_text((HF_CONFIGS / "deepseek-v3-config.json").read_text())
    result = cli(
        "fit", "--model", "deepseek-v3", "--gpu", "h200", "--tp", "8", "--speculative-model", str(folder / "config.json")
    )
    assert result.exit_code == 2
    assert "an EAGLE-1 head is counted for a dense Llama-style decoder only" in result.stderr


@pytest.mark.parametrize(
    ("field", "value", "named"), [("hidden_size", 5120, "hidden 5,120"), ("vocab_size", 32000, "vocab 32,000")]
)
def test_eagle1_head_of_another_width_or_vocabulary_is_refused(cli, tmp_path, field: str, value: int, named: str) -> None:
    """The head reads the target's hidden states and shares its embedding table and LM head (llama_eagle.py, eagle.py)."""
    draft = eagle1_config(tmp_path, **{field: value})
    result = cli("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--speculative-model", draft)
    assert result.exit_code == 2
    assert f"an EAGLE-1 head of {named} cannot run on llama3-8b's" in result.stderr


def test_an_eagle1_draft_step_reads_the_targets_lm_head(cli, tmp_path) -> None:
    """Each draft step runs the target's LM head, which the head shares (eagle.py _maybe_share_lm_head, 0.19.0):
    its weights read are the head's own and vocab x hidden, 128,256 x 4,096, in bf16."""
    decode = ["decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "4k", "--batch", "8"]
    spec = ["--num-speculative-tokens", "3", "--acceptance-rate", "0.7", "--explain"]
    result = cli(*decode, "--speculative-model", eagle1_config(tmp_path), *spec)
    assert result.exit_code == 0, result.output
    lm_head = 128_256 * 4_096
    assert lm_head * 2 <= (EAGLE1_PARAMS + lm_head) * 2 == 1_553_997_824
    assert "reading 1,553,997,824 B of weights per GPU: a step reads the head's 251,662,336 params and the target's LM head" in (
        result.stdout
    )


@pytest.mark.parametrize(("version", "noted"), [("0.6.3", True), ("0.12.0", True), ("0.19.0", False)])
def test_eagle1_rule_says_when_the_release_was_not_read(cli, tmp_path, version: str, noted: bool) -> None:
    fit = ["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--vllm-version", version, "--explain"]
    result = cli(*fit, "--speculative-model", eagle1_config(tmp_path))
    assert result.exit_code == 0, result.output
    assert (f"vLLM {version} is not read: its EAGLE-1 head is counted as 0.19.0 builds it" in result.stdout) is noted
