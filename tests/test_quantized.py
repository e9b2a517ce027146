"""Integer-quantized checkpoints (AWQ, GPTQ, compressed-tensors W4A16/W8A16): their bytes as stored, as
vLLM's Marlin kernels load them, and config.json's quantization_config read or refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc.quantization import LinearQuantization, linear_quantization
from tests.conftest import HF_CONFIGS

LLAMA3_8B_16_BIT = 2 * 128_256 * 4_096 + 4_096 + 2 * 4_096 * 32  # untied input table and LM head, the norms: bf16
LLAMA3_8B_LAYERS = 8_030_261_248 - LLAMA3_8B_16_BIT  # the decoder layers' linear projections


def _config(tmp_path, quantization: dict) -> str:
    config = {**json.loads((HF_CONFIGS / "llama3-8b-config.json").read_text()), "quantization_config": quantization}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False}
W4A16 = {
    "quant_method": "compressed-tensors",
    "format": "pack-quantized",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True},
        }
    },
    "ignore": ["lm_head"],
}


@pytest.mark.parametrize(
    "quantization, bytes_per_128",
    [
        # awq_marlin.py create_weights: qweight int32 [in, out/8], qzeros int32 [in/G, out/8], scales fp16 [in/G, out]
        (AWQ, (128 * 4 + 16 + 4) / 8),
        # gptq_marlin.py create_weights: qweight int32 [in/8, out], scales, qzeros (written for sym checkpoints too)
        (GPTQ, (128 * 4 + 16 + 4) / 8),
        # compressed_tensors_wNa16.py: weight_packed, weight_scale; no weight_zero_point when symmetric
        (W4A16, (128 * 4 + 16) / 8),
    ],
)
def test_stored_bytes_are_packed_values_scales_and_zero_points(cli, tmp_path, quantization, bytes_per_128) -> None:
    weights = cli.json("size", "--model", _config(tmp_path, quantization), "--seq", "8")["weights"]
    layers = -(-int(LLAMA3_8B_LAYERS * bytes_per_128 * 2) // 256)  # bytes_per_128 is a multiple of 1/2
    assert weights["bytes"] == layers + 2 * LLAMA3_8B_16_BIT


def test_vllm_loads_awq_as_stored_and_drops_symmetric_gptq_zero_points(cli, tmp_path) -> None:
    """AWQ's zero points are repacked at their size (awq_to_marlin_zero_points); a symmetric GPTQ layer's
    qzeros are replaced by an empty tensor (MarlinLinearKernel: marlin_make_empty_g_idx)."""

    def weights_term(quantization: dict) -> tuple[int, int]:
        path = _config(tmp_path, quantization)
        answer = cli.json("fit", "--model", path, "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "8192")
        term = next(t for t in answer["budget"]["terms"] if t["name"].startswith("weights"))
        return term["bytes"], cli.json("size", "--model", path, "--seq", "8")["weights"]["bytes"]

    loaded, stored = weights_term(AWQ)
    assert loaded == stored
    loaded, stored = weights_term(GPTQ)
    assert stored - loaded == -(-LLAMA3_8B_LAYERS * 4 // (8 * 128))  # 4 bits of qzeros per 128 values
    # without sym and desc_act vLLM cannot convert it (is_gptq_marlin_compatible): its gptq kernel keeps the layout
    loaded, stored = weights_term({"quant_method": "gptq", "bits": 4, "group_size": 128})
    assert loaded == stored


def test_explain_shows_stored_and_loaded_bytes_and_vllm_source(cli, tmp_path) -> None:
    result = cli("fit", "--model", _config(tmp_path, GPTQ), "--gpu", "h100-sxm", "--engine", "vllm", "--explain")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "weights (as loaded) = as stored - dropped by Marlin = " in out
    assert "dropped by Marlin: gptq int4 g128 sym: h100-sxm is SM 9.0: Marlin runs from 7.5" in out
    assert "Marlin repack: stored - loaded = 3,625,975,808 - 3,598,712,832 = 27,262,976 B (26.00 MiB)" in out
    assert "gptq int4 g128 sym as stored: per 128 values: 4-bit values + 16 bits of scales + 4-bit zero point" in out
    assert "MarlinLinearKernel.process_weights_after_loading" in out


def test_gptq_moe_experts_keep_half_their_zero_points() -> None:
    """gptq_marlin.py GPTQMarlinMoEMethod: w13_qzeros / w2_qzeros in params_dtype, packed count: 2 of 4 bytes."""
    q = LinearQuantization(method="gptq", bits=4, group_size=128, zero_points=False)
    values = 128 * 8 * 1000
    assert q.stored_bytes(values) - q.marlin_bytes(values, experts=True) == values // 128 * 4 // 16


@given(
    st.sampled_from(["awq", "gptq", "compressed-tensors"]),
    st.sampled_from([4, 8]),
    st.sampled_from([None, 32, 64, 128]),
    st.booleans(),
    st.booleans(),
    st.integers(0, 10**11),
)
def test_marlin_never_holds_more_than_the_checkpoint(method, bits, group, zero_points, experts, values) -> None:
    q = LinearQuantization(method=method, bits=bits, group_size=group, zero_points=zero_points)
    assert values * bits // 8 <= q.marlin_bytes(values, experts) <= q.stored_bytes(values)
    assert q.stored_bytes(2 * values) <= 2 * q.stored_bytes(values) <= q.stored_bytes(2 * values) + 1


@pytest.mark.parametrize(
    "quantization, label",
    [
        ({**GPTQ, "desc_act": True}, "gptq int4 g128 sym act-order"),
        ({**GPTQ, "group_size": -1, "desc_act": True}, "gptq int4 per-channel sym"),  # one group per row: no order
        ({"quant_method": "awq", "w_bit": 4, "q_group_size": 64, "zero_point": True}, "awq int4 g64 asym"),
        (
            {"quant_method": "auto-round", "bits": 4, "group_size": 128, "sym": True, "packing_format": "auto_round:auto_gptq"},
            "gptq int4 g128 sym",
        ),  # fmt: skip
        (W4A16, "compressed-tensors int4 g128 sym"),
        ({**GPTQ, "group_size": 256}, "gptq int4 g256 sym"),  # vLLM's plain gptq kernel runs it as stored
        (
            {"quant_method": "auto-round", "bits": 4, "group_size": 128, "sym": False, "packing_format": "auto_round:auto_awq"},
            "awq int4 g128 asym",
        ),  # fmt: skip
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "bitsandbytes 8-bit per-channel"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "bitsandbytes 4-bit absmax per 64"),
        (
            {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_use_double_quant": True},
            "bitsandbytes 4-bit absmax per 64 double-quant",
        ),
    ],
)
def test_quantization_config_is_read(quantization: dict, label: str) -> None:
    parsed = linear_quantization(quantization)
    assert parsed is not None and parsed.label == label


@pytest.mark.parametrize(
    "quantization, message",
    [
        ({**AWQ, "bits": 3}, "quantization_config.bits: 3 bits is not supported"),
        ({**GPTQ, "dynamic": 5}, "quantization_config.dynamic: expected an object of module patterns, got 5"),
        ({**GPTQ, "dynamic": "abc"}, "quantization_config.dynamic: expected an object of module patterns, got 'abc'"),
        ({"quant_method": "gptq", "bits": 4}, "quantization_config.group_size: expected a positive integer (or -1), got None"),
        (
            {"quant_method": "auto-round", "bits": 4, "group_size": 128, "sym": True, "packing_format": 5},
            "quantization_config.packing_format: 5 is not one vLLM reads (auto_round:auto_gptq, auto_round:auto_awq)",
        ),
        ({**GPTQ, "sym": "yes"}, "quantization_config.sym: expected true or false"),
        ({**AWQ, "group_size": 0}, "quantization_config.group_size: expected a positive integer"),
        (
            {**W4A16, "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int", "strategy": "tensor"}}}},
            "strategy: 'tensor' is not supported",
        ),
        ({"quant_method": "awq", "bits": 4, "group_size": 128, "modules_to_not_convert": "lm_head"}, "expected a list"),
        ("awq", "quantization_config: expected an object"),
    ],
)
def test_bad_quantization_config_is_one_line_and_exit_2(cli, tmp_path, quantization, message: str) -> None:
    result = cli("size", "--model", _config(tmp_path, quantization), "--seq", "8")
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_model_file_may_give_the_quantization(cli, tmp_path) -> None:
    """A model YAML carries the same block, and weight_dtype must agree with it."""
    base = (
        "name: q\nlayers: 2\nheads: 4\nkv_heads: 4\nhead_dim: 64\nhidden: 256\nintermediate: 512\nvocab: 1000\n"
        "quantization: {method: awq, bits: 4, group_size: 128, zero_points: true}\n"
    )
    good = tmp_path / "q.yaml"
    good.write_text(base)
    assert cli.json("size", "--model", good, "--seq", "8")["weights"]["dtype"] == "int4"
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "weight_dtype: fp8\n")
    result = cli("size", "--model", bad, "--seq", "8")
    assert result.exit_code == 2 and "weight_dtype (fp8) must be int4, the quantization's, or absent" in result.stderr


def test_skip_list_keeps_attention_and_shared_experts_16_bit() -> None:
    """A MoE checkpoint that quantizes only its routed experts (QuantTrio's AWQ recipes skip self_attn,
    shared_expert and mlp.gate): by hand, every layer's own parameters stay bf16."""
    from kvcalc.spec import ModelSpec
    from kvcalc.weights import count_params, weight_bytes, weight_format

    quantization = linear_quantization({**AWQ, "modules_to_not_convert": ["self_attn", "shared_expert", "mlp.gate"]})
    model = ModelSpec(
        name="x", layers=2, heads=4, kv_heads=2, head_dim=8, hidden=32, intermediate=64, vocab=100,
        moe={"experts": 4, "experts_per_token": 2, "expert_intermediate": 16, "shared_experts": 1},
        quantization=quantization,
    )  # fmt: skip
    # per layer: attention 3 * 1,024, norms 64, shared expert 3 * 32 * 16, router 32 * 4; final norm 32
    own = 2 * (3_072 + 64 + 1_536 + 128) + 32
    routed = 2 * 4 * 1_536
    embeddings = 2 * 100 * 32
    fmt = weight_format(model)
    assert fmt.kept == (own, own) and fmt.kept_what == "norms and convs, routers, attention, shared experts"
    assert weight_bytes(count_params(model), fmt) == -(-routed * 532 // 1024) + 2 * (own + embeddings)


@pytest.mark.parametrize(
    "quantization, weight_dtype",
    [
        ({"quant_method": "compressed-tensors", "format": "int-quantized"}, "int8"),  # W8A8 INT8: 1 B per weight
        ({"quant_method": "compressed-tensors", "format": "float-quantized"}, "fp8"),  # W8A8 FP8
        ({"quant_method": "fp8", "weight_block_size": [128, 128]}, "fp8_block"),  # DeepSeek-V3: fp32 scale per block
        ({**GPTQ, "bits": 8}, "int8"),
    ],
)
def test_eight_bit_configs_set_the_layers_format(cli, tmp_path, quantization: dict, weight_dtype: str) -> None:
    assert cli.json("size", "--model", _config(tmp_path, quantization), "--seq", "8")["weights"]["dtype"] == weight_dtype


@pytest.mark.parametrize(
    "quantization, bytes_per_16384",
    [
        # bitsandbytes 4-bit: 8,192 B of packed values + one fp32 absmax per 64 values
        ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, 8_192 + 256 * 4),
        # double-quantized: one uint8 absmax per 64 values and one fp32 per 256 of them
        (
            {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_use_double_quant": True},
            8_192 + 256 + 4,
        ),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, 16_384),  # LLM.int8: per-row scales not counted
    ],
)
def test_bitsandbytes_blocks_are_counted_and_loaded_as_stored(cli, tmp_path, quantization, bytes_per_16384) -> None:
    path = _config(tmp_path, quantization)
    weights = cli.json("size", "--model", path, "--seq", "8")["weights"]["bytes"]
    assert weights == -(-LLAMA3_8B_LAYERS * bytes_per_16384 // 16_384) + 2 * LLAMA3_8B_16_BIT
    answer = cli.json("fit", "--model", path, "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "8192")
    assert next(t for t in answer["budget"]["terms"] if t["name"].startswith("weights"))["bytes"] == weights


def test_hybrid_checkpoint_may_keep_its_state_mixers_16_bit(tmp_path) -> None:
    """QuantTrio's Qwen3.6 AWQ recipe skips linear_attn: the Gated DeltaNet projections stay bf16, so the
    same checkpoint weighs more than one that quantizes them."""
    from kvcalc.presets import load_model
    from kvcalc.weights import count_params, weight_bytes, weight_format

    def weights(skipped: list[str]) -> tuple[int, str]:
        config = json.loads((HF_CONFIGS / "qwen3.5-27b-config.json").read_text())
        config["quantization_config"] = {**AWQ, "modules_to_not_convert": skipped}
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        model = load_model(str(path)).model_copy(update={"params": 27_000_000_000})  # a hybrid publishes its count
        fmt = weight_format(model)
        return weight_bytes(count_params(model), fmt), fmt.kept_what

    quantized, what = weights([])
    kept, kept_what = weights(["linear_attn", "visual"])
    assert (what, kept_what) == ("norms and convs", "norms and convs, state mixers")
    assert kept > quantized


def _loaded_and_stored(cli, path: str, gpu: str) -> tuple[int, int, str]:
    answer = cli.json("fit", "--model", path, "--gpu", gpu, "--engine", "vllm", "--seq", "8192")
    term = next(t for t in answer["budget"]["terms"] if t["name"].startswith("weights"))
    return term["bytes"], cli.json("size", "--model", path, "--seq", "8")["weights"]["bytes"], term["formula"]


@pytest.mark.parametrize(
    ("quantization", "gpu", "why"),
    [
        # vllm marlin_utils.py (007d5005): no Marlin types below capability 75, none on ROCm
        (GPTQ, "v100-32gb", "v100-32gb is SM 7.0, below Marlin's 7.5"),
        (GPTQ, "mi300x", "mi300x runs ROCm, where vLLM has no Marlin"),
        # MARLIN_SUPPORTED_GROUP_SIZES is -1, 32, 64, 128: g256 runs on vLLM's gptq kernel as stored
        ({**GPTQ, "group_size": 256}, "h100-sxm", "not a type and group size Marlin takes"),
        # gptq_marlin.py TYPE_MAP has (bits, sym=True) only: asymmetric GPTQ runs on the gptq kernel
        ({**GPTQ, "sym": False}, "h100-sxm", "not a type and group size Marlin takes"),
    ],
)
def test_vllm_loads_as_stored_where_marlin_does_not_run(cli, tmp_path, quantization, gpu: str, why: str) -> None:
    loaded, stored, formula = _loaded_and_stored(cli, _config(tmp_path, quantization), gpu)
    assert loaded == stored and why in formula


def test_symmetric_gptq_packed_auto_round_drops_its_zero_points_on_marlin(cli, tmp_path) -> None:
    """auto_round.py apply_gptq_quant_layer (vllm 04aa528e): Marlin whenever (bits, sym) is in its type map and
    the group size is Marlin's, with desc_act=False, so a config without desc_act is repacked all the same."""
    config = {"quant_method": "auto-round", "bits": 4, "group_size": 128, "sym": True}
    loaded, stored, _ = _loaded_and_stored(cli, _config(tmp_path, config), "h100-sxm")
    assert stored - loaded == -(-LLAMA3_8B_LAYERS * 4 // (8 * 128))


def test_auto_awq_packed_auto_round_is_counted_as_awq(cli, tmp_path) -> None:
    config = {"quant_method": "auto-round", "bits": 4, "group_size": 128, "sym": False, "packing_format": "auto_round:auto_awq"}
    auto_round = cli.json("size", "--model", _config(tmp_path, config), "--seq", "8")["weights"]["bytes"]
    assert auto_round == cli.json("size", "--model", _config(tmp_path, AWQ), "--seq", "8")["weights"]["bytes"]


@pytest.mark.parametrize("group_size", [0, -5])
def test_model_file_group_size_must_be_positive(cli, tmp_path, group_size: int) -> None:
    model = tmp_path / "q.yaml"
    model.write_text(
        "name: q\nlayers: 2\nheads: 4\nkv_heads: 4\nhead_dim: 64\nhidden: 256\nintermediate: 512\nvocab: 1000\n"
        f"quantization: {{method: awq, bits: 4, group_size: {group_size}, zero_points: true}}\n"
    )
    result = cli("size", "--model", model, "--seq", "8")
    assert result.exit_code == 2, result.output
    assert f"group_size: expected a positive integer (absent: one scale per output channel), got {group_size}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_skip_list_naming_one_layer_keeps_only_that_layer_16_bit() -> None:
    """model.layers.0.self_attn keeps layer 0's attention in bf16, not every layer's."""
    from kvcalc.presets import load_model
    from kvcalc.weights import count_params, weight_bytes, weight_format

    def weights(skipped: list[str]) -> int:
        model = load_model("llama3-8b").model_copy(
            update={"quantization": linear_quantization({**AWQ, "modules_to_not_convert": skipped}), "dtype": "bf16"}
        )
        return weight_bytes(count_params(model), weight_format(model))

    attention = 2 * 4_096 * 4_096 + 2 * 4_096 * 1_024  # one layer's q, o and k, v projections
    quantized, one, every = weights([]), weights(["model.layers.0.self_attn"]), weights(["self_attn"])
    assert one - quantized == pytest.approx(attention * (2 - 532 / 1024), abs=64)
    assert every - quantized == pytest.approx(32 * attention * (2 - 532 / 1024), abs=2048)


def test_nemotron_h_attention_named_mixer_is_attention_not_a_state_mixer() -> None:
    from kvcalc.quantization import keeps_attention, keeps_state_mixers

    q = linear_quantization({**AWQ, "modules_to_not_convert": ["backbone.layers.5.mixer.q_proj"]})
    assert q is not None and keeps_attention(q, 5) and not keeps_state_mixers(q, 5) and not keeps_attention(q, 4)
    mixer = linear_quantization({**AWQ, "modules_to_not_convert": ["mixer"]})
    assert mixer is not None and keeps_state_mixers(mixer, 0)


@given(st.integers(0, 31), st.sampled_from(["self_attn", "mlp.shared_expert", "linear_attn"]))
def test_a_one_layer_skip_keeps_no_more_than_the_every_layer_skip(layer: int, module: str) -> None:
    from kvcalc.presets import load_model
    from kvcalc.weights import count_params, weight_bytes, weight_format

    def weights(skipped: list[str]) -> int:
        model = load_model("llama3-8b").model_copy(
            update={"quantization": linear_quantization({**AWQ, "modules_to_not_convert": skipped}), "dtype": "bf16"}
        )
        return weight_bytes(count_params(model), weight_format(model))

    one = weights([f"model.layers.{layer}.{module}"])
    assert weights([]) <= one <= weights([module])
    assert one == weights([f"model.layers.{(layer + 1) % 32}.{module}"])  # Llama's layers are alike
