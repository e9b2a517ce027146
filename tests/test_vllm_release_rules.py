"""vLLM's budget rules by entry point and release (kvcalc/engines/vllm.py, kvcalc/engines/activations.py): the
offline LLM class' batch defaults, the GPU tiers each release uses, V0's eager forward peak (and 0.8.x's V0 fallback
for n-gram speculation), the CUDA-graph default of 0.20 and development builds. Each rule cites the vLLM wheel it was
read in; the goldens come from the published start-up logs named beside them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc.engines.activations import forward_transient, v0_forward_transient
from kvcalc.engines.base import GpuMemory
from kvcalc.engines.vllm import (
    default_max_num_batched_tokens,
    default_max_num_seqs,
    default_utilization,
    development_build_note,
    runs_v0,
)
from kvcalc.presets import load_model
from kvcalc.spec import Engine, ModelSpec, Workload
from kvcalc.units import GiB
from tests.scripts import load_script

importer = load_script("scripts/import_published_logs.py")

H100 = GpuMemory(total_bytes=80 * GiB, name="h100-sxm")
A100 = GpuMemory(total_bytes=80 * GiB, name="a100-80gb")
L40S = GpuMemory(total_bytes=44 * GiB, name="l40s")
B200 = GpuMemory(total_bytes=179 * GiB, name="b200")


def _tokens(gpu: GpuMemory, version: str | None, entrypoint: str | None = None) -> int:
    return default_max_num_batched_tokens(gpu, Engine(name="vllm", vllm_version=version, vllm_entrypoint=entrypoint))[0]


@pytest.mark.parametrize(
    ("gpu", "version", "serve", "llm", "seqs"),
    [
        (H100, "0.8.3", 8192, 16384, 1024),  # 0.8.0-0.8.3: H100/H200 by name, 1,024 sequences everywhere
        (L40S, "0.8.3", 2048, 8192, 1024),
        (L40S, "0.8.4", 2048, 8192, 256),  # 0.8.4: 256 below the large tier
        (A100, "0.8.4", 2048, 8192, 256),  # by name: an 80 GB A100 is not an H100
        (A100, "0.8.5", 8192, 16384, 1024),  # 0.8.5: 70 GiB or more, A100 included
        (A100, "0.9.0", 2048, 8192, 256),  # 0.9.0 on: not an A100 (PR #17885)
        (H100, "0.9.1", 8192, 16384, 1024),
        (B200, "0.27.1", 8192, 16384, 1024),
        (B200, "0.28.0", 16384, 16384, 1024),  # 0.28: 160 GiB or more batches 16,384 under vllm serve too
    ],
)
def test_batch_defaults_by_release_and_entry_point(gpu: GpuMemory, version: str, serve: int, llm: int, seqs: int) -> None:
    # vllm/engine/arg_utils.py of each wheel: _set_default_args_v1 (0.8.x), get_batch_defaults (0.19 on)
    assert _tokens(gpu, version) == _tokens(gpu, version, "serve") == serve
    assert _tokens(gpu, version, "llm") == llm
    assert default_max_num_seqs(gpu, version) == seqs


@given(
    memory_gib=st.integers(min_value=1, max_value=159),
    version=st.sampled_from(["0.8.0", "0.8.4", "0.8.5", "0.9.1", "0.19.0", "0.30.0"]),
)
def test_the_llm_class_batches_more_than_the_server_below_160_gib(memory_gib: int, version: str) -> None:
    gpu = GpuMemory(total_bytes=memory_gib * GiB, name="h100-sxm" if memory_gib >= 70 else None)
    serve, llm = _tokens(gpu, version), _tokens(gpu, version, "llm")
    assert llm in (2 * serve, 4 * serve)  # 16384 vs 8192, or 8192 vs 2048


def test_the_llm_class_profiles_16384_tokens_on_the_0_9_1_notebook_gpu(cli) -> None:
    # https://github.com/brendanmckeag/sglang-vllm-benchmark/blob/e55866de268101bf4e0c4b9691d07051707aecc1/run_benchmarks.ipynb:
    # vLLM 0.9.1, LLM(model, gpu_memory_utilization=0.8, max_model_len=2048, enforce_eager=True), "Total: 79.1GB"
    args = ["fit", "--model", "qwen2.5-7b", "--memory", "79.1GiB", "--seq", "2048", "--engine", "vllm", "--vllm-version", "0.9.1"]
    args += ["--gpu-memory-utilization", "0.8", "--enforce-eager"]
    llm, serve = cli.json(*args, "--vllm-entrypoint", "llm"), cli.json(*args)
    assert llm["budget"]["engine"]["max_num_batched_tokens"] == 16384
    assert serve["budget"]["engine"]["max_num_batched_tokens"] == 8192
    activation = next(term for term in llm["budget"]["terms"] if term["name"] == "activation peak")
    assert "the offline LLM class (--vllm-entrypoint llm)" in activation["formula"]


@pytest.mark.parametrize("value", ["offline", "", "LLMEngine"])
def test_a_bad_entry_point_exits_2_with_one_line(cli, value: str) -> None:
    result = cli("fit", "--model", "qwen2.5-7b", "--gpu", "h100-sxm", "--engine", "vllm", "--vllm-entrypoint", value)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--vllm-entrypoint" in result.stderr and "use serve (vllm serve) or llm" in result.stderr


def test_a_check_plan_takes_the_entry_point(cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "workloads:\n  - {name: offline, model: qwen2.5-7b, gpu: h100-sxm, seq: 2048,"
        " engine: {name: vllm, vllm_version: 0.9.1, vllm_entrypoint: llm}, expect: {fits: true}}\n"
    )
    assert cli("check", plan).exit_code == 0
    plan.write_text(plan.read_text().replace("vllm_entrypoint: llm", "vllm_entrypoint: LLM"))  # as the CLI takes it
    assert cli("check", plan).exit_code == 0
    plan.write_text(plan.read_text().replace("vllm_entrypoint: LLM", "vllm_entrypoint: offline"))
    result = cli("check", plan)
    assert result.exit_code == 2 and "vllm_entrypoint" in result.stderr


@pytest.mark.parametrize(
    ("model", "tokens", "tp", "logged_gib"),
    [
        # https://github.com/vllm-project/vllm/issues/16883: vLLM 0.8.4 on V0, TP 4, 131,072 batched tokens, "activation 11.32GiB"
        ("qwen2.5-coder-32b", 131072, 4, 11.32),
        # https://github.com/daxdelvira/distributed_agent_gc/blob/23e938e6b089a126c780dd7cd3b33b500efe58ee/logs/vllm.log: 0.7.2, TP 2
        ("qwen2.5-14b", 32768, 2, 2.84),
    ],
)
def test_v0_forward_under_tensor_parallelism_matches_the_logged_peak(model: str, tokens: int, tp: int, logged_gib: float) -> None:
    spec = load_model(model)
    peak, formula = v0_forward_transient(spec, range(spec.layers), tokens, tp, 2)
    assert peak / GiB == pytest.approx(logged_gib, abs=0.02)
    assert peak == tokens * 2 * (5 * spec.hidden + 3 * spec.intermediate // tp)  # Qwen2MLP: 5H + 3I/tp
    assert "5H" in formula


def test_v0_forward_on_one_gpu_holds_4h_plus_3i() -> None:
    # https://github.com/vllm-project/vllm/issues/10517 (Llama-3.1-8B, RTX 3090, 20,000 tokens): logged 2.07 GiB, LlamaMLP's
    # 3H + 3I; kvcalc charges Qwen2MLP's 4H + 3I, the larger of V0's two MLP codes
    spec = load_model("llama3.1-8b")
    peak, _ = v0_forward_transient(spec, range(spec.layers), 20000, 1, 2)
    assert peak == 20000 * 2 * (4 * 4096 + 3 * 14336)
    assert peak > int(2.07 * GiB)


@given(
    hidden=st.integers(min_value=64, max_value=16384),
    intermediate=st.integers(min_value=64, max_value=65536),
    tp=st.sampled_from([1, 2, 4, 8]),
    tokens=st.integers(min_value=1, max_value=131072),
)
def test_v0_forward_is_never_below_v1s(hidden: int, intermediate: int, tp: int, tokens: int) -> None:
    spec = ModelSpec(name="m", layers=2, heads=8, kv_heads=8, head_dim=64, hidden=hidden, intermediate=intermediate, vocab=1000)
    v0, _ = v0_forward_transient(spec, range(2), tokens, tp, 2)
    v1, _ = forward_transient(spec, range(2), tokens, tp, 2)
    assert v0 >= v1 + tokens * 2 * hidden  # V0 always holds at least one more H (the MLP's output beside its input)


@pytest.mark.parametrize(
    ("version", "draft", "v0"),
    [
        ("0.7.3", None, True),
        ("0.8.0", "ngram", True),
        ("0.8.5", "ngram", True),
        ("0.8.5", None, False),
        ("0.9.0", "ngram", False),
    ],
)
def test_n_gram_speculation_falls_back_to_v0_in_0_8(version: str, draft: str | None, v0: bool) -> None:
    # vllm/engine/arg_utils.py _warn_or_fallback("ngram") in the 0.8.0-0.8.5 wheels, gone in 0.9.0
    workload = Workload(seq=1, engine=Engine(name="vllm", vllm_version=version), draft_kind=draft)
    dense = ModelSpec(name="m", layers=1, heads=1, kv_heads=1, head_dim=64)
    assert (runs_v0(dense, workload) is not None) is v0


def _graphs_bytes(cli, version: str) -> int:
    doc = cli.json(
        "fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "8192", "--engine", "vllm", "--vllm-version", version
    )
    return next(term["bytes"] for term in doc["budget"]["terms"] if term["name"] == "CUDA graphs")


def test_the_cuda_graph_estimate_and_0_92_start_at_0_20(cli) -> None:
    # vllm/envs.py VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS: "0" in the 0.19.1 wheel, "1" in 0.20.0; cache.py 0.9 / 0.92
    assert _graphs_bytes(cli, "0.19.1") == 0 and _graphs_bytes(cli, "0.20.0") > 0
    assert default_utilization("0.19.1")[0] == 0.9 and default_utilization("0.20.0")[0] == 0.92


def test_a_development_build_keeps_its_base_rules_and_says_so(cli) -> None:
    assert development_build_note("0.20.0") is None
    assert _graphs_bytes(cli, "0.19.2rc1.dev134+gfe9c3d6c5") == 0  # 0.19.2's rules
    result = cli(
        "fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--vllm-version", "0.19.2rc1.dev134", "--explain"
    )
    assert result.exit_code == 0 and "vLLM 0.19.2rc1.dev134 is a development build" in result.stdout


DEV134_RAW = "(EngineCore pid=153) INFO 05-05 08:52:25 [gpu_worker.py:440] Available KV cache memory: 47.55 GiB\n"  # https://github.com/djangodevreng/dgx-spark-benchmarks/blob/5636536703fb6fe6a4992f68162b93fa03e7f15e/results/qwen-3.6/qwen-3.6-35b-a3b/bf16/_bootlog.txt


def test_a_development_builds_log_lines_choose_its_release() -> None:
    releases, evidence = importer.development_build_range({"raw": DEV134_RAW}, "0.19.2rc1.dev134+gfe9c3d6c5")
    assert releases == ["0.20.0"]
    assert "code past 0.19.1 that ships in 0.20.0" in evidence[0]
    unmarked, _ = importer.development_build_range({"raw": ""}, "0.19.2rc1.dev134+gfe9c3d6c5")
    assert unmarked == ["0.19.1", "0.20.0"]


@pytest.mark.parametrize("given", [(), ("--max-num-seqs", "8", "--max-num-batched-tokens", "4096")])
def test_explain_says_why_v0_runs_once(cli, given: tuple[str, ...]) -> None:
    args = ("fit", "--model", "qwen2.5-0.5b", "--gpu", "h100-sxm", "--engine", "vllm", "--vllm-version", "0.7.3", "--explain")
    shown = cli(*args, *given).stdout
    assert shown.count("vLLM 0.7.3 (V0)") == 1


# brendanmckeag/sglang-vllm-benchmark run_benchmarks.ipynb (vLLM 0.9.1, LLM class, 79.1 GiB, gmu 0.8): its output prints
# "[topk_topp_sampler.py:49] Using FlashInfer for top-p & top-k sampling." and vLLM logged 46.66 GiB of KV cache
# https://github.com/brendanmckeag/sglang-vllm-benchmark/blob/e55866de268101bf4e0c4b9691d07051707aecc1/run_benchmarks.ipynb
NOTEBOOK = (
    "fit", "--model", "qwen2.5-7b", "--memory", "79.1GiB", "--seq", "2048", "--engine", "vllm", "--vllm-version", "0.9.1",
    "--vllm-entrypoint", "llm", "--gpu-memory-utilization", "0.8", "--enforce-eager",
)  # fmt: skip


def _activation(cli, *args: str) -> dict:
    found = cli.json(*args)["budget"]
    return {"usable": found["usable_bytes"], **next(t for t in found["terms"] if t["name"] == "activation peak")}


def test_the_sampler_the_log_names_sizes_the_profile(cli) -> None:
    # vllm/v1/sample/ops/topk_topp_sampler.py TopKTopPSampler.__init__ (0.9.1 wheel): FlashInfer whenever it imports
    default, flashinfer = _activation(cli, *NOTEBOOK), _activation(cli, *NOTEBOOK, "--vllm-flashinfer-sampler")
    assert "38 B per logit" in default["formula"] and "15 B per logit" in flashinfer["formula"]
    assert "--vllm-flashinfer-sampler" in flashinfer["formula"]
    assert default["bytes"] - flashinfer["bytes"] == 1_024 * 152_064 * (38 - 15)  # R * V * the bytes per logit saved
    assert abs(flashinfer["usable"] - round(46.66 * GiB)) < 0.25 * GiB < 3 * GiB < round(46.66 * GiB) - default["usable"]
    native = _activation(cli, *NOTEBOOK[:10], "0.16.0", "--no-vllm-flashinfer-sampler")
    assert "38 B per logit" in native["formula"] and "--no-vllm-flashinfer-sampler" in native["formula"]


def test_flashinfer_is_opt_in_from_0_11_1_and_the_native_path_stops_sorting_at_0_17(cli) -> None:
    # vllm/v1/sample/ops/topk_topp_sampler.py (0.11.1-0.19.1 wheels): "Users must opt in explicitly via
    # VLLM_USE_FLASHINFER_SAMPLER=1"; apply_top_k_top_p_triton from 0.17.0
    args = ("fit", "--model", "qwen2.5-7b", "--gpu", "h100-sxm", "--engine", "vllm", "--vllm-use-v2-model-runner", "0")
    opt_in = _activation(cli, *args, "--vllm-version", "0.12.0")["formula"]
    assert "38 B per logit" in opt_in and "FlashInfer's sampler is opt-in from 0.11.1" in opt_in
    assert "15 B per logit" in _activation(cli, *args, "--vllm-version", "0.12.0", "--vllm-flashinfer-sampler")["formula"]
    triton = _activation(cli, *args, "--vllm-version", "0.17.0", "--no-vllm-flashinfer-sampler")["formula"]
    assert "15 B per logit" in triton and "Triton top-k/top-p kernel" in triton


def test_the_sampler_flag_is_vllms_own(cli) -> None:
    result = cli("fit", "--model", "qwen2.5-7b", "--gpu", "h100-sxm", "--engine", "sglang", "--vllm-flashinfer-sampler")
    assert result.exit_code == 2 and "--vllm-flashinfer-sampler applies to --engine vllm" in result.stderr


@pytest.mark.parametrize(
    ("line", "ran"),
    [
        ("INFO 06-15 02:44:54 [topk_topp_sampler.py:49] Using FlashInfer for top-p & top-k sampling.", True),
        (
            "WARNING 08-06 16:56:21 [topk_topp_sampler.py:59] FlashInfer is not available. Falling back to the PyTorch-native"
            " implementation of top-p & top-k sampling.",
            False,
        ),  # fmt: skip
        ("INFO 06-15 02:45:02 [gpu_worker.py:227] Available KV cache memory: 46.66 GiB", None),
    ],
)
def test_the_importer_replays_the_sampler_a_log_names(line: str, ran: bool | None) -> None:
    log = {
        "name": "n", "url": "https://github.com/o/r/blob/x/a.log", "group": "o/r", "engine": "vllm", "version": "0.9.1",
        "device": "A100 80GB", "model": "Qwen/Qwen2.5-7B-Instruct", "tp": 1, "flags": {}, "logged": {"available_kv_gib": 40.0},
        "raw": line,
    }  # fmt: skip
    case, _ = importer.convert(log)
    assert case["engine"].get("vllm_flashinfer_sampler") is ran


def _non_torch(cli, *args: str) -> dict:
    return next(t for t in cli.json(*args)["budget"]["terms"] if t["name"] == "non-torch memory")


@pytest.mark.parametrize(
    ("release", "eager", "in_window"),
    [("0.17.1", False, False), ("0.18.0", False, True), ("0.19.1", False, True), ("0.19.1", True, False),
     ("0.26.0", False, True), ("0.27.0", False, False), (None, False, True)],
)  # fmt: skip
def test_one_gpus_non_torch_memory_follows_where_the_graph_estimate_is_captured(cli, release, eager, in_window) -> None:
    # vllm/v1/worker/gpu_worker.py determine_available_memory: profile_cudagraph_memory inside the memory_profiling
    # window in the 0.18.0-0.26.0 wheels (graphs on), absent in 0.17.1, after the window from 0.27.0
    args = ["fit", "--model", "qwen2.5-7b", "--gpu", "h100-sxm", "--engine", "vllm", "--vllm-use-v2-model-runner", "0"]
    args += ["--vllm-version", release] if release else []
    args += ["--enforce-eager"] if eager else []
    found = _non_torch(cli, *args)
    assert found["bytes"] == (round(0.25 * GiB) if in_window else int(0.13 * GiB))
    assert ("the v0.19 logs" in found["formula"]) is in_window


def test_the_v2_runner_captures_no_estimate_before_0_29(cli) -> None:
    args = ("fit", "--model", "qwen2.5-7b", "--gpu", "h100-sxm", "--engine", "vllm", "--vllm-version", "0.26.0")
    assert _non_torch(cli, *args, "--vllm-use-v2-model-runner", "1")["bytes"] == int(0.13 * GiB)
    # tensor parallelism keeps its own figures (NCCL), whatever the window holds
    assert _non_torch(cli, *args, "--tp", "2", "--enforce-eager")["bytes"] == int(2.1 * GiB)


# Sergey-Kit/Local-inference-benchmark-Ollama-vs-llama.cpp-vs-vLLM results/vllm_longctx.log (vLLM 0.27.1, GTX 1650 SUPER,
# --enforce-eager): "1.23 GiB for consumed memory (weights + non-torch)" with 1.12 GiB of weights, 1.92 GiB of KV cache
def test_an_eager_run_without_the_capture_lands_on_its_log(cli) -> None:
    found = cli.json(
        "fit", "--model", "qwen3-0.6b", "--memory", "4.0GiB", "--seq", "4096", "--engine", "vllm", "--vllm-version", "0.27.1",
        "--gpu-memory-utilization", "0.8", "--max-num-seqs", "1", "--enforce-eager", "--no-enable-prefix-caching",
    )["budget"]  # fmt: skip
    assert abs(found["usable_bytes"] - round(1.92 * GiB)) < 0.02 * 4 * GiB  # within 2 % of the 4 GiB card
