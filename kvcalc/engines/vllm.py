"""vLLM (`--engine vllm`): pages of 16 tokens per layer, a reservation for sliding layers, MLA as one
K-only latent, the memory budget its start-up profiling leaves, what it logs about the cache, and
hybrid models' state: in the model dtype unless --mamba-cache-dtype / --mamba-ssm-cache-dtype, one
attention page per state layer, the attention block size raised until a page holds a state.

Rules follow vLLM 0.19.0 (the release of the calibration logs) and, for CUDA graphs and the default
--gpu-memory-utilization, 0.20 and later; `--vllm-version` picks the older behaviour, the
sampler's profile of the releases without FlashInfer (0.8-0.11.0) or below SM 8.0 (0.24 on), and the V2
model runner's profile where the release runs it (model_runner; --vllm-use-v2-model-runner picks it), the batch
defaults of `vllm serve` or the offline LLM class (--vllm-entrypoint) by release, and V0's eager forward (runs_v0).
--enable-prefix-caching puts a hybrid model's state in mamba_cache_mode "align" ("all" for Mamba-mixer models in
0.19-0.27, not modelled); the CUDA-graph estimate counts FULL graphs only up to max_num_seqs decode tokens.
Sources: vllm/v1/kv_cache_interface.py, vllm/v1/core/kv_cache_utils.py, vllm/config/cache.py,
vllm/v1/worker/gpu_worker.py (determine_available_memory, commit 35d5cda1), vllm/utils/mem_utils.py
(memory_profiling, commit a6d5c390), vllm/v1/worker/gpu_model_runner.py (profile_run),
vllm/engine/arg_utils.py (get_batch_defaults), vllm/model_executor/layers/mamba/mamba_utils.py,
vllm/model_executor/models/config.py (HybridAttentionMambaModelConfig),
vllm/v1/sample/ops/topk_topp_sampler.py (TopKTopPSampler), vllm/v1/kv_cache_interface.py (MambaSpec),
vllm/config/vllm.py (use_v2_model_runner), vllm/v1/worker/gpu/ (the V2 runner; 0.21-0.30 wheels),
vllm/v1/cudagraph_dispatcher.py (initialize_cudagraph_keys) and vllm/model_executor/models/config.py (MambaModelConfig)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from kvcalc.decode_profiles import VLLM_FALLBACK_MLA_BACKEND, DecodeProfile, profile_for, vllm_mla_backend
from kvcalc.engines.activations import (
    activation_bytes,
    forward_transient,
    moe_workspace,
    require_shapes,
    v0_forward_transient,
)
from kvcalc.engines.base import (
    Budget,
    BudgetTerm,
    EngineLogLine,
    EngineProfile,
    GpuMemory,
    MlaStorage,
    StageLayer,
    StageWeights,
    StateDtypes,
    StatePages,
    byte_fraction,
    cdiv,
    gib,
    rotary_table_term,
    term_lines,
    weights_term,
)
from kvcalc.errors import InvalidInput
from kvcalc.gpu_families import SmFamily, marlin_runs, sm_family
from kvcalc.quantization import MARLIN_GROUP_SIZES, LinearQuantization
from kvcalc.spec import Engine, GpuSpec, ModelSpec, Workload, cache_dtypes
from kvcalc.units import PACKING, DType, GiB, MiB, format_bytes, parse_engine_version

VLLM_VERSION = "0.19.0"  # the release whose start-up logs calibrate the budget
LATEST_VERSION = (1, 0, 0)  # an absent --vllm-version: the newest rules kvcalc keeps
VLLM_BLOCK_SIZE = 16  # vLLM's default block size on CUDA (vllm/config/cache.py)
VLLM_MAX_NUM_BATCHED_TOKENS = 8192  # the API server's default on a GPU of 70 GiB or more (not an A100)
VLLM_SMALL_MAX_NUM_BATCHED_TOKENS = 2048  # ... below 70 GiB or on an A100 (vllm/engine/arg_utils.py)
VLLM_MAX_NUM_SEQS, VLLM_SMALL_MAX_NUM_SEQS = 1024, 256  # likewise
VLLM_LARGE_GPU_BYTES = 70 * GiB
# The offline LLM class (UsageContext.LLM_CLASS) batches twice the API server's tokens: 16384 on a large GPU, 8192
# below; its max_num_seqs is the server's (vllm/engine/arg_utils.py: _set_default_args_v1 in the 0.8.0-0.8.5 wheels,
# the same table in 0.9.0, 0.9.1, 0.9.2, get_batch_defaults in 0.19.0, 0.21.0, 0.27.1, 0.28.0, 0.29.0, 0.30.0)
VLLM_LLM_CLASS_MAX_NUM_BATCHED_TOKENS, VLLM_LLM_CLASS_SMALL_MAX_NUM_BATCHED_TOKENS = 16384, 8192
# How a release tells a large GPU (arg_utils.py, the wheels read): 0.8.0-0.8.4 by name ("h100" or "h200" in the device
# name); 0.8.5 by memory (70 GiB or more); from 0.9.0 by memory and not an A100 (PR #17885)
LARGE_GPU_BY_MEMORY_SINCE = (0, 8, 5)
A100_NOT_LARGE_SINCE = (0, 9, 0)
LARGE_GPU_NAMES_BEFORE_0_8_5 = ("h100", "h200")
SMALL_MAX_NUM_SEQS_SINCE = (0, 8, 4)  # 0.8.0-0.8.3: max_num_seqs 1024 on every GPU
# 0.28 adds a tier for GPUs of 160 GiB or more (B200/B300): the API server batches 16384 tokens too (get_batch_defaults
# in the 0.28.0, 0.29.0, 0.30.0 wheels; not in 0.27.1)
VLLM_HUGE_GPU_BYTES = 160 * GiB
HUGE_GPU_TIER_SINCE = (0, 28, 0)
VLLM_HUGE_GPU_MAX_NUM_BATCHED_TOKENS = 16384
VLLM_UTILIZATION = 0.9  # --gpu-memory-utilization before 0.20 (vllm/config/cache.py CacheConfig)
# 0.20.0 raised the default to 0.92 with CUDA-graph profiling on by default (vllm-project/vllm#38284; read in the
# wheels: vllm/envs.py VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS defaults to "0" and cache.py to 0.9 in 0.19.0 and 0.19.1,
# to "1" and 0.92 in 0.20.0, 0.20.1, 0.20.2 and 0.21.0, whose log line says "enabled (default since v0.21.0)" all the same;
# vllm/config/cache.py CacheConfig.gpu_memory_utilization = 0.92 at 002f10e0)
VLLM_UTILIZATION_SINCE_0_20 = 0.92
VLLM_DTYPES = {
    DType.fp32, DType.fp16, DType.bf16, DType.fp8, DType.fp8_e4m3, DType.fp8_e5m2,
    DType.nvfp4, DType.int8_per_token_head, DType.fp8_per_token_head,
}  # fmt: skip
# vllm/platforms/cuda.py CudaPlatformBase.check_and_update_config (vllm-project/vllm 001cabc1): an MLA
# model's blocks are forced to what its attention backend pages in: FlashMLA (the default before
# Blackwell) a multiple of 64, CUTLASS MLA (the default on SM100 Blackwell) a multiple of 128, FlashInfer
# MLA 32 or a multiple of 64, and DeepSeek sparse attention (FlashMLA sparse) exactly 64; Triton MLA and
# FlashAttention MLA keep --block-size (16).
MLA_BLOCK_MULTIPLE = {"flashmla": 64, "cutlass_mla": 128, "flashinfer_mla": 64, "triton_mla": 1, "flash_attn_mla": 1}
# Attention kernels take block sizes in multiples of 16 (FlashAttention / FlashInfer on Hopper); the
# hybrid page rule rounds the raised block size to it (model_executor/models/config.py
# HybridAttentionMambaModelConfig: kernel_block_alignment_size 16; 64 for MLA, 32 for head_dim 256
# with FlashInfer on SM100, not modelled).
VLLM_HYBRID_ALIGNMENT = 16
SAMPLER_BYTES_PER_LOGIT = 15  # the logits in bf16 plus the sampler's fp32 copies; fitted on six v0.19 logs
# Without --vllm-version: the largest sampler profile published logs show, 38 B per logit (the llm-d-planner
# empirical table's eight activation peaks, 37.5-38.2 B: vllm/vllm-openai:v0.11.0, its native sampler, as the doc's
# Feb 2026 revision states; first published as :latest), so that an unknown release never gets more cache than it had
# (vllm-project/vllm#23278, #27508: gpt-oss-120b on an H100).
SAMPLER_BYTES_PER_LOGIT_UNKNOWN_RELEASE = 38
# The PyTorch-native top-k/top-p sampler sorts the logits (fp32 values and int64 indices) beside the fp32
# probabilities: 38 B per logit in the 0.10.2 logs that say they ran it ("FlashInfer is not available. Falling back
# to the PyTorch-native implementation": kolyangg/mlops-assignment logs/vllm.log, 5.58 GiB peak activation for
# 1,024 x 151,936 logits; the Qwen3-4B 0.10.2 log in published.yaml, 5.59 GiB), as the llm-d-planner table's.
NATIVE_SAMPLER_BYTES_PER_LOGIT = 38
V1_ENGINE_SINCE = (0, 8, 0)  # the V1 engine (and its TopKTopPSampler) is the default
# From 0.8 to 0.8.x, n-gram speculation falls back to V0 unless VLLM_USE_V1=1 ("ngram is supported on V1, but off by
# default for now": vllm/engine/arg_utils.py _is_v1_supported_oracle, _warn_or_fallback("ngram"), 0.8.4); 0.9.2 has no such line.
NGRAM_ON_V1_SINCE = (0, 9, 0)
# An encoder-decoder model (mllama: SupportsV0Only) is not is_v1_compatible, so _is_v1_supported_oracle falls back to V0
# (_raise_or_fallback, "No Mamba or Encoder-Decoder so far"; vllm/engine/arg_utils.py and vllm/worker/enc_dec_model_runner.py
# in the 0.8.4, 0.9.2 and 0.10.2 wheels); 0.11 removed the V0 engine.
V0_REMOVED_SINCE = (0, 11, 0)
# V1's start-up refusal when less than total * gpu_memory_utilization is free ("Free memory on device ... on startup is
# less than desired GPU memory utilization"): vllm/v1/worker/gpu_worker.py init_device, first in the 0.9.1 wheel (0.9.0's
# init_device has no such check; nor has V0's vllm/worker/worker.py).
START_CHECK_SINCE = (0, 9, 1)
# V0 (before 0.8): without chunked prefill the profile run batches max(max_model_len, 2048) tokens; chunked
# prefill, and so 2048, only past 32K (vllm/config.py SchedulerConfig.__post_init__, _DEFAULT_MAX_NUM_BATCHED_TOKENS;
# vllm/engine/arg_utils.py create_engine_config use_long_context, v0.7.x)
V0_DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048
V0_LONG_CONTEXT = 32768
V0_MAX_NUM_SEQS = 256  # EngineArgs.max_num_seqs on every GPU in V0
# Which top-k/top-p path V1's TopKTopPSampler profiles (vllm/v1/sample/ops/topk_topp_sampler.py and vllm/envs.py, read in
# the 0.9.1, 0.11.1, 0.11.2, 0.12.0, 0.13.0-0.18.0, 0.19.1 and 0.27.1 wheels): up to 0.11.0 FlashInfer's whenever flashinfer
# imports (a pip install has none before flashinfer-python became a CUDA requirement, vllm-project/vllm#26443); from
# 0.11.1 FlashInfer's only with VLLM_USE_FLASHINFER_SAMPLER=1 (opt-in, "Users must opt in explicitly"; on by default
# again in 0.27.1). Otherwise forward_native: apply_top_k_top_p sorts the logits up to 0.16.x, and from 0.17.0 runs
# apply_top_k_top_p_triton for 8 or more rows (no sort), the profile the v0.19 logs fit at 15 B per logit.
FLASHINFER_SAMPLER_OPT_IN_SINCE = (0, 11, 1)
TRITON_TOP_K_TOP_P_SINCE = (0, 17, 0)
# The V2 model runner (vllm/v1/worker/gpu/model_runner.py), read in the 0.21-0.30 wheels. Who gets it without
# VLLM_USE_V2_MODEL_RUNNER (vllm/config/vllm.py use_v2_model_runner, _is_default_v2_model_runner_model): before 0.22
# nobody (envs.py default 0); 0.22-0.24 the architectures DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES lists (Qwen3ForCausalLM
# in 0.22, with Llama and Mistral in 0.23, a few MoE ones in 0.24), which presets do not record; 0.25-0.28 every
# generating model that is not MoE, hybrid or attention-free ("since v0.25.0 the default for all dense models",
# vllm.ai blog 2026-07-23); from 0.29 every model (the test is gone; blog 2026-08-31: "the first tagged release with
# this default will be v0.29.0"). A draft model (speculative method draft_model) keeps V1 (the unsupported features).
# The first release with the V2 runner at all: "GPU Model Runner V2 (#25266)" in the v0.12.0 release notes
# (vllm-project/vllm#25266; https://blog.youkuaiyun.com/problc/article/details/155613344 quotes them); kvcalc read
# its profile in the 0.21-0.30 wheels only
V2_RUNNER_SINCE = (0, 12, 0)
V2_RUNNER_SOME_ARCHITECTURES_SINCE = (0, 22, 0)
V2_RUNNER_DENSE_SINCE = (0, 25, 0)
V2_RUNNER_ALL_SINCE = (0, 29, 0)
# V2's Sampler copies the logits to fp32 before sampling (sample/sampler.py apply_sampling_params); from 0.28 it
# returns them as they are when no request needs processing, as in the profile's dummy batch (needs_logits_processing)
V2_SAMPLER_SKIPS_FP32_COPY_SINCE = (0, 28, 0)
FP32_BYTES = PACKING[DType.fp32].block_bytes
# V2's profile_cudagraph_memory returns 0 before 0.29 ("TBD whether we keep this API"); from 0.29 it captures the
# graphs into a throwaway pool and measures them (vllm/v1/worker/gpu/cudagraph_utils.py profile_cudagraph_memory)
V2_GRAPHS_PROFILED_SINCE = (0, 29, 0)
# Prefix caching's mamba_cache_mode (vllm/model_executor/models/config.py MambaModelConfig.verify_and_update_config):
# "all" for models that support Mamba prefix caching, else "align", in the 0.19.0, 0.21.0 and 0.27.1 wheels; "align"
# for every model in the 0.28.0, 0.29.0 and 0.30.0 wheels ("all" only when --mamba-cache-mode all asks)
MAMBA_ALL_MODE_SINCE = (0, 19, 0)  # the first release read; earlier ones are taken as 0.28's
ALIGN_FOR_EVERY_MODEL_SINCE = (0, 28, 0)
NON_TORCH_BYTES = int(0.25 * GiB)  # cuBLAS and other non-torch memory after the snapshot, one GPU (v0.19 logs 0.24-0.46)
# From 0.18.0 to 0.26.x V1's determine_available_memory captures the CUDA-graph estimate (profile_cudagraph_memory)
# inside the memory_profiling window, unless graphs are off (--enforce-eager), so what the capture leaves outside
# torch's allocator is non-torch memory there (vllm/v1/worker/gpu_worker.py: no such call in the 0.17.1 wheel; inside
# the window in the 0.18.0, 0.18.1, 0.19.1, 0.20.0, 0.22.0, 0.24.0 and 0.26.0 wheels; after it from 0.27.0). The V2
# runner's profile_cudagraph_memory captures nothing before 0.29 (returns 0). Without that capture, one GPU's
# non-torch memory is the llm-d-planner 0.11 table's (eight one-GPU H100 logs, 0.13-0.14 GiB); held out, a 0.10.2
# H100 log shows 0.07 and two 0.27.1 GTX 1650 SUPER logs 0.11 and 0.13.
NON_TORCH_NO_CAPTURE_BYTES = int(0.13 * GiB)
GRAPH_ESTIMATE_IN_WINDOW_SINCE = (0, 18, 0)
GRAPH_ESTIMATE_AFTER_WINDOW_SINCE = (0, 27, 0)
NON_TORCH_TP_BYTES = int(2.1 * GiB)  # tensor parallelism over NVLink/NVSwitch on Hopper or Blackwell (v0.19 H100 logs 2.06-2.21)
NON_TORCH_PP_BYTES = int(0.07 * GiB)  # pipeline stages without tensor parallelism (logs 0.07)
CUDA_GRAPHS_SINCE = (0, 20, 0)  # the release that subtracts the CUDA-graph estimate by default (above)
# "GPU KV cache size" = int(max_concurrency * max_model_len) for every model from 0.20.1, num_blocks // groups * block
# before (vllm/v1/core/kv_cache_utils.py _report_kv_cache_config: the block formula in the 0.19.0 and 0.20.0 wheels,
# the concurrency one in 0.20.1, 0.20.2 and 0.21.0; PR #40694). One group whose block divides max_model_len gives
# the same figure either way.
TOKENS_FROM_CONCURRENCY_SINCE = (0, 20, 1)
CUDA_GRAPH_FIRST_BYTES = GiB // 4  # the first capture (logs 96-262 MiB, plus the pool)
CUDA_GRAPH_EACH_BYTES = 6 * MiB  # each further graph (logs 4-8 MiB)


def _version(text: str | None) -> tuple[int, int, int]:
    """--vllm-version as (major, minor, patch); absent: the newest rules kvcalc keeps."""
    return LATEST_VERSION if text is None else parse_engine_version(text)


def token_line(version: str | None, blocks: int, groups: int, block: int, concurrency: float, seq: int) -> tuple[int, str]:
    """vLLM's "GPU KV cache size" in tokens at this release, and how it follows (TOKENS_FROM_CONCURRENCY_SINCE)."""
    if _version(version) >= TOKENS_FROM_CONCURRENCY_SINCE:
        return int(concurrency * seq), f"int(concurrency {concurrency:.4f} * max_model_len {seq:,}) (vLLM 0.20.1 on)"
    plural = "s" if groups > 1 else ""
    return blocks // groups * block, f"num_blocks {blocks:,} // {groups} group{plural} * block {block} (vLLM 0.20.0 and before)"


