"""Fold published batch-1 decode measurements into tests/fixtures/decode_calibration.json.

    python benchmarks/import_decode_cases.py [COLLECTED.json]   # default tests/fixtures/decode_published.json

Each collected row (group, url, engine, version, GPU, model, weight format, context, TP, tokens/s)
becomes a case: its model mapped to a kvcalc preset, its GPU to a GPU preset, and the bytes one
step reads computed by kvcalc's own decode (kvcalc.latency.decode: the weights one rank reads,
MoE experts touched, the KV at the mean context). A row that cannot be mapped stays in the fixture
as excluded, with the reason. The cases that came from elsewhere (origin "legacy", the first 168)
are kept as they are; the collected ones are replaced, so re-importing is this one command.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kvcalc import latency, presets  # noqa: E402
from kvcalc.decode_profiles import (  # noqa: E402
    COMPUTE_EFFICIENCY,
    at_context,
    llamacpp_launches_per_kernel,
    profile_for,
    stored_format_class,
)
from kvcalc.errors import InvalidInput  # noqa: E402
from kvcalc.kvcache import batch_bytes  # noqa: E402
from kvcalc.spec import StoredWeights, Workload  # noqa: E402
from kvcalc.units import DType, parse_engine_version  # noqa: E402
from kvcalc.weights import WeightFormat, require_params, weight_bytes  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "decode_calibration.json"
COLLECTED = ROOT / "tests" / "fixtures" / "decode_published.json"  # the collected rows as published, each with its URL
DEFAULT_PROMPT = 32  # tokens, where a source gives no prompt length (a chat prompt of a sentence or two)
DEFAULT_OUTPUT = 256  # tokens, where a source gives no output length

# GPU as the source names it -> kvcalc GPU preset, and the link its TP ranks talk over
GPUS: list[tuple[str, str, str]] = [
    (r"A100 \(PCIe", "a100-80gb-pcie", "pcie"),
    (r"A100-80GB? ?\(power limited", "a100-80gb", "nvlink"),
    (r"A100[- ]80G", "a100-80gb", "nvlink"),
    (r"H100 SXM", "h100-sxm", "nvlink"),
    (r"H20\b", "h20", "nvlink"),
    (r"MI300X", "mi300x", "xgmi"),
    (r"MI250X", "mi250x-gcd", "xgmi"),
    (r"B200", "b200", "nvlink"),
    (r"RTX 4090", "rtx4090", "pcie"),
    (r"RTX 3090 Ti", "rtx3090ti", "pcie"),
    (r"RTX 3090", "rtx3090", "pcie"),
    (r"A10G", "a10g", "pcie"),
    (r"7900 XTX", "rx7900xtx", "pcie"),
    (r"Jetson (AGX )?Orin", "jetson-agx-orin", "pcie"),
    (r"GB10", "dgx-spark", "pcie"),
    (r"Tesla T4", "t4", "pcie"),
    (r"Apple M4 Pro", "apple-m4-pro", "pcie"),
    (r"Apple M5 Max", "apple-m5-max", "pcie"),
    (r"Apple M1 Max", "apple-m1-max", "pcie"),
    (r"H100 80GB HBM3", "h100-sxm", "nvlink"),  # how nvidia-smi names the SXM5 part (the h100-sxm preset's alias)
    (r"MI350X", "mi350x", "xgmi"),
    (r"Ryzen (AI )?Max\+ 395", "radeon-8060s", "pcie"),  # the APU's one GPU (the radeon-8060s preset's source)
]

# GPU names that do not say which part: the reason such a row stays out (the parts differ in bandwidth)
UNSTATED_VARIANTS: list[tuple[str, str]] = [
    (r"A100( GPU)?$", "A100 variant (40 or 80 GB) not stated"),  # 1555 or 2039 GB/s
    (r"^(NVIDIA )?H100( 80G)?$", "H100 variant (SXM, PCIe or NVL) not stated"),  # 3.35, 2.0 or 3.9 TB/s
]

# model as the source names it (case-blind, searched) -> kvcalc model preset of that shape
MODELS: list[tuple[str, str]] = [
    (r"qwen2\.5-coder-32b", "qwen2.5-coder-32b"),
    (r"qwen2(\.5)?(-coder|-math)?-72b", "qwen2.5-72b"),
    (r"qwen2\.5(-coder)?-32b", "qwen2.5-32b"),
    (r"(qwen2\.5(-coder)?-14b|distill-qwen-14b)", "qwen2.5-14b"),
    (r"(qwen2(\.5)?(-coder)?-7b|distill-qwen-7b)", "qwen2.5-7b"),
    (r"qwen2\.5(-coder)?-3b", "qwen2.5-3b"),
    (r"qwen2(\.5)?(-coder)?-1\.5b|distill-qwen-1\.5b", "qwen2.5-1.5b"),
    (r"qwen2(\.5)?(-coder)?-0\.5b", "qwen2.5-0.5b"),
    (r"qwen3-0\.6b|qwen3:0\.6b", "qwen3-0.6b"),
    (r"qwen3-1\.7b", "qwen3-1.7b"),
    (r"qwen3-4b(?!-?instruct-2507)", "qwen3-4b"),
    (r"qwen3-8b|qwen3:8b|r1-0528-qwen3-8b", "qwen3-8b"),
    (r"qwen3-14b", "qwen3-14b"),
    (r"qwen3-32b", "qwen3-32b"),
    (r"qwen3(-coder)?-30b-a3b", "qwen3-30b-a3b"),
    (r"qwen3-235b-a22b", "qwen3-235b-a22b"),
    (r"(llama-2-7b|vicuna[- ]7b|llama2-7b)", "llama2-7b"),
    (r"llama-2-70b", "llama2-70b"),
    (r"llama-3-8b\b|^llama-3-8b", "llama3-8b"),
    (r"(llama[- ]3\.1[- ]8b|llama3\.1:8b|distill-llama-8b|hermes-3-llama-3\.1-8b|tulu-3-8b)", "llama3.1-8b"),
    (r"llama[- ]3\.1[- ]70b", "llama3.1-70b"),
    (r"llama-3-70b", "llama3-70b"),  # the preset is meta-llama/Meta-Llama-3-70B's config.json
    (r"llama[- ]3\.1[- ]405b", "llama3.1-405b"),
    (r"llama-3\.2-1b|llama3\.2:1b", "llama3.2-1b"),
    (r"llama-3\.2-3b|llama3\.2:3b", "llama3.2-3b"),
    (r"mixtral-8x7b|mixtral 46\.7b", "mixtral-8x7b"),
    (r"mistral-7b-(instruct-)?v0\.1|^mistral 7b \(awq\)", "mistral-7b-v0.1"),
    (r"mistral-7b-instruct-v0\.3", "mistral-7b"),
    (r"mistral-nemo", "mistral-nemo-12b"),
    (r"mistral-small-3\.[12]-24b", "mistral-small-3.1"),
    (r"deepseek-ai/deepseek-r1$", "deepseek-r1"),
    (r"gpt-oss-120b", "gpt-oss-120b"),
    (r"gpt-oss(-|:)20b", "gpt-oss-20b"),
    (r"gemma-3-1b", "gemma3-1b"),
    (r"gemma-3-4b|gemma3:4b", "gemma3-4b"),
    (r"gemma-3-12b", "gemma3-12b"),
    (r"gemma-3-27b", "gemma3-27b"),
    (r"gemma-2-9b", "gemma2-9b"),
    (r"gemma-2-27b", "gemma2-27b"),
    (r"phi-4-mini-(instruct|reasoning)", "phi4-mini"),  # the reasoning tune is the same 3.8B Phi3ForCausalLM
    (r"(^|_)phi-4-(q4|4bit)|^phi-4-(?!mini)|^phi-4$", "phi-4"),
    (r"phi-3\.5-mini", "phi3.5-mini"),
    (r"olmo-2-1124-13b", "olmo2-13b"),
    (r"olmo-2-0325-32b", "olmo2-32b"),
    # issue 25: presets added since this table was written. A fine-tune, abliterated or merged checkpoint whose
    # name states its base (Qwopus3.6-27B, Ornstein-3.6-27B, WorldSim-Opus-3.6-35B-A3B, Gemopus-4-26B-A4B, "-abliterated", "-Uncensored",
    # "-heretic") has the base's shapes; a name that does not state its base (Tess-4-35B-A3B, Ornith-1.0-35B,
    # Darwin-35B-A3B) stays out.
    (r"qwen3\.6-27b|qwopus3\.6-27b|ornstein(-hermes)?-3\.6-27b", "qwen3.6-27b"),
    (r"qwen3\.6-35b-a3b|ornstein3\.6-35b-a3b|opus-3\.6-35b-a3b", "qwen3.6-35b-a3b"),
    (r"qwen3\.5-27b|qwopus3\.5-27b", "qwen3.5-27b"),
    (r"qwen3\.5-35b-a3b", "qwen3.5-35b-a3b"),
    (r"gemma-4-26b-a4b|gemopus-4-26b-a4b", "gemma4-26b-a4b"),
    (r"gemma-4-31b", "gemma4-31b"),
    (r"gemma-4-e4b", "gemma4-e4b"),
    (r"gemma-4-e2b", "gemma4-e2b"),
    (r"gemma-3n-e4b", "gemma3n-e4b"),
    (r"gemma-2-2b", "gemma2-2b"),
    (r"glm-4\.7-flash", "glm-4.7-flash"),
    (r"nemotron-3-nano-30b-a3b", "nemotron-3-nano-30b-a3b"),
    # NVIDIA's post-trained Nemotron-3-Nano-30B-A3B: nemotron_h, 31.6B parameters (its Hugging Face page)
    (r"nemotron-cascade-2-30b-a3b", "nemotron-3-nano-30b-a3b"),
    (r"deepseek-ai/deepseek-v3\.2$", "deepseek-v3.2"),
    (r"deepseek-coder-v2-lite", "deepseek-v2-lite"),  # DeepSeek-V2-Lite's config, trained on code
    (r"codellama[- ]34b", "codellama-34b"),
    (r"smollm2-135m", "smollm2-135m"),
    (r"smollm2-360m", "smollm2-360m"),
    (r"smollm2-1\.7b", "smollm2-1.7b"),
    (r"tinyllama[- ]1(\.1)?b", "tinyllama-1.1b"),  # AutoAWQ's "TinyLlama 1B" is TinyLlama-1.1B, the only one
    (r"^falcon[- ]7b", "falcon-7b"),
    (r"kimi-linear-48b-a3b", "kimi-linear-48b-a3b"),
    (r"ministral-3-3b", "ministral-3-3b"),
    (r"mistral-small-24b-instruct-2501", "mistral-small-3.1"),  # the preset counts the 24B text decoder only
    (r"deepcoder-14b", "qwen2.5-14b"),  # agentica's RL tune of DeepSeek-R1-Distill-Qwen-14B
    (r"llama-3\.1-nemotron-nano-8b", "llama3.1-8b"),  # NVIDIA's tune of Llama-3.1-8B-Instruct
    # LiquidAI/LFM2.5-1.2B-Base's card: "builds on the LFM2 architecture", 1.17B parameters, 16 layers (10 conv + 6 GQA),
    # vocabulary 65,536: LFM2-1.2B's shapes; its Instruct, Thinking and JP tunes are made from it
    (r"lfm2(\.5)?-1\.2b", "lfm2-1.2b"),
    # Qwen3-Coder-Next's card: Qwen3-Next's 80B-A3B layout (48 layers, 3 Gated DeltaNet : 1 gated attention, 512 experts, top-10)
    (r"qwen3-coder-next", "qwen3-next-80b-a3b"),
    # issue 25, second pass: checkpoints whose config.json has a preset's shapes. DeepSeek-R1-0528 is a new
    # post-training of DeepSeek-R1 (its card: "upgraded ... the same base model"; DeepseekV3ForCausalLM config);
    # MiniMax-M2.5's config (ai-dynamo/aiconfigurator model_configs/MiniMaxAI--MiniMax-M2.5_config.json, 095f58a)
    # is MiniMax-M2's to the field (62 layers, 48 heads, 8 KV heads, 256 experts of 1536, max_position 196608);
    # MiniMax-M2.7's is not (max_position 204800) and stays out.
    (r"deepseek-ai/deepseek-r1-0528$", "deepseek-r1"),
    (r"deepseek-ai/deepseek-v3\.1$", "deepseek-v3.1"),
    (r"kimi-k2\.5", "kimi-k2.5"),
    (r"minimax-m2\.5", "minimax-m2"),
    (r"minimax-m2$", "minimax-m2"),
    (r"llama-4-scout-17b-16e", "llama4-scout"),
    (r"qwen3-vl-235b-a22b", "qwen3-vl-235b-a22b"),  # the preset counts the text model; a step reads no vision weight
    (r"qwen3-4b-instruct-2507", "qwen3-4b-2507"),
    (r"granite-4\.0-h-small", "granite-4.0-h-small"),
    (r"phi-4-reasoning", "phi-4-reasoning"),  # the preset's notes: Phi-4-reasoning-plus has the same shapes
    # Mistral-Small-3.1's text decoder, as the preset's notes say of Magistral-Small; Devstral-Small-2507's card:
    # "finetuned from Mistral-Small-3.1", vision encoder removed
    (r"(magistral|devstral)-small-2507", "mistral-small-3.1"),
    # GLM-4.6's config (a third-party copy: glm4_moe, 92 layers, 96 heads, 8 KV heads of 128, hidden 5120, 160 experts
    # of 1536 top-8 + 1 shared, first 3 dense, vocab 151552, max_position 202752) is GLM-4.7's to the field
    (r"glm-4\.6(?![v\d])", "glm-4.7"),
    # presets added for these rows; a tune or distillation whose name states its base has the base's shapes
    (r"qwen3\.5-0\.8b", "qwen3.5-0.8b"),
    (r"qwen3\.5-4b", "qwen3.5-4b"),
    (r"qwen3\.5-9b", "qwen3.5-9b"),
    (r"llama-?2[- ]13b", "llama2-13b"),
    (r"yi-6b", "yi-6b"),
    (r"ernie-4\.5-21b-a3b", "ernie-4.5-21b-a3b"),
    (r"lfm2-8b-a1b", "lfm2-8b-a1b"),
    (r"lfm2\.5-8b-a1b", "lfm2.5-8b-a1b"),
    (r"gemma-4-12b", "gemma4-12b"),
    (r"qwen2-57b-a14b", "qwen2-57b-a14b"),
]

# weight format as the source names it -> (kvcalc dtype of the layers, format class, bits per weight of a GGUF file)
LLAMA3_8B_PARAMS = 8.03e9  # the model llama.cpp's quantize table sizes its files for


def _gguf(gib: float) -> tuple[None, str, float]:
    """A GGUF quant type as a format row: the bits per weight of its whole file, from
    tools/quantize/quantize.cpp's size for Llama-3-8B, and kvcalc's class of those bits."""
    bpw = round(gib * 2**30 * 8 / LLAMA3_8B_PARAMS, 2)
    return None, stored_format_class(bpw), bpw


FORMATS: list[tuple[str, DType | None, str, float | None]] = [
    (r"^(bf16|fp16|fp16 \(q0f16\))$", None, "16-bit", None),
    (r"^fp32$", DType.fp32, "16-bit", None),
    (r"^fp8", DType.fp8, "fp8", None),
    (r"^(gptq-int8|int8|int8_w8a16|int8-weight-only.*|exl2-8bit|ct2-int8|bnb-int8|mlx-8bit|8bit)$", DType.int8, "int8", None),
    # "gptq", "awq": the 4 bits are in the checkpoint's name (-GPTQ-Int4, -AWQ-INT4); _format_conflict checks it
    (
        r"^(awq-int4|gptq-int4|gptq-int4 \(4-bit gptq\)|gptq|gptq4|awq|int4|exl2-4bit|bnb-int4|mlc-q4f16_1|"
        r"mlc-q4f16_1 \(4-bit\)|int4-weight-only.*|int4 \(unspecified\)|mlx-4bit|4bit)$",
        DType.int4,
        "int4",
        None,
    ),
    (r"^(nvfp4|mxfp4)", DType.mxfp4, "fp4", None),
    # llama.cpp: bits per weight of the whole file (tools/quantize/quantize.cpp's table, sizes in GiB of
    # Llama-3-8B: Q3_K_S 3.41G, Q3_K_M 3.74G, Q3_K_L 4.03G, Q4_0 4.34G, Q4_K_S 4.37G, Q4_K_M 4.58G,
    # Q5_K_S 5.21G, Q5_K_M 5.33G, Q6_K 6.14G, Q8_0 7.96G). Unsloth's dynamic (UD, _XL) and other mixes
    # whose size no table states are not mapped.
    (r"^gguf:q3_k_s$", *_gguf(3.41)),
    (r"^gguf:q3_k_m$", *_gguf(3.74)),
    (r"^gguf:q3_k_l$", *_gguf(4.03)),
    (r"^gguf:q4_0$", *_gguf(4.34)),
    (r"^gguf:q4_k_s$", *_gguf(4.37)),
    (r"^gguf:(q4_k_m|q4_k|iq4_nl)$", *_gguf(4.58)),
    (r"^gguf:q5_k_s$", *_gguf(5.21)),
    (r"^gguf:q5_k_m$", *_gguf(5.33)),
    (r"^gguf:q6_k$", *_gguf(6.14)),
    (r"^gguf:q8_0$", *_gguf(7.96)),
    (r"^gguf:f16$", None, "16-bit", None),
]
# a checkpoint whose bits differ by layer, with no stated size: not expressible as one format
MIXED_BITS = r"(^|[-_:/ ])ud[-_]|_k_xl|mixed|w4a16\+fp8"  # unsloth dynamic (UD, _XL), modelopt mixes
# the bits a checkpoint's name states, checked against its row's weight format
NAMED_BITS: list[tuple[str, str]] = [
    (r"int4|4bit|4-bit|nvfp4|mxfp4|w4a16", "4-bit"),
    (r"int8|8bit|8-bit|fp8|w8a", "8-bit"),
]
BITS_IN_NAME = ("gptq", "awq")  # weight formats that name a method, not its bits: the checkpoint's name must
FORMAT_BITS = {"int4": "4-bit", "fp4": "4-bit", "int8": "8-bit", "fp8": "8-bit", "16-bit": "16-bit"}

ENGINES = {
    "vllm": "vllm", "sglang": "sglang", "trtllm": "trtllm", "transformers": "hf", "llamacpp": "llamacpp",
    "other:ollama": "llamacpp",
}  # fmt: skip


def _gpu(name: str) -> tuple[str, str] | None:
    """The GPU preset of a name as a source writes it: the table above, else the preset whose name
    is the source's without vendor words, spaces and what is in parentheses ("NVIDIA GeForce RTX 5090"),
    else the preset one of whose aliases is the name without what is in parentheses, as a driver prints
    it ("AMD Radeon 8060S Graphics (RADV GFX1151)": kvcalc.presets.recognise_gpu)."""
    known = _match(GPUS, name)
    if known is not None:
        return known  # type: ignore[return-value]
    bare = re.sub(r"\(.*?\)|nvidia|geforce|amd|radeon|tesla|[^a-z0-9]", "", name.lower())
    for preset in (entry.name for entry in presets.list_presets("gpu")):
        if re.sub(r"[^a-z0-9]", "", preset) == bare:
            return preset, "pcie"
    device = presets.recognise_gpu(re.sub(r"\s*\(.*?\)", "", name).strip())  # a driver's name: a preset's alias
    return (device, "pcie") if device is not None else None


# presets whose parameters include per-layer embeddings: a step looks up one row of them per layer, while
# kvcalc's decode reads all its parameters (google/gemma-3n and gemma-4 E-model cards: "effective" parameters)
PER_LAYER_EMBEDDINGS = ("gemma3n-e4b", "gemma4-e2b", "gemma4-e4b")


def _reads_not_modelled(preset: str) -> str | None:
    """Why kvcalc's decode cannot say what one step of this preset reads, if it cannot."""
    if preset in PER_LAYER_EMBEDDINGS:
        return f"{preset}: its per-layer embeddings are looked up, not read, each step; kvcalc's decode reads all parameters"
    model = presets.load_model(preset)
    params = require_params(model)
    if model.moe is None and params.active < params.total:
        return (
            f"{preset}: {params.active / 1e9:.1f}B of {params.total / 1e9:.1f}B parameters active, but its experts are"
            " not a MoE block kvcalc's decode reads sparsely: it would read them all"
        )
    return None


