"""kvcalc: KV-cache and GPU-memory calculator for LLM inference.

The core is importable without the CLI and never imports torch:

>>> from kvcalc import ModelSpec, Workload, estimate_kv
>>> estimate_kv(ModelSpec(name="7b", layers=32, heads=32, kv_heads=8, head_dim=128, dtype="fp16"), Workload(seq=1024)).bytes_per_sequence
134217728

The names below are imported from their modules when first asked for: `kvcalc --help` and
`import kvcalc.cli` load none of the core's models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvcalc.capacity import budget, fit, max_batch, max_context
    from kvcalc.kvcache import batch_bytes, estimate_kv, layer_caches, sequence_bytes, tokens_held
    from kvcalc.latency import decode, prefill
    from kvcalc.spec import GpuSpec, ModelSpec, Workload
    from kvcalc.weights import count_params, weight_bytes

_API = {
    "kvcalc.capacity": ("budget", "fit", "max_batch", "max_context"),
    "kvcalc.kvcache": ("batch_bytes", "estimate_kv", "layer_caches", "sequence_bytes", "tokens_held"),
    "kvcalc.latency": ("decode", "prefill"),
    "kvcalc.spec": ("GpuSpec", "ModelSpec", "Workload"),
    "kvcalc.weights": ("count_params", "weight_bytes"),
}
_HOME = {name: module for module, names in _API.items() for name in names}


def __getattr__(name: str) -> Any:
    """The public API from its module, and `kvcalc.__version__` from the installed metadata, when asked."""
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
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
