"""TensorRT-LLM (`--engine trtllm`, the PyTorch backend of the LLM API): blocks of
--tokens-per-block tokens (32), a KV budget of --free-gpu-memory-fraction (0.9) of the memory still
free after the profiling run's peak, --max-tokens as a cap, one pool per attention window, MLA's
latent with kv_factor 1, and the max tokens it logs.

Rules follow TensorRT-LLM's tensorrt_llm/_torch/pyexecutor/_util.py at commit 00043967
(KvCacheCreator._cal_max_memory), _torch/pyexecutor/resource_manager.py (get_cache_size_per_token),
cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp (calculateMaxNumBlocks,
BlockManager::calculateWindowSizeToShare) and tensorrt_llm/llmapi/llm_args.py (KvCacheConfig)."""

from __future__ import annotations

from collections.abc import Sequence

from kvcalc.engines.activations import activation_bytes, forward_transient, moe_workspace, require_shapes
from kvcalc.engines.base import (
    Budget,
    BudgetTerm,
    ContextLimit,
    EngineLogLine,
    EngineProfile,
    GpuMemory,
    MlaStorage,
    Pool,
    StageLayer,
    StageWeights,
    byte_fraction,
    cdiv,
    gib,
    in_use_terms,
    rotary_table_term,
    term_lines,
    weights_term,
)
from kvcalc.errors import InvalidInput
from kvcalc.spec import Engine, ModelSpec, Workload, cache_dtypes
from kvcalc.units import DType, GiB, format_bytes

TRTLLM_COMMIT = "00043967"  # _torch/pyexecutor/_util.py, the rules' source
TRTLLM_FRACTION = 0.9  # KvCacheConfig.free_gpu_memory_fraction ("Default is 90%")
TRTLLM_TOKENS_PER_BLOCK = 32  # KvCacheConfig.tokens_per_block (PyTorch backend; engine builds used 64)
TRTLLM_MAX_NUM_TOKENS = 8192  # the LLM API's max_num_tokens default
TRTLLM_DTYPES = {DType.fp32, DType.fp16, DType.bf16, DType.fp8, DType.fp8_e4m3, DType.int8}
TRTLLM_NON_TORCH_BYTES = int(0.76 * GiB)  # the CUDA context and cuBLAS workspace (vLLM's H100 figures: 0.51 + 0.25)
TRTLLM_NON_TORCH_TP_BYTES = int(2.61 * GiB)  # ... and NCCL / all-reduce buffers with tensor parallelism (0.51 + 2.1)
LOGIT_BYTES = 4  # fp32 logits


def version_note(version: str | None) -> str:
    """The --explain line on --trtllm-version: kvcalc keeps no TensorRT-LLM memory rule that differs
    by release, so a given version is recorded (in the JSON's budget.engine and here), not applied.

    >>> version_note("1.2.0rc4")
    'TensorRT-LLM 1.2.0rc4 (--trtllm-version): recorded; the rules follow TensorRT-LLM at commit 00043967, none kept per release'
    """
    follows = f"the rules follow TensorRT-LLM at commit {TRTLLM_COMMIT}, none kept per release"
    return (
        f"TensorRT-LLM {version} (--trtllm-version): recorded; {follows}"
        if version
        else f"TensorRT-LLM release not given: {follows}"
    )


# RopeParams.create_rope_const_params: the cos/sin table as an fp32 tensor of max_positions x rotary dim on the GPU, kept
# once per model in the model's extra attributes, keyed by its rope settings and layout (interleave); a model whose
# layers ask for both layouts holds two, which kvcalc does not count
ROTARY_SOURCE = "tensorrt_llm/_torch/attention_backend/interface.py RopeParams.create_rope_const_params (TensorRT-LLM 000a01de)"