def _format_conflict(model: str, weight_format: str, klass: str) -> str | None:
    """Why a row's weight format contradicts the bits its checkpoint's name states, if it does."""
    named = _match(NAMED_BITS, model.split("/")[-1])
    if weight_format in BITS_IN_NAME and named is None:
        return f"weight format {weight_format!r} without its bits, and the checkpoint's name does not state them"
    stated = FORMAT_BITS.get(klass)
    if named is None or stated is None or named[0] == stated:
        return None
    return f"the checkpoint's name says {named[0]}, its weight format {stated}: which one ran is not clear"


def _match(table: list[tuple[str, Any, Any]] | list[tuple[str, Any]], text: str) -> tuple[Any, ...] | None:
    for row in table:
        if re.search(row[0], text, flags=re.IGNORECASE):
            return row[1:]
    return None


# llama-bench's test names, as a submitter quotes them: "tg32 test at d250000", "tg128 @ d4096" (tools/llama-bench: a
# tg test at depth N decodes its tokens after N tokens of context, `-d N`)
LLAMA_BENCH_DEPTH = re.compile(r"\btg(\d+)\b[^;]*?(?:@|\bat)\s*d(\d+)\b")
# a depth given without llama-bench's tgN @ dN label: its -d / --n-depth flag, or "at depth N" in words
DEPTH_ALONE = re.compile(r"(?:(?<![\w-])-d\s+|--n-depth[= ]|\bat depth\s+)(\d+)\b")


