"""Engine profiles: how transformers, vLLM and llama.cpp really allocate the KV cache. Pure.

Each rule turns a layer's kind and window, the context and the batch into the tokens one
allocation unit holds (a sequence; llama.cpp's unified cache is one unit for all), and checks the
combinations the engine itself refuses. kvcache.py consumes these rules, so no command
special-cases an engine. Measured facts: shared/reference/engines.md; the source file each
rule follows is named beside it and in docs/engines.md.
"""

from __future__ import annotations

from kvcalc.errors import InvalidInput
from kvcalc.spec import Engine, ModelSpec, Workload
from kvcalc.units import PACKING, DType

LLAMACPP_PAD = 256  # llama.cpp pads the cache to 256 cells (src/llama-context.cpp, llama-kv-cache.cpp)
LLAMACPP_UBATCH = 512  # llama.cpp's default n_ubatch (common/common.h)
VLLM_BLOCK_SIZE = 16  # vLLM's default block size on CUDA (vllm/config/cache.py)
VLLM_MAX_NUM_BATCHED_TOKENS = 8192  # vLLM V1's default on GPU (vllm/engine/arg_utils.py)
LLAMACPP_DTYPES = {DType.fp32, DType.fp16, DType.bf16, DType.q8_0, DType.q4_0, DType.q4_1, DType.q5_0, DType.q5_1, DType.iq4_nl}
HF_DTYPES = {DType.fp32, DType.fp16, DType.bf16, DType.fp8}  # fp8: QuantizedCache
VLLM_DTYPES = {DType.fp32, DType.fp16, DType.bf16, DType.fp8, DType.fp8_e4m3, DType.fp8_e5m2}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def pad(n: int, to: int) -> int:
    """Round n up to a multiple of `to` (llama.cpp's GGML_PAD).

    >>> pad(100, 256), pad(1000, 256), pad(256, 256)
    (256, 1024, 256)
    """
    return _cdiv(n, to) * to


def allocation_units(workload: Workload) -> int:
    """Separately sized buffers: one per sequence, or one shared by all (llama.cpp --kv-unified)."""
    engine = workload.engine
    return 1 if engine.name == "llamacpp" and engine.kv_unified else workload.batch


def block_size(workload: Workload) -> int | None:
    """Page size in tokens: the workload's, or vLLM's default 16."""
    if workload.engine.name == "vllm":
        return workload.block_size or VLLM_BLOCK_SIZE
    return workload.block_size


