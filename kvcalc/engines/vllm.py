"""vLLM (`--engine vllm`): pages of 16 tokens per layer, a reservation for sliding layers, MLA as one
K-only latent, the "Maximum concurrency" it logs, and hybrid models' state: in the model dtype
unless --mamba-cache-dtype / --mamba-ssm-cache-dtype, one attention page per state layer, the
attention block size raised until a page holds a state.
Sources: vllm/v1/kv_cache_interface.py, vllm/v1/core/kv_cache_utils.py, vllm/config/cache.py,
vllm/model_executor/layers/mamba/mamba_utils.py, vllm/model_executor/models/config.py."""

from __future__ import annotations

from collections.abc import Sequence

from kvcalc.engines.base import EngineLogLine, EngineProfile, MlaStorage, StageLayer, StateDtypes, StatePages, cdiv
from kvcalc.errors import InvalidInput
from kvcalc.spec import Engine, ModelSpec, Workload, cache_dtypes
from kvcalc.units import DType

VLLM_BLOCK_SIZE = 16  # vLLM's default block size on CUDA (vllm/config/cache.py)
VLLM_MAX_NUM_BATCHED_TOKENS = 8192  # vLLM V1's default on GPU (vllm/engine/arg_utils.py)
VLLM_DTYPES = {DType.fp32, DType.fp16, DType.bf16, DType.fp8, DType.fp8_e4m3, DType.fp8_e5m2}
# Attention kernels take block sizes in multiples of 16 (FlashAttention / FlashInfer on Hopper); the
# hybrid page rule rounds the raised block size to it (model_executor/models/config.py
# HybridAttentionMambaModelConfig: kernel_block_alignment_size 16; 64 for MLA, 32 for head_dim 256
# with FlashInfer on SM100, not modelled).
VLLM_HYBRID_ALIGNMENT = 16


class Vllm(EngineProfile):
    name = "vllm"
    label = "vLLM"

    def block_size(self, workload: Workload) -> int:
        """--block-size, or vLLM's default 16."""
        return workload.block_size or VLLM_BLOCK_SIZE

    def tokens_per_unit(self, workload: Workload, window: int | None, seq: int, chunked: bool = False) -> int:
        """Whole blocks; a sliding layer reserves cdiv(min(W - 1 + max_num_batched_tokens, s), block) + 1
        blocks per request (vllm/v1/kv_cache_interface.py SlidingWindowSpec.max_memory_usage_bytes), a
        chunked layer cdiv(min(C + max_num_batched_tokens, s), block) (ChunkedLocalAttentionSpec
        .max_admission_blocks_per_request: one chunk and the tokens in flight)."""
        block = self.block_size(workload)
        if window:
            batched = workload.engine.max_num_batched_tokens or VLLM_MAX_NUM_BATCHED_TOKENS
            if chunked:
                return cdiv(min(window + batched, seq), block) * block
            return (cdiv(min(window - 1 + batched, seq), block) + 1) * block
        return cdiv(seq, block) * block

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
        if "lightning" in model.state_kinds():
            return StateDtypes(conv=conv, recurrent=conv, why=why + " (lightning attention: one dtype)")
        if engine.mamba_ssm_cache_dtype is not None:
            return StateDtypes(conv=conv, recurrent=engine.mamba_ssm_cache_dtype, why=why + "; SSM: --mamba-ssm-cache-dtype")
        config = model.state.ssm_dtype if model.state else None
        if config is not None:
            return StateDtypes(conv=conv, recurrent=config, why=why + "; SSM: the dtype the model's config asks for")
        return StateDtypes(conv=conv, recurrent=conv, why=why + "; SSM: as the conv state (--mamba-ssm-cache-dtype auto)")

    def state_pages(self, workload: Workload, attention_bytes_per_token: int | None, state_bytes: int) -> StatePages:
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
        needed = VLLM_HYBRID_ALIGNMENT * cdiv(state_bytes, VLLM_HYBRID_ALIGNMENT * attention_bytes_per_token)
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
            f"vLLM attention block size = 16 * cdiv(state {state_bytes:,} B, 16 * {attention_bytes_per_token:,} B per token)"
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

    def rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        batched = workload.engine.max_num_batched_tokens or VLLM_MAX_NUM_BATCHED_TOKENS
        return [
            f"vLLM: pages of {self.block_size(workload)} tokens per layer, block_size * 2 * Hkv * d * bytes (vllm/v1/kv_cache_interface.py AttentionSpec.page_size_bytes)",
            f"sliding layers reserve cdiv(min(W - 1 + max_num_batched_tokens {batched}, s), block) + 1 blocks"
            " per request (SlidingWindowSpec.max_memory_usage_bytes)",
            "MLA caches one K-only latent of kv_lora_rank + rope (MLAAttentionSpec); fp8 is 1 byte per value, no scales",
            f"chunked layers keep cdiv(min(C + max_num_batched_tokens {batched}, s), block) blocks per request"
            " (ChunkedLocalAttentionSpec.max_admission_blocks_per_request)",
        ]

    def log_lines(
        self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]
    ) -> list[EngineLogLine]:
        """vLLM's "Maximum concurrency for N tokens per request", computed its way: the stage's layers
        form groups of the smallest kind's size that share one pool of blocks; num_blocks = usable //
        (page * group size); a request needs cdiv(s, block) blocks per full group and its sliding
        reservation per sliding group; concurrency = num_blocks / blocks per request (a fraction).
        Not reproduced for hybrid models: their state layers share the pool by other rules."""
        if any(model.state_kinds()):
            return []
        block = self.block_size(workload)
        page = block * stage[0].bytes_per_token
        counts: dict[tuple[int | None, bool], int] = {}
        for layer in stage:
            counts[layer.window, layer.chunked] = counts.get((layer.window, layer.chunked), 0) + 1
        group = min(counts.values())
        per_request = sum(
            cdiv(count, group) * self.tokens_per_unit(workload, window, workload.seq, chunked) // block
            for (window, chunked), count in counts.items()
        )
        concurrency = (max(usable_bytes, 0) // (page * group)) / per_request
        return [
            EngineLogLine(
                engine=self.label,
                name="max_concurrency",
                value=concurrency,
                line=f"Maximum concurrency for {workload.seq:,} tokens per request: {concurrency:.2f}x",
                note="its own formula: whole blocks of the shared pool over blocks per request",
                source="vllm/v1/core/kv_cache_utils.py get_max_concurrency_for_kv_cache_config",
            )
        ]