def _context(row: dict[str, Any]) -> int:
    """The mean context of the row's decode: its prompt and half its output, or a llama-bench test's depth and
    half its tokens where the note states one (LLAMA_BENCH_DEPTH)."""
    note = row.get("note") or ""
    depth = LLAMA_BENCH_DEPTH.search(note)
    if depth:
        return int(depth[2]) + int(depth[1]) // 2
    half_output = (row.get("output_len") or DEFAULT_OUTPUT) // 2
    if alone := DEPTH_ALONE.search(note):
        return int(alone[1]) + half_output
    return (row.get("input_len") or DEFAULT_PROMPT) + half_output


OUTPUT_AND_TOTAL_RATES = re.compile(r"tokSOut ([0-9.]+) \(tokSTotal ([0-9.]+)")  # localmaxxing's two published rates
SAME_CLOCK_TOLERANCE = 0.01


def _rates_share_one_clock(row: dict[str, Any]) -> bool:
    """A source that publishes an output rate and a total (prompt + output) rate whose ratio is
    (prompt + output) / output divides both by one wall time: the request's, prefill included."""
    found = OUTPUT_AND_TOTAL_RATES.search(row.get("metric_as_published", ""))
    prompt, output = row.get("input_len"), row.get("output_len")
    if not (found and prompt and output and float(found[1]) > 0):
        return False
    ratio = float(found[2]) / float(found[1])
    return abs(ratio / ((prompt + output) / output) - 1) <= SAME_CLOCK_TOLERANCE


