"""kvcalc: KV-cache and GPU-memory calculator for LLM inference.

The core is importable without the CLI and never imports torch:

>>> from kvcalc import ModelSpec, Workload, estimate_kv
>>> estimate_kv(ModelSpec(name="7b", layers=32, heads=32, kv_heads=8, head_dim=128, dtype="fp16"), Workload(seq=1024)).bytes_per_sequence
134217728
"""

from importlib.metadata import PackageNotFoundError, version

from kvcalc.capacity import budget, count_params, fit, max_batch, max_context, weight_bytes
from kvcalc.kvcache import estimate_kv, layer_caches, sequence_bytes, tokens_held
from kvcalc.latency import decode, prefill
from kvcalc.spec import GpuSpec, ModelSpec, Workload

try:
    __version__ = version("kvcalc")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0"

__all__ = [
    "GpuSpec", "ModelSpec", "Workload", "budget", "count_params", "decode", "estimate_kv", "fit",
    "layer_caches", "max_batch", "max_context", "prefill", "sequence_bytes", "tokens_held", "weight_bytes",
]  # fmt: skip