def round_up(n: int, multiple: int) -> int:
    return cdiv(n, multiple) * multiple


def mxfp4_padding(model: ModelSpec, stage: StageWeights, tp: int, family: SmFamily | None) -> tuple[int, str]:
    """Bytes vLLM loads beyond the stored MXFP4 experts of one GPU, and why: its MoE kernels pad each
    expert's intermediate (per TP rank) and hidden sizes to their tiles (Marlin: 128 and 256; FlashInfer on
    SM100: 256 and 256) and allocate weights, e8m0 scales per 32 and bf16 biases at the padded shapes
    (vllm/model_executor/layers/quantization/mxfp4.py Mxfp4MoEMethod.create_weights, vllm 007d5005).
    Marlin runs where FP4 is not native (Ampere, Ada, GeForce Blackwell) and on Hopper without
    triton_kernels; Hopper's Triton path lays experts out swizzled and padded as well (the llm-d logs load
    gpt-oss-120b at 64.38 GiB), which kvcalc charges as Marlin's, the larger."""
    moe = model.moe
    assert moe is not None and model.hidden
    hidden, inter = model.hidden, cdiv(moe.expert_intermediate, tp)
    if family == "blackwell":
        kernel, hidden_pad, inter_pad = "FlashInfer (SM100)", round_up(hidden, 256), round_up(inter, 256)
    else:
        kernel, hidden_pad, inter_pad = "Marlin", round_up(hidden, 256), round_up(inter, 128)

    def expert_bytes(h: int, i: int) -> int:  # w13 and w2: 4-bit values + one e8m0 scale per 32, bf16 biases
        return 3 * h * i // 2 + 3 * h * i // 32 + 2 * (2 * i + h)

    layers = stage.last_layer - stage.first_layer + 1 - moe.dense_layers * (stage.first_layer == 0)
    extra = layers * moe.experts * (expert_bytes(hidden_pad, inter_pad) - expert_bytes(hidden, inter))
    why = (
        f"{kernel} tiles: hidden {hidden:,} -> {hidden_pad:,}, intermediate per rank {inter:,} -> {inter_pad:,};"
        f" {layers} layers * {moe.experts} experts * (expert({hidden_pad:,}, {inter_pad:,}) - expert({hidden:,}, {inter:,}))"
        f" = {extra:,} B ({format_bytes(extra)}), expert(h, i) = 3hi/2 + 3hi/32 + 2(2i + h)"
    )
    return extra, why


ModelRunner = Literal["v1", "v2"]


def model_runner(model: ModelSpec, workload: Workload) -> tuple[ModelRunner, str]:
    """The model runner vLLM profiles with, and why: --vllm-use-v2-model-runner (VLLM_USE_V2_MODEL_RUNNER)
    when given, else the release's default (vllm/config/vllm.py use_v2_model_runner; see V2_RUNNER_*_SINCE).
    Where the default turns on an architecture kvcalc does not record (0.22-0.24, MoE models in 0.25-0.28)
    and without --vllm-version: V1, whose profile is the larger.

    >>> dense = ModelSpec(name="m", layers=1, heads=1, kv_heads=1, head_dim=64)
    >>> runner = lambda release: model_runner(dense, Workload(seq=1, engine=Engine(name="vllm", vllm_version=release)))[0]
    >>> runner("0.30.0"), runner("0.25.0"), runner("0.22.0"), runner("0.19.1"), runner(None)
    ('v2', 'v2', 'v1', 'v1', 'v1')
    """
    engine = workload.engine
    if engine.vllm_use_v2_model_runner is not None:
        release = parse_engine_version(engine.vllm_version) if engine.vllm_version else None
        if engine.vllm_use_v2_model_runner and release is not None and release < V1_ENGINE_SINCE:
            raise InvalidInput(
                f"--vllm-use-v2-model-runner 1: vLLM {engine.vllm_version} runs the V0 engine, which has no V2 model runner"
            )
        if engine.vllm_use_v2_model_runner and release is not None and release < V2_RUNNER_SINCE:
            raise InvalidInput(
                f"--vllm-use-v2-model-runner 1: vLLM {engine.vllm_version} has no V2 model runner (it came in 0.12.0)"
            )
        chosen: ModelRunner = "v2" if engine.vllm_use_v2_model_runner else "v1"
        return chosen, f"VLLM_USE_V2_MODEL_RUNNER={int(engine.vllm_use_v2_model_runner)} (--vllm-use-v2-model-runner)"
    if engine.vllm_version is None:
        return "v1", "no --vllm-version: the V1 runner's profile, the larger (V2 is the default for dense models from 0.25)"
    release, name = parse_engine_version(engine.vllm_version), f"vLLM {engine.vllm_version}"
    if workload.draft_kind in ("model", "ngram") and release >= V2_RUNNER_SOME_ARCHITECTURES_SINCE:
        method = (
            "a draft model (speculative method draft_model)"
            if workload.draft_kind == "model"
            else "n-gram lookup (speculative method ngram)"
        )
        return "v1", f"{name}: {method} keeps the V1 runner"
    if release >= V2_RUNNER_ALL_SINCE:
        return "v2", f"{name}: the V2 runner is the default for every model from 0.29"
    stateful = any(model.state_kinds())
    if release >= V2_RUNNER_DENSE_SINCE and model.moe is None and not stateful:
        return "v2", f"{name}: the V2 runner is the default for models neither MoE nor hybrid from 0.25"
    if release >= V2_RUNNER_SOME_ARCHITECTURES_SINCE:
        return "v1", (
            f"{name}: V2 only for the architectures DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES lists, which kvcalc does not"
            " record: the V1 runner, the larger profile (--vllm-use-v2-model-runner 1 where the log says 'Using V2 Model Runner')"
        )
    return "v1", f"{name}: the V1 runner (V2 only with VLLM_USE_V2_MODEL_RUNNER=1)"