def _includes_prefill(row: dict[str, Any]) -> bool:
    text = f"{row.get('note', '')} {row.get('derived', '')} {row.get('metric_as_published', '')}".lower()
    stated = any(words in text for words in ("includes prefill", "may include prefill", "end-to-end", "total generate"))
    return stated or _rates_share_one_clock(row)


def convert(index: int, row: dict[str, Any]) -> dict[str, Any]:
    """One collected row as a fixture case (excluded with the reason when it cannot be mapped)."""
    engine = row["engine"]
    case: dict[str, Any] = {
        "id": index,
        "origin": "collected",
        "group": row["group"],
        "url": row["url"],
        "engine": engine.removeprefix("other:"),
        "engine_version": row.get("engine_version"),
        "backend": row.get("backend") or "",
        "enforce_eager": row.get("enforce_eager"),
        "model": row["model"],
        "weight_format": row.get("weight_format") or "?",
        "gpu_name": row["gpu_name"],
        "tp": row.get("tp") or 1,
        "tokens_per_s": row["tokens_per_s"],
        "note": "; ".join(x for x in (row.get("metric_as_published"), row.get("derived"), row.get("note")) if x),
    }
    reason = _exclusion(row)
    gpu_row = _gpu(row["gpu_name"])
    bare = re.sub(r"\(.*?\)", "", row["model"])  # "Llama 3.1 405B (amd/Llama-3.1-70B-...)": the 405B
    model_row = next(
        (m for text in (bare, row["model"]) if (m := _match(MODELS, text if "deepseek-ai" in text else text.split("/")[-1]))),
        None,
    )
    fmt_row = _match(FORMATS, row.get("weight_format") or "")
    if reason is None and gpu_row is None:
        unstated = _match(UNSTATED_VARIANTS, row["gpu_name"])
        reason = unstated[0] if unstated else f"no kvcalc GPU preset for {row['gpu_name']!r}"
    if reason is None and model_row is None:
        reason = f"no kvcalc model preset of the shape of {row['model']!r}"
    if reason is None and model_row is not None:
        reason = _reads_not_modelled(model_row[0])
    if reason is None and re.search(MIXED_BITS, f"{row['model']} {row.get('weight_format') or ''}", flags=re.IGNORECASE):
        reason = f"{row['model']!r} ({row.get('weight_format')}) mixes bits by layer with no stated size: not one weight format"
    if reason is None and fmt_row is None:
        reason = f"weight format {row.get('weight_format')!r} not mapped"
    if reason is None and fmt_row is not None:
        reason = _format_conflict(row["model"], row["weight_format"], fmt_row[1])
    if reason is not None:
        return {**case, "excluded_because": reason}
    assert gpu_row is not None and model_row is not None and fmt_row is not None
    gpu_preset, interconnect = gpu_row
    dtype, klass, bpw = fmt_row
    measured = measure_case(model_row[0], gpu_preset, interconnect, dtype, klass, bpw, row)
    return {**case, **measured} if "excluded_because" in measured else {**case, **measured}


