"""Hybrid models: state layers (Mamba-1, Mamba-2, Gated DeltaNet, lightning, short conv) beside
attention layers. Golden state bytes computed by hand from published config values, each named."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import ModelSpec, Workload, estimate_kv
from kvcalc.capacity import UNBOUNDED_CONTEXT, max_batch, max_context
from kvcalc.engines import profile
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import batch_bytes, layer_state_bytes, state_bytes, state_layout
from kvcalc.presets import load_model
from kvcalc.spec import Engine
from kvcalc.state import layer_state

from .conftest import HF_CONFIGS, TEST_PRESETS

BF16 = profile(Engine()).state_dtypes(ModelSpec(name="b", layers=1, heads=1, kv_heads=1, head_dim=1), Workload(seq=1))


def hybrid(pattern: list[str], state: dict, layers: int = 8, **extra: object) -> ModelSpec:
    fields = {"name": "h", "layers": layers, "heads": 16, "kv_heads": 2, "head_dim": 256, "dtype": "bf16"}
    return ModelSpec.model_validate({**fields, "layer_pattern": pattern, "state": state, **extra})


# Qwen/Qwen3-Next-80B-A3B config.json (copy in ai-dynamo/aiconfigurator): linear_num_key_heads 16,
# linear_num_value_heads 32, key/value head dims 128, linear_conv_kernel_dim 4.
QWEN3_NEXT_GDN = {"gated_deltanet": {"k_heads": 16, "v_heads": 32, "k_head_dim": 128, "v_head_dim": 128, "conv_kernel": 4}}
# nvidia/Nemotron-H-8B-Base-8K config.json (copy in NVIDIA-NeMo/Megatron-Bridge tests): mamba_num_heads 128,
# mamba_head_dim 64, ssm_state_size 128, n_groups 8, conv_kernel 4.
NEMOTRON_H_8B = {"mamba2": {"heads": 128, "head_dim": 64, "state_size": 128, "groups": 8, "conv_kernel": 4}}
# ai21labs/AI21-Jamba-1.5-Mini config.json: hidden_size 4096, mamba_expand 2, mamba_d_state 16, mamba_d_conv 4.
JAMBA_MINI = {"mamba1": {"intermediate": 2 * 4096, "state_size": 16, "conv_kernel": 4}}
# MiniMaxAI/MiniMax-M1 config.json: num_attention_heads 64, head_dim 128 (lightning layers: attn_type_list 0).
MINIMAX_M1 = {"lightning": {"heads": 64, "head_dim": 128}}


@pytest.mark.parametrize(
    "kind, state, tp, conv, recurrent, expected",
    [
        # conv (2*16*128 + 32*128, 3) + (32, 128, 128), bf16: 24,576 * 2 + 524,288 * 2 (serving-engines.md §3.3)
        ("gated_deltanet", QWEN3_NEXT_GDN, 1, (8192, 3), (32, 128, 128), 1_097_728),
        ("gated_deltanet", QWEN3_NEXT_GDN, 2, (4096, 3), (16, 128, 128), 548_864),
        # conv (8192 + 2*8*128, 3) = (10240, 3); ssm (128, 64, 128): 30,720 * 2 + 1,048,576 * 2
        ("mamba2", NEMOTRON_H_8B, 1, (10240, 3), (128, 64, 128), 2_158_592),
        ("mamba2", NEMOTRON_H_8B, 2, (5120, 3), (64, 64, 128), 1_079_296),
        # conv (8192, 3); ssm (8192, 16): 24,576 * 2 + 131,072 * 2
        ("mamba1", JAMBA_MINI, 1, (8192, 3), (8192, 16), 311_296),
        ("mamba1", JAMBA_MINI, 2, (4096, 3), (4096, 16), 155_648),
        # no conv; (64, 128, 128) * 2
        ("lightning", MINIMAX_M1, 1, (), (64, 128, 128), 2_097_152),
        ("lightning", MINIMAX_M1, 2, (), (32, 128, 128), 1_048_576),
    ],
)
def test_golden_state_bytes_per_layer(kind, state, tp, conv, recurrent, expected) -> None:
    model = hybrid([kind, "full"], state, heads=64, kv_heads=8, head_dim=128)
    shape = layer_state(kind, model, tp)
    assert (shape.conv_shape, shape.recurrent_shape) == (conv, recurrent)
    assert layer_state_bytes(shape, BF16) == expected


def test_mamba2_single_group_is_replicated_up_to_tp() -> None:
    # One B/C group (Granite-4.0-H) at tp 2: extended to 2 groups so each rank holds its heads' group
    # (vllm mamba_utils.py extra_groups_for_head_shards): conv ((8192 + 2*2*128) / 2, 3).
    model = hybrid(
        ["mamba2", "full"], {"mamba2": {"heads": 128, "head_dim": 64, "state_size": 128, "groups": 1, "conv_kernel": 4}}
    )
    assert layer_state("mamba2", model, 1).conv_shape == (8192 + 2 * 128, 3)
    assert layer_state("mamba2", model, 2).conv_shape == ((8192 + 2 * 2 * 128) // 2, 3)


def test_divisions_that_must_be_exact_are_refused() -> None:
    model = hybrid(["mamba2", "full"], {"mamba2": {"heads": 6, "head_dim": 64, "state_size": 16, "groups": 3, "conv_kernel": 4}})
    with pytest.raises(InvalidInput, match="does not divide the 3 Mamba-2 groups"):
        layer_state("mamba2", model, 2)
    gdn = hybrid(["gated_deltanet", "full"], {"gated_deltanet": {**QWEN3_NEXT_GDN["gated_deltanet"], "k_heads": 1, "v_heads": 3}})
    with pytest.raises(InvalidInput, match="--tp 2 does not divide the 3 Gated DeltaNet value heads"):
        layer_state("gated_deltanet", gdn, 2)


def test_qwen3_next_kv_and_state_at_256k() -> None:
    # 12 full-attention layers * 2 KV heads * (256 + 256) * 2 B = 24,576 B per token; 36 DeltaNet layers * 1,097,728 B.
    model = hybrid(["gated_deltanet"] * 3 + ["full"], QWEN3_NEXT_GDN, layers=48)
    kv = estimate_kv(model, Workload(seq=262_144, batch=2))
    assert kv.bytes_per_token == 24_576
    assert kv.bytes_per_sequence == 24_576 * 262_144
    assert kv.state_bytes_per_sequence == 36 * 1_097_728
    assert kv.total_bytes_per_batch == 2 * (24_576 * 262_144 + 36 * 1_097_728)
    assert [(g.kind, g.layers) for g in kv.state_groups] == [("gated_deltanet", 36)]


def test_vllm_pads_the_state_to_an_attention_page() -> None:
    # serving-engines.md §3.7, vllm/model_executor/models/config.py HybridAttentionMambaModelConfig:
    # attention page of one token 2 * 2 * 256 * 2 = 2,048 B; block = 16 * cdiv(1,097,728, 16 * 2,048) = 544;
    # page = 544 * 2,048 = 1,114,112 B, 16,384 B (1.49%) of padding.
    model = hybrid(["gated_deltanet"] * 3 + ["full"], QWEN3_NEXT_GDN, layers=48)
    work = Workload(seq=1000, engine=Engine(name="vllm"))
    layout = state_layout(model, work)
    assert layout.pages is not None and layout.pages.block_size == 544 and layout.pages.page_bytes == 1_114_112
    lines = [log.line for log in layout.pages.log]
    assert lines == [
        "Setting attention block size to 544 tokens to ensure that attention page size is >= mamba page size.",
        "Padding mamba page size by 1.49% to ensure that mamba page size and attention page size are exactly equal.",
    ]
    kv = estimate_kv(model, work)
    assert kv.block_size == 544
    assert kv.bytes_per_sequence == 12 * 2_048 * 1088  # 1,000 tokens take two pages of 544
    assert kv.state_bytes_per_sequence == 36 * 1_114_112
    # a larger --block-size is kept; the state is padded up to its page
    assert state_layout(model, Workload(seq=1, block_size=1024, engine=Engine(name="vllm"))).pages.page_bytes == 1024 * 2_048


def test_vllm_state_dtypes() -> None:
    model = hybrid(["mamba2", "full"], NEMOTRON_H_8B, heads=32, kv_heads=8, head_dim=128)
    rules = profile(Engine(name="vllm"))
    auto = rules.state_dtypes(model, Workload(seq=1, engine=Engine(name="vllm")))
    assert (auto.conv.value, auto.recurrent.value) == ("bf16", "bf16")
    ssm32 = rules.state_dtypes(model, Workload(seq=1, engine=Engine(name="vllm", mamba_ssm_cache_dtype="fp32")))
    assert (ssm32.conv.value, ssm32.recurrent.value) == ("bf16", "fp32")
    configured = model.model_copy(update={"state": model.state.model_copy(update={"ssm_dtype": "fp32"})})
    assert rules.state_dtypes(configured, Workload(seq=1, engine=Engine(name="vllm"))).recurrent.value == "fp32"
    # fp32 SSM state: 30,720 * 2 + 1,048,576 * 4 B per layer
    assert (
        state_layout(model, Workload(seq=1, engine=Engine(name="vllm", mamba_ssm_cache_dtype="fp32"))).exact_bytes[0] == 4_255_744
    )


def test_llamacpp_keeps_state_in_f32() -> None:
    model = hybrid(["gated_deltanet"] * 3 + ["full"], QWEN3_NEXT_GDN, layers=4)
    layout = state_layout(model, Workload(seq=512, engine=Engine(name="llamacpp")))
    assert layout.exact_bytes[0] == 2 * 1_097_728  # (24,576 + 524,288) * 4 B (src/llama-model.cpp: type_r = type_s = f32)
    with pytest.raises(InvalidInput, match="llama.cpp keeps recurrent state in f32"):
        estimate_kv(model, Workload(seq=512, state_dtype="fp16", engine=Engine(name="llamacpp")))


def test_llamacpp_unified_kv_still_keeps_one_state_per_sequence() -> None:
    model = hybrid(["gated_deltanet"] * 3 + ["full"], QWEN3_NEXT_GDN, layers=4)
    kv = estimate_kv(model, Workload(seq=4096, batch=4, engine=Engine(name="llamacpp", kv_unified=True)))
    assert kv.allocation_units == 1
    assert kv.state_bytes_per_batch == 4 * 3 * 2 * 1_097_728


def test_textbook_state_dtype_override() -> None:
    model = hybrid(["mamba1", "full"], JAMBA_MINI)
    assert state_layout(model, Workload(seq=1, state_dtype="fp32")).exact_bytes[0] == 2 * 311_296


def test_transformers_state_is_refused() -> None:
    model = hybrid(["mamba1", "full"], JAMBA_MINI)
    with pytest.raises(InvalidInput, match="transformers' recurrent caches"):
        estimate_kv(model, Workload(seq=1, engine=Engine(name="hf")))


def test_falcon_h1_layers_hold_kv_and_state() -> None:
    # Falcon-H1 runs attention and Mamba-2 side by side in every layer.
    model = hybrid(["full+mamba2"], NEMOTRON_H_8B, layers=4, heads=32, kv_heads=8, head_dim=128)
    kv = estimate_kv(model, Workload(seq=100))
    assert kv.bytes_per_token == 4 * 2 * 8 * 128 * 2
    assert kv.state_bytes_per_sequence == 4 * 2_158_592


def test_mlp_only_layers_hold_nothing() -> None:
    model = ModelSpec.model_validate(
        {"name": "m", "layers": 4, "heads": 4, "kv_heads": 2, "head_dim": 32, "layer_pattern": ["mlp", "full"]}
    )
    assert estimate_kv(model, Workload(seq=10)).bytes_per_token == 2 * 2 * 2 * 32 * 2


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"layer_pattern": ["mamba2", "full"]}, "layer_pattern has mamba2 layers but state.mamba2 does not give their shape"),
        ({"layer_pattern": ["full"], "state": JAMBA_MINI}, "state.mamba1 is given but no layer in layer_pattern is mamba1"),
        ({"layer_pattern": ["full+sliding"]}, "unknown layer kind 'full+sliding'"),
        ({"layer_pattern": ["mamba9"]}, "unknown layer kind 'mamba9'"),
    ],
)
def test_bad_state_descriptions(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelSpec.model_validate({"name": "m", "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 32, **fields})


@st.composite
def hybrids(
    draw: st.DrawFn, kinds: tuple[str, ...] = ("mamba1", "mamba2", "gated_deltanet", "lightning", "short_conv")
) -> ModelSpec:
    kind = draw(st.sampled_from(kinds))
    state = {
        "mamba1": {"intermediate": draw(st.sampled_from([256, 512])), "state_size": 16, "conv_kernel": 4},
        "mamba2": {"heads": 8, "head_dim": 32, "state_size": draw(st.sampled_from([16, 64])), "groups": 2, "conv_kernel": 4},
        "gated_deltanet": {"k_heads": 4, "v_heads": 8, "k_head_dim": 32, "v_head_dim": 32, "conv_kernel": 4},
        "lightning": {},
        "short_conv": {"channels": 512, "conv_kernel": 3},
    }[kind]
    pattern = draw(st.sampled_from([[kind, "full"], [kind, kind, kind, "full"], [kind, "mlp", "full"], [f"full+{kind}"]]))
    return ModelSpec.model_validate(
        {
            "name": "h", "layers": draw(st.integers(1, 24)), "heads": 8, "kv_heads": draw(st.sampled_from([1, 2, 8])),
            "head_dim": 64, "hidden": 512, "dtype": "bf16", "layer_pattern": pattern, "state": {kind: state},
        }
    )  # fmt: skip


engines_ = st.sampled_from([Engine(), Engine(name="vllm"), Engine(name="llamacpp")])


@given(hybrids(), st.integers(1, 100_000), st.integers(1, 100_000), engines_)
def test_state_never_grows_with_context(model: ModelSpec, s1: int, s2: int, engine: Engine) -> None:
    work = Workload(seq=1, engine=engine)
    assert state_bytes(model, work.model_copy(update={"seq": s1})) == state_bytes(model, work.model_copy(update={"seq": s2}))


@given(hybrids(), st.integers(1, 100_000), st.integers(1, 8))
def test_hybrid_never_holds_more_kv_than_its_all_attention_twin(model: ModelSpec, seq: int, batch: int) -> None:
    twin = model.model_copy(update={"layer_pattern": None, "state": None})
    work = Workload(seq=seq, batch=batch)
    assert estimate_kv(model, work).bytes_per_batch <= estimate_kv(twin, work).bytes_per_batch


@settings(max_examples=50)
@given(hybrids(), st.integers(1, 40_000), st.integers(10**6, 10**11), engines_)
def test_fit_never_overcommits_with_state(model: ModelSpec, seq: int, usable: int, engine: Engine) -> None:
    work = profile(engine).reshape(Workload(seq=seq, engine=engine), context=seq, batch=1)
    batch = max_batch(model, work, usable)
    if batch:
        assert batch_bytes(model, profile(engine).reshape(work, batch=batch), peak=True).per_gpu <= usable
    if batch < UNBOUNDED_CONTEXT:
        assert batch_bytes(model, profile(engine).reshape(work, batch=batch + 1), peak=True).per_gpu > usable


@settings(max_examples=50)
@given(hybrids(), st.integers(1, 16), st.integers(10**6, 10**10))
def test_max_context_counts_state_once_per_sequence(model: ModelSpec, batch: int, usable: int) -> None:
    work, limit = Workload(seq=1, batch=batch), 1_000_000
    context = max_context(model, work, usable, limit)
    state = batch * state_bytes(model, work).per_gpu
    if context:
        assert batch_bytes(model, work, context).per_gpu <= usable
        assert batch_bytes(model, work, context).per_gpu >= state
    elif state > usable:
        assert batch_bytes(model, work, 1).per_gpu > usable


@given(hybrids(), st.integers(1, 10_000))
def test_vllm_page_holds_the_state_with_less_than_one_alignment_of_padding(model: ModelSpec, seq: int) -> None:
    layout = state_layout(model, Workload(seq=seq, engine=Engine(name="vllm")))
    assert layout.pages is not None
    if layout.pages.page_bytes is not None:
        largest = max(layout.exact_bytes)
        assert layout.pages.block_size % 16 == 0
        assert largest <= layout.pages.page_bytes < largest + 16 * layout.pages.page_bytes // layout.pages.block_size


def test_cli_size_shows_state_and_explains(cli) -> None:
    result = cli("size", "--model", TEST_PRESETS / "tiny-hybrid.yaml", "--seq", "4096", "--batch", "2", "--explain")
    assert result.exit_code == 0, result.output
    assert "state per sequence (any context)" in result.stdout and "mamba2 state (bf16)" in result.stdout
    assert "Mamba-2, 4 layers: conv ((d_inner + 2*G*N)/tp, k-1) = ((128 + 2*2*16)/1, 4-1)" in result.stdout
    doc = cli.json("size", "--model", TEST_PRESETS / "tiny-hybrid.yaml", "--seq", "4096", "--batch", "2")
    # per layer: conv (192, 3) + ssm (8, 16, 16) = 576 + 2,048 values, bf16
    assert doc["kv"]["state_bytes_per_sequence"] == 4 * (576 + 2048) * 2
    assert doc["kv"]["total_bytes_per_batch"] == doc["kv"]["bytes_per_batch"] + 2 * 4 * (576 + 2048) * 2


def test_cli_refuses_an_uneven_state_split_in_one_line(cli) -> None:
    result = cli("size", "--model", TEST_PRESETS / "tiny-hybrid.yaml", "--seq", "8", "--tp", "4")
    assert result.exit_code == 2
    assert "--tp 4 does not divide the 2 Mamba-2 groups of tiny-hybrid" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_fit_and_decode_count_state(cli) -> None:
    tiny = TEST_PRESETS / "tiny-hybrid.yaml"
    doc = cli.json("fit", "--model", tiny, "--memory", "1GiB", "--reserve", "0", "--seq", "1024")
    state = 4 * (576 + 2048) * 2
    assert doc["state_bytes_per_sequence_per_gpu"] == state
    kv = 2 * 2 * 2 * 32 * 2 * 1024  # two full layers of 2 KV heads of 32, bf16
    assert doc["bytes_per_sequence_per_gpu"] == kv + state
    assert doc["max_batch"] == (2**30 * 9 // 10 - 4_000_000) // (kv + state)
    step = cli.json("decode", "--model", tiny, "--gpu", "h100-sxm", "--seq", "1024", "--batch", "3")["decode"]
    assert step["state_read_bytes"] == step["state_written_bytes"] == 3 * state
    assert step["roofline"]["bytes_moved"] == step["weights_read_bytes"] + step["kv_read_bytes"] + 6 * state


def test_hybrid_without_params_has_unknown_weights(cli, tmp_path) -> None:
    path = tmp_path / "h.yaml"
    path.write_text(
        (TEST_PRESETS / "tiny-hybrid.yaml").read_text().replace("params: 2000000", "hidden: 128\nintermediate: 256\nvocab: 1000")
    )
    result = cli("fit", "--model", path, "--memory", "1GiB")
    assert result.exit_code == 2
    assert "hybrid model and gives no params" in result.stderr


HYBRID_PRESETS = [
    "qwen3-next-80b-a3b", "nemotron-h-8b", "granite-4.0-h-small", "jamba-1.5-mini", "falcon-h1-7b", "lfm2-1.2b", "minimax-m1",
]  # fmt: skip


@pytest.mark.parametrize("name", HYBRID_PRESETS)
@pytest.mark.parametrize("engine", ["textbook", "vllm"])
def test_config_json_import_matches_the_preset(name: str, engine: str) -> None:
    """Each fixture is the preset's source config (tests/fixtures/hf, trimmed copies named in the presets' source:)."""
    preset, imported = load_model(name), load_model(str(HF_CONFIGS / f"{name}-config.json"))
    assert imported.layer_kinds() == preset.layer_kinds()
    for tp in (1, 2):
        work = Workload(seq=32_768, batch=2, tp=tp, engine=Engine(name=engine))
        a, b = estimate_kv(preset, work), estimate_kv(imported, work)
        assert (a.bytes_per_token, a.state_bytes_per_sequence, a.total_bytes_per_batch) == (
            b.bytes_per_token,
            b.state_bytes_per_sequence,
            b.total_bytes_per_batch,
        )


def test_nemotron_h_config_json_user_story(cli) -> None:
    doc = cli.json("size", "--model", HF_CONFIGS / "nemotron-h-8b-config.json", "--seq", "32768", "--batch", "16")
    kv = doc["kv"]
    assert kv["bytes_per_batch"] == 16 * 4 * 2 * 8 * 128 * 2 * 32_768  # 4 attention layers of 8 KV heads
    assert kv["state_bytes_per_batch"] == 16 * 24 * 2_158_592  # 24 Mamba-2 layers, golden above
    assert doc["model"]["layer_pattern"][:8] == ["mamba2", "mlp", "mamba2", "mlp", "mamba2", "mlp", "mamba2", "full"]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"hybrid_override_pattern": "M*"}, "hybrid_override_pattern: expected 52 letters of M, *, - and E"),
        ({"hybrid_override_pattern": 7}, "hybrid_override_pattern: expected a string of layer letters"),
        ({"mamba_num_heads": 12.5}, "mamba_num_heads: expected an integer"),
    ],
)
def test_bad_hybrid_configs_are_refused_in_one_line(cli, tmp_path, config: dict, message: str) -> None:
    data = {**json.loads((HF_CONFIGS / "nemotron-h-8b-config.json").read_text()), **config}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    result = cli("size", "--model", path, "--seq", "8")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_compare_hybrid_with_its_attention_sibling(cli) -> None:
    doc = cli.json("compare", "qwen3-next-80b-a3b", "qwen3-30b-a3b", "--seq", "131072")
    rows = {row["name"]: row for row in doc["variants"]}
    assert rows["qwen3-next-80b-a3b"]["state_bytes_per_sequence"] == 36 * 1_097_728
    assert rows["qwen3-next-80b-a3b"]["bytes_per_batch"] == 24_576 * 131_072 + 36 * 1_097_728
    assert rows["qwen3-30b-a3b"]["state_bytes_per_sequence"] == 0


def test_check_plan_with_a_hybrid_model(cli, tmp_path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "workloads:\n  - name: next\n    model: qwen3-next-80b-a3b\n    gpu: h200\n    tp: 4\n    seq: 131072\n    batch: 8\n"
        "    engine: vllm\n    expect:\n      fits: true\n      kv_bytes_at_most: 20GiB\n".replace("20GiB", str(20 * 2**30))
    )
    doc = cli.json("check", plan)
    assert doc["passed"] is True
    kv = estimate_kv(load_model("qwen3-next-80b-a3b"), Workload(seq=131_072, batch=8, tp=4, engine=Engine(name="vllm")))
    assert doc["workloads"][0]["kv_bytes_per_gpu"] == kv.bytes_per_gpu > kv.bytes_per_batch // 4


def test_cli_state_dtype_flags(cli) -> None:
    tiny = TEST_PRESETS / "tiny-hybrid.yaml"
    conv, ssm = 576, 2048  # values per layer (golden above)
    base = ["size", "--model", tiny, "--seq", "64"]
    assert cli.json(*base, "--state-dtype", "fp32")["kv"]["state_bytes_per_sequence"] == 4 * (conv + ssm) * 4
    vllm = cli.json(*base, "--engine", "vllm", "--mamba-ssm-cache-dtype", "fp32", "--mamba-cache-dtype", "auto")["kv"]
    group = vllm["state_groups"][0]
    assert (group["conv_dtype"], group["recurrent_dtype"], group["bytes_per_layer"]) == ("bf16", "fp32", conv * 2 + ssm * 4)
    assert cli.json(*base, "--engine", "llamacpp")["kv"]["state_groups"][0]["bytes_per_layer"] == (conv + ssm) * 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "vllm", "--state-dtype", "fp32"], "--state-dtype is the textbook's; vLLM takes --mamba-cache-dtype"),
        (["--mamba-cache-dtype", "fp32"], "--mamba-cache-dtype applies to --engine vllm, not textbook"),
        (["--state-dtype", "q4_0"], "a recurrent state is kept in fp32, fp16, bf16, not q4_0"),
        (["--engine", "vllm", "--mamba-ssm-cache-dtype", "fp9"], "--mamba-ssm-cache-dtype: unknown dtype 'fp9'"),
    ],
)
def test_cli_bad_state_dtypes(cli, args: list[str], message: str) -> None:
    result = cli("size", "--model", TEST_PRESETS / "tiny-hybrid.yaml", "--seq", "64", *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


# SGLang: python/sglang/srt/configs/mamba_utils.py (02e208de) and model_runner_kv_cache_mixin.py (001ccef0).
SGLANG = Engine(name="sglang")


@pytest.mark.parametrize(
    "tp, ssm_dtype, expected",
    [
        # Qwen3-Next GDN layer: conv 8192 * 3 values in bf16 + SSM 32 * 128 * 128 in fp32, 36 layers
        (1, None, 36 * (24_576 * 2 + 524_288 * 4)),  # 77,266,944 B
        (2, None, 36 * (12_288 * 2 + 262_144 * 4)),  # 38,633,472 B
        (1, "bf16", 36 * 1_097_728),  # --mamba-ssm-dtype bf16: as vLLM's auto
    ],
)
def test_sglang_mamba_cache_per_req(tp: int, ssm_dtype: str | None, expected: int) -> None:
    model = load_model("qwen3-next-80b-a3b")
    work = Workload(seq=1, tp=tp, engine=Engine(name="sglang", mamba_ssm_dtype=ssm_dtype))
    assert state_bytes(model, work).per_gpu == expected
    assert estimate_kv(model, work).state_groups[0].conv_dtype.value == "bf16"


def _sglang_pools(model: ModelSpec, work: Workload, usable: int):
    from kvcalc.capacity import _first_stage_layers

    return profile(work.engine).pools(model, work, usable, _first_stage_layers(model, work))


def test_sglang_splits_the_rest_between_the_mamba_pool_and_the_token_pool() -> None:
    model, usable = load_model("qwen3-next-80b-a3b"), 54_540_965_812  # h200, tp 2: fit's budget
    work = Workload(seq=131_072, tp=2, engine=SGLANG)
    full, mamba = _sglang_pools(model, work, usable)
    per_req = 38_633_472
    assert (mamba.tokens, mamba.bytes_per_token, mamba.per_sequence) == (int(usable * 0.9 / 1.9) // per_req, per_req, 3)
    assert mamba.tokens == 668
    # the token pool: what the Mamba pool leaves, over the 12 full-attention layers only (1 KV head * 256 * 2 * 2 B each)
    assert full.bytes_per_token == 12 * 1_024
    assert full.tokens == (usable - 668 * per_req) // (12 * 1_024)
    assert full.bytes + mamba.bytes <= usable
    # --mamba-full-memory-ratio 0.5: a third of the rest for state
    half = _sglang_pools(model, work.model_copy(update={"engine": Engine(name="sglang", mamba_full_memory_ratio=0.5)}), usable)
    assert half[1].tokens == int(usable * 0.5 / 1.5) // per_req


def test_sglang_runs_a_third_of_the_mamba_slots_at_once() -> None:
    model = load_model("qwen3-next-80b-a3b")
    work = Workload(seq=2_048, tp=2, engine=SGLANG)
    pools = _sglang_pools(model, work, 54_540_965_812)
    assert max_batch(model, work, 54_540_965_812, pools) == 668 // 3  # short contexts: the Mamba pool binds


@settings(max_examples=50)
@given(
    hybrids(("mamba2", "gated_deltanet", "short_conv")),
    st.integers(1, 40_000),
    st.integers(10**7, 10**11),
)
def test_sglang_fit_never_overcommits_with_state(model: ModelSpec, seq: int, usable: int) -> None:
    work = Workload(seq=seq, engine=SGLANG)
    pools = _sglang_pools(model, work, usable)
    assert sum(pool.bytes for pool in pools) <= usable
    batch = max_batch(model, work, usable, pools)
    mamba = [pool for pool in pools if pool.per_sequence]
    if mamba:
        assert 3 * batch <= mamba[0].tokens
    for pool in pools:
        if not pool.per_sequence:
            assert batch * seq <= pool.tokens


@pytest.mark.parametrize(
    "model, work, message",
    [
        ("jamba-1.5-mini", Workload(seq=64, engine=SGLANG), "not jamba-1.5-mini's mamba1 layers"),
        ("minimax-m1", Workload(seq=64, engine=SGLANG), "not minimax-m1's lightning layers"),
        ("qwen3-next-80b-a3b", Workload(seq=64, pp=2, engine=SGLANG), "Mamba pool over --pp stages"),
        ("qwen3-next-80b-a3b", Workload(seq=64, state_dtype="fp32", engine=SGLANG), "SGLang takes --mamba-ssm-dtype"),
        ("llama3-8b", Workload(seq=64, engine=Engine(name="sglang", mamba_ssm_dtype="bf16")), "llama3-8b keeps no state"),
    ],
)
def test_sglang_refuses_what_it_does_not_model(model: str, work: Workload, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        estimate_kv(load_model(model), work)


def test_cli_sglang_fit_logs_the_mamba_pool(cli) -> None:
    # the h200 preset's CUDA total (139.80 GiB) leaves SGLang less than the 54,540,965,812 B of the tests above, and
    # so does RoPE's fp32 cos/sin table (262,144 positions x 64 rotated dims x 4 B = 64 MiB; one slot of 661)
    args = ["fit", "--model", "qwen3-next-80b-a3b", "--gpu", "h200", "--tp", "2", "--engine", "sglang", "--seq", "131072"]
    doc = cli.json(*args)
    assert doc["max_batch"] == 17
    assert {t["name"]: t["bytes"] for t in doc["budget"]["terms"]}["rotary cos/sin table"] == 262_144 * 64 * 4
    logged = {line["name"]: line["value"] for line in doc["engine_log"]}
    assert logged["max_mamba_cache_size"] == 660
    assert logged["req_to_token_bytes"] == 220 * (262_144 + 4) * 4  # max_running_requests = 661 // 3
    text = cli(*args).output
    assert "Mamba Cache is allocated. max_mamba_cache_size: 660" in text
    assert "pool mamba: 660 state slots of 36 state layers" in text
    bf16 = cli.json(*args, "--mamba-ssm-dtype", "bf16", "--mamba-full-memory-ratio", "0.5")
    assert bf16["state_bytes_per_sequence_per_gpu"] == 36 * 548_864


@pytest.mark.parametrize(
    "fixture, replace, message",
    [
        # Files that lie (issue 23 item 3): each named by its key, refused at --tp 1 as at any other.
        ("jamba-1.5-mini", ('"mamba_expand": 2', '"mamba_expand": 1e400'), "mamba_expand: expected a positive number, got Infinity"),
        ("granite-4.0-h-small", ('"mamba_expand": 2', '"mamba_expand": NaN'), "mamba_expand: expected a positive number, got NaN"),
        ("nemotron-h-8b", ('"n_groups": 8', '"n_groups": 3'), "state.mamba2: groups (3) must divide heads (128)"),
        ("qwen3-next-80b-a3b", ('"linear_num_value_heads": 32', '"linear_num_value_heads": 24'),
         "state.gated_deltanet: v_heads (24) must be a multiple of k_heads (16)"),
    ],
)  # fmt: skip
def test_lying_hybrid_configs_are_refused_at_any_tp(cli, tmp_path, fixture: str, replace: tuple[str, str], message: str) -> None:
    text = (HF_CONFIGS / f"{fixture}-config.json").read_text()
    assert replace[0] in text
    path = tmp_path / "config.json"
    path.write_text(text.replace(replace[0], replace[1]))
    result = cli("size", "--model", path, "--seq", "8", "--tp", "1")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