def sampler_rule(
    version: str | None, runner: ModelRunner = "v1", logit_bytes: int = 2, v0: bool = False, flashinfer: bool | None = None
) -> tuple[int, str]:
    """Bytes per logit of the profile run's sampler, and why. V1's TopKTopPSampler samples the dummy batch's
    top-k and top-p with FlashInfer or its native path (TRITON_TOP_K_TOP_P_SINCE, FLASHINFER_SAMPLER_OPT_IN_SINCE):
    from 0.8 to 0.16 the native path sorts the logits (fp32 values, int64 indices, fp32 probabilities: 38 B in the
    0.10.2 logs that say they ran it), and it runs unless FlashInfer did: a pip install has no FlashInfer before
    0.11.1, and from 0.11.1 FlashInfer's sampler is opt-in. From 0.17 the native path runs a Triton kernel for 8 or
    more rows, and either path profiles 15 B (fitted on the v0.19 logs), as the V0 engine's sampler does (`v0`, its
    logs fit it, runs_v0). No --vllm-version: 38 B, the largest published; with either sampler flag, the newest rule (15 B).
    `flashinfer` (--vllm-flashinfer-sampler) says which ran, as the log does: "Using FlashInfer for top-p & top-k
    sampling." (at INFO; from 0.11.1 only when opted in) or "Falling back to the PyTorch-native implementation" (up to
    0.11.0): a release before 0.11.1 installed beside a package that pulls FlashInfer in (sglang[all]), or a Docker
    image that ships it, profiles 15 B.
    The V2 runner's dummy batch asks for no top-k, top-p or logprobs ("the sampler may skip top_k, top_p,
    and logprobs", model_runner.py _dummy_sampler_run): it holds the logits in the model's dtype
    (`logit_bytes`) and, before 0.28, their fp32 copy (V2_SAMPLER_SKIPS_FP32_COPY_SINCE). The V0 engine and the V2
    runner have no FlashInfer choice here: the flag is ignored, and the reason says so.

    >>> [sampler_rule(v)[0] for v in ("0.19.1", "0.17.0", "0.16.0", "0.11.2", "0.11.0", "0.10.2", "0.7.3", None)]
    [15, 15, 38, 38, 38, 38, 15, 38]
    >>> sampler_rule("0.22.0", "v2")[0], sampler_rule("0.30.0", "v2")[0], sampler_rule(None, "v2")[0]
    (6, 2, 2)
    >>> [sampler_rule(v, flashinfer=True)[0] for v in ("0.9.1", "0.12.0", None)], sampler_rule("0.19.1", flashinfer=False)[0]
    ([15, 15, 15], 15)
    >>> sampler_rule(None, flashinfer=False)[0]
    15
    >>> sampler_rule("0.12.0", flashinfer=False)[0]
    38
    """
    ignored = (
        f" (--{'' if flashinfer else 'no-'}vllm-flashinfer-sampler ignored: this sampler has no FlashInfer choice)"
        if flashinfer is not None
        else ""
    )
    if runner == "v2":
        if version is not None and parse_engine_version(version) < V2_SAMPLER_SKIPS_FP32_COPY_SINCE:
            return (
                logit_bytes + FP32_BYTES,
                f"the V2 runner's dummy sampler: the logits ({logit_bytes} B) and their fp32 copy (before 0.28){ignored}",
            )
        return (
            logit_bytes,
            f"the V2 runner's dummy sampler: the logits only ({logit_bytes} B), no fp32 copy for a batch that needs no processing"
            f" (0.28 on){ignored}",
        )
    if version is not None and (v0 or _version(version) < V1_ENGINE_SINCE):
        return SAMPLER_BYTES_PER_LOGIT, f"vLLM {version}: the V0 engine's sampler (its logs fit it){ignored}"
    source = "vllm/v1/sample/ops/topk_topp_sampler.py"
    # a sampler flag without --vllm-version follows the newest release's rule (no version = newest rules)
    if (version is None and flashinfer is not None) or (version is not None and _version(version) >= TRITON_TOP_K_TOP_P_SINCE):
        return SAMPLER_BYTES_PER_LOGIT, (
            f"vLLM {version or '(newest rules)'}: FlashInfer's sampler or, without it, the native path's Triton top-k/top-p"
            f" kernel for 8 or more rows, no sort ({source} apply_top_k_top_p, 0.17.0 on; either choice profiles the same)"
        )
    if flashinfer:
        return SAMPLER_BYTES_PER_LOGIT, f"--vllm-flashinfer-sampler: FlashInfer's top-k/top-p sampler ran ({source})"
    if flashinfer is False:
        return NATIVE_SAMPLER_BYTES_PER_LOGIT, (
            f"--no-vllm-flashinfer-sampler: the native top-k/top-p path sorts the logits ({source} forward_native, before 0.17)"
        )
    if version is None:
        return SAMPLER_BYTES_PER_LOGIT_UNKNOWN_RELEASE, "no --vllm-version: the largest sampler profile published"
    if _version(version) < FLASHINFER_SAMPLER_OPT_IN_SINCE:
        return NATIVE_SAMPLER_BYTES_PER_LOGIT, (
            f"vLLM {version} installs without FlashInfer: the native top-k/top-p path sorts the logits ({source})"
        )
    return NATIVE_SAMPLER_BYTES_PER_LOGIT, (
        f"vLLM {version}: FlashInfer's sampler is opt-in from 0.11.1 (VLLM_USE_FLASHINFER_SAMPLER=1), so the native path"
        f" sorts the logits ({source} forward_native, before 0.17)"
    )


def graph_capture_in_window(engine: Engine, runner: ModelRunner, v0: bool) -> tuple[bool, str]:
    """Whether the CUDA-graph estimate is captured inside the profiling window, so that what the capture leaves
    outside torch counts as non-torch memory, and why: V1's runner with graphs on, 0.18.0-0.26.x
    (GRAPH_ESTIMATE_IN_WINDOW_SINCE; the V2 runner captures nothing for it before 0.29). No --vllm-version: yes,
    the larger charge; V0: as fitted on its logs (yes).

    >>> v = lambda release, eager=None, runner="v1": graph_capture_in_window(Engine(name="vllm", vllm_version=release, enforce_eager=eager), runner, False)[0]
    >>> v("0.17.1"), v("0.18.0"), v("0.19.1", True), v("0.26.0"), v("0.26.0", runner="v2"), v("0.27.0"), v(None)
    (False, True, False, True, False, False, True)
    """
    version = engine.vllm_version
    if version is None or v0:
        return True, "no --vllm-version: the larger figure" if version is None else "V0, as its logs show"
    release = parse_engine_version(version)
    where = "vllm/v1/worker/gpu_worker.py determine_available_memory"
    if release < GRAPH_ESTIMATE_IN_WINDOW_SINCE:
        return False, f"vLLM {version} profiles no CUDA-graph estimate ({where}: from 0.18.0)"
    if release >= GRAPH_ESTIMATE_AFTER_WINDOW_SINCE:
        return False, f"vLLM {version} captures the CUDA-graph estimate after the profiling window ({where}, 0.27.0 on)"
    if engine.enforce_eager:
        return False, "--enforce-eager: no CUDA-graph estimate is captured"
    if runner == "v2" and release < V2_GRAPHS_PROFILED_SINCE:
        return False, "the V2 runner's profile_cudagraph_memory captures nothing before 0.29"
    return True, f"vLLM {version} captures the CUDA-graph estimate inside the profiling window ({where}, 0.18.0-0.26)"


def development_build_note(version: str | None) -> str | None:
    """What kvcalc can say of a development build's rules, or None for a release. vLLM numbers its builds with
    setuptools_scm (guess-next-dev): X.devN+gHASH is N commits past the last tag on main, code between the release
    before X and the next one cut from main, so the number alone cannot tell which of their rules it runs. Logs show
    both: 0.19.2rc1.dev134 prints 0.20.0's "gpu_worker.py:440] Available KV cache memory" line and subtracts the
    CUDA-graph estimate as 0.20 does (djangodevreng/dgx-spark-benchmarks). kvcalc applies X's rules.

    >>> development_build_note("0.20.0") is None, development_build_note("0.19.2rc1.dev134+gfe9c3d6c5").split(":")[0]
    (True, 'vLLM 0.19.2rc1.dev134+gfe9c3d6c5 is a development build')
    """
    if version is None or ".dev" not in version:
        return None
    base = ".".join(str(part) for part in parse_engine_version(version))
    return (
        f"vLLM {version} is a development build: setuptools_scm counts its commits past the last tag on main, so its code"
        f" lies between the release before {base} and the next one, and its number cannot tell whose rules it runs;"
        f" kvcalc applies {base}'s. Give --vllm-version the release whose lines its log prints (the CUDA-graph line"
        " 'CUDA graph memory profiling is enabled (default since v0.21.0)' is printed from 0.20.0)"
    )