# the collector's notes on rows with EAGLE/MTP drafts on (decode_published_NOTES), and the submitters' own words
SPECULATIVE = r"speculative decoding|speculative tokens|num_speculative_tokens|mtp active"
# llama.cpp's flags that keep tensors in host memory, as a note quotes them (common/arg.cpp: -ot PATTERN=CPU, --cpu-moe,
# --n-cpu-moe N above 0), and a submitter's words for it ("layers 0-32 GPU / 33-39 CPU"); "no -ot needed" is not one
ON_THE_CPU = r"=CPU\b|\b\d+-\d+ CPU\b(?! (?:threads|cores))|(?:--n-cpu-moe|-ncmoe)[= ]?[1-9]|(?:--cpu-moe|-cmoe)\b"
# the release date of vLLM v0.2.6, its first with CUDA graphs (kvcalc.decode_profiles.VLLM_GRAPHS_SINCE):
# a row that names no version, from a source dated before it, ran eager
VLLM_GRAPHS_RELEASED = "2023-12-17"


def _exclusion(row: dict[str, Any]) -> str | None:
    if row.get("excluded_because"):
        return f"excluded by the collector: {row['excluded_because']}"  # who read the source said why
    if re.search(SPECULATIVE, (row.get("note") or "").lower()):
        return "speculative decoding on (EAGLE/MTP): a step yields more than one token; kvcalc models plain decode"
    if row.get("batch") not in (1, None):
        return f"batch {row['batch']}: the calibration is batch 1"
    if "device_map" in (row.get("note") or "") or (row.get("gpu_count") or 1) > (row.get("tp") or 1):
        return "split over GPUs without tensor parallelism (or the split is not stated)"
    if re.search(ON_THE_CPU, row.get("note") or ""):
        return "tensors or layers kept on the CPU, as the source states (-ot/--override-tensor, --n-cpu-moe): partly offloaded"
    if not row.get("tokens_per_s"):
        return "no tokens/s"
    if row["engine"] in ("other:mlx", "other:ollama") and not row.get("weight_format"):
        return "weight format not stated"
    return None


