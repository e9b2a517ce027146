"""The activation memory of one forward pass, from the model's config: what a serving engine's
profiling run allocates above its weights. Pure; the vLLM and TensorRT-LLM budgets share it.

The shapes follow the engines' own code: a decoder layer keeps the residual and hidden states
(2 * H per token) beside the largest of its projections' outputs, q, k and v together, or the
MLP's gate_up and activation outputs (3 * I per token; 2 * I for a plain MLP), each split over
the tensor-parallel ranks. A fused MoE layer allocates its workspaces once and keeps them (vLLM's
WorkspaceManager, vllm/v1/worker/workspace.py), so they add to whatever peak follows. Derived in
research/engine_budgets.md and calibrated on the published vLLM start-up logs in
tests/fixtures/engine_logs/.
"""

from __future__ import annotations

from kvcalc.errors import InvalidInput
from kvcalc.spec import ModelSpec
from kvcalc.units import PACKING, DType


def activation_bytes(dtype: DType) -> int:
    """Bytes of one activation value: 4 in fp32, else 2.

    >>> activation_bytes(DType.fp32), activation_bytes(DType.bf16)
    (4, 2)
    """
    return PACKING[dtype].block_bytes


def require_shapes(model: ModelSpec, engine: str) -> tuple[int, int, int]:
    """hidden, intermediate (0 for an all-MoE model) and vocab, or an error naming the fix."""
    intermediate = model.intermediate if model.intermediate is not None else (0 if model.moe else None)
    if model.hidden is None or model.vocab is None or intermediate is None:
        raise InvalidInput(
            f"{engine}'s budget models the activation peak from hidden, intermediate and vocab, which {model.name}"
            " does not give: add them to its preset, or give --reserve to set the overheads yourself"
        )
    return model.hidden, intermediate, model.vocab


def _is_moe(model: ModelSpec, layer: int) -> bool:
    return model.moe is not None and layer >= model.moe.dense_layers


