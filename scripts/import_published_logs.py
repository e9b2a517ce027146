"""Fold the published start-up logs (a research helper's YAML) into tests/fixtures/engine_logs/published.yaml.

    python scripts/import_published_logs.py [collected.yaml]

The collected logs are read from the repository's copy, tests/fixtures/engine_logs/collected.yaml (new
logs are appended there, so the cases are rebuilt from the repository alone).

Each collected log (name, url, group, engine, version, device, model, quantization, tp, flags, logged)
of vLLM, SGLang (its K and V sizes are the KV memory) or TensorRT-LLM becomes a case `kvcalc fit` can replay, mapped to a kvcalc model (a shipped
preset or a file under tests/fixtures/engine_logs/models/ for the exact checkpoint), a GPU (a preset, or
the total the log prints when it names none) and the engine's flags; a log that cannot be mapped is kept
under `unmapped` with every reason. A miss note written by hand in the output survives a re-run. These cases are held out: no constant of kvcalc's is fitted to them
(scripts/calibration.py scores them by source group, the thread or repository a log comes from).
Re-running the script after the helper adds logs rewrites the file.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
REPO_COPY = ROOT / "tests" / "fixtures" / "engine_logs" / "collected.yaml"  # the same logs, kept in the repository
OUT = ROOT / "tests" / "fixtures" / "engine_logs" / "published.yaml"

# (pattern on the collected model id, kvcalc model, kind, text only, why the mapping holds)
MODELS: list[tuple[str, str, str, bool, str]] = [
    (
        r"^Qwen/Qwen2-7B-Instruct$",
        "qwen2.5-7b",
        "dense",
        True,
        "Qwen2-7B has Qwen2.5-7B's shapes (28 layers, 4 KV heads, hidden 3584, intermediate 18944, vocab 152064)",
    ),
    (r"^openai/gpt-oss-120b$", "gpt-oss-120b", "sliding", True, ""),  # MoE whose layers alternate sliding (128) and full
    (r"^openai/gpt-oss-20b$", "gpt-oss-20b", "sliding", True, ""),
    (r"^meta-llama/(Meta-)?Llama-3\.1-8B-Instruct$|/Meta-Llama-3\.1-8B-Instruct$", "llama3.1-8b", "dense", True, ""),
    (r"^meta-llama/Meta-Llama-3-8B-Instruct$", "llama3-8b", "dense", True, ""),
    (r"^meta-llama/Meta-Llama-3-8B$", "llama3-8b", "dense", True, "the base release has the instruct release's shapes"),
    (r"(^|/)Qwen2\.5-Coder-32B-Instruct$", "qwen2.5-coder-32b", "dense", True, ""),
    (r"^Qwen/Qwen3-0\.6B$", "qwen3-0.6b", "dense", True, ""),
    (
        r"^models/Qwen3-0\.6B$",
        "qwen3-0.6b",
        "dense",
        True,
        "a local path; the repository's README names the model Qwen3-0.6B (28 layers, 16 query and 8 KV heads of 128)",
    ),
    (r"^Qwen/Qwen3-32B$|/Qwen3-32B$", "qwen3-32b", "dense", True, ""),
    (r"^Qwen/Qwen3-30B-A3B/?$|/Qwen/Qwen3-30B-A3B/?$", "qwen3-30b-a3b", "moe", True, ""),
    (r"/Qwen3-4B-Instruct-2507$", "qwen3-4b", "dense", True, "the 2507 release keeps Qwen3-4B's shapes"),
    (r"^Qwen/Qwen2\.5-14B-Instruct$", "qwen2.5-14b", "dense", True, ""),
    (r"^Qwen/Qwen2\.5-7B-Instruct$", "qwen2.5-7b", "dense", True, ""),
    (r"^mistralai/Mistral-7B-Instruct-v0\.3$", "mistral-7b", "dense", True, "the instruct release keeps v0.3's shapes"),
    (r"^Qwen/Qwen2\.5-1\.5B-Instruct$", "qwen2.5-1.5b", "dense", True, ""),
    (r"^RedHatAI/Llama-3\.3-70B-Instruct-FP8-dynamic$", "models/llama3.3-70b-fp8.yaml", "dense", True, ""),
    (
        r"^mistralai/Mistral-Small-3\.2-24B",
        "mistral-small-3.1",
        "dense",
        False,
        "3.2 keeps 3.1's shapes; the preset counts the Pixtral tower (vision)",
    ),
    (
        r"^microsoft/Phi-3-mini-4k-instruct$",
        "phi3-mini-4k",
        "sliding",
        True,
        "every layer slides (config.json sliding_window 2047, no layer_types), and vLLM keeps the window: its log's"
        " 35,648 tokens are 2,228 blocks of 16, and 'Maximum concurrency for 4,096 tokens per request: 8.67x' is 2,228 /"
        " 257, the sliding reservation cdiv(min(2,046 + 2,048, 4,096), 16) + 1 blocks (full attention would need 256:"
        " 8.70x). The collected note's 'Dense' predates this.",
    ),
    (r"(^|/)Qwen3-4B/?$", "qwen3-4b", "dense", True, ""),
    (r"(^|/)Qwen3-8B/?$|qwen-3/transformers/8b/", "qwen3-8b", "dense", True, ""),
    (r"(^|/)Qwen3-30B-A3B-Instruct-2507/?$", "qwen3-30b-a3b", "moe", True, "the 2507 release keeps Qwen3-30B-A3B's shapes"),
    (r"(^|/)Qwen3-Coder-30B-A3B-Instruct/?$", "qwen3-30b-a3b", "moe", True, "Qwen3-Coder-30B-A3B has Qwen3-30B-A3B's shapes"),
    (r"(^|/)Qwen2\.5-32B-Instruct/?$", "qwen2.5-32b", "dense", True, ""),
    (r"(^|/)Qwen2\.5-3B(-Instruct)?/?$|/Qwen2___5-3B/?$", "qwen2.5-3b", "dense", True, ""),
    (r"(^|/)gpt-oss-120b/?$", "gpt-oss-120b", "sliding", True, ""),
    (r"Huihui-gpt-oss-20b-mxfp4", "gpt-oss-20b", "sliding", True, "a fine-tune with gpt-oss-20b's shapes and MXFP4 experts"),
    (r"(^|/)DeepSeek-R1-Distill-Qwen-14B/?$", "qwen2.5-14b", "dense", True, "the distill keeps Qwen2.5-14B's shapes"),
    (r"(^|/)Meta-Llama-3-8B-Instruct$", "llama3-8b", "dense", True, ""),
    (r"(^|/)Qwen2\.5-Coder-14B-Instruct$", "qwen2.5-coder-14b", "dense", True, ""),
    (r"(^|/)Qwen3-VL-30B-A3B-Instruct$", "qwen3-vl-30b-a3b", "moe", False, "the preset counts the vision tower (vision)"),
    (r"(^|/)Qwen3\.5-27B$", "qwen3.5-27b", "hybrid", False, "the preset counts the vision tower (vision)"),
    (
        r"(^|/)Qwen3\.5-9B$",
        "qwen3.5-9b",
        "hybrid",
        False,
        "the checkpoint's vision tower (its config.json has a text_config) is not in the preset",
    ),
    (r"(^|/)Qwen3\.6-27B-FP8$", "models/qwen3.6-27b-fp8.yaml", "hybrid", False, "the vision tower is not counted"),
    (
        r"(^|/)gemma-4-E4[bB]-it$",
        "models/gemma4-e4b.yaml",
        "sliding",
        True,
        "the preset's 8B total holds the vision and audio towers, so it counts the whole checkpoint",
    ),
    (r"^Qwen/Qwen3-14B$", "qwen3-14b", "dense", True, ""),
    (
        r"^\./qwen36_27B$",
        "qwen3.6-27b",
        "hybrid",
        False,
        "a local path whose log names Qwen3_5ForConditionalGeneration and a 51.75 GiB checkpoint, the bf16 Qwen3.6-27B;"
        " the preset counts the vision tower (vision)",
    ),
    (r"^google/gemma-4-26B-A4B(-it)?$", "gemma4-26b-a4b", "sliding", False, "the preset counts the vision tower (vision)"),
    (
        r"^Qwen/Qwen3\.6-35B-A3B$",
        "qwen3.6-35b-a3b",
        "hybrid",
        False,
        "the preset counts the vision tower (vision), which --language-model-only leaves out",
    ),
    (
        r"(^|/)DeepSeek-R1-Distill-Qwen-7B/?$",
        "qwen2.5-7b",
        "dense",
        True,
        "the distill is Qwen2.5-Math-7B fine-tuned (nosana-ci/pipeline-templates templates/Deepseek-R1-Qwen-7B/README.md),"
        " with Qwen2.5-7B's shapes (28 layers, 4 KV heads of 128, hidden 3584, intermediate 18944, vocab 152064)",
    ),
    (
        r"(^|/)NVIDIA-Nemotron-3-Nano-4B-BF16$",
        "models/nemotron-3-nano-4b.yaml",
        "hybrid",
        True,
        "models/nemotron-3-nano-4b.yaml now describes it, from the config.json fields mlc-ai/mlc-llm copies (the collected"
        " note predates that file).",
    ),
    (r"^google/gemma-4-31B-it$", "gemma4-31b", "sliding", False, "the preset counts the vision tower (vision)"),
    (
        r"(?i)(^|/)nemotron-3-nano-30b-a3b-bf16(/|$)",
        "models/nemotron-3-nano-30b-a3b-bf16.yaml",
        "hybrid",
        True,
        "a Kaggle model path; its name and log (NemotronHForCausalLM, 58.91 GiB of weights) identify the bf16 checkpoint.",
    ),
    (
        r"^google/gemma-4-12B-it$",
        "gemma4-12b",
        "sliding",
        True,
        "Gemma4Unified has no vision tower: its patch projection is inside the preset's 11.95B, so the preset counts the"
        " whole checkpoint",
    ),
    (
        r"^google/gemma-4-26B-A4B-it-qat-q4_0-unquantized$",
        "gemma4-26b-a4b",
        "sliding",
        False,
        "Google's QAT release kept in bf16 has the base shapes; the preset counts the vision tower (vision)",
    ),
    (
        r"(^|/)Qwen3\.5-35B-A3B-FP8$",
        "models/qwen3.5-35b-a3b-fp8.yaml",
        "hybrid",
        False,
        "the model file counts the vision tower (vision)",
    ),
    (
        r"(^|/)NVIDIA-Nemotron-3-Nano-4B-FP8$",
        "",
        "hybrid",
        True,
        "a ModelOpt FP8 checkpoint whose config.json (which layers stay 16-bit) no stored source holds",
    ),
    (r"(^|/)Qwen3-235B-A22B-FP8$", "models/qwen3-235b-a22b-fp8.yaml", "moe", True, ""),
    (
        r"^Qwen/Qwen2\.5-Coder-0\.5B-Instruct$",
        "",
        "dense",
        True,
        "an int8 engine build of qwen2.5-coder-0.5b: no int8 model file for it",
    ),
    (
        r"^moonshotai/Kimi-K2-Thinking$",
        "",
        "moe",
        True,
        "the INT4 (compressed-tensors) release of Kimi-K2: no model file describes it",
    ),
    (r"Embedding", "", "dense", True, "an embedding model: vLLM's pooling runner has no sampler, kvcalc models a generating one"),
    (r"(?i)exl3", "", "dense", True, "an EXL3 checkpoint: kvcalc does not read ExLlamaV3's format"),
    (
        r"(?i)bnb-4bit",
        "",
        "dense",
        True,
        "a bitsandbytes 4-bit checkpoint whose config.json (double quantization, skipped modules) no stored source holds",
    ),
    (
        r"(?i)nvfp4",
        "",
        "dense",
        True,
        "an NVFP4 checkpoint whose config.json (which layers stay 16-bit or FP8) no stored source holds",
    ),
    (
        r"(?i)awq|int4|w4a16|autoround|auto_round",
        "",
        "dense",
        True,
        "an integer 4-bit checkpoint whose config.json (group size, zero points, 16-bit layers) no stored source holds",
    ),
    (r"(?i)(^|/)qwen3\.6-27b(-fp8)? \((local path|compose)", "", "hybrid", False, "a local checkpoint the log does not name"),
]
# (pattern on the collected device, GPU preset, the total the process sees, where that total comes from)
DEVICES: list[tuple[str, str, str | None, str]] = [
    (r"94\.97 GiB", "", "94.97GiB", "the total its log prints (Free memory on device (93.47/94.97 GiB)), GPU not named"),
    (r"H100", "h100-sxm", "79.19GiB", "vLLM's total_memory=79.19GiB on an H100 80GB (llm-d-planner v0.19 logs)"),
    (r"A100 80GB", "a100-80gb", "79.15GiB", "PyTorch's '79.15 GiB total capacity' on an A100 80GB"),
    (r"A100 40GB", "a100-40gb", "39.39GiB", "PyTorch's '39.39 GiB total capacity' on an A100 40GB"),
    (
        r"H200",
        "h200",
        "139.80GiB",
        "TensorRT-LLM's 'device total memory 139.80 GiB' on an H200 (NVIDIA/TensorRT-LLM log in the collection)",
    ),
    (r"\bB300\b", "b300", None, "the preset's"),
    (r"RTX PRO 6000 Blackwell Server Edition", "rtx-pro-6000", None, "the preset's"),
    (r"\bL4\b", "l4", None, "the preset's"),
    (r"RTX 3090 Ti", "rtx3090ti", None, "the preset's"),
    (r"RTX 3090", "rtx3090", None, "the preset's"),
    (r"RTX 4090", "rtx4090", None, "the preset's"),
    (r"RTX 5090", "rtx5090", None, "the preset's"),
    (r"\bL40S\b", "l40s", None, "the preset's"),
    (r"\bT4\b", "t4", None, "the preset's"),
    (r"\bA10G\b", "a10g", None, "the preset's (nvidia-smi's 23,028 MiB)"),
    (r"GB10|DGX Spark", "dgx-spark", None, "the preset's (unified memory)"),
    (r"total [0-9.]+ GiB logged|Free memory on device", "", None, "the total its log prints, GPU not named"),
]
# The flags of each replayed engine that `kvcalc fit` takes (the same names, dashes for underscores).
FLAGS = {
    "vllm": (
        "gpu_memory_utilization",
        "max_num_seqs",
        "max_num_batched_tokens",
        "enforce_eager",
        "enable_prefix_caching",
        "language_model_only",  # set only when true: --language-model-only has no negative form
        "vllm_entrypoint",  # llm where the log's own script builds vllm.LLM(...) (UsageContext.LLM_CLASS)
        "vllm_flashinfer_sampler",  # which sampler the log's TopKTopPSampler line says ran (SAMPLER_LINES)
    ),
    "trtllm": ("free_gpu_memory_fraction", "max_seq_len", "max_num_tokens", "tokens_per_block"),
    "sglang": ("mem_fraction_static", "max_running_requests", "page_size", "max_total_tokens"),
}
TEXT_FLAGS = ("vllm_entrypoint",)  # flags whose value is a word, passed as written
# vLLM V1's TopKTopPSampler says which sampler it runs (vllm/v1/sample/ops/topk_topp_sampler.py __init__, 0.9.1 wheel):
# FlashInfer's, or the PyTorch-native sort; --vllm-flashinfer-sampler replays what the log says
SAMPLER_LINES = (
    (r"Using FlashInfer for top-p & top-k sampling", True),
    (r"FlashInfer is not available\. Falling back to the PyTorch-native", False),
)

RELEASES = ROOT / "tests" / "fixtures" / "engine_logs" / "vllm_releases.yaml"  # each vLLM release and its day
# Lines vLLM prints in some releases only, read in each release's source (its sdist on PyPI): (pattern on a log, the
# first and the last release that prints it, None where the newest release read still does, where it was read).
VLLM_LOG_MARKERS: list[tuple[str, str, str | None, str]] = [
    (
        r"Memory profiling results: total_gpu_memory=",
        "0.6.4",
        "0.6.4.post1",
        "vllm/worker/worker.py determine_num_available_blocks: absent in 0.6.3.post1, 'Memory profiling takes' from 0.6.5",
    ),
    (
        r"model_runner\.py:1115\] Loading model weights took",
        "0.7.0",
        "0.7.3",
        "vllm/worker/model_runner.py load_model: line 1115 in 0.7.0, 0.7.2, 0.7.3 (1116 in 0.7.1, 1099 in 0.6.6.post1;"
        " 'Model loading took' in 0.8.4)",
    ),
    (
        r"Available KV cache memory: ",
        "0.9.1",
        None,
        "vllm/v1/worker/gpu_worker.py determine_available_memory: from 0.9.1, in no file of 0.6.3.post1-0.9.0",
    ),
    (
        r"gpu_worker\.py:276\] Available KV cache memory",
        "0.10.1",
        "0.10.1.1",
        "vllm/v1/worker/gpu_worker.py: line 276 in 0.10.1 and 0.10.1.1 (255 in 0.10.0, 298 in 0.10.2)",
    ),
    (
        r"gpu_model_runner\.py:2007\] Model loading took",
        "0.10.1",
        "0.10.1.1",
        "vllm/v1/worker/gpu_model_runner.py: line 2007 in 0.10.1 and 0.10.1.1 (1892 in 0.10.0, 2392 in 0.10.2)",
    ),
    (
        r"gpu_worker\.py:298\] Available KV cache memory",
        "0.10.2",
        None,
        "vllm/v1/worker/gpu_worker.py: line 298 in 0.10.2 and 0.11.0 (276 in 0.10.1.1, 457 in 0.18.1; 0.11.1-0.18.0 not read)",
    ),
    (
        r"core\.py:708\] EngineCore failed to start",
        "0.11.0",
        None,
        "vllm/v1/engine/core.py: line 708 in 0.11.0 (700 in 0.10.1.1, 718 in 0.10.2; 0.11.1-0.18.0 not read)",
    ),
    (
        r"gpu_worker\.py:440\] Available KV cache memory",
        "0.20.0",
        "0.20.2",
        "vllm/v1/worker/gpu_worker.py determine_available_memory: line 440 in 0.20.0, 0.20.1, 0.20.2 (436 in 0.19.0 and"
        " 0.19.1, 462 in 0.21.0)",
    ),
    (
        r"CUDA graph memory profiling is enabled \(default since",
        "0.20.0",
        None,
        "vllm/v1/worker/gpu_worker.py: the estimate subtracted by default (envs.py VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS"
        " '1') in 0.20.0-0.21.0; 0.19.x print 'is enabled (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1)' when opted in",
    ),
    (r"gpt-oss", "0.10.1", None, "vllm/model_executor/models/registry.py: GptOssForCausalLM from 0.10.1 (not in 0.10.0)"),
    (
        r"gemma-4",
        "0.19.0",
        None,
        "vllm/model_executor/models/registry.py: Gemma4ForConditionalGeneration from 0.19.0 (not in 0.18.1)",
    ),
    (
        r"LMCacheConnectorV1",
        "0.8.5",
        None,
        "vllm/distributed/kv_transfer/kv_connector/v1/lmcache_connector.py: from 0.8.5 (not in 0.8.4)",
    ),
]


def default_source() -> Path:
    """Where the collected logs are read from: the repository's copy."""
    return REPO_COPY