def runs_v0(model: ModelSpec, workload: Workload) -> str | None:
    """Why vLLM runs this deployment on its V0 engine, or None when it runs V1 (or no --vllm-version):
    every release before 0.8; n-gram speculation in 0.8.x and an encoder-decoder tower (mllama) before
    0.11, which _is_v1_supported_oracle sends back to V0 (NGRAM_ON_V1_SINCE, V0_REMOVED_SINCE).

    >>> dense = ModelSpec(name="m", layers=1, heads=1, kv_heads=1, head_dim=64)
    >>> v0 = lambda release, draft=None: runs_v0(dense, Workload(seq=1, engine=Engine(name="vllm", vllm_version=release), draft_kind=draft)) is not None
    >>> v0("0.7.3"), v0("0.8.4"), v0("0.8.4", "ngram"), v0("0.9.2", "ngram"), v0(None, "ngram")
    (True, False, True, False, False)
    """
    version = workload.engine.vllm_version
    release = _version(version)  # no --vllm-version: the newest rules, V1
    if release < V1_ENGINE_SINCE:
        return f"vLLM {version} (V0)"
    if workload.draft_kind == "ngram" and release < NGRAM_ON_V1_SINCE:
        return (
            f"vLLM {version} (V0: n-gram speculation falls back to it unless VLLM_USE_V1=1, vllm/engine/arg_utils.py"
            ' _is_v1_supported_oracle, _warn_or_fallback("ngram"), 0.8.4)'
        )
    if model.vision is not None and model.vision.encoder_decoder and release < V0_REMOVED_SINCE:
        return (
            f"vLLM {version} (V0: an encoder-decoder model, SupportsV0Only, is not is_v1_compatible, vllm/engine/arg_utils.py"
            " _is_v1_supported_oracle, _raise_or_fallback; 0.8.4, 0.9.2, 0.10.2)"
        )
    return None


def v0_batch_defaults(model: ModelSpec, workload: Workload) -> tuple[Engine, str | None]:
    """The engine with V0's scheduler defaults filled in (runs_v0), and why (None: not V0, or both
    given). V0 enables chunked prefill by default only for max_model_len > 32K on a model without sliding
    windows, MLA, a vision tower or a draft (arg_utils.py create_engine_config / _set_default_args_v0, v0.7.x);
    without it max_num_batched_tokens is max(max_model_len, 2048), with it 2048 (config.py
    SchedulerConfig.__post_init__); max_num_seqs is 256 on every GPU (EngineArgs).

    >>> tokens = lambda version, seq: v0_batch_defaults(ModelSpec(name="m", layers=1, heads=1, kv_heads=1, head_dim=64), Workload(seq=seq, engine=Engine(name="vllm", vllm_version=version)))[0].max_num_batched_tokens
    >>> tokens("0.7.3", 8192), tokens("0.7.2", 32768), tokens("0.7.2", 40960), tokens("0.7.2", 1024), tokens("0.8.0", 8192)
    (8192, 32768, 2048, 2048, None)
    """
    engine, seq = workload.engine, workload.seq
    v0 = runs_v0(model, workload)
    if v0 is None:
        return engine, None
    if engine.max_num_batched_tokens is not None and engine.max_num_seqs is not None:
        return engine, None
    # nor with speculative decoding (use_spec_decode, _set_default_args_v0, 0.8.4)
    plain = model.sliding_window is None and model.mla is None and model.vision is None and workload.draft_kind is None
    chunked = seq > V0_LONG_CONTEXT and plain
    batched = V0_DEFAULT_MAX_NUM_BATCHED_TOKENS if chunked else max(seq, V0_DEFAULT_MAX_NUM_BATCHED_TOKENS)
    why = (
        f"{v0}: chunked prefill "
        + (
            f"on (max_model_len {seq:,} > 32K): {batched:,} batched tokens"
            if chunked
            else f"off: max(max_model_len {seq:,}, 2048) = {batched:,} batched tokens"
        )
        + f", max_num_seqs {V0_MAX_NUM_SEQS} (vllm/config.py SchedulerConfig, vllm/engine/arg_utils.py, v0.7)"
    )
    return engine.model_copy(
        update={
            "max_num_batched_tokens": engine.max_num_batched_tokens or batched,
            "max_num_seqs": engine.max_num_seqs or V0_MAX_NUM_SEQS,
        }
    ), why


def default_utilization(version: str | None) -> tuple[float, str]:
    """vLLM's default --gpu-memory-utilization for the release, and where it comes from: 0.92 from 0.20
    (vllm-project/vllm#38284 raised it as it turned CUDA-graph profiling on), 0.9 before.

    >>> default_utilization("0.22.1")[0], default_utilization("0.19.0")[0], default_utilization(None)[0]
    (0.92, 0.9, 0.92)
    """
    if _version(version) >= CUDA_GRAPHS_SINCE:
        return VLLM_UTILIZATION_SINCE_0_20, "vLLM's default from 0.20 (vllm/config/cache.py, vllm-project/vllm#38284)"
    return VLLM_UTILIZATION, f"vLLM {version}'s default (vllm/config/cache.py; 0.92 from 0.20)"


def state_blocks_per_request(engine: Engine, model: ModelSpec) -> tuple[int, str]:
    """State blocks a request holds in each Mamba group of a hybrid model, and why: mamba_cache_mode
    "align" (prefix caching on) keeps the running state and the last block-aligned one, "none" only the
    running state (vllm/v1/kv_cache_interface.py MambaSpec.max_memory_usage_bytes: page * (2 + speculative
    blocks) for align, page * (1 + ...) for none; vllm/model_executor/models/config.py MambaModelConfig sets
    the mode prefix caching asks for). Which mode prefix caching sets depends on the release
    (ALIGN_FOR_EVERY_MODEL_SINCE): from 0.28 align for every model (0.28.0, 0.29.0, 0.30.0 wheels); in 0.19-0.27
    "all" for a model whose Mamba mixers support prefix caching (SupportsMambaPrefixCaching: every
    MambaMixer/MambaMixer2 model of the 0.27.1 wheel; in 0.21.0 all but Plamo2), which keeps a state block per
    block of tokens, cdiv(max_model_len, block), its block a multiple of the config's Mamba chunk size
    (platforms/interface.py update_block_size_for_backend). kvcalc does not record the chunk size, so "all"
    is not modelled and refused: counting align's 2 would report more concurrency than vLLM has.

    >>> from kvcalc.presets import load_model
    >>> qwen = load_model("qwen3.6-27b")
    >>> state_blocks_per_request(Engine(name="vllm", enable_prefix_caching=True), qwen)[0], state_blocks_per_request(Engine(name="vllm"), qwen)[0]
    (2, 1)
    """
    if not engine.enable_prefix_caching:
        return 1, "mamba_cache_mode none (prefix caching off): the running state"
    align = "mamba_cache_mode align (--enable-prefix-caching): the running state and the last block-aligned one"
    release = _version(engine.vllm_version)
    mamba = any(kind in ("mamba1", "mamba2") for kind in model.state_kinds())
    if mamba and MAMBA_ALL_MODE_SINCE <= release < ALIGN_FOR_EVERY_MODEL_SINCE:
        raise InvalidInput(
            f"--enable-prefix-caching on a Mamba-mixer model under vLLM {engine.vllm_version} is not modelled: 0.19-0.27 set"
            " mamba_cache_mode all (models/config.py MambaModelConfig), a state block per block of max_model_len aligned"
            " to the config's Mamba chunk size, which kvcalc does not record (modelled: 0.28+, where prefix caching uses"
            " align, or the run without --enable-prefix-caching)"
        )
    if release < MAMBA_ALL_MODE_SINCE:
        return 2, align + f" (releases before 0.19 not read: vLLM {engine.vllm_version} taken as 0.28's)"
    return 2, align


def capture_sizes(max_num_seqs: int, query_len: int = 1) -> list[int]:
    """The token counts vLLM captures CUDA graphs for: 1, 2, 4, then steps of 8 to 248 and of 16
    from 256, up to min(2 * max_num_seqs * query_len, 512), query_len = 1 + num_speculative_tokens
    (vllm/config/vllm.py _set_cudagraph_sizes); with speculative decoding each is rounded up to a
    multiple of query_len, those past the largest dropped, [query_len] when none is left
    (vllm/config/compilation.py adjust_cudagraph_sizes_for_spec_decode; vllm 00024d31).

    >>> len(capture_sizes(1024)), capture_sizes(2), capture_sizes(2, 4), len(capture_sizes(256, 4)), capture_sizes(1, 3)
    (51, [1, 2, 4], [4, 8, 16], 49, [3, 6])
    """
    largest = min(2 * max_num_seqs * query_len, 512)
    sizes = [size for size in [1, 2, 4, *range(8, 256, 8), *range(256, largest + 1, 16)] if size <= largest]
    if query_len == 1:
        return sizes
    rounded = [size for size in sorted({cdiv(size, query_len) * query_len for size in sizes}) if size <= largest]
    return rounded or [query_len]


def full_graph_sizes(max_num_seqs: int, query_len: int = 1) -> list[int]:
    """The capture sizes vLLM also captures a FULL (uniform-decode) graph for, beside the PIECEWISE one of
    every size: those of query_len to max_num_seqs * query_len tokens, a decode step of at most max_num_seqs
    requests (V1: vllm/v1/cudagraph_dispatcher.py initialize_cudagraph_keys, "x <= max_num_tokens and x >=
    uniform_decode_query_len", 0.21.0 and 0.27.1 wheels; V2: vllm/v1/worker/gpu/cudagraph_utils.py
    CudaGraphManager._init_candidates, "rounded_num_tokens > max_decode_tokens: continue", 0.29.0 and 0.30.0). With
    the 256 sequences of a GPU under 70 GiB: 35 FULL graphs of the 51 sizes (the 0.30.0 T4 log's "Capturing CUDA
    graphs (FULL): 35/35" beside "(PIECEWISE): 51/51", eslam-ahmed43/llm-lab logs/vllm_server.log).

    >>> len(full_graph_sizes(256)), len(full_graph_sizes(1024)), full_graph_sizes(2), full_graph_sizes(2, 4)
    (35, 51, [1, 2], [4, 8])
    """
    return [size for size in capture_sizes(max_num_seqs, query_len) if query_len <= size <= max_num_seqs * query_len]


def mla_block_size(backend: str | None, sparse: bool, requested: int | None) -> int:
    """Tokens per block of an MLA model's cache: DeepSeek sparse attention 64; else --block-size (16)
    raised to the backend's multiple when it is not one (FlashMLA by default: 64), FlashInfer MLA
    also taking 32 (vllm/platforms/cuda.py check_and_update_config).

    >>> mla_block_size(None, False, None), mla_block_size("cutlass_mla", False, None), mla_block_size("cutlass_mla", False, 256)
    (64, 128, 256)
    >>> mla_block_size("triton_mla", False, None), mla_block_size("flashinfer_mla", False, 32), mla_block_size("cutlass_mla", True, None)
    (16, 32, 64)
    """
    block = requested or VLLM_BLOCK_SIZE
    if sparse:
        return 64
    backend = backend or VLLM_FALLBACK_MLA_BACKEND
    multiple = MLA_BLOCK_MULTIPLE[backend]
    if block % multiple == 0 or (backend == "flashinfer_mla" and block == 32):
        return block
    return multiple


def large_gpu(gpu: GpuMemory, version: str | None = None) -> bool:
    """vLLM's larger batch defaults (vllm/engine/arg_utils.py; a GPU whose name is not known counts by its
    memory alone): from 0.9 a GPU of 70 GiB or more that is not an A100, in 0.8.5 any of 70 GiB or more,
    in 0.8.0-0.8.4 an H100 or H200 by name.

    >>> h100, a100 = GpuMemory(total_bytes=80 * GiB, name="h100-sxm"), GpuMemory(total_bytes=80 * GiB, name="a100-80gb")
    >>> large_gpu(a100), large_gpu(a100, "0.8.5"), large_gpu(h100, "0.8.3"), large_gpu(GpuMemory(total_bytes=80 * GiB), "0.8.4")
    (False, True, True, False)
    """
    release, name = _version(version), (gpu.name or "").lower()
    if release < LARGE_GPU_BY_MEMORY_SINCE:
        return any(known in name for known in LARGE_GPU_NAMES_BEFORE_0_8_5)
    return gpu.total_bytes >= VLLM_LARGE_GPU_BYTES and (release < A100_NOT_LARGE_SINCE or "a100" not in name)