def _attention_width(model: ModelSpec, tp: int) -> int:
    """Values per token the q, k and v projections output on one rank (MLA: the query heads and
    the compressed latent with its rope key)."""
    if model.mla is not None:
        mla = model.mla
        return model.heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim) // tp + mla.kv_lora_rank + mla.qk_rope_head_dim
    kv_heads = max(1, model.kv_heads // tp)
    return model.heads * model.key_dim // tp + kv_heads * (model.key_dim + model.value_dim)


def _mlp_width(model: ModelSpec, layer: int, tp: int) -> int:
    """Values per token a layer's MLP outputs on one rank (gate_up + act for a gated MLP, up + act
    for a plain one); a MoE layer's routed experts live in the workspace, its shared experts here."""
    per_intermediate = 3 if model.mlp == "gated" else 2
    if _is_moe(model, layer):
        moe = model.moe
        assert moe is not None
        return per_intermediate * moe.shared_experts * moe.expert_intermediate // tp
    return per_intermediate * (model.intermediate or 0) // tp


def forward_transient(model: ModelSpec, layers: range, tokens: int, tp: int, act_bytes: int) -> tuple[int, str]:
    """The largest transient of one decoder layer of `layers` at `tokens` tokens on one rank:
    T * b * (2H + max(q + k + v, MLP outputs) / tp), with its formula."""
    hidden = model.hidden or 0
    attention = _attention_width(model, tp)
    mlp = max(_mlp_width(model, layer, tp) for layer in layers)
    value = tokens * act_bytes * (2 * hidden + max(attention, mlp))
    formula = (
        f"T * b * (2H + max(q+k+v, MLP) / tp) = {tokens:,} * {act_bytes} * (2 * {hidden:,} + max({attention:,}, {mlp:,}))"
        f" = {value:,} B"
    )
    return value, formula


def moe_workspace(model: ModelSpec, layers: range, tokens: int, tp: int, act_bytes: int) -> tuple[int, str]:
    """The fused-MoE workspaces when `layers` hold a MoE layer, else 0: for T tokens, top-k experts
    of intermediate I (split over tp) and hidden H, workspace1 (T, k, max(I, H)), workspace2
    (T, k, max(2I, H)) and the output (T, H) (vllm/model_executor/layers/fused_moe/fused_moe.py
    TritonExperts.workspace_shapes)."""
    moe = model.moe
    if moe is None or not any(_is_moe(model, layer) for layer in layers):
        return 0, "no MoE layer: no workspace"
    hidden, inter, k = model.hidden or 0, moe.expert_intermediate // tp, moe.experts_per_token
    value = tokens * act_bytes * (k * (max(inter, hidden) + max(2 * inter, hidden)) + hidden)
    formula = (
        f"T * b * (k * (max(I, H) + max(2I, H)) + H) = {tokens:,} * {act_bytes} * ({k} * (max({inter:,}, {hidden:,})"
        f" + max({2 * inter:,}, {hidden:,})) + {hidden:,}) = {value:,} B"
    )
    return value, formula


def v0_forward_transient(model: ModelSpec, layers: range, tokens: int, tp: int, act_bytes: int) -> tuple[int, str]:
    """The largest transient of one decoder layer under vLLM's V0 engine (before 0.8, and 0.8.x where it
    falls back to V0), which runs the model's Python code eagerly, so each tensor lives as long as a name
    holds it (vllm/model_executor/models/llama.py and qwen2.py, layers/linear.py RowParallelLinear.forward,
    distributed/parallel_state.py GroupCoordinator.all_reduce; the 0.6.5 and 0.8.4 wheels):

    - held across a layer: the previous layer's output (the model's loop variable, normalised in place by
      fused_add_rms_norm) and the residual, 2H;
    - the MLP: its input H, gate_up (2I/tp) and the activation's output (I/tp), then down_proj's output H
      and, under tensor parallelism, the all-reduce's out-of-place result H (pynccl's ncclAllReduce into
      torch.empty_like; custom all-reduce's buffer is outside torch). Qwen2MLP names gate_up, which lives
      until down_proj returns: (4H + 3I/tp) on one GPU, (5H + 3I/tp) under tp. LlamaMLP rebinds x and
      frees it after the activation: max(3H + 3I/tp, 4H (5H) + I/tp). kvcalc does not record which code
      a model runs and charges Qwen2's, the larger;
    - attention: q, k and v (qkv_proj's output, split into views), the attention's output
      (heads * d_v / tp) and o_proj's output H (+ H for the all-reduce under tp) beside the 2H held.

    Published V0 logs: Qwen2.5-Coder-32B at tp 4 and 131,072 tokens 11.31 GiB by this rule against
    11.32 logged (vllm-project/vllm#16883), Qwen2.5-14B at tp 2 2.83 against 2.84; Llama-3.1-8B on one
    GPU logs LlamaMLP's 3H + 3I (2.07 GiB at 20,000 tokens; this rule charges 2.21).

    >>> from kvcalc.spec import ModelSpec
    >>> qwen32b = ModelSpec(name="q", layers=64, heads=40, kv_heads=8, head_dim=128, hidden=5120, intermediate=27648, vocab=152064)
    >>> round(v0_forward_transient(qwen32b, range(64), 131072, 4, 2)[0] / 2**30, 2)
    11.31
    """
    hidden = model.hidden or 0
    all_reduce = hidden if tp > 1 else 0  # the all-reduce's out-of-place output (none on one GPU)
    attention = 2 * hidden + _attention_width(model, tp) + model.heads * model.value_dim // tp + hidden + all_reduce
    mlp_width = max(_mlp_width(model, layer, tp) for layer in layers)
    mlp = 3 * hidden + mlp_width + hidden + all_reduce
    value = tokens * act_bytes * max(attention, mlp)
    n = "5H" if tp > 1 else "4H"
    formula = (
        f"V0, eager: T * b * max(attention 2H + q+k+v + attn out + H{' + H' if tp > 1 else ''}, MLP {n} + MLP widths / tp)"
        f" = {tokens:,} * {act_bytes} * max({attention:,}, {mlp:,}) = {value:,} B"
    )
    return value, formula