def _match(table: list[tuple[Any, ...]], text: str | None) -> tuple[Any, ...] | None:
    return next((row for row in table if text and re.search(row[0], text)), None)


def _number(value: Any) -> float | None:
    """A number, or a number SGLang's server_args dump printed as a string ('0.85', '48'); else None."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value.strip()):
        return float(value) if "." in value else int(value)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _sglang_memory_in_use(log: dict[str, Any], logged: dict[str, Any], case: dict[str, Any]) -> int | None:
    """What else held an SGLang GPU when its weights began to load, in bytes: the total the process
    sees less SGLang's logged free memory ("Load weight begin. avail mem=X GB", GiB) and the CUDA
    context kvcalc models; None when the log prints no free memory or less than that context is held."""
    avail = _number(logged.get("avail_before_load_gib"))
    if log["engine"] != "sglang" or avail is None:
        return None
    from kvcalc import capacity, engines, presets
    from kvcalc.engines.sglang import SGLANG_CONTEXT_BYTES, SGLANG_CONTEXT_TP_BYTES
    from kvcalc.units import GiB, parse_size

    given = case.get("memory")
    preset = None if given else presets.load_gpu(case["gpu"], None)
    memory = parse_size(given) if given else preset.memory_bytes
    total, _ = capacity.process_total(memory, preset, engines.PROFILES["sglang"])
    context = SGLANG_CONTEXT_TP_BYTES if case["tp"] > 1 else SGLANG_CONTEXT_BYTES
    in_use = total - round(avail * GiB) - context
    return in_use if in_use > 0 else None


def convert(log: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """A replayable case for one collected log, or None and every reason why not ("; "-separated)."""
    logged, flags = dict(log.get("logged") or {}), log.get("flags") or {}
    why = []
    model = _match(MODELS, log.get("model"))
    if model is None or not model[1]:
        why.append(model[4] if model else f"no kvcalc model for {log.get('model')!r}")
    device = _match(DEVICES, log.get("device"))
    memory = f"{logged['total_memory_gib']}GiB" if _number(logged.get("total_memory_gib")) else device and device[2]
    if device is None:
        why.append(f"GPU not known: {log.get('device')!r}")
    elif not (device[1] or memory):
        why.append(f"GPU not named and no total in the excerpt: {log.get('device')!r}")
    if log["engine"] not in FLAGS:
        why.append(f"{log['engine']}: only vLLM, SGLang and TensorRT-LLM logs are replayed so far")
    else:
        if log["engine"] == "sglang" and _number(logged.get("k_size_gb")) and _number(logged.get("v_size_gb")):
            # "KV Cache is allocated. #tokens: N, K size: X GB, V size: Y GB": SGLang's GB are 2^30 bytes
            logged["available_kv_gib"] = round(_number(logged["k_size_gb"]) + _number(logged["v_size_gb"]), 2)
        if log["engine"] == "trtllm" and _number(logged.get("available_kv_gib")) is None and _number(logged.get("kv_alloc_gib")):
            logged["available_kv_gib"] = logged["kv_alloc_gib"]  # "Allocated X GiB for max tokens in paged KV cache"
        if _number(logged.get("available_kv_gib")) is None:
            why.append(
                {
                    "vllm": "no 'Available KV cache memory' line",
                    "sglang": "no 'KV Cache is allocated' line with K and V sizes",
                }.get(log["engine"], "no KV cache size line")
            )
    unsupported = sorted(
        k
        for k in flags
        if flags[k]
        and (k.startswith("speculative") or k in ("enable_expert_parallel", "decode_context_parallel_size", "enable_lora"))
    )
    if unsupported:
        why.append(f"kvcalc does not model {', '.join(unsupported)}")
    if why or model is None or device is None:
        return None, "; ".join(why)
    tp, pp = log.get("tp") or 1, log.get("pp") or 1
    case: dict[str, Any] = {
        "name": log["name"],
        "url": log["url"],
        "group": log["group"],
        "version": log.get("version"),
        "device": log.get("device"),
        "model": model[1],
        "kind": model[2],
        "tp": tp,
    }
    if pp > 1:
        case["pp"] = pp
    if device[1]:
        case["gpu"] = device[1]
    if memory:
        case["memory"] = memory
    case["memory_source"] = "logged total_memory" if _number(logged.get("total_memory_gib")) else device[3]
    in_use = _sglang_memory_in_use(log, logged, case)
    if in_use:
        case["memory_in_use"] = str(in_use)
    seq = next(  # vLLM's, TensorRT-LLM's, SGLang's
        (
            _number(flags.get(k))
            for k in ("max_model_len", "max_seq_len", "context_length", "context_len")
            if _number(flags.get(k))
        ),
        None,
    )
    if isinstance(seq, int):
        case["seq"] = seq
    if isinstance(flags.get("block_size"), int):
        case["block_size"] = flags["block_size"]
    if flags.get("quantization") == "fp8":  # online FP8: the layers fp8, the embeddings kept
        fp8 = {"qwen3-30b-a3b": "models/qwen3-30b-a3b-fp8.yaml", "llama3.1-8b": "models/llama3.1-8b-fp8.yaml"}
        if model[1] not in fp8:
            return None, f"--quantization fp8 of {model[1]}: no fp8 model file for it"
        case["model"] = fp8[model[1]]
    if str(flags.get("kv_cache_dtype", "auto")).startswith("fp8"):
        case["kv_dtype"] = "fp8"
    engine: dict[str, Any] = {"name": log["engine"]}
    engine.update({k: _number(flags[k]) for k in FLAGS[log["engine"]] if _number(flags.get(k)) is not None})
    engine.update({k: flags[k] for k in FLAGS[log["engine"]] if isinstance(flags.get(k), bool)})
    engine.update({k: flags[k] for k in FLAGS[log["engine"]] if k in TEXT_FLAGS and k in flags})
    desired = re.search(r"Desired GPU memory utilization is \(([0-9.]+),", log.get("raw") or "")
    if "gpu_memory_utilization" not in engine and desired:  # vLLM's own line, when the command line was not published
        engine["gpu_memory_utilization"] = float(desired.group(1))
    sampler = next((ran for line, ran in SAMPLER_LINES if re.search(line, log.get("raw") or "")), None)
    if log["engine"] == "vllm" and "vllm_flashinfer_sampler" not in engine and sampler is not None:
        engine["vllm_flashinfer_sampler"] = sampler
    release = str(log.get("version") or "")
    if re.match(r"v?\d+\.\d+", release):  # as the engine prints it
        engine[f"{log['engine']}_version"] = release
    case["engine"] = engine
    case["logged"] = {k: v for k, v in logged.items() if _number(v) is not None}
    case["text_only"] = model[3]
    notes = [n for n in (model[4], log.get("note") or "") if n]
    if notes:
        case["note"] = " ".join(notes)
    if log["engine"] == "vllm" and "vllm_version" not in engine:
        return replay_over_release_range(case, *release_range(log)), ""
    if log["engine"] == "vllm" and ".dev" in release:
        return replay_over_release_range(case, *development_build_range(log, release), stated=release), ""
    return case, ""


def _narrow(log: dict[str, Any], possible: list[str], evidence: list[str]) -> tuple[list[str], list[str]]:
    """The releases of `possible` whose code prints every VLLM_LOG_MARKERS line the log prints, with the evidence."""
    rank = {version: i for i, (version, _) in enumerate(vllm_releases())}
    for pattern, first, last, where in VLLM_LOG_MARKERS:
        if re.search(pattern, log.get("raw") or ""):
            possible = [v for v in possible if rank[first] <= rank[v] and (last is None or rank[v] <= rank[last])]
            evidence = [*evidence, f"'{pattern.replace(chr(92), '')}' printed by {first}{'-' + last if last else ' on'}: {where}"]
    return possible, evidence


def development_build_range(log: dict[str, Any], release: str) -> tuple[list[str], list[str]]:
    """The releases whose code a development build can run, oldest first, and the evidence: setuptools_scm numbers a
    build X.devN+gHASH N commits past the last tag on main, so its code is past the newest release before X and ships
    in the first release from X on; the log's VLLM_LOG_MARKERS lines narrow the two (kvcalc.engines.vllm
    .development_build_note)."""
    from kvcalc.units import parse_engine_version

    base = parse_engine_version(release)
    releases = [version for version, _ in vllm_releases()]
    before = [version for version in releases if parse_engine_version(version) < base]
    after = [version for version in releases if parse_engine_version(version) >= base]
    possible = before[-1:] + after[:1]
    evidence = [f"development build {release} (setuptools_scm): code past {possible[0]} that ships in {possible[-1]}"]
    return _narrow(log, possible, evidence)


def vllm_releases() -> list[tuple[str, Any]]:
    """vLLM's releases, oldest first, each with the day PyPI first received it (tests/fixtures/engine_logs/vllm_releases.yaml)."""
    return list(yaml.safe_load(RELEASES.read_text(encoding="utf-8")).items())


