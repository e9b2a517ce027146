"""kvcalc: KV-cache and GPU-memory calculator for LLM inference.

The core is importable without the CLI and never imports torch:

>>> from kvcalc import ModelSpec, Workload, estimate_kv
>>> estimate_kv(ModelSpec(name="7b", layers=32, heads=32, kv_heads=8, head_dim=128, dtype="fp16"), Workload(seq=1024)).bytes_per_sequence
134217728
"""

from kvcalc.capacity import budget, count_params, fit, max_batch, max_context, weight_bytes
from kvcalc.kvcache import batch_bytes, estimate_kv, layer_caches, sequence_bytes, tokens_held
from kvcalc.latency import decode, prefill
from kvcalc.spec import GpuSpec, ModelSpec, Workload


def __getattr__(name: str) -> str:
    """`kvcalc.__version__`, read from the installed metadata only when asked (it costs start-up time)."""
    if name != "__version__":
        raise AttributeError(f"module 'kvcalc' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kvcalc")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "0.0.0"


__all__ = [
    "GpuSpec", "ModelSpec", "Workload", "budget", "count_params", "decode", "estimate_kv", "fit",
    "batch_bytes", "layer_caches", "max_batch", "max_context", "prefill", "sequence_bytes", "tokens_held", "weight_bytes",
]  # fmt: skip
