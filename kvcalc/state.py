"""Recurrent state of hybrid models' non-attention layers: pure functions, exact integers, no I/O.

A state layer (Mamba-1, Mamba-2, Gated DeltaNet, lightning attention, short conv, Kimi Delta
Attention) keeps a fixed
state per sequence, whatever the context: a conv state (the last conv_kernel - 1 inputs of each
conv channel) and a recurrent state. The shapes are those of vLLM's MambaStateShapeCalculator
(vllm/model_executor/layers/mamba/mamba_utils.py, vllm-project/vllm 02d71083), which SGLang's
python/sglang/srt/configs/mamba_utils.py (sgl-project/sglang 02e208de) and llama.cpp's
n_embd_r()/n_embd_s() (src/llama-hparams.cpp, ggml-org/llama.cpp 01b77b57) agree with. The dtypes
are each engine's (kvcalc.engines); this module counts elements on one tensor-parallel rank.
"""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

from collections.abc import Iterable
from math import prod

from kvcalc.base import Frozen
from kvcalc.errors import InvalidInput
from kvcalc.spec import ModelSpec, StateKind
from kvcalc.units import PACKING, DType


class LayerState(Frozen):
    """The state one layer keeps per sequence on one tensor-parallel rank, in elements."""

    kind: StateKind
    conv_shape: tuple[int, ...]  # () when the kind has no conv state (lightning)
    recurrent_shape: tuple[int, ...]  # () when the kind has no recurrent state (short conv)
    formula: str  # how the shapes follow from the config, with its values

    @property
    def conv_values(self) -> int:
        return prod(self.conv_shape) if self.conv_shape else 0

    @property
    def recurrent_values(self) -> int:
        return prod(self.recurrent_shape) if self.recurrent_shape else 0


def _split(count: int, tp: int, what: str, model: ModelSpec) -> int:
    """count / tp, refused when it does not divide (vLLM's divide() asserts on a remainder)."""
    if count % tp:
        raise InvalidInput(f"--tp {tp} does not divide the {count} {what} of {model.name}")
    return count // tp


def extra_groups(groups: int, tp: int) -> int:
    """Mamba-2 B/C groups added so each rank holds the groups its heads need: none when tp divides
    the groups, else tp - groups (one group replicated on every rank); mamba_utils.py
    extra_groups_for_head_shards.

    >>> extra_groups(8, 2), extra_groups(1, 4)
    (0, 3)
    """
    return 0 if groups % tp == 0 else tp - groups


