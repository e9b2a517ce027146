"""vLLM (`--engine vllm`): pages of 16 tokens per layer, a reservation for sliding layers, MLA as one
K-only latent, and the "Maximum concurrency" it logs.
Sources: vllm/v1/kv_cache_interface.py, vllm/v1/core/kv_cache_utils.py, vllm/config/cache.py."""

from __future__ import annotations

from collections.abc import Sequence

from kvcalc.engines.base import EngineLogLine, EngineProfile, MlaStorage, StageLayer, cdiv
from kvcalc.errors import InvalidInput
from kvcalc.spec import Engine, ModelSpec, Workload
from kvcalc.units import DType

VLLM_BLOCK_SIZE = 16  # vLLM's default block size on CUDA (vllm/config/cache.py)
VLLM_MAX_NUM_BATCHED_TOKENS = 8192  # vLLM V1's default on GPU (vllm/engine/arg_utils.py)
VLLM_DTYPES = {DType.fp32, DType.fp16, DType.bf16, DType.fp8, DType.fp8_e4m3, DType.fp8_e5m2}


class Vllm(EngineProfile):
    name = "vllm"
    label = "vLLM"

    def block_size(self, workload: Workload) -> int:
        """--block-size, or vLLM's default 16."""
        return workload.block_size or VLLM_BLOCK_SIZE

    def tokens_per_unit(self, workload: Workload, window: int | None, seq: int) -> int:
        """Whole blocks; a sliding layer reserves cdiv(min(W - 1 + max_num_batched_tokens, s), block) + 1
        blocks per request (vllm/v1/kv_cache_interface.py SlidingWindowSpec.max_memory_usage_bytes)."""
        block = self.block_size(workload)
        if window:
            batched = workload.engine.max_num_batched_tokens or VLLM_MAX_NUM_BATCHED_TOKENS
            return (cdiv(min(window - 1 + batched, seq), block) + 1) * block
        return cdiv(seq, block) * block

    def check_supported(self, model: ModelSpec, workload: Workload, dtype: DType) -> None:
        if dtype not in VLLM_DTYPES:
            raise InvalidInput(f"--engine vllm caches {', '.join(sorted(d.value for d in VLLM_DTYPES))}, not {dtype.value}")

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
        ]

    def log_lines(
        self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]
    ) -> list[EngineLogLine]:
        """vLLM's "Maximum concurrency for N tokens per request", computed its way: the stage's layers
        form groups of the smallest kind's size that share one pool of blocks; num_blocks = usable //
        (page * group size); a request needs cdiv(s, block) blocks per full group and its sliding
        reservation per sliding group; concurrency = num_blocks / blocks per request (a fraction)."""
        block = self.block_size(workload)
        page = block * stage[0].bytes_per_token
        counts: dict[int | None, int] = {}
        for layer in stage:
            counts[layer.window] = counts.get(layer.window, 0) + 1
        group = min(counts.values())
        per_request = sum(
            cdiv(count, group) * self.tokens_per_unit(workload, window, workload.seq) // block for window, count in counts.items()
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