def measure_case(
    preset: str, gpu_preset: str, interconnect: str, dtype: DType | None, klass: str, bpw: float | None, row: dict[str, Any]
) -> dict[str, Any]:  # fmt: skip
    """The bytes one step reads, from kvcalc's own decode, and the prefill time a timing includes."""
    model = presets.load_model(preset)
    gpu = presets.load_gpu(gpu_preset)
    tp = row.get("tp") or 1
    params = require_params(model)
    if bpw is not None:
        fmt = WeightFormat(
            dtype=model.dtype, embeddings=model.dtype, experts=model.dtype,
            stored=StoredWeights(bytes=round(params.total * bpw / 8), params=params.total),
        )  # fmt: skip
        source = f"params x {bpw} bits (llama.cpp's size for the quant type)"
    elif dtype is None:
        fmt, source = (
            WeightFormat(dtype=model.dtype, embeddings=model.dtype, experts=model.dtype),
            f"params x {model.dtype.value}",
        )
    else:
        fmt = WeightFormat(dtype=dtype, embeddings=DType.bf16, experts=dtype)
        source = f"params x {dtype.value}, embeddings and LM head 16-bit"
    stored = -(-weight_bytes(params, fmt) // tp)
    if stored > gpu.memory_bytes:
        return {"excluded_because": f"weights {stored / 2**30:.1f} GiB per GPU exceed the {gpu.name}'s memory: partly offloaded"}
    context = _context(row)
    work = Workload(seq=context, batch=1, tp=tp)
    step = latency.decode(model, work, gpu, fmt)
    kv = batch_bytes(model, work).per_gpu  # the cache (and a hybrid's state, once) one rank holds at the row's context
    if stored + kv > gpu.memory_bytes:
        return {
            "excluded_because": f"weights {stored / 2**30:.1f} GiB and the KV cache of {context:,} tokens {kv / 2**30:.1f} GiB"
            f" per GPU exceed the {gpu.name}'s memory: partly offloaded"
        }
    if row["tokens_per_s"] * step.expected.bytes_moved > gpu.bandwidth_bytes_per_s * ROOFLINE_SLACK:
        return {
            "excluded_because": f"{row['tokens_per_s']:g} tok/s {FASTER_THAN_PEAK} at the {gpu.name}'s peak bandwidth"
            f" ({gpu.bandwidth_bytes_per_s / step.expected.bytes_moved:.0f} tok/s): not a plain batch-1 decode of this"
            " checkpoint on this GPU (tokens counted otherwise, a draft model, or another setup)"
        }
    prefill = 0.0
    if _includes_prefill(row) and row.get("output_len"):
        prompt = row.get("input_len") or DEFAULT_PROMPT
        first = latency.prefill(model, Workload(seq=prompt, batch=1, tp=tp), gpu, fmt, COMPUTE_EFFICIENCY)
        prefill = first.seconds / row["output_len"]
    return {
        "preset": preset,
        "gpu": gpu_preset,
        "interconnect": interconnect if tp > 1 else None,
        "format_class": klass,
        "moe": model.moe is not None,
        "weights_read_bytes": step.expected.weights_read_bytes,
        "weights_bytes_source": source,
        "kv_read_bytes": step.expected.bytes_moved - step.expected.weights_read_bytes,
        "avg_context": context,
        "layers": model.layers,
        "experts": model.moe.experts if model.moe else 0,
        "hidden": model.hidden or 0,
        "prefill_seconds_per_token": prefill,
        **_profile(row, gpu.backend, gpu_preset),
    }


def _profile(row: dict[str, Any], backend: str, gpu: str) -> dict[str, str]:
    """The decode profile of a row: its engine, release, graphs on or off, and the GPU's backend (and for llama.cpp's
    CUDA backend, whether it skips CUDA graphs on that GPU at the source's date: llamacpp_launches_per_kernel)."""
    version = row.get("engine_version")
    try:
        parsed = parse_engine_version(version) if version and row["engine"] == "vllm" else None
    except InvalidInput:
        parsed = None
    engine = row["engine"].removeprefix("other:")
    eager = row.get("enforce_eager") or "disable-cuda-graph" in (row.get("backend") or "").lower() or _before_graphs(row)
    legacy = row.get("legacy_llamacpp", False) or llamacpp_launches_per_kernel(gpu, row.get("date"))
    profile = profile_for(engine, parsed, eager, backend, legacy_llamacpp=legacy)
    if "input_len" in row:  # a collected row: the step at its mean context (a legacy case's profile is its own)
        profile = at_context(profile, _context(row))
    return {"mode": profile.mode, "engine_key": profile.engine_key, "kernels": profile.kernels}


def _before_graphs(row: dict[str, Any]) -> bool:
    """A vLLM row that names no release, from a source dated before vLLM had CUDA graphs."""
    return row["engine"] == "vllm" and not row.get("engine_version") and str(row.get("date") or "9") < VLLM_GRAPHS_RELEASED


LEGACY_ENGINES = {
    "llama.cpp": "llamacpp", "ExLlamaV2": "exllama", "ExLlama v1": "exllama", "AutoAWQ": "autoawq", "gpt-fast": "gpt-fast",
    "torchao (gpt-fast style)": "torchao", "MLC-LLM": "mlc", "vLLM": "vllm", "LMDeploy TurboMind": "lmdeploy-turbomind",
    "SGLang": "sglang", "transformers": "transformers",
}  # fmt: skip
LEGACY_CLASSES = {"8-bit": "int8", "int4-gpu": "int4", "int4-tinygemm": "int4"}


def legacy_case(case: dict[str, Any]) -> dict[str, Any]:
    """A case of the first fixture (168 cases, issue 22) in this schema: its page is its group."""
    gpu = presets.load_gpu(case["gpu"])
    engine = LEGACY_ENGINES[case["engine"]]
    row = {"engine": engine, "backend": case["backend"], "legacy_llamacpp": case["profile"] == "llamacpp-cuda-legacy"}
    return {
        "id": case["id"], "origin": "legacy", "group": case["url"], "url": case["url"], "engine": engine,
        "engine_version": None, "backend": case["backend"], "enforce_eager": None, "model": case["model"],
        "weight_format": case["weight_format"], "gpu_name": case["gpu_name"], "tp": 1, "tokens_per_s": case["tokens_per_s"],
        "note": case["note"], "preset": case["preset"], "gpu": case["gpu"], "interconnect": None,
        "format_class": LEGACY_CLASSES.get(case["format_class"], case["format_class"]),
        "moe": "mixtral" in case["model"].lower(), "weights_read_bytes": case["weights_read_bytes"],
        "weights_bytes_source": case["weights_bytes_source"], "kv_read_bytes": case["kv_bytes_per_token"] * case["avg_context"],
        "avg_context": case["avg_context"], "layers": case["layers"], "hidden": 0,
        "experts": 8 if "mixtral" in case["model"].lower() else 0, "prefill_seconds_per_token": 0.0,
        **_profile(row, gpu.backend, case["gpu"]),
        **({"excluded_because": case["excluded_because"]} if case.get("excluded_because") else {}),
    }  # fmt: skip


ROOFLINE_SLACK = 1.05  # a datasheet's rounding: no batch-1 step reads its weights faster than the peak
FASTER_THAN_PEAK = "is faster than its bytes"
SPREAD = 1.5  # the same run reported this many times slower elsewhere in one source: not the same setup


def exclude_inconsistent(cases: list[dict[str, Any]]) -> None:
    """Within one source, the same engine, model, format, GPU and prompt measured more than SPREAD times
    slower than its fastest report (community submissions that offloaded layers or shared the GPU):
    excluded, with the reason."""
    fastest: dict[tuple[Any, ...], float] = {}
    key = ("group", "engine", "preset", "weight_format", "gpu", "tp", "avg_context")
    for case in cases:
        if not case.get("excluded_because"):
            k = tuple(case.get(f) for f in key)
            fastest[k] = max(fastest.get(k, 0.0), case["tokens_per_s"])
    for case in cases:
        best = fastest.get(tuple(case.get(f) for f in key))
        if not case.get("excluded_because") and best and case["tokens_per_s"] * SPREAD < best:
            case["excluded_because"] = (
                f"{case['tokens_per_s']:g} tok/s, more than {SPREAD}x below {best:g} for the same model, format and GPU"
                " in the same source: not the same setup (layers offloaded or the GPU shared)"
            )


def exclude_untrusted_harnesses(cases: list[dict[str, Any]]) -> None:
    """A source's figures for one engine come from one harness: when it reports any figure faster
    than the GPU's peak bandwidth allows, it counts tokens or time otherwise than a decode does, and
    its other figures for that engine are excluded too, with the reason."""
    broken: dict[tuple[str, str], int] = {}
    for case in cases:
        if FASTER_THAN_PEAK in (case.get("excluded_because") or ""):
            key = (case["group"], case["engine"])
            broken[key] = broken.get(key, 0) + 1
    for case in cases:
        n = broken.get((case["group"], case["engine"]))
        if n and not case.get("excluded_because"):
            case["excluded_because"] = (
                f"the same source's {case['engine']} harness reported {n} figure(s) faster than the GPU's peak bandwidth"
                " allows: its token or time count is not a decode's"
            )


def cases_from(rows: list[dict[str, Any]], start: int = 0, kept: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """`kept` cases and the collected rows as cases numbered from `start`, each mapped (or excluded with its
    reason); then the rules that judge a source's cases together (an impossible figure, an inconsistent setup)."""
    cases = [*(kept or []), *(convert(start + i, row) for i, row in enumerate(rows))]
    exclude_untrusted_harnesses(cases)
    exclude_inconsistent(cases)
    return cases


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else COLLECTED
    kept = [
        c if "origin" in c else legacy_case(c)
        for c in json.loads(FIXTURE.read_text(encoding="utf-8"))
        if c.get("origin", "legacy") == "legacy"
    ]
    rows = json.loads(source.read_text(encoding="utf-8"))
    cases = cases_from(rows, start=max(c["id"] for c in kept) + 1, kept=kept)
    FIXTURE.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    used = sum(1 for c in cases if not c.get("excluded_because"))
    print(f"{len(cases)} cases ({len(rows)} collected), {used} in scope")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