class TensorRtLlm(EngineProfile):
    name = "trtllm"
    label = "TensorRT-LLM"
    draft_rule = (
        "the draft's weights load before the profiling run and its layers' bytes per token are added to the target's"
        f" (_torch/pyexecutor/_util.py KvCacheCreator._get_kv_size_per_token, {TRTLLM_COMMIT}): one token count for both"
    )
    residents_before_fraction = True  # the estimation executor holds them during estimate_max_tokens (py_executor_creator.py)
    fraction_option = "free_gpu_memory_fraction"
    prefix_rule = (
        "KV cache block reuse shares whole blocks of tokens_per_block"
        " (cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp, enable_block_reuse)"
    )
    calibration_error_percent = 1.2  # scripts/calibration.py: 90th percentile of the held-out |errors|
    sizes_from_cuda_total = True  # _cal_max_memory: torch.cuda.mem_get_info's free and total

    def block_size(self, workload: Workload) -> int:
        """--tokens-per-block, default 32."""
        return workload.engine.tokens_per_block or TRTLLM_TOKENS_PER_BLOCK

    def tokens_per_unit(self, workload: Workload, window: int | None, seq: int, chunked: bool = False) -> int:
        """Whole blocks of min(s, W) tokens: a sliding layer's blocks are reused once the window
        passes them (kvCacheManager.cpp, per-window block managers)."""
        block = self.block_size(workload)
        return cdiv(min(seq, window) if window else seq, block) * block

    def unmodelled_layers(self, model: ModelSpec) -> str | None:
        if any(model.state_kinds()) or "chunked" in model.attention_kinds():
            return f"kvcalc does not model TensorRT-LLM's pools for state or chunked-attention layers ({model.name})"
        return None

    def check_supported(self, model: ModelSpec, workload: Workload, dtype: DType) -> None:
        self.refuse_unmodelled_layers(model)
        k_type, v_type = cache_dtypes(model, workload)
        if k_type != v_type:
            raise InvalidInput("--engine trtllm keeps K and V in one cache dtype: give --kv-dtype, not --k-dtype / --v-dtype")
        if dtype not in TRTLLM_DTYPES:
            raise InvalidInput(f"--engine trtllm caches {', '.join(sorted(d.value for d in TRTLLM_DTYPES))}, not {dtype.value}")
        if workload.block_size is not None:
            raise InvalidInput("--block-size does not apply to --engine trtllm: its blocks are --tokens-per-block tokens")
        max_seq_len = workload.engine.max_seq_len
        if max_seq_len is not None and workload.seq > max_seq_len:
            raise InvalidInput(f"--seq {workload.seq} exceeds TensorRT-LLM's --max-seq-len {max_seq_len}")

    def context_limit(self, model: ModelSpec, workload: Workload) -> tuple[int | None, ContextLimit]:
        """The model's max positions, or --max-seq-len when that is shorter (or equal)."""
        limit, reason = super().context_limit(model, workload)
        max_seq_len = workload.engine.max_seq_len
        if max_seq_len is not None and (limit is None or max_seq_len <= limit):
            return max_seq_len, "max_seq_len"
        return limit, reason

    def mla_storage(self, engine: Engine) -> MlaStorage:
        """kv_factor 1: one latent of kv_lora_rank + rope per token (resource_manager.py get_cache_size_per_token)."""
        return "k_only"

    def _max_seq_len(self, model: ModelSpec, workload: Workload) -> int:
        """--max-seq-len, else the model's max positions, else --seq."""
        return workload.engine.max_seq_len or model.max_positions or workload.seq

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
        """available KV = (total - peak) * free_gpu_memory_fraction, the peak being the weights, the
        profiling forward of max_num_tokens tokens and non-torch memory (_cal_max_memory; the
        temporary KV cache it profiled with is added back); --reserve replaces the last two. The
        fraction is of the memory free (mem_get_info), so what other processes hold at start-up
        (--memory-in-use) is part of the peak. A
        TensorRT engine (the C++ runtime) has no profiling run: its activations are sized when it is
        built, for the build's max_num_tokens, which --max-num-tokens gives."""
        engine, memory = workload.engine, gpu.total_bytes
        fraction = engine.free_gpu_memory_fraction or TRTLLM_FRACTION
        per_stage = []
        for stage in stages:
            weights = weights_term(stage)
            if reserve_bytes is not None:
                overheads = [
                    BudgetTerm(
                        name="reserve (--reserve)",
                        bytes=reserve_bytes,
                        formula=f"--reserve {reserve_bytes:,} B in place of the activation peak and non-torch memory",
                        source="--reserve",
                    )
                ]
            else:
                overheads = self._overheads(model, workload, stage, stage is stages[-1], activation_dtype)
            rotary = rotary_table_term(model, workload.seq, activation_dtype, (DType.fp32, "fp32"), ROTARY_SOURCE)
            used = [
                *in_use_terms(gpu, f"_torch/pyexecutor/_util.py _cal_max_memory: mem_get_info's free ({TRTLLM_COMMIT})"),
                weights,
                *([rotary] if rotary else []),
                *overheads,
            ]
            free = memory - sum(term.bytes for term in used)
            usable = byte_fraction(free, fraction) if free > 0 else free  # nothing free: the weights do not fit
            per_stage.append((usable, free, stage, used))
        usable, free, stage, used = min(per_stage, key=lambda item: item[0])
        terms = [
            *used,
            BudgetTerm(
                name=f"not used (1 - free_gpu_memory_fraction {fraction:g})",
                bytes=free - usable,
                formula=f"free after the peak * (1 - fraction) = {free:,} * (1 - {fraction})",
                source=f"_torch/pyexecutor/_util.py KvCacheCreator._cal_max_memory ({TRTLLM_COMMIT})",
            ),
        ]
        explain = [
            *stage.explain[:-1],
            *(line for term in terms for line in term_lines(term)),
            f"available KV = (total - peak) * fraction = ({memory:,} - {memory - free:,}) * {fraction} = {usable:,} B ({format_bytes(usable)})",
            version_note(workload.engine.trtllm_version),
        ]
        if len(stages) > 1:
            explain.append(f"pipeline: the least of the {len(stages)} stages binds, here stage {stage.stage + 1}")
        return Budget(
            memory_bytes=memory,
            utilization=fraction,
            fraction="free_gpu_memory_fraction of the memory free after the profiling peak",
            allowed_bytes=memory - (free - usable),
            reserve_bytes=sum(t.bytes for t in used) - stage.weights_bytes - gpu.in_use_bytes,
            weights_bytes=stage.weights_bytes,
            usable_bytes=usable,
            terms=terms,
            explain=explain,
            stage=stage.stage,
            engine=engine,
        )

    def _overheads(
        self, model: ModelSpec, workload: Workload, stage: StageWeights, last: bool, act_dtype: DType
    ) -> list[BudgetTerm]:
        """The profiling forward's activation peak and non-torch memory of one stage's GPU."""
        tp = workload.tp
        _, _, vocab = require_shapes(model, self.label)
        tokens = workload.engine.max_num_tokens or TRTLLM_MAX_NUM_TOKENS
        b = activation_bytes(act_dtype)
        layers = range(stage.first_layer, stage.last_layer + 1)
        transient, transient_formula = forward_transient(model, layers, tokens, tp, b)
        workspace, workspace_formula = moe_workspace(model, layers, tokens, tp, b)
        requests = max(1, tokens // self._max_seq_len(model, workload))
        logits = requests * vocab * LOGIT_BYTES if last else 0
        activation = max(transient, logits) + workspace
        non_torch = TRTLLM_NON_TORCH_TP_BYTES if tp > 1 else TRTLLM_NON_TORCH_BYTES
        return [
            BudgetTerm(
                name="activation peak",
                bytes=activation,
                formula=(
                    f"a forward of max_num_tokens {tokens:,}: max(forward, fp32 logits of {requests} request{'s' if requests > 1 else ''})"
                    f" + MoE workspace = max({transient:,}, {logits:,}) + {workspace:,} = {activation:,} B; forward: {transient_formula};"
                    f" MoE workspace: {workspace_formula}"
                ),
                source=(
                    "_torch/pyexecutor/_util.py KvCacheCreator (estimation run); a TensorRT engine sizes its activations when"
                    " built, for the build's max_num_tokens (models/generation_mixin.py get_profiles_ranges, 03ec464e; before"
                    " the flag max_batch_size * max_input_len), which --max-num-tokens then gives; kvcalc's model, checked"
                    " on 3 published TensorRT-LLM logs (docs/engines.md)"
                ),
            ),
            BudgetTerm(
                name="non-torch memory",
                bytes=non_torch,
                formula=f"{format_bytes(non_torch)}: the CUDA context and workspaces{' and NCCL buffers' if tp > 1 else ''} (vLLM's H100 figures)",
                source="_torch/pyexecutor/_util.py (peak = torch + non-torch); checked on 3 published TensorRT-LLM logs (docs/engines.md)",
            ),
        ]

    def pools(self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]) -> list[Pool]:
        """One pool per attention window, memory shared in proportion to bytes per token times
        window (a full layer's window is max_seq_len), whole blocks; --max-tokens caps the memory
        to what that many tokens of every layer take (calculateWindowSizeToShare, calculateMaxNumBlocks)."""
        block, engine = self.block_size(workload), workload.engine
        max_seq_len = self._max_seq_len(model, workload)
        windows: dict[int | None, list[StageLayer]] = {}
        for layer in stage:
            window = layer.window if layer.window and layer.window < max_seq_len else None
            windows.setdefault(window, []).append(layer)
        per_token = {window: sum(layer.bytes_per_token for layer in layers) for window, layers in windows.items()}
        memory = max(usable_bytes, 0)
        if engine.max_tokens is not None:
            memory = min(memory, engine.max_tokens * sum(per_token.values()))
        weight = {window: per_token[window] * (window or max_seq_len) for window in windows}
        whole = sum(weight.values())
        pools = []
        for window, layers in windows.items():
            share = memory * weight[window] // whole
            blocks = share // (block * per_token[window])
            pools.append(
                Pool(
                    name=f"window {window}" if window else "full",
                    window=window,
                    layers=len(layers),
                    bytes_per_token=per_token[window],
                    tokens=blocks * block,
                    bytes=blocks * block * per_token[window],
                )
            )
        return pools

    def rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        lines = [
            f"TensorRT-LLM: blocks of tokens_per_block {self.block_size(workload)} tokens holding every layer,"
            " kv_factor * Hkv/tp * d * bytes per token per layer (_torch/pyexecutor/resource_manager.py get_cache_size_per_token)",
            "MLA: kv_factor 1, one latent of kv_lora_rank + rope; fp8 and int8 caches 1 byte per value",
        ]
        if "sliding" in model.layer_kinds():
            lines.append(
                "one pool per attention window, memory shared by bytes per token * window, full layers' window max_seq_len;"
                " a sliding layer holds min(s, W) (kvCacheManager.cpp calculateWindowSizeToShare; version-dependent)"
            )
        return lines

    def log_lines(
        self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]
    ) -> list[EngineLogLine]:
        """The "[MemUsageChange] Allocated X GiB for max tokens in paged KV cache (N)" line of each pool."""
        return [
            EngineLogLine(
                engine=self.label,
                name="max_tokens" if pool.window is None else f"max_tokens_window_{pool.window}",
                value=pool.tokens,
                line=f"[MemUsageChange] Allocated {gib(pool.bytes)} GiB for max tokens in paged KV cache ({pool.tokens:,}).",
                note=f"the {pool.name} pool: {pool.layers} layers, whole blocks of {self.block_size(workload)} tokens",
                source="cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp",
            )
            for pool in self.pools(model, workload, usable_bytes, stage)
        ]