def release_range(log: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The vLLM releases that could have run a log that states none, oldest first, and the evidence: the releases
    out on the day it was posted (`posted`, with `posted_where`; a development build, `build: development`, runs
    code past the newest of them that the next release ships: those two), narrowed by each VLLM_LOG_MARKERS line the log prints. None
    without a posted day: the log alone does not bound the newest release."""
    releases = vllm_releases()
    if not log.get("posted"):
        return [], []
    posted = log["posted"]
    possible = [version for version, day in releases if day <= posted]
    evidence = [f"posted {posted} ({log['posted_where']}): {possible[-1]} the newest release out"]
    if log.get("build") == "development":
        ahead = next(version for version, day in releases if day > posted)
        possible = [possible[-1], ahead]
        evidence.append(f"a development build ({log['build_where']}): code past {possible[0]} that ships in {ahead}")
    return _narrow(log, possible, evidence)


def _calibration() -> Any:
    """scripts/calibration.py, whose predict() replays a case."""
    spec = importlib.util.spec_from_file_location("calibration", Path(__file__).with_name("calibration.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replay_over_release_range(
    case: dict[str, Any], releases: list[str], evidence: list[str], stated: str | None = None
) -> dict[str, Any]:
    """The case replayed under the rules that hold over the releases its log could come from (release_range): where
    kvcalc gives every one of them the same budget, that release range is as good as a stated release and the case
    replays at its newest; where the rules differ within it, the case is scored at the release that leaves the least
    KV memory (the safe side). The range and its evidence are kept on the case, and its note says which held.
    `stated`: the development build the log names (development_build_range), replayed as one of the releases."""
    if not releases:
        return case
    from kvcalc.units import format_bytes

    predict = _calibration().predict
    usable = {
        version: predict({**case, "engine": {**case["engine"], "vllm_version": version}})["usable_bytes"] for version in releases
    }
    chosen = min(reversed(releases), key=lambda version: usable[version])  # the newest among the least
    span = f"{releases[0]}-{releases[-1]}" if len(releases) > 1 else releases[0]
    what = (
        f"development build {stated}; its number and log lines leave {span}"
        if stated
        else f"release not stated; its post date and log lines leave {span}"
    )
    if len(set(usable.values())) == 1:
        held = f"{what} (version_evidence), and kvcalc's rules give each the same budget (replayed as {chosen})"
    else:
        ends = ", ".join(f"{version} {format_bytes(usable[version])}" for version in (releases[0], releases[-1]))
        held = f"{what} (version_evidence), and kvcalc's rules differ within it ({ends}): scored at {chosen}, the least KV"
    return {
        **case,
        "engine": {**case["engine"], "vllm_version": chosen},
        "version_range": [releases[0], releases[-1]],
        "version_evidence": evidence,
        "note": " ".join(n for n in (case.get("note", ""), held + ".") if n),
    }


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else default_source()
    collected = yaml.safe_load(source.read_text(encoding="utf-8"))
    kept = (
        {c["name"] + c["url"]: c for c in (yaml.safe_load(OUT.read_text(encoding="utf-8")) or {}).get("cases", [])}
        if OUT.exists()
        else {}
    )
    cases, unmapped = [], []
    for log in collected:
        case, why = convert(log)
        if case is None:
            unmapped.append({"name": log["name"], "url": log["url"], "group": log.get("group"), "reason": why})
            continue
        old = kept.get(case["name"] + case["url"], {})
        if "miss" in old:  # a miss note is written by hand, after looking at the case
            case["miss"] = old["miss"]
        cases.append(case)
    header = (
        "# Published start-up logs kvcalc never fitted to (held out), generated by scripts/import_published_logs.py\n"
        f"# from {source.name}: {len(cases)} replayable cases, {len(unmapped)} kept with the reason they are not.\n"
    )
    OUT.write_text(
        header + yaml.safe_dump({"cases": cases, "unmapped": unmapped}, sort_keys=False, allow_unicode=True, width=200)
    )
    print(f"{len(cases)} cases, {len(unmapped)} unmapped -> {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
