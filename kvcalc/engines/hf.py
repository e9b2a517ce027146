"""transformers (`--engine hf`): DynamicCache by default, StaticCache with --max-cache-len, the fp8
QuantizedCache, and DeepSeek's MLA cached as its latent (5.x) or decompressed (4.x).
Rules follow transformers 5.23.0 (4.57.6 with --hf-version 4), as measured in shared/reference/engines.md;
its memory budget is the textbook one. Sources: src/transformers/cache_utils.py,
models/deepseek_v3/modeling_deepseek_v3.py."""

from __future__ import annotations

from kvcalc.decode_profiles import DecodeProfile, profile_for
from kvcalc.engines.base import ContextLimit, EngineProfile, MlaStorage
from kvcalc.errors import InvalidInput
from kvcalc.spec import Engine, GpuSpec, ModelSpec, Workload, cache_dtypes
from kvcalc.units import DType

HF_DTYPES = {DType.fp32, DType.fp16, DType.bf16, DType.fp8}  # fp8: QuantizedCache


class Transformers(EngineProfile):
    name = "hf"
    label = "transformers"
    draft_rule = None  # a speculative draft is not modelled for this engine yet
    prefix_rule = None  # generate() keeps every sequence's cache whole

    def tokens_per_unit(self, workload: Workload, window: int | None, seq: int, chunked: bool = False) -> int:
        """DynamicCache keeps min(s, W - 1) in a sliding layer (DynamicSlidingWindowLayer); StaticCache
        preallocates max_cache_len, min(W, max_cache_len) when sliding (StaticSlidingWindowLayer)."""
        max_cache_len = workload.engine.max_cache_len
        if max_cache_len is not None:
            return min(window, max_cache_len) if window else max_cache_len
        return min(seq, window - 1) if window else seq

    def peak_tokens_per_unit(self, workload: Workload, window: int | None, seq: int, chunked: bool = False) -> int:
        """DynamicCache's sliding layers keep the whole prompt right after prefill (a slice view)
        until the first decode step."""
        if workload.engine.max_cache_len is None and window:
            return seq
        return self.tokens_per_unit(workload, window, seq, chunked)

    def check_supported(self, model: ModelSpec, workload: Workload, dtype: DType) -> None:
        k_type, v_type = cache_dtypes(model, workload)
        if k_type != v_type:
            raise InvalidInput("--engine hf caches K and V in one dtype: give --kv-dtype, not --k-dtype / --v-dtype")
        if dtype not in HF_DTYPES:
            raise InvalidInput(f"--engine hf caches {', '.join(sorted(d.value for d in HF_DTYPES))}, not {dtype.value}")
        if dtype == DType.fp8 and model.mla is None and "sliding" in model.attention_kinds():  # QuantizedCache.__init__
            raise InvalidInput(
                f"transformers' QuantizedCache (fp8) is only supported for models with only full attention layers; {model.name} has sliding ones"
            )
        self.refuse_unmodelled_layers(model)
        max_cache_len = workload.engine.max_cache_len
        if max_cache_len is not None and workload.seq > max_cache_len:
            raise InvalidInput(f"--seq {workload.seq} exceeds the StaticCache's --max-cache-len {max_cache_len}")

    def unmodelled_layers(self, model: ModelSpec) -> str | None:
        if "chunked" in model.attention_kinds():
            return "kvcalc does not model transformers' chunked-attention cache"
        if any(model.state_kinds()):
            return "kvcalc does not model transformers' recurrent caches (their conv state keeps the whole kernel)"
        return None

    def fixed_bytes(self, model: ModelSpec, workload: Workload, dtype: DType) -> int:
        """The fp8 QuantizedCache keeps one fp32 scale for K and one for V in every layer."""
        return 2 * 4 * model.layers if dtype == DType.fp8 else 0

    def mla_storage(self, engine: Engine) -> MlaStorage:
        """5.x caches the latent as K and the rope key as V; 4.x decompresses per-head K and V."""
        return "decompressed" if engine.hf_version == 4 else "k_and_v"

    def context_limit(self, model: ModelSpec, workload: Workload) -> tuple[int | None, ContextLimit]:
        """The model's max positions, or the StaticCache's length when that is shorter (or equal)."""
        limit, reason = super().context_limit(model, workload)
        max_cache_len = workload.engine.max_cache_len
        if max_cache_len is not None and (limit is None or max_cache_len <= limit):
            return max_cache_len, "max_cache_len"
        return limit, reason

    def rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        max_cache_len = workload.engine.max_cache_len
        lines = ["transformers: full layers cache every token: 2 * B * Hkv * d * s (cache_utils.py DynamicLayer)"]
        if max_cache_len is not None:
            lines.append(
                f"StaticCache preallocates max_cache_len {max_cache_len}; sliding layers min(W, max_cache_len) (cache_utils.py StaticSlidingWindowLayer)"
            )
        elif model.mla is None and "sliding" in model.attention_kinds():
            lines.append(
                "DynamicCache: sliding layers keep W - 1 tokens; right after a prefill longer than W they still hold it all (cache_utils.py DynamicSlidingWindowLayer)"
            )
        if model.mla is not None:
            lines.append(
                "DeepSeek MLA: 5.x caches the latent (kv_lora_rank + rope); 4.x caches decompressed per-head K (nope + rope) and V"
                " (models/deepseek_v3/modeling_deepseek_v3.py)"
            )
        return lines

    def decode_profile(self, gpu: GpuSpec, engine: Engine | None = None) -> DecodeProfile:
        """generate() in eager PyTorch launches every op from Python, and quantized weights run
        through the kernels transformers loads (AutoGPTQ, AutoAWQ), not an engine's fused ones."""
        return profile_for("hf", backend=gpu.backend)