def default_max_num_seqs(gpu: GpuMemory, version: str | None = None) -> int:
    """--max-num-seqs when it is not given: 1024 on a large GPU (large_gpu), else 256; 1024 on any GPU
    in 0.8.0-0.8.3 (vllm/engine/arg_utils.py _set_default_args_v1). The LLM class takes the same."""
    if V1_ENGINE_SINCE <= _version(version) < SMALL_MAX_NUM_SEQS_SINCE:
        return VLLM_MAX_NUM_SEQS
    return VLLM_MAX_NUM_SEQS if large_gpu(gpu, version) else VLLM_SMALL_MAX_NUM_SEQS


def default_max_num_batched_tokens(gpu: GpuMemory, engine: Engine) -> tuple[int, str]:
    """--max-num-batched-tokens when it is not given, for the V1 engine (0.8 on), and why: the API
    server (`vllm serve`) 8192 on a large GPU (large_gpu) and 2048 below, from 0.28 16384 on a GPU of 160
    GiB or more; the offline LLM class (--vllm-entrypoint llm) twice that, 16384 and 8192 (vllm/engine/
    arg_utils.py, UsageContext.LLM_CLASS against OPENAI_API_SERVER, read in the 0.8.0-0.30.0 wheels).

    >>> h100, l40s = GpuMemory(total_bytes=80 * GiB, name="h100-sxm"), GpuMemory(total_bytes=44 * GiB, name="l40s")
    >>> tokens = lambda gpu, entrypoint=None, version=None: default_max_num_batched_tokens(gpu, Engine(name="vllm", vllm_entrypoint=entrypoint, vllm_version=version))[0]
    >>> tokens(h100), tokens(h100, "llm"), tokens(l40s), tokens(l40s, "llm")
    (8192, 16384, 2048, 8192)
    >>> b200 = GpuMemory(total_bytes=179 * GiB, name="b200")
    >>> tokens(b200), tokens(b200, version="0.27.1"), tokens(b200, "llm", "0.27.1")
    (16384, 8192, 16384)
    """
    version, release = engine.vllm_version, _version(engine.vllm_version)
    offline = engine.vllm_entrypoint == "llm"
    who = "the offline LLM class (--vllm-entrypoint llm)" if offline else "vllm serve"
    if release >= HUGE_GPU_TIER_SINCE and gpu.total_bytes >= VLLM_HUGE_GPU_BYTES:
        return VLLM_HUGE_GPU_MAX_NUM_BATCHED_TOKENS, (
            f"{who} on a GPU of 160 GiB or more (0.28 on): {VLLM_HUGE_GPU_MAX_NUM_BATCHED_TOKENS} batched tokens"
            " (vllm/engine/arg_utils.py get_batch_defaults)"
        )
    large = large_gpu(gpu, version)
    if offline:
        tokens = VLLM_LLM_CLASS_MAX_NUM_BATCHED_TOKENS if large else VLLM_LLM_CLASS_SMALL_MAX_NUM_BATCHED_TOKENS
    else:
        tokens = VLLM_MAX_NUM_BATCHED_TOKENS if large else VLLM_SMALL_MAX_NUM_BATCHED_TOKENS
    if release < LARGE_GPU_BY_MEMORY_SINCE:
        size = "an H100 or H200 (0.8.0-0.8.4 tell by name)" if large else "a GPU other than an H100 or H200 (0.8.0-0.8.4)"
    elif release < A100_NOT_LARGE_SINCE:
        size = "a GPU of 70 GiB or more (0.8.5)" if large else "a GPU under 70 GiB (0.8.5)"
    else:
        size = "a GPU of 70 GiB or more, not an A100" if large else "a GPU under 70 GiB or an A100"
    return tokens, f"{who} on {size}: {tokens} batched tokens (vllm/engine/arg_utils.py, UsageContext defaults)"


MARLIN_SOURCE = (
    "vllm/model_executor/kernels/linear/mixed_precision/marlin.py MarlinLinearKernel.process_weights_after_loading"
    " (vllm 055e47c2), awq_marlin.py (0322f292), gptq_marlin.py GPTQMarlinMoEMethod (00161ce0)"
)


def marlin_dropped(stage: StageWeights, quantization: LinearQuantization, gpu_name: str | None) -> tuple[int, str]:
    """Bytes of one GPU's stored integer-quantized weights vLLM does not hold after loading, and why (never
    negative: Marlin keeps no more than the checkpoint stores): 0 where the layers load as stored (bitsandbytes; a config or GPU Marlin does not take: marlin_repacks,
    marlin_runs); after a Marlin repack packed values and scales keep their sizes, asymmetric zero points are
    repacked at theirs, a symmetric GPTQ linear's qzeros are dropped and its MoE experts keep them in
    params_dtype (half the stored int32 words); g_idx and its sort indices exist only with act order
    (one int32 each per input feature: not counted)."""
    q = quantization
    layers, experts = stage.quantized_params
    if q.method == "bitsandbytes":
        return 0, (
            f"{q.label}: loaded as stored: vLLM keeps the packed weights and their quant states"
            " (quantization/bitsandbytes.py BitsAndBytesLinearMethod.create_weights, vllm 01f5395f)"
        )
    if not q.marlin:
        return 0, (
            f"{q.label}: loaded as stored: the config lacks sym or desc_act, so vLLM runs its gptq kernel on the stored"
            " qweight, qzeros, scales and g_idx (gptq_marlin.py is_gptq_marlin_compatible)"
        )
    if not q.marlin_repacks:
        return 0, (
            f"{q.label}: loaded as stored: not a type and group size Marlin takes (marlin_utils.py check_marlin_supported:"
            f" groups {', '.join(map(str, MARLIN_GROUP_SIZES))}; 4-bit with zero points, 4- or 8-bit without), so vLLM"
            " runs its plain gptq or awq kernel on the stored layout"
        )
    runs, where = marlin_runs(gpu_name)
    if not runs:
        return 0, f"{q.label}: loaded as stored: {where}, so vLLM runs its plain kernel on the stored layout"
    stored = q.stored_bytes(layers) + q.stored_bytes(experts)
    loaded = q.marlin_bytes(layers, experts=False) + q.marlin_bytes(experts, experts=True)
    if loaded > stored:
        raise ValueError(f"{q.label}: Marlin would hold {loaded:,} B of {stored:,} B stored")  # marlin_bytes' invariant
    zeros = (
        f"zero points kept ({q.bits} bits per group)"
        if q.zero_points
        else f"zero points stored {q.stored_zero_bits()} bits per group, kept {q.marlin_zero_bits(False)} (layers)"
        + (f" and {q.marlin_zero_bits(True)} (experts)" if experts else "")
    )
    why = (
        f"{q.label}: {where}; Marlin repack: stored - loaded = {stored:,} - {loaded:,} = {stored - loaded:,} B"
        f" ({format_bytes(stored - loaded)}) for {layers:,} layer and {experts:,} expert params per GPU; packed values"
        f" and scales as stored, {zeros}"
        + ("; act order: g_idx and sort indices per input feature, not counted" if q.act_order else "")
    )
    return stored - loaded, why


def loaded_weights_term(stage: StageWeights, gpu_name: str | None) -> BudgetTerm:
    """The weights term: as stored, or for integer-quantized layers as vLLM holds them: the stored bytes less
    what its Marlin repack drops (marlin_dropped; one term, so the budget's terms stay non-negative)."""
    stored = weights_term(stage)
    if stage.quantization is None:
        return stored
    dropped, why = marlin_dropped(stage, stage.quantization, gpu_name)
    loaded = stage.weights_bytes - dropped
    return BudgetTerm(
        name="weights (as loaded)",
        bytes=loaded,
        formula=(
            f"as stored - dropped by Marlin = {stage.weights_bytes:,} - {dropped:,} = {loaded:,} B ({format_bytes(loaded)});"
            f" as stored: {stored.formula}; dropped by Marlin: {why}"
        ),
        source=MARLIN_SOURCE,
    )


# RotaryEmbedding.__init__: cache = self._compute_cos_sin_cache(); cache.to(dtype); register_buffer("cos_sin_cache")
# while the model loads (in "Model loading took"); get_rope caches one RotaryEmbedding per (head size, rotary dim,
# max position, base, scaling, dtype): one table per rope setting, shared by the layers; not sharded over TP
ROTARY_SOURCE = "vllm/model_executor/layers/rotary_embedding/base.py RotaryEmbedding.__init__, get_rope (vllm 04458da0)"


def start_check(gpu: GpuMemory, fraction: float, version: str | None = None, v0: bool = False) -> tuple[str | None, str | None]:
    """vLLM's start-up check on the memory other processes hold (--memory-in-use): V1 from 0.9.1 (or no
    --vllm-version: the latest) asks for total * gpu_memory_utilization and refuses to start when less is
    free; what it asks for does not shrink with the memory in use (vllm/v1/worker/gpu_worker.py init_device,
    START_CHECK_SINCE; vllm/v1/worker/utils.py request_memory in later releases; the same refusal in vLLM 0.10.2's log, tests/fixtures/engine_logs/collected.yaml).
    The V0 engine (`v0`, runs_v0) has no such check. Returns the refusal (None: it starts) and the
    --explain line (None: nothing in use).

    >>> start_check(GpuMemory(total_bytes=16 * GiB, in_use_bytes=4 * GiB), 0.9)[0]
    'vLLM refuses to start: free memory on device (12.00/16.00 GiB) on startup is less than desired GPU memory utilization (0.9, 14.40 GiB); --gpu-memory-utilization 0.75 or less starts'
    >>> start_check(GpuMemory(total_bytes=16 * GiB, in_use_bytes=4 * GiB), 0.9, "0.9.0")[0] is None
    True
    """
    if not gpu.in_use_bytes:
        return None, None
    if v0:
        return (
            None,
            f"memory in use before start {gpu.in_use_bytes:,} B: V0 has no start-up check on free memory (vllm/worker/worker.py)",
        )
    total, free = gpu.total_bytes, gpu.total_bytes - gpu.in_use_bytes
    if _version(version) < START_CHECK_SINCE:
        return None, (
            f"memory in use before start {gpu.in_use_bytes:,} B: vLLM {version} has no start-up check on free memory"
            " (it came in 0.9.1: vllm/v1/worker/gpu_worker.py init_device)"
        )
    requested = math.ceil(total * fraction)  # as vLLM computes it, in floating point
    why = (
        f"memory in use before start {gpu.in_use_bytes:,} B: vLLM asks for total * gpu_memory_utilization"
        f" = {requested:,} B whatever is in use and refuses to start when less is free ({free:,} B free)"
        " (vllm/v1/worker/gpu_worker.py init_device from 0.9.1, vllm/v1/worker/utils.py request_memory later)"
    )
    if free >= requested:
        return None, why
    largest = math.floor(free * 100 / total) / 100
    advice = (
        f"--gpu-memory-utilization {largest:g} or less starts"
        if largest >= 0.01
        else "no --gpu-memory-utilization starts (even 0.01 asks for more than is free)"
    )
    return (
        f"vLLM refuses to start: free memory on device ({gib(free)}/{gib(total)} GiB) on startup is less than desired GPU"
        f" memory utilization ({fraction:g}, {gib(requested)} GiB); {advice}"
    ), why