def layer_state(kind: StateKind, model: ModelSpec, tp: int = 1) -> "LayerState":
    """One `kind` layer's conv and recurrent state shapes on one of `tp` ranks.

    >>> from kvcalc.spec import ModelSpec
    >>> m = ModelSpec(name="x", layers=1, heads=2, kv_heads=2, head_dim=8, layer_pattern=["mamba2"],
    ...     state={"mamba2": {"heads": 4, "head_dim": 2, "state_size": 3, "groups": 1, "conv_kernel": 4}})
    >>> s = layer_state("mamba2", m, tp=1)
    >>> s.conv_shape, s.recurrent_shape
    ((14, 3), (4, 2, 3))
    """
    spec = model.state
    assert spec is not None and getattr(spec, kind) is not None  # ModelSpec validates that each kind used has its section
    if kind == "mamba1":
        m1 = spec.mamba1
        assert m1 is not None
        inner = _split(m1.intermediate, tp, "Mamba channels (d_inner)", model)
        return LayerState(
            kind=kind,
            conv_shape=(inner, m1.conv_kernel - 1),
            recurrent_shape=(inner, m1.state_size),
            formula=f"conv (d_inner/tp, k-1) = ({m1.intermediate}/{tp}, {m1.conv_kernel}-1);"
            f" ssm (d_inner/tp, N) = ({m1.intermediate}/{tp}, {m1.state_size})",
        )
    if kind == "mamba2":
        m2 = spec.mamba2
        assert m2 is not None
        if m2.groups % tp and m2.groups != 1:  # vllm/model_executor/layers/mamba/mamba_mixer2.py MambaMixer2.__init__
            raise InvalidInput(
                f"--tp {tp} does not divide the {m2.groups} Mamba-2 groups of {model.name}, and only a single group is replicated"
            )
        heads = _split(m2.heads, tp, "Mamba-2 heads", model)
        groups = m2.groups + extra_groups(m2.groups, tp)  # replicated up to tp so each rank has its heads' groups
        conv_dim = m2.inner + 2 * groups * m2.state_size
        return LayerState(
            kind=kind,
            conv_shape=(_split(conv_dim, tp, "Mamba-2 conv channels", model), m2.conv_kernel - 1),
            recurrent_shape=(heads, m2.head_dim, m2.state_size),
            formula=f"conv ((d_inner + 2*G*N)/tp, k-1) = (({m2.inner} + 2*{groups}*{m2.state_size})/{tp}, {m2.conv_kernel}-1)"
            + (f" (G = {m2.groups} + {groups - m2.groups} replicated)" if groups != m2.groups else "")
            + f"; ssm (H/tp, P, N) = ({m2.heads}/{tp}, {m2.head_dim}, {m2.state_size})",
        )
    if kind == "gated_deltanet":
        g = spec.gated_deltanet
        assert g is not None
        conv_dim = 2 * g.k_heads * g.k_head_dim + g.v_heads * g.v_head_dim  # q and k, then v
        return LayerState(
            kind=kind,
            conv_shape=(_split(conv_dim, tp, "Gated DeltaNet conv channels", model), g.conv_kernel - 1),
            recurrent_shape=(_split(g.v_heads, tp, "Gated DeltaNet value heads", model), g.v_head_dim, g.k_head_dim),
            formula=f"conv ((2*Hk*dk + Hv*dv)/tp, k-1) = ((2*{g.k_heads}*{g.k_head_dim} + {g.v_heads}*{g.v_head_dim})/{tp},"
            f" {g.conv_kernel}-1); recurrent (Hv/tp, dv, dk) = ({g.v_heads}/{tp}, {g.v_head_dim}, {g.k_head_dim})",
        )
    if kind == "lightning":
        la = spec.lightning
        assert la is not None
        heads, dim = la.heads or model.heads, la.head_dim or model.key_dim
        return LayerState(
            kind=kind,
            conv_shape=(),
            recurrent_shape=(_split(heads, tp, "lightning attention heads", model), dim, dim),
            formula=f"no conv; recurrent (H/tp, d, d) = ({heads}/{tp}, {dim}, {dim})",
        )
    if kind == "kda":
        kda = spec.kda
        assert kda is not None
        width = _split(kda.heads * kda.head_dim, tp, "KDA channels (num_heads * head_dim)", model)
        return LayerState(
            kind=kind,
            conv_shape=(3 * width, kda.conv_kernel - 1),  # the q, k and v convs (num_k_heads = num_heads)
            recurrent_shape=(_split(kda.heads, tp, "KDA heads", model), kda.head_dim, kda.head_dim),
            formula=f"conv (3*H*d/tp, k-1) = (3*{kda.heads}*{kda.head_dim}/{tp}, {kda.conv_kernel}-1) (q, k and v);"
            f" recurrent (H/tp, d, d) = ({kda.heads}/{tp}, {kda.head_dim}, {kda.head_dim})",
        )
    sc = spec.short_conv
    assert sc is not None
    channels = sc.channels or model.hidden
    if channels is None:
        raise InvalidInput(f"{model.name}: state.short_conv needs channels (or the model's hidden size)")
    return LayerState(
        kind=kind,
        conv_shape=(_split(channels, tp, "short-conv channels", model), sc.conv_kernel - 1),
        recurrent_shape=(),
        formula=f"conv (channels/tp, L-1) = ({channels}/{tp}, {sc.conv_kernel}-1); no recurrent state",
    )


def layer_states(model: ModelSpec, tp: int = 1) -> list[LayerState | None]:
    """Each layer's state on one rank, in layer order; None for a layer without state."""
    kinds = model.state_kinds()
    shapes = {kind: layer_state(kind, model, tp) if kind is not None else None for kind in set(kinds)}
    return list(map(shapes.__getitem__, kinds))


def state_parts_bytes(
    states: Iterable[LayerState | None], conv_dtype: DType, recurrent_dtype: DType, rows: int = 1
) -> tuple[int, int]:
    """Conv and recurrent bytes of `rows` copies of the given layers' states (None: a layer without
    state), each part's values in its own dtype: the one formula kvcalc.kvcache and the engines' log lines use.

    >>> s = LayerState(kind="mamba2", conv_shape=(14, 3), recurrent_shape=(4, 2, 3), formula="")
    >>> state_parts_bytes([s, None, s], DType.fp32, DType.bf16, rows=2)
    (672, 192)
    """
    present = [state for state in states if state]
    conv, recurrent = sum(state.conv_values for state in present), sum(state.recurrent_values for state in present)
    return rows * conv * PACKING[conv_dtype].block_bytes, rows * recurrent * PACKING[recurrent_dtype].block_bytes
