"""benchmarks/import_decode_cases.py: the rules that turn collected rows into calibration cases, each
applied to every row it matches (issue 25: what is not a batch-1 decode, what the source mapped wrong)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kvcalc.presets import load_gpu
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


importer = load_script("benchmarks/import_decode_cases.py")
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "decode_calibration.json").read_text(encoding="utf-8"))


def _row(**changes: Any) -> dict[str, Any]:
    """A collected row as the collector writes it: Llama 3.1 8B bf16 on an H100 SXM, batch 1."""
    row = {
        "group": "g", "url": "https://example.org/t", "engine": "vllm", "engine_version": "0.11.0", "backend": "",
        "enforce_eager": None, "gpu_name": "NVIDIA H100 SXM", "gpu_count": 1, "tp": 1,
        "model": "meta-llama/Llama-3.1-8B-Instruct", "weight_format": "bf16", "kv_dtype": None, "batch": 1,
        "input_len": 128, "output_len": 256, "metric_as_published": "", "tokens_per_s": 100.0, "derived": "",
        "date": "2025-06-01", "note": "",
    }  # fmt: skip
    return row | changes


def test_the_importer_reads_the_rows_kept_in_the_repository() -> None:
    assert importer.COLLECTED.is_relative_to(ROOT) and importer.COLLECTED.is_file()
    rows = json.loads(importer.COLLECTED.read_text(encoding="utf-8"))
    collected = [c for c in FIXTURE if c["origin"] == "collected"]
    assert len(rows) == len(collected) and all(r["url"] == c["url"] for r, c in zip(rows, collected, strict=True))


def test_a_plain_row_is_a_case() -> None:
    case = importer.convert(0, _row())
    assert "excluded_because" not in case and case["preset"] == "llama3.1-8b" and case["mode"] == "graphs"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"excluded_because": "batch size not stated"}, "excluded by the collector: batch size not stated"),
        ({"note": "min-latency; SPECULATIVE DECODING (MTP) ON"}, "speculative decoding on"),
        ({"batch": 4}, "batch 4"),
        ({"tokens_per_s": 400.0}, "faster than its bytes"),  # 16 GB at 3.35 TB/s: at most ~210 tok/s
    ],
)
def test_what_is_not_a_plain_batch_1_decode_is_excluded_with_its_reason(changes: dict, reason: str) -> None:
    assert reason in importer.convert(0, _row(**changes))["excluded_because"]


def test_a_harness_that_reports_an_impossible_figure_loses_its_other_figures_for_that_engine() -> None:
    cases = [
        importer.convert(0, _row(tokens_per_s=400.0)),
        importer.convert(1, _row(tokens_per_s=150.0)),
        importer.convert(2, _row(tokens_per_s=150.0, engine="sglang")),
        importer.convert(3, _row(tokens_per_s=150.0, group="other")),
    ]
    importer.exclude_untrusted_harnesses(cases)
    assert "harness reported 1 figure" in cases[1]["excluded_because"]
    assert "excluded_because" not in cases[2] and "excluded_because" not in cases[3]


@pytest.mark.parametrize(
    ("changes", "mode"),
    [
        ({"engine_version": None, "date": "2023-10-31"}, "eager"),  # before vLLM's CUDA graphs (v0.2.6)
        ({"engine_version": None, "date": "2024-04-30"}, "graphs"),
        ({"engine_version": "0.4.2", "input_len": 14336, "output_len": 2048}, "eager"),  # past max_context_len_to_capture
        ({"engine_version": "0.2.1"}, "eager"),
        ({"engine_version": "0.4.2", "input_len": 6144, "output_len": 2048}, "graphs"),
        ({"engine_version": "0.6.3", "input_len": 14336, "output_len": 2048}, "graphs"),
        ({"engine": "sglang", "engine_version": None, "date": "2023-10-31"}, "graphs"),
    ],
)
def test_vllm_releases_that_ran_without_graphs_are_eager(changes: dict, mode: str) -> None:
    assert importer.convert(0, _row(**changes))["mode"] == mode


@pytest.mark.parametrize(
    ("model", "preset"),
    [
        ("unsloth/Phi-4-mini-reasoning-GGUF", "phi4-mini"),
        ("microsoft_Phi-4-mini-instruct-Q4_K_M.gguf", "phi4-mini"),
        ("phi-4-Q4_K_M.gguf", "phi-4"),
    ],
)
def test_phi_4_mini_is_not_phi_4(model: str, preset: str) -> None:
    case = importer.convert(0, _row(model=model, weight_format="gguf:q4_k_m", engine="llamacpp", gpu_name="RTX 4090"))
    assert case["preset"] == preset


def test_every_exclusion_rule_is_applied_to_every_row_it_matches() -> None:
    # the fixture as the importer left it: no in-scope case is speculative, faster than the peak, or from a
    # harness that reported an impossible figure for its engine
    broken = {(c["group"], c["engine"]) for c in FIXTURE if importer.FASTER_THAN_PEAK in (c.get("excluded_because") or "")}
    assert broken
    for case in FIXTURE:
        if case.get("excluded_because") or case["origin"] != "collected":
            continue
        assert not re.search(importer.SPECULATIVE, case["note"].lower()), case["id"]
        moved = case["weights_read_bytes"] + case["kv_read_bytes"]
        assert case["tokens_per_s"] * moved <= load_gpu(case["gpu"]).bandwidth_bytes_per_s * importer.ROOFLINE_SLACK, case["id"]
        assert (case["group"], case["engine"]) not in broken, case["id"]


@pytest.mark.parametrize(
    ("model", "weight_format", "preset", "klass"),
    [
        ("palmfuture/Qwen3.6-35B-A3B-GPTQ-Int4", "gptq", "qwen3.6-35b-a3b", "int4"),
        ("sakamakismile/Huihui-Qwen3.6-27B-abliterated-NVFP4", "nvfp4", "qwen3.6-27b", "fp4"),  # an abliterated tune
        ("Jackrong/Qwopus3.6-27B-v2-MTP-GGUF", "gguf:q4_k_m", "qwen3.6-27b", "ggml-4to6bit"),  # a tune naming its base
        ("google/gemma-4-26B-A4B-it", "int8", "gemma4-26b-a4b", "int8"),
        ("QuantTrio/GLM-4.7-Flash-AWQ", "int4", "glm-4.7-flash", "int4"),
        ("deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct", "gguf:q4_k_m", "deepseek-v2-lite", "ggml-4to6bit"),
        ("LiquidAI/LFM2.5-1.2B-Instruct", "gguf:q8_0", "lfm2-1.2b", "ggml-8bit"),
        ("microsoft/phi-4", "gguf:q4_k_m", "phi-4", "ggml-4to6bit"),
        ("Llama 3.1 8B", "gguf:q3_k_m", "llama3.1-8b", "ggml-4to6bit"),  # Q3_K_M: 4.0 bits per weight
    ],
)
def test_checkpoints_of_a_presets_shape_map_to_it_with_their_format(
    model: str, weight_format: str, preset: str, klass: str
) -> None:
    case = importer.convert(0, _row(model=model, weight_format=weight_format, tokens_per_s=1.0))
    assert "excluded_because" not in case and (case["preset"], case["format_class"]) == (preset, klass)


def test_gguf_sizes_are_llama_cpp_quantize_tables_for_llama_3_8b() -> None:
    # tools/quantize/quantize.cpp: Q4_K_S " 4.37G", Q6_K " 6.14G", Q8_0 " 7.96G" @ Llama-3-8B (8.03B parameters)
    assert importer._match(importer.FORMATS, "gguf:q4_k_s")[2] == 4.67
    assert importer._match(importer.FORMATS, "gguf:q6_k")[2] == 6.57
    assert importer._match(importer.FORMATS, "gguf:q8_0")[1:] == ("ggml-8bit", 8.52)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"gpu_name": "NVIDIA H100 80G"}, "H100 variant (SXM, PCIe or NVL) not stated"),
        ({"gpu_name": "NVIDIA A100"}, "A100 variant (40 or 80 GB) not stated"),
        ({"gpu_name": "RTX 4070 Super"}, "no kvcalc GPU preset for 'RTX 4070 Super'"),  # the 4070 and 4070 Ti are other cards
        ({"model": "migtissera/Tess-4-35B-A3B", "weight_format": "gguf:q4_k_m"}, "no kvcalc model preset"),
        ({"model": "unsloth/Qwen3.6-27B-UD-MLX-4bit", "weight_format": "int4"}, "mixes bits by layer"),
        ({"model": "unsloth/Qwen3.6-27B-GGUF", "weight_format": "gguf:ud-q4_k_xl"}, "mixes bits by layer"),
        ({"model": "Qwen/Qwen3.6-27B", "weight_format": "gguf:iq4_xs"}, "weight format 'gguf:iq4_xs' not mapped"),
        ({"model": "Lorbus/Qwen3.6-27B-int4-AutoRound", "weight_format": "fp16"}, "the checkpoint's name says 4-bit"),
        ({"model": "Qwen/Qwen3.6-35B-A3B", "weight_format": "gptq"}, "without its bits"),
        ({"model": "nvidia/Nemotron-Cascade-2-30B-A3B", "weight_format": "gguf:q4_k_m"}, "not a MoE block"),
        ({"model": "google/gemma-4-E2B-it", "weight_format": "gguf:q4_0"}, "per-layer embeddings"),
        ({"note": "MTP active (num_speculative_tokens=3)"}, "speculative decoding on"),
    ],
)
def test_what_kvcalc_cannot_express_exactly_stays_out_with_its_reason(changes: dict, reason: str) -> None:
    assert reason in importer.convert(0, _row(**changes))["excluded_because"]


# localmaxxing rows (https://github.com/AlexsJones/llmfit/blob/main/llmfit-core/data/benchmark_cache.json) publish an
# output rate and a total rate; where total / output = (prompt + output) / output, both divide by the request's wall
# time, prefill included: tokSOut 304.7, tokSTotal 342.7 at 32 + 256 tokens (342.7 / 304.7 = 1.1247 vs 288 / 256 = 1.125).
@pytest.mark.parametrize(
    ("metric", "prompt", "expected"),
    [
        ("tokSOut 304.7 (tokSTotal 342.7, ttftMs None)", 32, True),
        ("tokSOut 100 (tokSTotal 900, ttftMs None)", 2048, True),  # 2,304 / 256 = 9.0
        ("tokSOut 100 (tokSTotal 150, ttftMs None)", 2048, False),  # the total rate counts another clock
        ("tokSOut 304.7 (tokSTotal 342.7, ttftMs None)", None, False),  # no prompt length: nothing to compare
        ("304.7 tok/s", 32, False),
    ],
)
def test_output_and_total_rates_on_one_clock_include_the_prefill(metric: str, prompt: int | None, expected: bool) -> None:
    row = {"metric_as_published": metric, "input_len": prompt, "output_len": 256, "note": "", "derived": ""}
    assert importer._includes_prefill(row) is expected


@pytest.mark.parametrize(
    ("gpu_name", "preset", "bandwidth"),
    [  # names as tests/fixtures/decode_published.json's sources print them; bandwidths from each preset's source
        ("AMD Radeon RX 7900 XT", "rx7900xt", 800_000_000_000),
        ("NVIDIA GeForce GTX 1050 Ti", "gtx1050ti", 112_000_000_000),
        ("NVIDIA GeForce RTX 2080", "rtx2080", 448_000_000_000),
        ("RTX 4070", "rtx4070", 504_000_000_000),
    ],
)
def test_issue_21_gpus_map_to_their_exact_preset(gpu_name: str, preset: str, bandwidth: int) -> None:
    assert importer._gpu(gpu_name) == (preset, "pcie")
    assert load_gpu(preset).bandwidth_bytes_per_s == bandwidth


@pytest.mark.parametrize("gpu_name", ["AMD Radeon RX 7900 XTX", "RTX 4070 Super", "NVIDIA GeForce RTX 4070 Laptop GPU"])
def test_neighbouring_cards_do_not_take_the_new_presets(gpu_name: str) -> None:
    assert importer._gpu(gpu_name) not in {("rx7900xt", "pcie"), ("rtx4070", "pcie")}


LMSYS_SPARK = (
    "https://lmsys.org/blog/2025-10-13-nvidia-dgx-spark/",
    "https://lmsys.org/blog/2025-11-03-gpt-oss-on-nvidia-dgx-spark/",
)


@pytest.mark.parametrize(
    ("engine", "model", "gpu", "klass"),
    [  # LMSYS's two DGX Spark posts (issue 25: SGLang's only Blackwell cases were B200 rows)
        ("sglang", "meta-llama/Llama-3.1-8B-Instruct", "dgx-spark", "fp8"),  # --quantization fp8: online FP8 weights
        ("sglang", "openai/gpt-oss-20b", "dgx-spark", "fp4"),
        ("sglang", "openai/gpt-oss-120b", "dgx-spark", "fp4"),
        ("ollama", "gpt-oss:20b", "dgx-spark", "fp4"),
        ("ollama", "gpt-oss:20b", "rtx-pro-6000-ws", "fp4"),  # "RTX PRO 6000 Blackwell Workstation Edition"
        ("ollama", "gpt-oss:20b", "rtx5090", "fp4"),  # "GeForce RTX 5090 (Founders Edition)"
    ],
)
def test_the_lmsys_dgx_spark_rows_are_decode_only_cases_of_their_presets(engine: str, model: str, gpu: str, klass: str) -> None:
    case = next(
        c for c in FIXTURE if c["url"] in LMSYS_SPARK and c["engine"] == engine and c["model"] == model and c.get("gpu") == gpu
    )
    assert "excluded_because" not in case and case["format_class"] == klass
    assert case["prefill_seconds_per_token"] == 0.0  # the posts give prefill and decode tokens/s apart


def test_a_source_on_a_gpu_kvcalc_has_no_preset_for_stays_out_with_its_reason() -> None:
    # sglang#2219: Qwen2-7B-Instruct at batch 1 on an NVIDIA A30 (bf16 and torchao int8 weight-only)
    cases = [c for c in FIXTURE if c["url"] == "https://github.com/sgl-project/sglang/issues/2219"]
    assert len(cases) == 2 and all(c["excluded_because"] == "no kvcalc GPU preset for 'NVIDIA A30'" for c in cases)


def test_a_sweep_on_an_a100_of_no_stated_variant_stays_out() -> None:
    # tt-inference-server#340: vLLM at concurrency 1 on "A100" (Qwen3-0.6B, 1.7B, 30B-A3B); 40 or 80 GB not stated
    cases = [c for c in FIXTURE if c["url"] == "https://github.com/tenstorrent/tt-inference-server/issues/340"]
    assert len(cases) == 14 and all(c["excluded_because"] == "A100 variant (40 or 80 GB) not stated" for c in cases)


def _llamacpp_row(**changes: Any) -> dict[str, Any]:
    """A llama.cpp row as localmaxxing's leaderboard gives it: Qwen3.5-9B Q8_0 on an RTX 3080 Ti (12 GB), no prompt stated."""
    row = {"engine": "llamacpp", "engine_version": None, "backend": "cuda", "gpu_name": "RTX 3080 Ti", "model": "Qwen/Qwen3.5-9B",
           "weight_format": "gguf:q8_0", "input_len": 0, "output_len": 0, "tokens_per_s": 60.0, "date": "2026-05-02"}  # fmt: skip
    return _row(**row) | changes