class Vllm(EngineProfile):
    name = "vllm"
    label = "vLLM"
    fraction_option = "gpu_memory_utilization"
    draft_rule = (
        "the draft model's weights load beside the target's (vllm/v1/spec_decode proposers' load_model; draft tp = target tp);"
        " its attention layers join the target's KV cache groups, one pool whose page is the sum of every layer's"
        " (vllm/v1/kv_cache_interface.py UniformTypeKVCacheSpecs.page_size_bytes), so bytes per token add up"
    )
    prefix_rule = (
        "automatic prefix caching shares whole blocks only: a block is hashed once full (docs.vllm.ai/en/latest/design/prefix_caching;"
        " vllm/v1/core/kv_cache_utils.py hash_block_tokens); on hybrid models the block is the raised attention block, so a"
        " prefix shorter than one is never cached (vllm-project/vllm#40696, v0.19.1)"
    )

    vision_rule = (
        "the tower loads with the language model, sharded over tp (vllm/config/multimodal.py MultiModalConfig"
        " mm_encoder_tp_mode 'weights'); --language-model-only or --limit-mm-per-prompt '{\"image\": 0}' leaves it out"
    )
    mm_profile_rule = (
        "vllm/v1/worker/gpu_model_runner.py profile_run (encoder_cache['tmp']), vllm/multimodal/encoder_budget.py"
        " MultiModalBudget, vllm/v1/core/encoder_cache_manager.py compute_mm_encoder_budget (v0.11-0.19); the V0 engine (before"
        " 0.8, and runs_v0's fallbacks to 0.10.2): vllm/worker/model_runner.py and enc_dec_model_runner.py profile_run,"
        " vllm/multimodal/registry.py (v0.7.0)"
    )
    sparse_mla_fp8_layout = True  # fp8_ds_mla: fp8 latent, fp32 scale per 128, bf16 rope (656 B for DeepSeek-V3.2)
    max_seqs_option = "max_num_seqs"
    calibration_error_percent = 2.4  # scripts/calibration.py: 90th percentile of the held-out |errors|
    sizes_from_cuda_total = True  # vllm/utils/mem_utils.py MemorySnapshot: torch.cuda.mem_get_info's total

    def block_size(self, workload: Workload) -> int:
        """--block-size, or vLLM's default 16."""
        return workload.block_size or VLLM_BLOCK_SIZE

    def settle(self, model: ModelSpec, workload: Workload) -> Workload:
        """An MLA model's block size as its attention backend forces it (mla_block_size)."""
        if model.mla is None:
            return workload
        block = mla_block_size(workload.engine.attention_backend, model.mla.indexer_head_dim is not None, workload.block_size)
        return workload if block == self.block_size(workload) else workload.model_copy(update={"block_size": block})

    def tokens_per_unit(self, workload: Workload, window: int | None, seq: int, chunked: bool = False) -> int:
        """Whole blocks; a sliding layer reserves cdiv(min(W - 1 + max_num_batched_tokens, s), block) + 1
        blocks per request (vllm/v1/kv_cache_interface.py SlidingWindowSpec.max_memory_usage_bytes), a
        chunked layer cdiv(min(C + max_num_batched_tokens, s), block) (ChunkedLocalAttentionSpec
        .max_admission_blocks_per_request: one chunk and the tokens in flight). A full layer holds
        cdiv(s + K, block) blocks with a draft proposing K tokens a step: a running request's slots
        include K lookahead tokens (vllm/v1/core/sched/scheduler.py num_lookahead_tokens, set for
        EAGLE, MTP and draft models; vllm 00024d31)."""
        block = self.block_size(workload)
        if window:
            batched = workload.engine.max_num_batched_tokens or VLLM_MAX_NUM_BATCHED_TOKENS
            if chunked:
                return cdiv(min(window + batched, seq), block) * block
            return (cdiv(min(window - 1 + batched, seq), block) + 1) * block
        # a draft's K proposals need slots beyond the context: allocate_slots(num_lookahead_tokens=K); n-gram
        # lookup writes no KV ahead (vllm/config/vllm.py num_lookahead_tokens 0)
        lookahead = workload.speculative_tokens if workload.draft_kind != "ngram" else 0
        return cdiv(seq + lookahead, block) * block

    def check_supported(self, model: ModelSpec, workload: Workload, dtype: DType) -> None:
        if dtype not in VLLM_DTYPES:
            raise InvalidInput(f"--engine vllm caches {', '.join(sorted(d.value for d in VLLM_DTYPES))}, not {dtype.value}")
        k_type, v_type = cache_dtypes(model, workload)
        if k_type != v_type:
            raise InvalidInput("--engine vllm keeps K and V in one --kv-cache-dtype: give --kv-dtype, not --k-dtype / --v-dtype")
        if workload.state_dtype is not None:
            raise InvalidInput("--state-dtype is the textbook's; vLLM takes --mamba-cache-dtype and --mamba-ssm-cache-dtype")

    def state_dtypes(self, model: ModelSpec, workload: Workload) -> StateDtypes:
        """--mamba-cache-dtype (auto: the model dtype) for the conv state; the SSM state takes
        --mamba-ssm-cache-dtype, else the dtype the model's config asks for (Nemotron-H's
        mamba_ssm_cache_dtype), else the conv state's (mamba_utils.py MambaStateDtypeCalculator
        _mamba_state_dtype; models/config.py NemotronHForCausalLMConfig). Lightning attention keeps
        one state in the --mamba-cache-dtype (linear_attention_state_dtype)."""
        engine = workload.engine
        conv = engine.mamba_cache_dtype or model.dtype
        why = "--mamba-cache-dtype" if engine.mamba_cache_dtype else "auto: the model's dtype"
        if "kda" in model.state_kinds():  # mamba_utils.py kda_state_dtype: (state_dtype, torch.float32)
            return StateDtypes(conv=conv, recurrent=DType.fp32, why=why + "; KDA recurrent state: float32 (kda_state_dtype)")
        if "lightning" in model.state_kinds():
            return StateDtypes(conv=conv, recurrent=conv, why=why + " (lightning attention: one dtype)")
        if engine.mamba_ssm_cache_dtype is not None:
            return StateDtypes(conv=conv, recurrent=engine.mamba_ssm_cache_dtype, why=why + "; SSM: --mamba-ssm-cache-dtype")
        config = model.state.ssm_dtype if model.state else None
        if config is not None:
            return StateDtypes(conv=conv, recurrent=config, why=why + "; SSM: the dtype the model's config asks for")
        return StateDtypes(conv=conv, recurrent=conv, why=why + "; SSM: as the conv state (--mamba-ssm-cache-dtype auto)")

    def state_pages(
        self, workload: Workload, attention_bytes_per_token: int | None, state_bytes: int, mla: bool = False
    ) -> StatePages:
        """A state layer takes one page per request (mamba_cache_mode none), and every page of the
        hybrid pool has one size: the attention block size is raised to 16 * cdiv(state, 16 *
        attention page of one token) unless --block-size is already larger, and the state page is
        padded up to block * attention page of one token (model_executor/models/config.py
        HybridAttentionMambaModelConfig.verify_and_update_config)."""
        if attention_bytes_per_token is None:
            return StatePages(
                block_size=self.block_size(workload),
                page_bytes=None,
                explain=["vLLM: no attention layers: each state layer keeps one page of its own state per request (MambaSpec)"],
            )
        # MLA kernels align the raised block to their own multiple (64 FlashMLA, 128 CUTLASS MLA)
        align = (
            MLA_BLOCK_MULTIPLE[workload.engine.attention_backend or VLLM_FALLBACK_MLA_BACKEND] if mla else VLLM_HYBRID_ALIGNMENT
        )
        align = max(align, VLLM_HYBRID_ALIGNMENT)
        needed = align * cdiv(state_bytes, align * attention_bytes_per_token)
        user = workload.block_size
        block = needed if user is None or user < needed else user
        page = block * attention_bytes_per_token
        padding = 100 * (page - state_bytes) / state_bytes
        log = []
        if block != user:
            log.append(
                EngineLogLine(
                    engine=self.label,
                    name="attention_block_size",
                    value=block,
                    line=f"Setting attention block size to {block} tokens to ensure that attention page size is >= mamba page size.",
                    note="one attention page must hold a layer's state",
                    source="vllm/model_executor/models/config.py HybridAttentionMambaModelConfig.verify_and_update_config",
                )
            )
        if page != state_bytes:
            log.append(
                EngineLogLine(
                    engine=self.label,
                    name="mamba_page_padding_percent",
                    value=padding,
                    line=f"Padding mamba page size by {padding:.2f}% to ensure that mamba page size and attention page size are exactly equal.",
                    note="every page of the hybrid pool has one size",
                    source="vllm/model_executor/models/config.py HybridAttentionMambaModelConfig.verify_and_update_config",
                )
            )
        given = f", --block-size {user} is {'kept' if block == user else 'raised'}" if user is not None else ""
        explain = [
            f"vLLM attention block size = {align} * cdiv(state {state_bytes:,} B, {align} * {attention_bytes_per_token:,} B per token)"
            f" = {needed} tokens{given}: block size {block}",
            f"vLLM state page = block * attention bytes per token = {block} * {attention_bytes_per_token:,} = {page:,} B,"
            f" {page - state_bytes:,} B ({padding:.2f}%) of padding per state layer per sequence",
        ]
        return StatePages(block_size=block, page_bytes=page, explain=explain, log=log)

    def state_rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        return [
            "vLLM: a fixed state per request per state layer, shapes from MambaStateShapeCalculator and dtypes from"
            " MambaStateDtypeCalculator (vllm/model_executor/layers/mamba/mamba_utils.py, vllm 02d71083)",
            "vLLM: one attention-sized page per state layer per request; attention blocks raised until a page holds a state"
            " (vllm/model_executor/models/config.py HybridAttentionMambaModelConfig)",
        ]

    def mla_storage(self, engine: Engine) -> MlaStorage:
        """One K-only latent of kv_lora_rank + rope (kv_cache_interface.py MLAAttentionSpec)."""
        return "k_only"

    def max_sequences(self, workload: Workload) -> int | None:
        """--max-num-seqs caps the requests running at once."""
        return workload.engine.max_num_seqs

    def defaults_on(self, model: ModelSpec, workload: Workload, gpu: GpuMemory) -> Engine:
        """max_num_batched_tokens as the release and entry point default it (default_max_num_batched_tokens:
        vllm serve 8192 on a GPU of 70 GiB or more that is not an A100, else 2048; the LLM class twice that);
        on the V0 engine (runs_v0) they follow max_model_len and are filled by budget (v0_batch_defaults)."""
        engine = workload.engine
        if (
            engine.attention_backend is None
            and model.mla is not None
            and (default := vllm_mla_backend(gpu.name, engine.vllm_version))
        ):
            engine = engine.model_copy(update={"attention_backend": default})  # the release's choice on this GPU
        if engine.max_num_batched_tokens is not None:
            return engine
        if runs_v0(model, workload) is not None:
            return engine  # V0's defaults follow max_model_len: budget fills them (v0_batch_defaults)
        batched, _ = default_max_num_batched_tokens(gpu, engine)
        return engine.model_copy(update={"max_num_batched_tokens": batched})

    @staticmethod
    def _non_torch(gpu: GpuMemory, tp: int, pp: int, captured: tuple[bool, str] = (True, "")) -> tuple[int, str]:
        """Memory outside torch's allocator that the profiling run sees grow: cuBLAS workspaces and what the
        CUDA-graph estimate's capture leaves when it runs inside the window (`captured`, graph_capture_in_window)
        on one GPU (the logs that show the difference are one-GPU logs); with tensor parallelism NCCL's buffers, which over NVLink/NVSwitch on Hopper and Blackwell
        (NVLS, custom all-reduce, symmetric memory) the v0.19 H100 logs put at 2.1 GiB, and without
        NVLink NCCL's channels to each peer (custom all-reduce off on more than two PCIe GPUs,
        vllm/distributed/device_communicators/custom_all_reduce.py). Unknown links: the NVLink figure."""
        in_window, why = captured
        one_gpu = NON_TORCH_BYTES if in_window else NON_TORCH_NO_CAPTURE_BYTES
        one_why = f"{why}: " if why else ""
        one_why += "the v0.19 logs" if in_window else "no capture in the window: the llm-d-planner 0.11 logs"
        if tp == 1:
            return (NON_TORCH_PP_BYTES, "pipeline stage, one GPU") if pp > 1 else (one_gpu, f"on one GPU ({one_why})")
        link = gpu.interconnect
        if link in (None, "nvlink", "xgmi") and sm_family(gpu.name) in ("hopper", "blackwell", None):
            why = "tensor parallelism over NVLink/NVSwitch (NCCL, custom all-reduce)"
            return NON_TORCH_TP_BYTES, why + (" (--interconnect not known: the larger figure)" if link is None else "")
        # NCCL's PCIe buffers with cuBLAS, not split by capture window as one GPU is: no TP-over-PCIe log of a release that captures nothing
        over = f"over {link}" if link else f"on {sm_family(gpu.name)} GPUs (no NVLS before Hopper)"
        return NON_TORCH_BYTES, f"tensor parallelism {over}: NCCL's buffers without NVLink are small (the v0.19 one-GPU figure)"

    def _overheads(
        self, model: ModelSpec, workload: Workload, gpu: GpuMemory, stage: StageWeights, last: bool, act_dtype: DType
    ) -> list[BudgetTerm]:
        """The profiling run's activation peak, non-torch memory and the CUDA-graph estimate of one
        stage's GPU."""
        engine, tp, pp = workload.engine, workload.tp, workload.pp
        hidden, _, vocab = require_shapes(model, self.label)
        tokens = engine.max_num_batched_tokens or VLLM_MAX_NUM_BATCHED_TOKENS
        seqs = engine.max_num_seqs or default_max_num_seqs(gpu, engine.vllm_version)
        requests = min(seqs, tokens)
        b = activation_bytes(act_dtype)
        layers = range(stage.first_layer, stage.last_layer + 1)
        v0_why = runs_v0(model, workload)
        v0 = v0_why is not None
        defaults_why = "V0's, above" if v0 else default_max_num_batched_tokens(gpu, engine)[1]
        forward = v0_forward_transient if v0 else forward_transient
        transient, transient_formula = forward(model, layers, tokens, tp, b)
        workspace, workspace_formula = moe_workspace(model, layers, tokens, tp, b)
        runner, runner_why = model_runner(model, workload)
        per_logit, per_logit_why = sampler_rule(engine.vllm_version, runner, b, v0, engine.vllm_flashinfer_sampler)
        sampler = requests * vocab * per_logit + 2 * tokens * hidden * b if last else 0
        sampler_formula = (
            f"R * V * {per_logit} + 2 * T * H * b = {requests:,} * {vocab:,} * {per_logit}"
            f" + 2 * {tokens:,} * {hidden:,} * {b} = {sampler:,} B ({per_logit} B per logit: {per_logit_why})"
            if last
            else "not the last pipeline stage: no sampler"
        )
        activation = max(transient, sampler) + workspace
        non_torch, non_torch_why = self._non_torch(gpu, tp, pp, graph_capture_in_window(engine, runner, v0))
        eager = engine.enforce_eager
        release = _version(engine.vllm_version)
        v2_without_estimate = runner == "v2" and release < V2_GRAPHS_PROFILED_SINCE
        graphs_applied = not eager and release >= CUDA_GRAPHS_SINCE and not v2_without_estimate
        query_len = 1 + workload.speculative_tokens
        sizes = capture_sizes(seqs, query_len)
        count, full = len(sizes), len(full_graph_sizes(seqs, query_len))
        further = count - 1 + max(full - 1, 0)  # each mode's first capture shares the pool (max of the firsts)
        graphs = CUDA_GRAPH_FIRST_BYTES + further * CUDA_GRAPH_EACH_BYTES if graphs_applied else 0
        if eager:
            why_no_graphs = "--enforce-eager: no CUDA graphs"
        elif v2_without_estimate and release >= CUDA_GRAPHS_SINCE:
            why_no_graphs = (
                f"the V2 runner's profile_cudagraph_memory returns 0 before 0.29: vLLM {engine.vllm_version} subtracts none"
            )
        else:
            why_no_graphs = f"vLLM {engine.vllm_version} does not subtract it (0.20 does)"
        return [
            BudgetTerm(
                name="activation peak",
                bytes=activation,
                formula=(
                    f"profile run of T = max_num_batched_tokens {tokens:,} tokens over R = min(max_num_seqs {seqs:,}, T)"
                    f" requests: max(forward, sampler) + MoE workspace = max({transient:,}, {sampler:,}) + {workspace:,}"
                    f" = {activation:,} B ({format_bytes(activation)}); forward: {transient_formula}; sampler: {sampler_formula};"
                    f" MoE workspace: {workspace_formula}; "
                    + ("the V0 engine (why: above);" if v0 else f"model runner {runner.upper()}: {runner_why};")
                    + f" the default when not given: {defaults_why}"
                ),
                source=(
                    "vllm/worker/model_runner.py profile_run (V0; the forward as activations.v0_forward_transient reads"
                    " V0's model code, 0.6.5 and 0.8.4 wheels)"
                    if v0
                    else "vllm/v1/worker/gpu/model_runner.py profile_run (V2: _dummy_run, _dummy_sampler_run; 0.22-0.30)"
                    if runner == "v2"
                    else "vllm/v1/worker/gpu_model_runner.py profile_run (_dummy_run, _dummy_sampler_run); fitted on v0.19 logs"
                ),
            ),
            BudgetTerm(
                name="non-torch memory",
                bytes=non_torch,
                formula=f"{format_bytes(non_torch)} {non_torch_why}; the CUDA context before the snapshot is not charged",
                source="vllm/utils/mem_utils.py memory_profiling (non_torch_increase); vllm/v1/worker/gpu_worker.py"
                " determine_available_memory (where the CUDA-graph estimate is captured, 0.18.0-0.27.0 wheels)",
            ),
            BudgetTerm(
                name="CUDA graphs",
                bytes=graphs,
                formula=(
                    f"estimate = first capture + each further graph = {format_bytes(CUDA_GRAPH_FIRST_BYTES)} + (({count} - 1)"
                    f" + ({full} - 1)) * {format_bytes(CUDA_GRAPH_EACH_BYTES)} = {graphs:,} B ({count} PIECEWISE sizes up to"
                    f" {sizes[-1]:,}, multiples of query_len {query_len} within min(2 * max_num_seqs * query_len, 512) or"
                    f" query_len alone past it, {full} FULL sizes up to max_num_seqs {seqs:,} * query_len {query_len})"
                    if graphs_applied
                    else why_no_graphs
                ),
                source=(
                    "vllm/v1/worker/gpu/cudagraph_utils.py profile_cudagraph_memory (V2, 0.29 on: captured and measured;"
                    " FULL sizes: CudaGraphManager._init_candidates); kvcalc's estimate from the V1 logs, 0.49-1.92 GiB"
                    if runner == "v2"
                    else "vllm/v1/worker/gpu_model_runner.py profile_cudagraph_memory (PR #30515; FULL sizes:"
                    " vllm/v1/cudagraph_dispatcher.py initialize_cudagraph_keys); logged estimates 0.49-1.92 GiB"
                ),
            ),
        ]

    def budget(
        self,
        model: ModelSpec,
        workload: Workload,
        gpu: GpuMemory,
        stages: Sequence[StageWeights],
        activation_dtype: DType,
        utilization: float | None,
        reserve_bytes: int | None,
    ) -> Budget:
        """available KV = total * gpu_memory_utilization - weights - activation peak - non-torch
        - CUDA graphs, on the GPU of the stage that leaves the least (the last stage runs the
        sampler); --reserve replaces the three overheads; --kv-cache-memory-bytes is the answer."""
        engine, v0_why = v0_batch_defaults(model, workload)
        v0_why = v0_why or runs_v0(model, workload)  # said once, above the terms that follow it
        workload = workload.model_copy(update={"engine": engine})
        memory = gpu.total_bytes
        default_fraction, default_why = default_utilization(engine.vllm_version)
        fraction = engine.gpu_memory_utilization or default_fraction
        requested = byte_fraction(memory, fraction)
        per_stage = []
        for stage in stages:
            weights = [loaded_weights_term(stage, gpu.name)]
            if stage.experts == DType.mxfp4:
                extra, why = mxfp4_padding(model, stage, workload.tp, sm_family(gpu.name))
                weights.append(
                    BudgetTerm(
                        name="weights as loaded: MXFP4 expert padding",
                        bytes=extra,
                        formula=why,
                        source="vllm/model_executor/layers/quantization/mxfp4.py Mxfp4MoEMethod.create_weights (vllm 007d5005)",
                    )
                )
            rotary = rotary_table_term(model, workload.seq, activation_dtype, None, ROTARY_SOURCE)
            weights += [rotary] if rotary else []
            if reserve_bytes is not None:
                overheads = [
                    BudgetTerm(
                        name="reserve (--reserve)",
                        bytes=reserve_bytes,
                        formula=f"--reserve {reserve_bytes:,} B in place of the activation peak, non-torch memory and CUDA graphs",
                        source="--reserve",
                    )
                ]
            else:
                overheads = self._overheads(model, workload, gpu, stage, stage is stages[-1], activation_dtype)
            used = [*weights, *overheads]
            usable = engine.kv_cache_memory_bytes or requested - sum(term.bytes for term in used)
            per_stage.append((usable, stage, used))
        usable, stage, used = min(per_stage, key=lambda item: item[0])
        unused = memory - usable - sum(term.bytes for term in used)
        if engine.kv_cache_memory_bytes:
            unused_term = BudgetTerm(
                name="not used (--kv-cache-memory-bytes)",
                bytes=unused,
                formula=f"memory - KV cache - the rest = {memory:,} - {usable:,} - {sum(t.bytes for t in used):,}",
                source="vllm/v1/worker/gpu_worker.py determine_available_memory (kv_cache_memory_bytes wins)",
            )
        else:
            unused_term = BudgetTerm(
                name=f"not used (1 - gpu_memory_utilization {fraction:g})",
                bytes=unused,
                formula=f"total * (1 - gpu_memory_utilization) = {memory:,} * (1 - {fraction})"
                + ("" if engine.gpu_memory_utilization else f"; {fraction:g} is {default_why}"),
                source="vllm/v1/worker/gpu_worker.py init_device (requested_memory)",
            )
        terms = [unused_term, *used]
        if engine.kv_cache_memory_bytes:
            rule = f"available KV = --kv-cache-memory-bytes = {usable:,} B (gpu_memory_utilization ignored)"
        else:
            rule = (
                f"available KV = total * gpu_memory_utilization - {' - '.join(t.name for t in used)} = {memory:,} * {fraction}"
                f" - {' - '.join(f'{t.bytes:,}' for t in used)} = {usable:,} B ({format_bytes(usable)})"
            )
        refused, in_use_why = start_check(gpu, fraction, engine.vllm_version, v0=v0_why is not None)
        explain = [
            *stage.explain[:-1],
            *([v0_why] if v0_why else []),
            *([dev] if (dev := development_build_note(engine.vllm_version)) else []),
            *(line for term in terms for line in term_lines(term)),
            rule,
            *([in_use_why] if in_use_why else []),
        ]
        if len(stages) > 1:
            explain.append(
                f"pipeline: the least of the {len(stages)} stages binds, here stage {stage.stage + 1} (layers {stage.first_layer}-{stage.last_layer})"
            )
        overheads_bytes = sum(t.bytes for t in used) - stage.weights_bytes
        return Budget(
            memory_bytes=memory,
            utilization=fraction,
            fraction="gpu_memory_utilization of total memory",
            allowed_bytes=memory - max(unused, 0),
            reserve_bytes=overheads_bytes,
            weights_bytes=stage.weights_bytes,
            usable_bytes=usable,
            terms=terms,
            explain=explain,
            stage=stage.stage,
            engine=engine,
            refused=refused,
        )

    def decode_profile(self, gpu: GpuSpec, engine: Engine | None = None) -> DecodeProfile:
        """--enforce-eager launches every kernel from Python (no CUDA graphs); the release sets the
        fixed cost per step (V1, the default from 0.8, schedules outside the model's process)."""
        options = engine or Engine(name="vllm")
        return profile_for("vllm", _version(options.vllm_version), options.enforce_eager, gpu.backend)

    @staticmethod
    def mla_rule(model: ModelSpec, workload: Workload) -> str:
        """How an MLA model's block size was chosen, for --explain."""
        if model.mla is None:
            return "none (no MLA layers)"
        if model.mla.indexer_head_dim:
            return "64 tokens, as FlashMLA sparse forces for DeepSeek sparse attention"
        backend = workload.engine.attention_backend or VLLM_FALLBACK_MLA_BACKEND
        multiple = MLA_BLOCK_MULTIPLE[backend]
        if multiple == 1:
            return f"{backend} keeps --block-size (vLLM's choice on Ampere, Ada, SM 12.x and ROCm)"
        return (
            f"{backend} pages in multiples of {multiple} tokens (--attention-backend; by default vLLM's choice on the GPU:"
            " flashmla on Hopper, cutlass_mla on B200/B300, triton_mla on Ampere, Ada, SM 12.x and ROCm)"
        )

    def rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        batched = workload.engine.max_num_batched_tokens or VLLM_MAX_NUM_BATCHED_TOKENS
        return [
            f"vLLM: pages of {self.block_size(workload)} tokens per layer, block_size * 2 * Hkv * d * bytes (vllm/v1/kv_cache_interface.py AttentionSpec.page_size_bytes)",
            f"sliding layers reserve cdiv(min(W - 1 + max_num_batched_tokens {batched}, s), block) + 1 blocks"
            " per request (SlidingWindowSpec.max_memory_usage_bytes)",
            "MLA caches one K-only latent of kv_lora_rank + rope (MLAAttentionSpec); fp8 is 1 byte per value, no scales"
            + (
                "; DeepSeek sparse attention: fp8 as fp8_ds_mla (fp8 latent, fp32 scale per 128, bf16 rope), plus each"
                " layer's indexer keys (DeepseekV32IndexerCache: index_head_dim fp8 + fp32 scale per 128)"
                if model.mla and model.mla.indexer_head_dim
                else ""
            ),
            f"MLA blocks: {self.mla_rule(model, workload)} (vllm/platforms/cuda.py check_and_update_config)",
            f"chunked layers keep cdiv(min(C + max_num_batched_tokens {batched}, s), block) blocks per request"
            " (ChunkedLocalAttentionSpec.max_admission_blocks_per_request)",
        ]

    def hybrid_pool(
        self,
        model: ModelSpec,
        workload: Workload,
        usable_bytes: int,
        stage: Sequence[StageLayer],
        pages: StatePages,
        state_layers: int,
    ) -> tuple[list[EngineLogLine], str | None]:
        """vLLM's pool for a hybrid model: attention and state layers share pages
        of one size, in groups of the smallest kind's layer count; num_blocks = usable // (page * group);
        a request takes cdiv(s, block) blocks in each full-attention group (its reservation in a sliding
        one) and one block in each state group, two with prefix caching (state_blocks_per_request;
        kv_cache_utils.py get_max_concurrency_for_kv_cache_config).
        "GPU KV cache size" is num_blocks // groups * block up to 0.20.0 (vllm-project/vllm#40691, logged on
        0.19.0), int(concurrency * max_model_len) from 0.20.1 (token_line; PR #40694). Each running request holds one state block, so vLLM refuses to capture CUDA graphs when
        max_num_seqs exceeds num_blocks ("max_num_seqs (N) exceeds available Mamba cache blocks (M)",
        vllm/config/compilation.py)."""
        if not stage or pages.block_size is None or pages.page_bytes is None or not state_layers:
            return [], None
        engine, block, page = workload.engine, pages.block_size, pages.page_bytes
        # in the attention blocks the state settled; max_memory_usage_bytes counts no lookahead slots
        paged = workload.model_copy(update={"block_size": block, "speculative_tokens": 0})
        counts: dict[tuple[int | None, bool], int] = {}
        for layer in stage:
            counts[layer.window, layer.chunked] = counts.get((layer.window, layer.chunked), 0) + 1
        group = min(*counts.values(), state_layers)
        state_groups = cdiv(state_layers, group)
        groups = sum(cdiv(count, group) for count in counts.values()) + state_groups
        blocks = max(usable_bytes, 0) // (page * group)
        state_blocks, state_why = state_blocks_per_request(engine, model)
        per_request = state_blocks * state_groups + sum(
            cdiv(count, group) * self.tokens_per_unit(paged, window, workload.seq, chunked) // block
            for (window, chunked), count in counts.items()
        )
        concurrency = blocks / per_request
        tokens, how = token_line(engine.vllm_version, blocks, groups, block, concurrency, workload.seq)
        source = "vllm/v1/core/kv_cache_utils.py"
        lines = [
            EngineLogLine(
                engine=self.label,
                name="gpu_kv_cache_tokens",
                value=tokens,
                line=f"GPU KV cache size: {tokens:,} tokens",
                note=f"{how}; groups of {group} layers: {groups - state_groups} attention, {state_groups} state",
                source=f"{source} _report_kv_cache_config",
            ),
            EngineLogLine(
                engine=self.label,
                name="max_concurrency",
                value=concurrency,
                line=f"Maximum concurrency for {workload.seq:,} tokens per request: {concurrency:.2f}x",
                note=f"num_blocks {blocks:,} / {per_request:,} blocks per request ({state_blocks} per state group: {state_why})",
                source=f"{source} get_max_concurrency_for_kv_cache_config",
            ),
            EngineLogLine(
                engine=self.label,
                name="mamba_cache_blocks",
                value=blocks,
                line=f"Mamba cache blocks: {blocks:,} (one per running request)",
                note=f"usable // (page {page:,} B * {group} layers per group)",
                source="vllm/config/compilation.py (the max_num_seqs check)",
            ),
        ]
        seqs = engine.max_num_seqs or VLLM_MAX_NUM_SEQS
        if engine.enforce_eager or seqs <= blocks:
            return lines, None
        refusal = (
            f"vLLM refuses to start: max_num_seqs ({seqs:,}) exceeds available Mamba cache blocks ({blocks:,});"
            f" --max-num-seqs {blocks:,} or less starts"
            if blocks
            else "vLLM refuses to start: no Mamba cache block fits"
        )
        return lines, refusal

    def log_lines(
        self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]
    ) -> list[EngineLogLine]:
        """vLLM's "Available KV cache memory", "GPU KV cache size" and "Maximum concurrency for N
        tokens per request", computed its way: the stage's layers form groups of the smallest kind's
        size that share one pool of blocks; num_blocks = usable // (page * group size); the cache
        size is num_blocks // groups * block tokens; a request needs cdiv(s, block) blocks per full
        group and its sliding reservation per sliding group; concurrency = num_blocks / blocks per
        request (a fraction). For hybrid models only the first here: the rest come from hybrid_pool."""
        available = EngineLogLine(
            engine=self.label,
            name="available_kv_cache_memory_gib",
            value=round(usable_bytes / 2**30, 2),
            line=f"Available KV cache memory: {gib(usable_bytes)} GiB",
            note="the budget above",
            source="vllm/v1/worker/gpu_worker.py determine_available_memory",
        )
        if any(model.state_kinds()) or not stage:
            return [available]
        block = self.block_size(workload)
        page = block * stage[0].bytes_per_token
        counts: dict[tuple[int | None, bool], int] = {}
        for layer in stage:
            counts[layer.window, layer.chunked] = counts.get((layer.window, layer.chunked), 0) + 1
        group = min(counts.values())
        groups = sum(cdiv(count, group) for count in counts.values())
        plain = workload.model_copy(update={"speculative_tokens": 0})  # max_memory_usage_bytes: no lookahead slots
        per_request = sum(
            cdiv(count, group) * self.tokens_per_unit(plain, window, workload.seq, chunked) // block
            for (window, chunked), count in counts.items()
        )
        # one group (every layer full attention, a draft's beside the target's): its page is the sum of
        # every layer's, whatever their sizes (vllm/v1/kv_cache_interface.py UniformTypeKVCacheSpecs)
        group_page = block * sum(layer.bytes_per_token for layer in stage) if groups == 1 else page * group
        blocks = max(usable_bytes, 0) // group_page
        concurrency = blocks / per_request
        tokens, how = token_line(workload.engine.vllm_version, blocks, groups, block, concurrency, workload.seq)
        source = "vllm/v1/core/kv_cache_utils.py"
        return [
            available,
            EngineLogLine(
                engine=self.label,
                name="gpu_kv_cache_tokens",
                value=tokens,
                line=f"GPU KV cache size: {tokens:,} tokens",
                note=how,
                source=f"{source} _report_kv_cache_config",
            ),
            EngineLogLine(
                engine=self.label,
                name="max_concurrency",
                value=concurrency,
                line=f"Maximum concurrency for {workload.seq:,} tokens per request: {concurrency:.2f}x",
                note="its own formula: whole blocks of the shared pool over blocks per request",
                source=f"{source} get_max_concurrency_for_kv_cache_config",
            ),
        ]