def tokens_per_unit(engine: Engine, window: int | None, seq: int, batch: int, block: int | None) -> int:
    """Tokens (cells, slots) one allocation unit keeps in one layer.

    textbook: s, or min(s, W) in a window layer, rounded up to pages when paged.
    hf: DynamicCache keeps min(s, W - 1) in a sliding layer (cache_utils.py DynamicSlidingWindowLayer);
        StaticCache preallocates max_cache_len, min(W, max_cache_len) when sliding.
    llamacpp: `seq` is n_ctx, padded to 256 and shared by `batch` sequences: PAD256(PAD256(n_ctx) / n_seq)
        cells each (one unit of PAD256(n_ctx) when unified); a SWA layer with --swa-full false keeps
        PAD256(min(n_ctx_seq, W * (unified ? n_seq : 1) + n_ubatch)) (llama-kv-cache-iswa.cpp).
    vllm: whole blocks; a sliding layer reserves cdiv(min(W - 1 + max_num_batched_tokens, s), block) + 1
        blocks per request (vllm/v1/kv_cache_interface.py SlidingWindowSpec.max_memory_usage_bytes).
    """
    if engine.name == "hf":
        if engine.max_cache_len is not None:
            return min(window, engine.max_cache_len) if window else engine.max_cache_len
        return min(seq, window - 1) if window else seq
    if engine.name == "llamacpp":
        n_ctx = pad(seq, LLAMACPP_PAD)  # padded first, then shared out and padded again
        cells = n_ctx_seq = n_ctx if engine.kv_unified else pad(n_ctx // batch, LLAMACPP_PAD)
        if window and engine.swa_full is False:
            streams = batch if engine.kv_unified else 1
            cells = pad(min(n_ctx_seq, window * streams + (engine.ubatch or LLAMACPP_UBATCH)), LLAMACPP_PAD)
        return cells
    if engine.name == "vllm":
        block = block or VLLM_BLOCK_SIZE
        if window:
            batched = engine.max_num_batched_tokens or VLLM_MAX_NUM_BATCHED_TOKENS
            return (_cdiv(min(window - 1 + batched, seq), block) + 1) * block
        return _cdiv(seq, block) * block
    held = min(seq, window) if window else seq
    return held if block is None else _cdiv(held, block) * block


def peak_tokens_per_unit(engine: Engine, window: int | None, seq: int, batch: int, block: int | None) -> int:
    """The most a layer holds at any moment: transformers' sliding layers keep the whole prompt
    right after prefill (a slice view) until the first decode step; otherwise as held."""
    if engine.name == "hf" and engine.max_cache_len is None and window:
        return seq
    return tokens_per_unit(engine, window, seq, batch, block)


def check_supported(model: ModelSpec, workload: Workload, dtype: DType) -> None:
    """Refuse, as InvalidInput, what the engine itself refuses."""
    engine = workload.engine
    sliding = model.mla is None and "sliding" in model.layer_kinds()
    if engine.name == "hf":
        if dtype not in HF_DTYPES:
            raise InvalidInput(f"--engine hf caches {', '.join(sorted(d.value for d in HF_DTYPES))}, not {dtype.value}")
        if dtype == DType.fp8 and sliding:  # cache_utils.py QuantizedCache.__init__
            raise InvalidInput(
                f"transformers' QuantizedCache (fp8) is only supported for models with only full attention layers; {model.name} has sliding ones"
            )
        if engine.max_cache_len is not None and workload.seq > engine.max_cache_len:
            raise InvalidInput(f"--seq {workload.seq} exceeds the StaticCache's --max-cache-len {engine.max_cache_len}")
    elif engine.name == "llamacpp":  # src/llama-context.cpp llama_init_from_model
        if dtype not in LLAMACPP_DTYPES:
            raise InvalidInput(
                f"--engine llamacpp caches {', '.join(sorted(d.value for d in LLAMACPP_DTYPES))}, not {dtype.value}"
            )
        blocks = PACKING[dtype].block_values
        for part, width in (("K", model.key_dim), ("V", model.value_dim)):
            if blocks > 1 and engine.flash_attn is not False and width % blocks:
                raise InvalidInput(
                    f"llama.cpp: {part} cache type {dtype.value} with block size {blocks} does not divide the {part} head width {width}"
                )
        if blocks > 1 and engine.flash_attn is False:  # -fa auto, the default, turns flash attention on by itself
            raise InvalidInput("llama.cpp: quantized V cache requires flash_attn to be enabled (drop --flash-attn false)")
        if workload.seq < workload.batch:
            raise InvalidInput(
                f"llama.cpp's n_ctx (--seq {workload.seq}) is shared by --batch {workload.batch} sequences: it must be at least the batch"
            )
        if workload.block_size is not None:
            raise InvalidInput("--block-size does not apply to --engine llamacpp (it pads to 256 cells)")
    elif engine.name == "vllm" and dtype not in VLLM_DTYPES:
        raise InvalidInput(f"--engine vllm caches {', '.join(sorted(d.value for d in VLLM_DTYPES))}, not {dtype.value}")


def fixed_bytes(model: ModelSpec, workload: Workload, dtype: DType) -> int:
    """Bytes that do not scale with tokens: transformers' fp8 QuantizedCache keeps one fp32 scale
    for K and one for V in every layer."""
    if workload.engine.name == "hf" and dtype == DType.fp8:
        return 2 * 4 * model.layers
    return 0


def rules(model: ModelSpec, workload: Workload) -> list[str]:
    """The engine rules behind the figures, each with the source file it follows (for --explain)."""
    engine = workload.engine
    sliding = "sliding" in model.layer_kinds() and model.mla is None
    if engine.name == "hf":
        lines = ["transformers: full layers cache every token: 2 * B * Hkv * d * s (cache_utils.py DynamicLayer)"]
        if engine.max_cache_len is not None:
            lines.append(
                f"StaticCache preallocates max_cache_len {engine.max_cache_len}; sliding layers min(W, max_cache_len) (cache_utils.py StaticSlidingWindowLayer)"
            )
        elif sliding:
            lines.append(
                "DynamicCache: sliding layers keep W - 1 tokens; right after a prefill longer than W they still hold it all (cache_utils.py DynamicSlidingWindowLayer)"
            )
        if model.mla is not None:
            lines.append(
                "DeepSeek MLA: 5.x caches the latent (kv_lora_rank + rope); 4.x caches decompressed per-head K (nope + rope) and V"
                " (models/deepseek_v3/modeling_deepseek_v3.py)"
            )
        return lines
    if engine.name == "llamacpp":
        lines = [
            f"llama.cpp: --seq is n_ctx, shared by --batch sequences (-np); each gets PAD256(n_ctx / n_seq) cells"
            f"{' (one unified buffer of PAD256(n_ctx))' if engine.kv_unified else ''} (src/llama-context.cpp, src/llama-kv-cache.cpp)",
            "cache types are blocks of 32 values: q8_0 34 B, q4_0 18, q4_1 20, q5_0 22, q5_1 24, iq4_nl 18 (ggml/src/ggml.c type_traits)",
        ]
        if sliding:
            lines.append(
                "SWA layers: as large as the full cache with --swa-full true (the default); else"
                f" PAD256(min(n_ctx_seq, W * streams + n_ubatch {engine.ubatch or LLAMACPP_UBATCH})) (src/llama-kv-cache-iswa.cpp)"
            )
        if model.mla is not None:
            lines.append("MLA GGUFs cache a K-only latent of kv_lora_rank + rope per cell (src/llama-model.cpp)")
        return lines
    if engine.name == "vllm":
        return [
            f"vLLM: pages of {block_size(workload)} tokens per layer, block_size * 2 * Hkv * d * bytes (vllm/v1/kv_cache_interface.py AttentionSpec.page_size_bytes)",
            f"sliding layers reserve cdiv(min(W - 1 + max_num_batched_tokens {engine.max_num_batched_tokens or VLLM_MAX_NUM_BATCHED_TOKENS}, s), block) + 1 blocks"
            " per request (SlidingWindowSpec.max_memory_usage_bytes)",
            "MLA caches one K-only latent of kv_lora_rank + rope (MLAAttentionSpec); fp8 is 1 byte per value, no scales",
        ]
    return ["textbook: exact bytes, no padding (every layer holds its tokens, a sliding layer at most its window)"]


def context_per_sequence(workload: Workload) -> int:
    """Tokens of context each sequence gets: --seq, or llama.cpp's n_ctx shared by the sequences."""
    return workload.seq // workload.batch if workload.engine.name == "llamacpp" else workload.seq


def beyond_max_positions(model: ModelSpec, workload: Workload) -> str | None:
    """The warning when each sequence's context exceeds the model's max positions (figures are
    still computed), else None."""
    context = context_per_sequence(workload)
    if not model.max_positions or context <= model.max_positions:
        return None
    per = f" (n_ctx {workload.seq:,} / {workload.batch} sequences)" if context != workload.seq else ""
    return f"context {context:,}{per} exceeds {model.name}'s max positions {model.max_positions:,}; figures computed anyway"


def reshape(workload: Workload, context: int | None = None, batch: int | None = None) -> Workload:
    """The workload with another per-sequence context or number of sequences, the other kept
    (for llama.cpp, n_ctx = context * sequences)."""
    context = context_per_sequence(workload) if context is None else context
    batch = workload.batch if batch is None else batch
    seq = context * batch if workload.engine.name == "llamacpp" else context
    return workload.model_copy(update={"seq": seq, "batch": batch})


def context_limit(model: ModelSpec, workload: Workload) -> tuple[int | None, str]:
    """The longest context per sequence and what sets it: the model's max positions, or the
    transformers StaticCache length; (None, "unbounded") when neither is known."""
    limits = [(model.max_positions, "max_positions")] if model.max_positions else []
    if workload.engine.name == "hf" and workload.engine.max_cache_len is not None:
        limits.append((workload.engine.max_cache_len, "max_cache_len"))
    return min(limits) if limits else (None, "unbounded")
