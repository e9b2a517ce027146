"""The memory each serving engine leaves for the KV cache, term by term, and the pools and log lines
that follow (docs/engines.md; research in engine_budgets.md). Each golden figure is computed by hand
from the rule the test names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvcalc.units import GiB, MiB

from .conftest import TEST_PRESETS

SWA = str(TEST_PRESETS / "tiny-swa.yaml")  # 4 layers (S F S F), 2 KV heads of 32, bf16, W = 16
H100 = 79 * GiB  # an H100's visible total, rounded: a memory both sides of the 70 GiB rule can use
LLAMA_WEIGHTS = 8_030_261_248 * 2  # llama3.1-8b, bf16, published count
LLAMA_TOKEN = 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads of 128, bf16: 131,072 B
# RoPE's cos/sin table: max_position_embeddings 131,072 rows of 128 rotated dims, bf16 (vLLM rotary_embedding/base.py
# RotaryEmbedding.__init__ casts it to the model dtype; SGLang keeps it fp32 on CUDA): 32 MiB on every GPU
LLAMA_ROTARY_BF16 = 131_072 * 128 * 2


def fit(cli, *args: str) -> dict:
    return cli.json("fit", "--model", "llama3.1-8b", *args)


def terms(doc: dict) -> dict[str, int]:
    return {term["name"]: term["bytes"] for term in doc["budget"]["terms"]}


def logged(doc: dict, name: str) -> dict:
    [line] = [line for line in doc["engine_log"] if line["name"] == name]
    return line


# vLLM (vllm/v1/worker/gpu_worker.py determine_available_memory)


def test_vllm_available_kv_is_its_fraction_of_total_less_weights_activations_and_non_torch(cli) -> None:
    # engine_budgets.md §2: A = max(forward, R * V * 15 + 2 * T * H * b), T = 8192, R = min(1024, T) on a GPU of
    # 70 GiB or more; non-torch 0.25 GiB on one GPU; vLLM 0.19 subtracts no CUDA-graph estimate.
    doc = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--gpu-memory-utilization", "0.95", "--vllm-version", "0.19")
    sampler = 1024 * 128_256 * 15 + 2 * 8192 * 4096 * 2
    forward = 8192 * 2 * (2 * 4096 + 3 * 14_336)  # the MLP's gate_up and act outputs dominate q, k and v
    assert sampler > forward
    non_torch = int(0.25 * GiB)
    assert terms(doc) == {
        "not used (1 - gpu_memory_utilization 0.95)": H100 - int(H100 * 0.95),
        "weights": LLAMA_WEIGHTS,
        "rotary cos/sin table": LLAMA_ROTARY_BF16,
        "activation peak": sampler,
        "non-torch memory": non_torch,
        "CUDA graphs": 0,
    }
    usable = int(H100 * 0.95) - LLAMA_WEIGHTS - LLAMA_ROTARY_BF16 - sampler - non_torch
    assert doc["budget"]["usable_bytes"] == usable and doc["budget"]["fraction"].startswith("gpu_memory_utilization")
    assert logged(doc, "available_kv_cache_memory_gib")["line"] == f"Available KV cache memory: {usable / GiB:.2f} GiB"
    blocks = usable // (16 * LLAMA_TOKEN)
    assert logged(doc, "gpu_kv_cache_tokens")["line"] == f"GPU KV cache size: {blocks * 16:,} tokens"
    assert logged(doc, "max_concurrency")["value"] == pytest.approx(blocks / 512)


def test_vllm_subtracts_its_cuda_graph_estimate_from_0_20_unless_eager(cli) -> None:
    # PR #30515, default since 0.20 (envs.py in the 0.20.0 wheel): first capture + (51 - 1) further graphs of each of PIECEWISE and FULL.
    default = fit(cli, "--memory", "79GiB", "--engine", "vllm")
    assert terms(default)["CUDA graphs"] == GiB // 4 + 2 * 50 * 6 * MiB
    eager = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--enforce-eager")
    assert terms(eager)["CUDA graphs"] == 0
    assert eager["budget"]["usable_bytes"] - default["budget"]["usable_bytes"] == GiB // 4 + 100 * 6 * MiB


def test_vllm_defaults_shrink_below_70_gib_and_on_an_a100(cli) -> None:
    # vllm/engine/arg_utils.py get_batch_defaults: max_num_batched_tokens 2048 and max_num_seqs 256 on an A100.
    doc = fit(cli, "--gpu", "a100-80gb", "--engine", "vllm", "--vllm-version", "0.19")
    assert doc["budget"]["engine"]["max_num_batched_tokens"] == 2048
    assert terms(doc)["activation peak"] == 256 * 128_256 * 15 + 2 * 2048 * 4096 * 2


def test_vllm_more_batched_tokens_profile_more_activations(cli) -> None:
    small = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--max-num-batched-tokens", "2048", "--max-num-seqs", "64")
    large = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--max-num-batched-tokens", "65536", "--max-num-seqs", "64")
    assert terms(large)["activation peak"] == 65536 * 2 * (2 * 4096 + 3 * 14_336)  # the forward now dominates
    assert large["budget"]["usable_bytes"] < small["budget"]["usable_bytes"]


def test_vllm_moe_workspaces_add_to_the_peak(cli) -> None:
    # fused_moe.py TritonExperts.workspace_shapes: (T, k, max(I, H)) + (T, k, max(2I, H)) + (T, H), kept by the
    # WorkspaceManager through the sampler step. qwen3-30b-a3b: H 2048, 8 of 128 experts of 768, vocab 151,936.
    doc = cli.json("fit", "--model", "qwen3-30b-a3b", "--memory", "79GiB", "--engine", "vllm", "--vllm-version", "0.19")
    workspace = 8192 * 2 * (8 * (2048 + 2048) + 2048)
    sampler = 1024 * 151_936 * 15 + 2 * 8192 * 2048 * 2
    assert terms(doc)["activation peak"] == sampler + workspace


def test_vllm_pipeline_binds_on_the_last_stage_which_runs_the_sampler(cli) -> None:
    doc = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--pp", "2", "--vllm-version", "0.19")
    assert doc["budget"]["stage"] == 1 and terms(doc)["activation peak"] == 1024 * 128_256 * 15 + 2 * 8192 * 4096 * 2
    assert terms(doc)["non-torch memory"] == int(0.07 * GiB)


def test_vllm_tensor_parallel_adds_its_all_reduce_buffers(cli) -> None:
    doc = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--tp", "2")
    assert terms(doc)["non-torch memory"] == int(2.1 * GiB) and terms(doc)["weights"] == LLAMA_WEIGHTS // 2


def test_vllm_kv_cache_memory_bytes_is_the_answer(cli) -> None:
    doc = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--kv-cache-memory-bytes", "20GiB")
    assert doc["budget"]["usable_bytes"] == 20 * GiB
    assert sum(terms(doc).values()) + 20 * GiB == H100
    result = cli("fit", "--model", "llama3.1-8b", "--memory", "79GiB", "--engine", "vllm", "--kv-cache-memory-bytes", "70GiB")
    assert result.exit_code == 1 and "exceed the memory by" in result.stdout


def test_reserve_replaces_the_modelled_overheads(cli) -> None:
    doc = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--reserve", "2GiB")
    assert terms(doc)["reserve (--reserve)"] == 2 * GiB and "activation peak" not in terms(doc)
    usable = int(H100 * 0.92) - LLAMA_WEIGHTS - LLAMA_ROTARY_BF16 - 2 * GiB  # 0.92: the default from vLLM 0.20
    assert doc["budget"]["usable_bytes"] == usable  # the rotary table is the model's: --reserve does not replace it


def test_vllm_max_num_seqs_caps_the_batch(cli) -> None:
    doc = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--seq", "1024", "--max-num-seqs", "32")
    assert doc["max_batch"] == 32 and doc["max_batch_limit"] == "max_seqs"


# SGLang (model_runner_kv_cache_mixin.py profile_max_num_token, server_args.py _handle_gpu_memory_settings)


def test_sglang_default_fraction_follows_gpu_memory(cli) -> None:
    # serving-engines.md §1.2: H100 (81,559 MiB), TP1: reserved 512 + 8192 * 1.5 + 256 * 2 + 1/8 * 1024 = 13,440 MiB
    # -> (81,559 - 13,440) / 81,559 = 0.835.
    doc = fit(cli, "--gpu", "h100-sxm", "--engine", "sglang")
    assert doc["budget"]["utilization"] == 0.835


def test_sglang_keeps_its_fraction_of_the_memory_free_before_loading(cli) -> None:
    # rest = free after loading - free before * (1 - f) = f * free before - weights; --reserve 0: all of it free.
    doc = fit(cli, "--memory", "79GiB", "--engine", "sglang", "--mem-fraction-static", "0.85", "--reserve", "0")
    usable = int(H100 * 0.85) - LLAMA_WEIGHTS - 2 * LLAMA_ROTARY_BF16  # SGLang keeps the rotary table in fp32 on CUDA
    assert doc["budget"]["usable_bytes"] == usable
    [pool] = doc["pools"]
    assert pool["tokens"] == usable // LLAMA_TOKEN and pool["window"] is None
    assert logged(doc, "max_total_num_tokens")["value"] == pool["tokens"]
    k_size = (pool["tokens"] + 1) * LLAMA_TOKEN // 2 / GiB  # page_size 1 extra slot, K half of each token's bytes
    line = logged(doc, "full_pool_tokens")["line"]
    assert line == f"KV Cache is allocated. #tokens: {pool['tokens']:,}, K size: {k_size:.2f} GB, V size: {k_size:.2f} GB"


def test_sglang_pages_and_token_cap(cli) -> None:
    args = ("--memory", "79GiB", "--engine", "sglang", "--mem-fraction-static", "0.85")
    paged = fit(cli, *args, "--page-size", "64")
    assert paged["pools"][0]["tokens"] % 64 == 0
    capped = fit(cli, *args, "--max-total-tokens", "100000", "--seq", "4096")
    assert capped["pools"][0]["tokens"] == 100_000 and capped["max_batch"] == 100_000 // 4096


def test_sglang_req_to_token_table_comes_from_the_headroom(cli) -> None:
    # memory_pool.py ReqToTokenPool: max_running_requests * (context_len + 4) int32; the default requests
    # min(max(int(tokens / context_len * 512), 2048), 4096).
    doc = fit(cli, "--memory", "79GiB", "--engine", "sglang", "--max-running-requests", "100")
    table = logged(doc, "req_to_token_bytes")
    assert table["value"] == 100 * (131_072 + 4) * 4 and table["line"] == "max_running_requests=100"


def test_sglang_hybrid_swa_pools(cli, tmp_path) -> None:
    # set_num_tokens_hybrid_swa: full = total * (F + S) / (F + r * S), swa = r * full; a sequence holds s tokens in
    # the full pool and min(s, W) in the sliding one. tiny-swa with a million parameters: 2 sliding + 2 full
    # layers of 256 B per token.
    model = tmp_path / "swa.yaml"
    model.write_text(Path(SWA).read_text() + "params: 1000000\n")
    doc = cli.json(
        "fit", "--model", str(model), "--memory", "1GiB", "--engine", "sglang", "--mem-fraction-static", "0.5",
        "--reserve", "0", "--swa-full-tokens-ratio", "0.8", "--seq", "64",
    )  # fmt: skip
    full, swa = doc["pools"]
    total = (GiB // 2 - doc["budget"]["weights_bytes"]) // (4 * 256)
    assert full["tokens"] == int(total * 1024 / (512 + 0.8 * 512)) and swa["tokens"] == int(full["tokens"] * 0.8)
    assert swa["window"] == 16
    assert doc["max_batch"] == min(full["tokens"] // 64, swa["tokens"] // 16)
    without = cli.json(
        "fit", "--model", str(model), "--memory", "1GiB", "--engine", "sglang", "--mem-fraction-static", "0.5", "--seq", "64"
    )
    assert [pool["name"] for pool in without["pools"]] == ["full"]  # sliding layers held as full ones


def test_sglang_mla_pool_is_one_latent(cli) -> None:
    # memory_pool.py MLATokenToKVPool: kv_lora_rank + rope per token per layer; deepseek-v3: 61 * 576 * 2 B.
    doc = cli.json("fit", "--model", "deepseek-v3", "--memory", "141GiB", "--tp", "8", "--engine", "sglang")
    assert doc["pools"][0]["bytes_per_token"] == 61 * 576 * 2
    assert "KV size:" in logged(doc, "full_pool_tokens")["line"]


# TensorRT-LLM (_torch/pyexecutor/_util.py KvCacheCreator._cal_max_memory)


def test_trtllm_takes_its_fraction_of_what_is_free_after_the_peak(cli) -> None:
    doc = fit(cli, "--memory", "79GiB", "--engine", "trtllm")
    forward = 8192 * 2 * (2 * 4096 + 3 * 14_336)  # logits of one request: 8192 tokens over max_seq_len 131,072
    non_torch = int(0.76 * GiB)
    assert terms(doc)["activation peak"] == forward and terms(doc)["non-torch memory"] == non_torch
    rotary = 2 * LLAMA_ROTARY_BF16  # RopeParams.create_rope_const_params: fp32, once per model
    assert terms(doc)["rotary cos/sin table"] == rotary
    free = H100 - LLAMA_WEIGHTS - rotary - forward - non_torch
    assert doc["budget"]["usable_bytes"] == int(free * 0.9)
    [pool] = doc["pools"]
    assert pool["tokens"] == int(free * 0.9) // (32 * LLAMA_TOKEN) * 32
    line = logged(doc, "max_tokens")["line"]
    assert (
        line == f"[MemUsageChange] Allocated {pool['bytes'] / GiB:.2f} GiB for max tokens in paged KV cache ({pool['tokens']:,})."
    )


def test_a_tensorrt_engine_build_sizes_its_activations_for_its_max_num_tokens(cli) -> None:
    # https://github.com/NVIDIA/TensorRT-LLM/issues/224: a 0.5 Llama-2-7B fp16 engine built with --max_batch_size 25 and
    # build.py's default --max_input_len 2048 (no --max_num_tokens), so its inputs take up to 25 * 2,048 = 51,200 tokens;
    # on an A10 with kv_cache_free_gpu_mem_fraction 0.95 it logged 10,718 tokens, 5.23 GiB
    args = ("--gpu", "a10", "--seq", "4096", "--engine", "trtllm", "--free-gpu-memory-fraction", "0.95")
    doc = cli.json("fit", "--model", "llama2-7b", *args, "--max-num-tokens", "51200")
    assert terms(doc)["activation peak"] == 51_200 * 2 * (2 * 4096 + 3 * 11_008)  # the forward of 51,200 tokens binds
    (activation,) = [term for term in doc["budget"]["terms"] if term["name"] == "activation peak"]
    assert "sizes its activations when built, for the build's max_num_tokens" in activation["source"]
    a10 = 24_146_608_128
    assert abs(doc["budget"]["usable_bytes"] - 5.23 * GiB) < 0.02 * a10  # within 2 % of the GPU (-1.1 %)
    # the PyTorch backend's default estimation run of 8,192 tokens leaves 2.9 GiB more than the engine had
    default = cli.json("fit", "--model", "llama2-7b", *args)
    assert default["budget"]["usable_bytes"] - 5.23 * GiB > 0.1 * a10


def test_trtllm_max_tokens_caps_the_pool(cli) -> None:
    doc = fit(cli, "--memory", "79GiB", "--engine", "trtllm", "--max-tokens", "50000", "--tokens-per-block", "64")
    assert doc["pools"][0]["tokens"] == 50_000 // 64 * 64


def test_trtllm_shares_memory_between_window_pools(cli) -> None:
    # calculateWindowSizeToShare: share ∝ bytes per token * window, a full layer's window max_seq_len.
    # gemma2-9b: 21 sliding layers of W 4096 and 21 full ones at max_seq_len 8192: 1/3 and 2/3.
    doc = cli.json("fit", "--model", "gemma2-9b", "--memory", "79GiB", "--engine", "trtllm", "--seq", "4096")
    by_window = {pool["window"]: pool for pool in doc["pools"]}
    usable = doc["budget"]["usable_bytes"]
    per_token = 21 * 2 * 8 * 256 * 2
    assert by_window[4096]["tokens"] == usable * 4096 // (4096 + 8192) // (32 * per_token) * 32
    assert by_window[None]["tokens"] == usable * 8192 // (4096 + 8192) // (32 * per_token) * 32


def test_trtllm_max_seq_len_sizes_the_full_pool_and_caps_the_context(cli) -> None:
    # the full layers' window is max_seq_len: gemma3-12b has 40 sliding layers of W 1024 and 8 full ones
    # (8,192 B per token each); at max_seq_len 8192 the sliding pool gets 40 * 1024 / (40 * 1024 + 8 * 8192).
    doc = cli.json("fit", "--model", "gemma3-12b", "--memory", "79GiB", "--engine", "trtllm", "--max-seq-len", "8192")
    sliding = next(pool for pool in doc["pools"] if pool["window"] == 1024)
    share = doc["budget"]["usable_bytes"] * (40 * 8192 * 1024) // (40 * 8192 * 1024 + 8 * 8192 * 8192)
    assert sliding["tokens"] == share // (32 * 40 * 8192) * 32
    assert doc["max_context"] == 8192 and doc["max_context_limit"] == "max_seq_len"
    result = cli("size", "--model", "gemma3-12b", "--seq", "9000", "--engine", "trtllm", "--max-seq-len", "8192")
    assert result.exit_code == 2 and "--seq 9000 exceeds TensorRT-LLM's --max-seq-len 8192" in result.stderr


def test_trtllm_caches_mla_with_kv_factor_1(cli) -> None:
    doc = cli.json("size", "--model", "deepseek-v3", "--seq", "1024", "--engine", "trtllm")
    assert doc["kv"]["bytes_per_token"] == 61 * 576 * 2


# Options belong to their engine; plans and compare use them


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "vllm", "--mem-fraction-static", "0.8"], "--mem-fraction-static applies to --engine sglang, not vllm"),
        (["--engine", "sglang", "--tokens-per-block", "64"], "--tokens-per-block applies to --engine trtllm, not sglang"),
        (["--gpu-memory-utilization", "0.9"], "--gpu-memory-utilization applies to --engine vllm, not textbook"),
        (
            ["--engine", "vllm", "--utilization", "0.8"],
            "--utilization does not apply to --engine vllm: it takes --gpu-memory-utilization",
        ),
        (["--engine", "trtllm", "--free-gpu-memory-fraction", "1"], "--free-gpu-memory-fraction: Input should be less than 1"),
        (["--engine", "trtllm", "--tokens-per-block", "48"], "--tokens-per-block: must be a power of two greater than 1, got 48"),
        (["--engine", "sglang", "--block-size", "16"], "--block-size does not apply to --engine sglang"),
        (
            ["--engine", "sglang", "--swa-full-tokens-ratio", "0.8"],
            "--swa-full-tokens-ratio: llama3.1-8b has no sliding-window layers",
        ),
        (["--engine", "vllm", "--vllm-version", "new"], "--vllm-version: cannot read version 'new'"),
        (["--engine", "vllm", "--kv-cache-memory-bytes", "lots"], "--kv-cache-memory-bytes: cannot read size 'lots'"),
        (["--engine", "vllm", "--max-seqs", "8"], "--engine vllm caps sequences with --max-num-seqs"),
        (["--engine", "sglang", "--max-seqs", "8"], "--engine sglang caps sequences with --max-running-requests"),
        (["--engine", "vllm", "--max-num-seqs", "0"], "--max-num-seqs must be a positive integer, got 0"),
        (["--engine", "sglang", "--memory", "2GiB"], "SGLang's default mem_fraction_static for 2,048 MiB is -0.82"),
    ],
)
def test_engine_budget_options_that_do_not_apply(cli, args: list[str], expected: str) -> None:
    result = cli("fit", "--model", "llama3.1-8b", "--memory", "79GiB", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_compare_all_six_engines_each_by_its_own_budget(cli) -> None:
    names = ["textbook", "hf", "vllm", "llamacpp", "sglang", "trtllm"]
    doc = cli.json("compare", *names, "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--seq", "8192")
    rows = {row["name"]: row for row in doc["variants"]}
    assert list(rows) == names
    usable = {name: fit(cli, "--gpu", "h100-sxm", "--engine", name)["budget"]["usable_bytes"] for name in names}
    assert {name: row["fit"]["usable_bytes"] for name, row in rows.items()} == usable
    assert len({usable["textbook"], usable["vllm"], usable["sglang"], usable["trtllm"]}) == 4
    result = cli("compare", "vllm", "sglang", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--utilization", "0.8")
    assert (
        result.exit_code == 2 and "--utilization applies to textbook, hf and llamacpp, none of which is compared" in result.stderr
    )


def test_check_plan_takes_an_engine_with_its_options(cli, tmp_path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "workloads:\n"
        "  - name: chat\n    model: llama3.1-8b\n    gpu: h100-sxm\n    seq: 8192\n"
        "    engine: {name: sglang, mem_fraction_static: 0.85}\n    expect: {max_batch_at_least: 1}\n"
    )
    [verdict] = cli.json("check", str(plan))["workloads"]
    doc = fit(cli, "--gpu", "h100-sxm", "--engine", "sglang", "--mem-fraction-static", "0.85")
    assert verdict["usable_bytes"] == doc["budget"]["usable_bytes"] and verdict["max_batch"] == doc["max_batch"]
    plan.write_text(
        "workloads:\n  - {name: a, model: llama3.1-8b, gpu: h100-sxm, seq: 8, engine: {name: sglang}, utilization: 0.8}\n"
    )
    result = cli("check", str(plan))
    assert result.exit_code == 2 and "does not apply to --engine sglang" in result.stderr


def test_textbook_keeps_its_flat_reserve(cli) -> None:
    doc = fit(cli, "--memory", "79GiB")
    assert terms(doc)["reserve (runtime, activations)"] == GiB
    assert doc["budget"]["usable_bytes"] == int(H100 * 0.9) - LLAMA_WEIGHTS - GiB


@pytest.mark.parametrize("version", ["0.19.2rc1", "0.11.0+cu128", "v0.10.1.1", "0.19.2rc1.dev134+gfe9c3d6c5", "0.19"])
def test_vllm_version_is_read_as_vllm_prints_it(cli, version: str) -> None:
    # vLLM's start-up line "vLLM API server version 0.10.1.1" and its dev builds (published logs)
    doc = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--vllm-version", version)
    assert terms(doc)["CUDA graphs"] == 0  # all before 0.20: no CUDA-graph estimate subtracted


def test_vllm_flags_as_vllm_spells_them(cli) -> None:
    eager = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--enforce-eager")
    graphs = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--no-enforce-eager")
    assert terms(eager)["CUDA graphs"] == 0 < terms(graphs)["CUDA graphs"]


# Weights as vLLM loads them and its buffers by interconnect (kvcalc/engines/vllm.py)


def test_mxfp4_experts_load_padded_to_marlin_tiles(cli) -> None:
    # vllm mxfp4.py create_weights: Marlin pads hidden 2880 -> 3072 (256) and the intermediate per rank
    # 2880 -> 2944 (128); per expert 3hi/2 + 3hi/32 bytes + bf16 biases 2(2i + h); 36 layers * 128 experts.
    def expert(h: int, i: int) -> int:
        return 3 * h * i // 2 + 3 * h * i // 32 + 2 * (2 * i + h)

    result = cli("fit", "--model", "gpt-oss-120b", "--gpu", "h100-sxm", "--engine", "vllm", "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 1 and doc["verdict"] == "does not fit"  # as vLLM refused it: a negative KV budget
    padding = terms(doc)["weights as loaded: MXFP4 expert padding"]
    assert padding == 36 * 128 * (expert(3072, 2944) - expert(2880, 2880)) == 5_507_776_512
    # vllm-project/vllm#23278 (H100, v0.10.1): "Model loading took 65.9651 GiB"; kvcalc loads within 0.1 GiB
    assert abs(terms(doc)["weights"] + padding - 65.9651 * GiB) < 0.1 * GiB


def test_mxfp4_padding_follows_the_rank_share_and_the_gpu(cli) -> None:
    args = ("fit", "--model", "gpt-oss-120b", "--engine", "vllm", "--tp", "4", "--interconnect", "pcie")
    a100 = terms(json.loads(cli(*args, "--gpu", "a100-80gb", "--json").stdout))
    b200 = terms(json.loads(cli(*args, "--gpu", "b200", "--json").stdout))
    # Marlin on an A100: intermediate per rank 720 -> 768; FlashInfer on SM100: 720 -> 768 (256) and hidden 3072 alike
    assert a100["weights as loaded: MXFP4 expert padding"] == b200["weights as loaded: MXFP4 expert padding"] > 0
    assert "weights as loaded: MXFP4 expert padding" not in terms(fit(cli, "--gpu", "h100-sxm", "--engine", "vllm"))


def test_tensor_parallel_buffers_follow_the_interconnect(cli) -> None:
    args = ("--engine", "vllm", "--tp", "2", "--vllm-version", "0.19")
    nvlink = terms(fit(cli, "--gpu", "h100-sxm", "--interconnect", "nvlink", *args))["non-torch memory"]
    unknown = terms(fit(cli, "--gpu", "h100-sxm", *args))["non-torch memory"]
    pcie = terms(fit(cli, "--gpu", "h100-sxm", "--interconnect", "pcie", *args))["non-torch memory"]
    ampere = terms(fit(cli, "--gpu", "a100-80gb", "--interconnect", "nvlink", *args))["non-torch memory"]
    assert nvlink == unknown == int(2.1 * GiB)  # the v0.19 H100 NVSwitch logs; unknown links: the larger
    assert pcie == ampere == GiB // 4  # no NVLS without NVLink on Hopper+: as one GPU


def test_interconnect_is_checked(cli) -> None:
    result = cli("fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--interconnect", "infiniband")
    assert result.exit_code == 2 and "--interconnect 'infiniband': choose nvlink, xgmi, pcie-p2p or pcie" in result.stderr


def test_an_unknown_vllm_release_gets_the_larger_sampler(cli) -> None:
    # the versioned logs fit 15 B per logit; without --vllm-version the largest published, 38 (llm-d-planner empirical)
    def activation(*version: str) -> int:
        return terms(fit(cli, "--memory", "79GiB", "--engine", "vllm", *version))["activation peak"]

    # 0.17.0 and 0.19.1 run the Triton top-k/top-p path (15 B), as the v0.19 logs fit; 0.12.0 sorts (38 B:
    # vllm/v1/sample/ops/topk_topp_sampler.py, FlashInfer opt-in from 0.11.1, the Triton path from 0.17.0)
    new, first, unknown = activation("--vllm-version", "0.19.1"), activation("--vllm-version", "0.17.0"), activation()
    assert new == first and unknown - new == 1024 * 128_256 * (38 - 15) == activation("--vllm-version", "0.12.0") - new


# The verdict: fits, tight (within the engine's calibration error), does not fit


def test_a_fit_within_the_calibration_error_is_tight(cli) -> None:
    roomy = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--seq", "8192", "--batch", "1")
    from kvcalc.engines import PROFILES

    error = PROFILES["vllm"].calibration_error_percent  # docs/engines.md: the held-out 90th percentile
    assert roomy["verdict"] == "fits" and roomy["margin_bytes"] == round(79 * GiB * error / 100)
    best = roomy["max_batch"]
    tight = fit(cli, "--memory", "79GiB", "--engine", "vllm", "--seq", "8192", "--batch", str(best))
    assert tight["verdict"] == "tight" and 0 <= tight["headroom_bytes"] < tight["margin_bytes"]
    args = ("fit", "--model", "llama3.1-8b", "--memory", "79GiB", "--engine", "vllm", "--batch", str(best + 1), "--json")
    over = json.loads(cli(*args).stdout)
    assert over["verdict"] == "does not fit" and over["headroom_bytes"] == -over["shortfall_bytes"] < 0
    text = cli("fit", "--model", "llama3.1-8b", "--memory", "79GiB", "--engine", "vllm", "--batch", str(best))
    assert text.exit_code == 0 and "tight: fits with" in text.stdout and "calibration error" in text.stdout


def test_exact_rules_have_no_margin(cli) -> None:
    doc = fit(cli, "--memory", "79GiB", "--seq", "8192")
    assert doc["margin_bytes"] == 0 and doc["verdict"] == "fits"


# Hybrid models as vLLM reports them (kvcalc/engines/vllm.py hybrid_pool)


def hybrid(cli, *args: str) -> dict:
    result = cli("fit", "--model", "qwen3-next-80b-a3b", "--engine", "vllm", "--tp", "4", "--seq", "32768", *args, "--json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_vllm_hybrid_token_line_by_release(cli) -> None:
    # Qwen3-Next: 12 full-attention and 36 Gated DeltaNet layers: groups of 12, one attention and three state groups;
    # a request takes cdiv(32768, block) blocks of the attention group and one block of each state group.
    old, new = (
        hybrid(cli, "--memory", "79GiB", "--vllm-version", "0.19"),
        hybrid(cli, "--memory", "79GiB", "--vllm-version", "0.20.2rc1"),
    )
    for doc in (old, new):
        blocks = logged(doc, "mamba_cache_blocks")["value"]
        block = doc["engine_log"][-2]["value"] if doc["engine_log"][-2]["name"] == "attention_block_size" else 16
        per_request = -(-32768 // block) + 3
        assert logged(doc, "max_concurrency")["value"] == pytest.approx(blocks / per_request)
    assert logged(old, "gpu_kv_cache_tokens")["value"] == logged(old, "mamba_cache_blocks")["value"] // 4 * 272
    assert logged(new, "gpu_kv_cache_tokens")["value"] == int(logged(new, "max_concurrency")["value"] * 32768)


def test_vllm_refuses_more_sequences_than_mamba_blocks(cli) -> None:
    doc = hybrid(cli, "--memory", "41GiB", "--gpu-memory-utilization", "0.95", "--max-num-seqs", "1024", "--reserve", "0")
    blocks = int(logged(doc, "mamba_cache_blocks")["value"])
    assert 0 < blocks < 1024 and doc["verdict"] == "does not fit" and not doc["fits"]
    assert doc["refused"] == (
        f"vLLM refuses to start: max_num_seqs (1,024) exceeds available Mamba cache blocks ({blocks:,}); --max-num-seqs {blocks:,} or less starts"
    )
    starts = hybrid(cli, "--memory", "41GiB", "--gpu-memory-utilization", "0.95", "--max-num-seqs", str(blocks), "--reserve", "0")
    assert starts["refused"] is None
    eager = hybrid(
        cli,
        "--memory",
        "41GiB",
        "--gpu-memory-utilization",
        "0.95",
        "--max-num-seqs",
        "1024",
        "--reserve",
        "0",
        "--enforce-eager",
    )
    assert eager["refused"] is None  # the check guards CUDA-graph capture
