"""Published vLLM start-ups of hybrid (Mamba-2, Gated DeltaNet) and sliding-window models: kvcalc's model files
reproduce the pool each log prints (attention block size, mamba page padding, blocks, tokens), the importer maps
their checkpoints and GPUs, and vLLM's token line for these models stays within 10 % at the median."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from kvcalc.cli import app
from kvcalc.units import GiB, parse_engine_version
from tests.scripts import load_script

calibration = load_script("scripts/calibration.py")
MODELS = calibration.LOGS / "models"


def _fit(*args: str) -> dict:
    result = CliRunner().invoke(app, ["fit", *args, "--engine", "vllm", "--json"])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def _line(doc: dict, name: str) -> float:
    [value] = [line["value"] for line in doc["engine_log"] if line["name"] == name]
    return value


def test_nemotron_3_nano_4b_file_gives_the_pool_its_log_prints() -> None:
    # https://github.com/djangodevreng/dgx-spark-benchmarks/blob/5636536703fb6fe6a4992f68162b93fa03e7f15e/results/nemotron-3/nemotron-3-nano-4b/bf16/_bootlog.txt
    # (vLLM 0.19.2rc1.dev134, GB10, gmu 0.95, fp8 KV, 49,152 tokens): "Setting attention block size to 1952 tokens",
    # "Padding mamba page size by 0.18%", "Available KV cache memory: 103.39 GiB", "GPU KV cache size: 1,934,432 tokens"
    doc = _fit(
        "--model", str(MODELS / "nemotron-3-nano-4b.yaml"), "--gpu", "dgx-spark", "--seq", "49152", "--kv-dtype", "fp8",
        "--vllm-version", "0.20.0", "--gpu-memory-utilization", "0.95", "--no-enable-prefix-caching",
    )  # fmt: skip
    assert _line(doc, "attention_block_size") == 1952
    assert round(_line(doc, "mamba_page_padding_percent"), 2) == 0.18
    assert doc["budget"]["usable_bytes"] / GiB == pytest.approx(103.39, abs=0.2)
    # the build prints the 0.19 line (num_blocks // 7 groups * block), as kvcalc's 0.20.0 line does: 1,932,480 tokens.
    # rel 0.002: the token line scales with the budget, which is 0.13 GiB (0.12 %) below the log's 103.39 GiB
    tokens = next(line for line in doc["engine_log"] if line["name"] == "gpu_kv_cache_tokens")
    assert "// 7 groups * block 1952" in tokens["note"]
    assert tokens["value"] == pytest.approx(1_934_432, rel=0.002)


def test_nemotron_3_nano_30b_file_gives_the_pool_its_log_prints() -> None:
    # https://github.com/renta0426/NVIDIA-Nemotron-Model-Reasoning-Challenge/blob/07d3f94673198d2298e04f708819f2ac10758a12/discussion/train-set-zero-shot-inference-exploration.ipynb
    # (vLLM 0.17.1 offline LLM, RTX PRO 6000 Blackwell Server Edition, 8,192 tokens): block 2096, padding 0.58 %,
    # "Available KV cache memory: 23.56 GiB", "GPU KV cache size: 821,632 tokens", concurrency 245.50x
    doc = _fit(
        "--model", str(MODELS / "nemotron-3-nano-30b-a3b-bf16.yaml"), "--gpu", "rtx-pro-6000", "--seq", "8192",
        "--vllm-version", "0.17.1", "--vllm-entrypoint", "llm", "--no-enable-prefix-caching",
    )  # fmt: skip
    assert _line(doc, "attention_block_size") == 2096
    assert round(_line(doc, "mamba_page_padding_percent"), 2) == 0.58
    assert doc["budget"]["usable_bytes"] / GiB == pytest.approx(23.56, abs=0.2)
    # the tokens follow the budget: 0.17.1 charges the no-capture non-torch figure (0.13 GiB), 0.19 GiB above the log
    assert _line(doc, "gpu_kv_cache_tokens") == pytest.approx(821_632, rel=0.02)
    assert _line(doc, "max_concurrency") == pytest.approx(245.50, rel=0.01)


def test_qwen3_5_35b_a3b_fp8_file_gives_the_pool_its_log_prints() -> None:
    # https://github.com/guardkit/guardkit/blob/fbd4f9935aea4590b018ef616c52d0d69f669233/docs/reviews/agentic-factory/qwen-run-2.md
    # (vLLM 0.18.1rc1.dev147, GB10, gmu 0.8, 262,144 tokens, prefix caching): block 1056, padding 0.76 %,
    # "Model loading took 34.22 GiB", "GPU KV cache size: 729,696 tokens", concurrency 10.85x
    doc = _fit(
        "--model", str(MODELS / "qwen3.5-35b-a3b-fp8.yaml"), "--gpu", "dgx-spark", "--seq", "262144",
        "--vllm-version", "0.18.1", "--gpu-memory-utilization", "0.8", "--enable-prefix-caching",
    )  # fmt: skip
    assert _line(doc, "attention_block_size") == 1056
    assert round(_line(doc, "mamba_page_padding_percent"), 2) == 0.76
    weights = doc["budget"]["weights_bytes"] + doc["budget"]["vision_bytes"]
    assert weights / GiB == pytest.approx(34.22, abs=0.3)  # fp8 layers, bf16 embeddings, LM head and vision tower
    assert _line(doc, "gpu_kv_cache_tokens") == pytest.approx(729_696, rel=0.03)


def test_the_importer_maps_the_new_checkpoints_and_gpus() -> None:
    importer = load_script("scripts/import_published_logs.py")
    log = {
        "name": "n", "url": "https://github.com/o/r/blob/x/a.log", "group": "o/r", "engine": "vllm", "version": "0.26.0",
        "device": "NVIDIA B300 SXM6 AC", "model": "google/gemma-4-31B-it", "tp": 1, "pp": 1,
        "flags": {"max_model_len": 16384}, "logged": {"available_kv_gib": 182.37, "total_memory_gib": 267.69},
    }  # fmt: skip
    case, _ = importer.convert(log)
    assert (case["model"], case["kind"], case["gpu"], case["memory"]) == ("gemma4-31b", "sliding", "b300", "267.69GiB")
    blackwell = {
        **log,
        "device": "NVIDIA RTX PRO 6000 Blackwell Server Edition (named by the log)",
        "logged": {"available_kv_gib": 23.56},
    }
    nemotron = {**blackwell, "model": "/kaggle/input/models/metric/nemotron-3-nano-30b-a3b-bf16/transformers/default/1"}
    case, _ = importer.convert(nemotron)
    assert (case["model"], case["kind"], case["gpu"]) == ("models/nemotron-3-nano-30b-a3b-bf16.yaml", "hybrid", "rtx-pro-6000")
    case, _ = importer.convert({**blackwell, "model": "Qwen/Qwen3.5-35B-A3B-FP8"})
    assert (case["model"], case["text_only"]) == ("models/qwen3.5-35b-a3b-fp8.yaml", False)
    case, why = importer.convert({**blackwell, "model": "nvidia/NVIDIA-Nemotron-3-Nano-4B-FP8"})
    assert case is None and why == "a ModelOpt FP8 checkpoint whose config.json (which layers stay 16-bit) no stored source holds"


def test_vllm_token_line_for_published_hybrid_models_is_within_10_percent_at_the_median() -> None:
    # issue 20's "done when": vLLM's token line printed for hybrid models within 10 % at the median
    hybrid = [case for case in calibration.published_cases() if case["kind"] in ("hybrid", "sliding")]
    errors = [abs(error) for _, error in calibration.token_line_errors(hybrid)]
    assert len(errors) >= 10
    assert statistics.median(errors) <= 10


def test_vllm_token_line_follows_concurrency_from_0_20_1_for_every_model() -> None:
    # _report_kv_cache_config: num_blocks // groups * block in the 0.20.0 wheel, int(max_concurrency * max_model_len)
    # in the 0.20.1, 0.20.2 and 0.21.0 wheels. Gemma 4 26B-A4B on 0.20.0 logs 177,440 tokens at 35.75x of 8,192
    # (https://github.com/jethac/dgx-spark-hijinks/blob/29166059ba96e77d33f60b7fd0e8032a40ab87e4/results/vllm_gemma4_26b_a4b_bf16_20260607T131917Z_server.log);
    # Gemma 4 31B on 0.26.0 logs 217,116 = 13.25 * 16,384 (https://github.com/johnpfeiffer/source.johnpfeiffer.github.io/blob/13159be9b5103cdd62d8b01b68ec03f9b28efbb6/content/ai/b300-deepseek-0731.md)
    args = ["--model", "gemma4-26b-a4b", "--gpu", "dgx-spark", "--seq", "8192", "--gpu-memory-utilization", "0.8"]
    old = _fit(*args, "--max-num-batched-tokens", "4096", "--vllm-version", "0.20.0")
    new = _fit(*args, "--vllm-version", "0.20.1")
    assert "// " in next(line["note"] for line in old["engine_log"] if line["name"] == "gpu_kv_cache_tokens")
    # kvcalc's 0.20.0 line is blocks, not concurrency * 8,192 (as the log's 177,440 is not 35.75 * 8,192 = 292,864);
    # rel 0.05: kvcalc's budget is 1.89 GiB (4.6 %) above the log's 40.61 GiB available and the token line follows it
    assert _line(old, "gpu_kv_cache_tokens") < 0.9 * _line(old, "max_concurrency") * 8192
    assert _line(old, "gpu_kv_cache_tokens") == pytest.approx(177_440, rel=0.05)
    assert _line(new, "gpu_kv_cache_tokens") == int(_line(new, "max_concurrency") * 8192)
    # the Gemma 4 31B log (0.26.0): kvcalc prints int(concurrency * 16,384) as that log does; its concurrency, 19.46
    # against the logged 13.25, is a documented miss (docs/engines.md), not asserted here
    b300 = _fit(
        "--model", "gemma4-31b", "--gpu", "b300", "--memory", "267.69GiB", "--seq", "16384",
        "--gpu-memory-utilization", "0.92", "--vllm-version", "0.26.0",
    )  # fmt: skip
    assert _line(b300, "gpu_kv_cache_tokens") == int(_line(b300, "max_concurrency") * 16384)
    # every published log from 0.20.1 on that prints both lines obeys the second formula
    for case in calibration.published_cases():
        logged, version = case["logged"], case["engine"].get("vllm_version")
        both = case["engine"]["name"] == "vllm" and "kv_tokens" in logged and "max_concurrency" in logged
        if both and version and parse_engine_version(version) >= (0, 20, 1):
            assert logged["kv_tokens"] == pytest.approx(logged["max_concurrency"] * case["seq"], abs=0.005 * case["seq"] + 1)


def test_each_published_case_is_classed_by_its_model_file() -> None:
    # "hybrid or sliding-window models" in docs/engines.md counts cases by `kind`: a model file with state layers is
    # hybrid, one with window (sliding or chunked) layers and no state is sliding, any other dense or MoE
    from kvcalc import presets

    for case in calibration.published_cases():
        model = str(MODELS.parent / case["model"]) if case["model"].startswith("models/") else case["model"]
        spec = presets.load_model(model, None)
        windowed = any(kind in ("sliding", "chunked") for kind in spec.attention_kinds())
        expected = "hybrid" if any(spec.state_kinds()) else "sliding" if windowed else case["kind"]
        assert case["kind"] == expected, case["name"]
        assert expected in ("hybrid", "sliding") or case["kind"] in ("dense", "moe"), case["name"]


def test_phi_3_mini_4k_slides_in_vllm_as_its_log_prints() -> None:
    # https://github.com/sridhar1804/local-ai/blob/eb08446bfa2507a2bae3d9323f1732376c475c8a/logs/vllm.log (vLLM 0.19.1,
    # gmu 0.85, 4,096 tokens): "GPU KV cache size: 35,648 tokens", "Maximum concurrency for 4,096 tokens per request:
    # 8.67x". 2,228 blocks of 16 over 257 blocks a request: every layer keeps its window of 2,047 (a full-attention
    # layer would hold 256 blocks: 8.70x)
    blocks = 35_648 // 16
    assert round(blocks / 257, 2) == 8.67 and round(blocks / 256, 2) == 8.70
    [case] = [case for case in calibration.published_cases() if case["url"].startswith("https://github.com/sridhar1804/")]
    assert (case["model"], case["kind"]) == ("phi3-mini-4k", "sliding")
    doc = _fit(
        "--model", "phi3-mini-4k", "--gpu", "rtx3090", "--seq", "4096", "--gpu-memory-utilization", "0.85",
        "--vllm-version", "0.19.1",
    )  # fmt: skip
    per_request = _line(doc, "gpu_kv_cache_tokens") / 16 / _line(doc, "max_concurrency")
    assert per_request == pytest.approx(257)
