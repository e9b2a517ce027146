"""Engine profiles: how transformers, vLLM, llama.cpp, SGLang and TensorRT-LLM really allocate the
KV cache and the memory they leave for it, one module per engine behind one protocol. Pure.

Layering, imports pointing down only:

    kvcalc.base, errors, units, spec         models and units
    kvcalc.decode_profiles                   calibrated decode terms (pure data)
    kvcalc.engines.base                      the protocol (EngineProfile), Budget, Pool, EngineLogLine
    kvcalc.engines.activations               a forward pass's activation memory from the config
    kvcalc.engines.<name>                    one module per engine: its rules, budget, refusals, sources
    kvcalc.engines (this registry)           PROFILES, profile(), beyond_max_positions()
    kvcalc.kvcache, then kvcalc.capacity     the core: asks the profile, never tests a name
    check, compare, latency, render, cli     the commands

An engine module imports engines.base (and engines.activations), spec, units, errors and
decode_profiles, never kvcache, capacity or cli.
Adding an engine: its module (a subclass of EngineProfile), its entry in PROFILES, its name in
spec.EngineName (and its options as Engine fields listed in spec.ENGINE_OPTIONS). Measured facts:
shared/reference/engines.md; each rule names the source file it follows, as does docs/engines.md.
"""

from __future__ import annotations

from kvcalc.engines.base import (
    DEFAULT_RESERVE_BYTES,
    DEFAULT_UTILIZATION,
    Budget,
    BudgetTerm,
    EngineLogLine,
    EngineProfile,
    GpuMemory,
    Pool,
    StageLayer,
    StageWeights,
    StateDtypes,
    StatePages,
)
from kvcalc.engines.hf import Transformers
from kvcalc.engines.llamacpp import LlamaCpp
from kvcalc.engines.sglang import SGLang
from kvcalc.engines.textbook import Textbook
from kvcalc.engines.trtllm import TensorRtLlm
from kvcalc.engines.vllm import Vllm
from kvcalc.spec import Engine, ModelSpec, Workload

__all__ = [
    "DEFAULT_RESERVE_BYTES",
    "DEFAULT_UTILIZATION",
    "PROFILES",
    "Budget",
    "BudgetTerm",
    "EngineLogLine",
    "EngineProfile",
    "GpuMemory",
    "Pool",
    "StageLayer",
    "StageWeights",
    "StateDtypes",
    "StatePages",
    "beyond_max_positions",
    "profile",
]

PROFILES: dict[str, EngineProfile] = {
    p.name: p for p in (Textbook(), Transformers(), Vllm(), LlamaCpp(), SGLang(), TensorRtLlm())
}


def profile(engine: Engine) -> EngineProfile:
    """The rules of the engine named in `engine` (its options stay in the workload)."""
    return PROFILES[engine.name]


def beyond_max_positions(model: ModelSpec, workload: Workload) -> str | None:
    """The warning when each sequence's context exceeds the model's max positions (figures are
    still computed), else None."""
    context = profile(workload.engine).context_per_sequence(workload)
    if not model.max_positions or context <= model.max_positions:
        return None
    per = f" (n_ctx {workload.seq:,} / {workload.batch} sequences)" if context != workload.seq else ""
    return f"context {context:,}{per} exceeds {model.name}'s max positions {model.max_positions:,}; figures computed anyway"