@pytest.mark.parametrize(
    ("note", "context"),
    [
        ("Benchmarked Qwen3.5-9B-Q8_0.gguf with tg32 test at d250000 context on RTX 3080 Ti.", 250_016),  # 250000 + 32 / 2
        ("llama-bench tg128 @ d4096", 4_160),
        ("llama-bench; tg128 metric; depth not stated", importer.DEFAULT_PROMPT + 128),  # no prompt: 32 + 256 / 2
        ("llama-bench -m model.gguf -d 8192 -n 128", 8192 + 128),  # its -d flag; the row's output 0: 256 / 2
        ("decode measured at depth 4096", 4096 + 128),
        ("llama-bench --n-depth=16384", 16_384 + 128),
        ("ran with -dev CUDA0 -ngl 99", importer.DEFAULT_PROMPT + 128),  # -dev is no depth
    ],
)
def test_a_llama_bench_depth_is_the_context_the_decode_ran_at(note: str, context: int) -> None:
    assert importer._context(_llamacpp_row(note=note)) == context


def test_weights_and_the_kv_cache_of_the_context_beyond_the_gpu_memory_are_a_partial_offload() -> None:
    # 8.9 GiB of Q8_0 weights fit the 12 GB card; with the KV of 250,000 tokens (7.7 GiB) they do not
    deep = importer.convert(0, _llamacpp_row(note="tg32 test at d250000 context"))
    assert "KV cache of 250,016 tokens" in deep["excluded_because"] and "partly offloaded" in deep["excluded_because"]
    assert "excluded_because" not in importer.convert(0, _llamacpp_row(note="tg32 test at d4096 context"))


