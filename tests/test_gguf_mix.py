"""llama-quantize's per-tensor types (kvcalc.gguf_mix) and the per-layer bytes they give (weights.layer_weights),
and the state mixers weights counts per layer against the totals models publish."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import presets
from kvcalc.gguf_mix import FILE_TYPES, GgufTensor, MixModel, quantized, tensor_bytes, tensor_types
from kvcalc.sources.gguf import GGML_TYPES, read_header
from kvcalc.sources.gguf_model import model_from_gguf
from kvcalc.spec import StoredWeights
from kvcalc.units import PACKING, DType, MiB, parse_dtype
from kvcalc.weights import _layer_params, count_params, layer_weights, weight_bytes, weight_format

GGUF = Path(__file__).parent / "fixtures" / "gguf" / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
LLAMA3_8B = MixModel(layers=32, experts=0, gqa=4, is_70b=False)


def _llama_from_shapes(dtype: DType):
    """The fixture's model as its shapes give it (no tensor infos), in `dtype`, stored bytes the file's total."""
    model = model_from_gguf(GGUF)
    stored = model.stored_weights
    assert stored is not None
    shapes_only = model.model_copy(update={"stored_weights": None})
    fmt = weight_format(shapes_only, dtype).model_copy(update={"stored": StoredWeights(bytes=stored.bytes, params=stored.params)})
    return shapes_only, fmt


def test_every_tensor_type_of_a_q4_k_m_llama() -> None:
    """Each of the 292 tensor infos of a Llama-3.1-8B Q4_K_M GGUF gets the type the file gives it."""
    header = read_header(GGUF)
    tensors = [GgufTensor(t.name, t.shape) for t in header.tensors]
    types = tensor_types(DType.q4_k_m, tensors, LLAMA3_8B)
    for info in header.tensors:
        assert types[info.name] == parse_dtype(GGML_TYPES[info.ggml_type][0]), info.name
    assert (types["blk.0.attn_v.weight"], types["blk.4.attn_v.weight"], types["blk.6.ffn_down.weight"]) == (
        DType.q6_k, DType.q4_k, DType.q6_k,
    )  # fmt: skip


def test_q4_k_m_rule_from_the_shapes_gives_llamacpps_buffers() -> None:
    """bartowski's Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf at full offload: llama.cpp prints `CUDA0 model buffer
    size = 4403.49 MiB` and `CPU_Mapped model buffer size = 281.81 MiB` (docs/placement.md, tests/test_placement.py).
    From the shapes and the Q4_K_M rules alone kvcalc gives the same, where an even spread of the file's average
    bits gives 4,378.79 MiB and 306.51 MiB."""
    model, fmt = _llama_from_shapes(DType.q4_k_m)
    w = layer_weights(model, fmt)
    assert round((sum(w.layers) + w.output) / MiB, 2) == 4403.49
    assert round(w.embeddings / MiB, 2) == 281.81
    assert "q4_k_m's mix" in w.explain and "src/llama-quant.cpp" in w.explain
    even = layer_weights(model, fmt.model_copy(update={"dtype": DType.bf16, "embeddings": DType.bf16, "experts": DType.bf16}))
    assert (round((sum(even.layers) + even.output) / MiB, 2), round(even.embeddings / MiB, 2)) == (4378.79, 306.51)


def test_deepseek_r1_q4_k_m_keeps_q6_k_where_use_more_bits_says() -> None:
    """DeepSeek-R1 Q4_K_M (src/llama-quant.cpp use_more_bits over 61 layers: layers 0-6, 53-60 and every third
    between): ffn_down of experts and shared expert and attn_kv_b in Q6_K there, Q4_K elsewhere; the router f32."""
    model = presets.load_model("deepseek-r1")
    w = layer_weights(model, weight_format(model, DType.q4_k_m))
    more, fewer = 60, 8  # (8 - 7) % 3 == 1: not a use_more_bits layer
    assert w.experts[more] > w.experts[fewer] and w.layers[more] > w.layers[fewer]
    tensors = [
        GgufTensor(f"blk.{i}.{name}", shape)
        for i in (fewer, more)
        for name, shape in (("ffn_down_exps.weight", (2048, 7168, 256)), ("attn_kv_b.weight", (512, 32768)),
                            ("ffn_gate_inp.weight", (7168, 256)))
    ]  # fmt: skip
    types = tensor_types(DType.q4_k_m, tensors, MixModel(layers=61, experts=256, gqa=1, is_70b=False))
    assert types["blk.60.ffn_down_exps.weight"] == types["blk.60.attn_kv_b.weight"] == DType.q6_k
    assert types["blk.8.ffn_down_exps.weight"] == DType.q4_k and types["blk.8.ffn_gate_inp.weight"] == DType.fp32


def test_eight_expert_q4_0_keeps_attention_k_and_v_in_q8_0() -> None:
    """Mixtral (8 experts) Q4_0: `for the 8-expert model, bumping this to Q8_0 trades just ~128MB` (attn_k, attn_v),
    output Q6_K, a tied-free token_embd in the file's own Q4_0 (src/llama-quant.cpp)."""
    names = ("blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_q.weight", "output.weight", "token_embd.weight")
    tensors = [GgufTensor(name, (4096, 1024)) for name in names]
    types = tensor_types(DType.q4_0, tensors, MixModel(layers=32, experts=8, gqa=4, is_70b=False))
    assert [types[n] for n in names] == [DType.q8_0, DType.q8_0, DType.q4_0, DType.q6_k, DType.q4_0]


def test_a_tied_table_is_quantized_as_the_output_and_odd_rows_fall_back() -> None:
    """Without output.weight, token_embd takes the output's rule (Q6_K); a row of 2,880 values (not a whole 256-value
    block) falls back to Q5_0 for Q4_K, and a 1-D or norm tensor keeps f32 (tensor_type_fallback, tensor_allows_quantization)."""
    tensors = [
        GgufTensor("token_embd.weight", (2048, 151936)),
        GgufTensor("blk.0.attn_q.weight", (2880, 4096)),
        GgufTensor("blk.0.attn_norm.weight", (2048,)),
        GgufTensor("blk.0.ssm_conv1d.weight", (4, 8192)),
    ]
    types = tensor_types(DType.q4_k_m, tensors, MixModel(layers=1, experts=0, gqa=8, is_70b=False))
    assert [types[t.name] for t in tensors] == [DType.q6_k, DType.q5_0, DType.fp32, DType.fp32]


def test_gated_deltanet_qkv_counts_as_attn_v() -> None:
    """A Qwen3.5 linear-attention layer's attn_qkv (transformers in_proj_qkv, gguf-py tensor_mapping ATTN_QKV) is
    attn_v-like (category_is_attn_v): Q6_K on use_more_bits layers under Q4_K_M, as a full-attention layer's attn_v."""
    model = presets.load_model("qwen3.6-35b-a3b")
    w = layer_weights(model, weight_format(model, DType.q4_k_m))
    assert w.layers[0] > w.layers[6]  # layer 0 (first eighth of 40) keeps attn_qkv and ffn_down_shexp in Q6_K, layer 6 not
    tensors = [GgufTensor(f"blk.{i}.{'attn_v' if i % 4 == 3 else 'attn_qkv'}.weight", (2048, 8192)) for i in range(40)]
    types = tensor_types(DType.q4_k_m, tensors, MixModel(layers=40, experts=256, gqa=8, is_70b=False))
    assert (types["blk.0.attn_qkv.weight"], types["blk.6.attn_qkv.weight"], types["blk.7.attn_v.weight"]) == (
        DType.q6_k, DType.q4_k, DType.q6_k,
    )  # fmt: skip


def test_not_a_file_type() -> None:
    with pytest.raises(ValueError, match="fp8 is not a llama-quantize file type"):
        tensor_types(DType.fp8, [], LLAMA3_8B)


@settings(max_examples=40, deadline=None)
@given(
    ftype=st.sampled_from(sorted(FILE_TYPES, key=lambda d: d.value)),
    layers=st.integers(min_value=1, max_value=48),
    experts=st.sampled_from([0, 8, 64]),
    hidden=st.sampled_from([896, 2048, 2880, 4096]),
)
def test_every_tensor_gets_a_type_whose_blocks_fill_its_rows(ftype: DType, layers: int, experts: int, hidden: int) -> None:
    """Whatever the file type and shapes: every tensor llama-quantize quantizes gets a type whose block divides its
    row (or f16), every other tensor f32, and the per-tensor bytes are whole rows."""
    per_layer = [("attn_norm.weight", (hidden,)), ("attn_q.weight", (hidden, hidden)), ("attn_v.weight", (hidden, 256)),
                 ("ffn_down.weight", (3 * hidden, hidden)), ("ffn_up_exps.weight", (hidden, 512, max(experts, 1)))]  # fmt: skip
    tensors = [GgufTensor(f"blk.{i}.{n}", s) for i in range(layers) for n, s in per_layer]
    tensors += [GgufTensor("token_embd.weight", (hidden, 1000)), GgufTensor("output.weight", (hidden, 1000))]
    types = tensor_types(ftype, tensors, MixModel(layers=layers, experts=experts, gqa=4, is_70b=False))
    for tensor in tensors:
        dtype = types[tensor.name]
        if quantized(tensor):
            assert dtype == DType.fp16 or tensor.shape[0] % PACKING[dtype].block_values == 0
        else:
            assert dtype == DType.fp32
        assert tensor_bytes(tensor, dtype) * PACKING[dtype].block_values >= tensor.elements * PACKING[dtype].block_bytes // 2


@pytest.mark.parametrize("name", ["qwen3-30b-a3b", "deepseek-r1", "qwen3.6-35b-a3b", "mixtral-8x7b", "llama3-8b"])
@pytest.mark.parametrize("dtype", ["q4_k_m", "q3_k_m", "q8_0", "iq2_m"])
def test_a_mix_spreads_the_weights_total_over_the_layers(name: str, dtype: str) -> None:
    """The rules split the weights; the total stays weight_bytes' (quantize.cpp's size table for a mix), within a
    byte per part of rounding."""
    model = presets.load_model(name)
    fmt = weight_format(model, DType(dtype))
    w = layer_weights(model, fmt)
    placed = sum(w.layers) + sum(w.experts) + w.embeddings + (0 if model.tied_embeddings else w.output)
    total = weight_bytes(count_params(model), fmt)
    assert 0 <= total - placed <= 2 * model.layers + 2


def test_nemotron_h_shapes_give_its_exact_count() -> None:
    """Nemotron-H-8B's 24 Mamba-2 blocks, 4 attention blocks and 24 MLP blocks, one norm each (presets/models/
    nemotron-h-8b.yaml counts 8,100,852,736 from nvidia/Nemotron-H-8B-Base-8K config.json): the shapes give it exactly."""
    model = presets.load_model("nemotron-h-8b")
    assert count_params(model.model_copy(update={"params": None})) is None  # a hybrid's total is published
    layers = _layer_params(model)
    assert layers is not None
    embeddings = 2 * model.vocab * model.hidden
    assert embeddings + model.hidden + sum(layer.own + layer.routed for layer in layers) == 8_100_852_736


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("qwen3.6-35b-a3b", -0.0100, -0.0095),  # 34.66 B against the card's 35 B (rounded)
        ("qwen3-next-80b-a3b", -0.0045, -0.0040),  # 79.67 B against 80 B
        ("qwen3.5-397b-a17b", -0.0020, -0.0015),  # 396.35 B against 397 B
        ("granite-4.0-h-small", 0.0060, 0.0070),  # 32.21 B against 32 B
        ("jamba-1.5-mini", -0.0085, -0.0080),  # 51.57 B against 52 B
    ],
)
def test_hybrid_shapes_agree_with_the_published_totals(name: str, low: float, high: float) -> None:
    """Gated DeltaNet and Mamba mixers counted from the config's shapes bring each hybrid within 1% of its published
    (rounded) total; the published count stays the total (docs/placement.md lists them)."""
    model = presets.load_model(name)
    layers = _layer_params(model)
    assert layers is not None and model.params is not None
    embeddings = model.vocab * model.hidden * (1 if model.tied_embeddings else 2)
    shapes = embeddings + model.hidden + sum(layer.own + layer.routed for layer in layers)
    assert low <= shapes / model.params - 1 <= high