@pytest.mark.parametrize(
    ("note", "offloaded"),
    [
        ("-ot cutoff=33 (layers 0-32 GPU / 33-39 CPU) gives 3x better prefill", True),
        ('-ot "blk\\.(3[3-9])\\.ffn_.*_exps=CPU"', True),
        ("llama-server --n-cpu-moe 12 -ngl 99", True),
        ("all-GPU no -ot needed (15.68 GiB fits 24 GB VRAM)", False),  # the flag named, not used
        ("--n-cpu-moe 0 --main-gpu 0", False),
        ("16 CPU cores, Ryzen 9 9950X", False),
        ("8-16 CPU threads, -ngl 99", False),
        ("llama-server --n-cpu-moe=20 -ngl 99", True),
        ("llama-server -ncmoe 20", True),
        ("llama-server -cmoe -ngl 99", True),
    ],
)
def test_tensors_the_source_keeps_on_the_cpu_are_a_partial_offload(note: str, offloaded: bool) -> None:
    reason = importer.convert(0, _llamacpp_row(note=note)).get("excluded_because") or ""
    assert ("kept on the CPU, as the source states" in reason) is offloaded


@pytest.mark.parametrize(
    ("gpu_name", "date", "mode"),
    [
        ("NVIDIA GeForce GTX 1050 Ti", "2026-07-30", "llamacpp-cuda-legacy"),  # Pascal: never a CUDA graph
        ("NVIDIA GeForce RTX 2080", "2026-05-01", "llamacpp-cuda-legacy"),  # Turing before PR #25749
        ("NVIDIA GeForce RTX 2080", "2026-07-21", "llamacpp-cuda"),
        ("RTX 3080 Ti", "2024-01-01", "llamacpp-cuda"),  # Ampere: graphs since they landed
    ],
)
def test_llama_cpp_on_gpus_its_cuda_graphs_skip_is_charged_launch_by_launch(gpu_name: str, date: str, mode: str) -> None:
    row = _llamacpp_row(gpu_name=gpu_name, date=date, model="Qwen/Qwen2.5-0.5B-Instruct", weight_format="gguf:q4_k_m")
    assert importer.convert(0, row)["mode"] == mode
