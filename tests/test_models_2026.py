"""The architectures served at the end of 2026: Qwen3.5/3.6 (Gated DeltaNet in text_config, float32
state), Gemma 4 (global layers with their own KV heads and head_dim, shared-KV layers), DeepSeek
sparse attention (DeepSeek-V3.2, GLM-5: MLA latent plus indexer keys), Kimi-Linear (KDA beside
MLA), MiniMax-M2 and Nemotron 3. Golden bytes are worked by hand from each published config.json
(tests/fixtures/hf, trimmed copies named in the presets' source:)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc import Workload, estimate_kv
from kvcalc.engines.vllm import MLA_BLOCK_MULTIPLE, mla_block_size
from kvcalc.presets import load_model
from kvcalc.spec import Engine

from .conftest import HF_CONFIGS

NEW_PRESETS = [
    "qwen3.5-27b", "qwen3.5-35b-a3b", "qwen3.5-397b-a17b", "gemma4-31b", "gemma4-26b-a4b", "gemma4-e4b", "gemma4-e2b",
    "deepseek-v3.2", "glm-5", "kimi-linear-48b-a3b", "minimax-m2", "nemotron-3-nano-30b-a3b",
]  # fmt: skip


def imported(name: str):
    return load_model(str(HF_CONFIGS / f"{name}-config.json"))


# (fixture, KV bytes per token in bf16 over all layers, state bytes per sequence in the model dtype (textbook))
GOLDEN = [
    # Qwen3.5-27B: 16 full layers (every 4th of 64) * (K + V) 2 * 4 KV heads * 256 * 2 B = 65,536 B;
    # 48 GDN layers * (conv (2*16*128 + 48*128) * 3 + recurrent 48*128*128) * 2 B = 48 * 1,634,304
    ("qwen3.5-27b", 16 * 2 * 4 * 256 * 2, 48 * ((2 * 16 * 128 + 48 * 128) * 3 + 48 * 128 * 128) * 2),
    # Qwen3.5-35B-A3B: 10 of 40 full, 2 KV heads; 30 GDN layers of conv (4096 + 4096) * 3, state 32*128*128
    ("qwen3.5-35b-a3b", 10 * 2 * 2 * 256 * 2, 30 * ((2 * 16 * 128 + 32 * 128) * 3 + 32 * 128 * 128) * 2),
    # Qwen3.5-397B-A17B: 15 of 60 full, 2 KV heads; 45 GDN layers of conv (4096 + 8192) * 3, state 64*128*128
    ("qwen3.5-397b-a17b", 15 * 2 * 2 * 256 * 2, 45 * ((2 * 16 * 128 + 64 * 128) * 3 + 64 * 128 * 128) * 2),
    # Gemma-4-31B: 50 sliding layers * 2 * 16 * 256 * 2 B + 10 global layers * 2 * 4 (global KV heads) * 512 * 2 B
    ("gemma4-31b", 50 * 2 * 16 * 256 * 2 + 10 * 2 * 4 * 512 * 2, 0),
    # Gemma-4-26B-A4B: 25 sliding * 2 * 8 * 256 * 2 + 5 global * 2 * 2 * 512 * 2
    ("gemma4-26b-a4b", 25 * 2 * 8 * 256 * 2 + 5 * 2 * 2 * 512 * 2, 0),
    # Gemma-4-E4B: 42 - 18 shared = 24 own caches, 20 sliding * 2 * 2 * 256 * 2 + 4 global * 2 * 2 * 512 * 2
    # (attention_k_eq_v absent: the global layers keep num_key_value_heads)
    ("gemma4-e4b", 20 * 2 * 2 * 256 * 2 + 4 * 2 * 2 * 512 * 2, 0),
    # Gemma-4-E2B: 35 - 20 shared = 15 own, 12 sliding * 2 * 1 * 256 * 2 + 3 global * 2 * 1 * 512 * 2
    ("gemma4-e2b", 12 * 2 * 1 * 256 * 2 + 3 * 2 * 1 * 512 * 2, 0),
    # DeepSeek-V3.2: 61 * ((512 + 64) * 2 B latent + indexer key 128 fp8 + 128 // 128 * 4 B scale)
    ("deepseek-v3.2", 61 * ((512 + 64) * 2 + 128 + 4), 0),
    # GLM-5: 78 * ((512 + 64) * 2 + 132), index_head_dim 128 by GlmMoeDsaConfig's default
    ("glm-5", 78 * ((512 + 64) * 2 + 132), 0),
    # Kimi-Linear: 7 MLA layers * (512 + 64) * 2; 20 KDA layers * (conv 3 * 32*128 * 3 + recurrent 32*128*128) * 2
    ("kimi-linear-48b-a3b", 7 * (512 + 64) * 2, 20 * (3 * 32 * 128 * 3 + 32 * 128 * 128) * 2),
    # MiniMax-M2: 62 * 2 * 8 * 128 * 2
    ("minimax-m2", 62 * 2 * 8 * 128 * 2, 0),
    # Nemotron-3-Nano: 6 attention (*) * 2 * 2 * 128 * 2; 23 Mamba-2 (M) * (conv (64*64 + 2*8*128) * 3 + ssm 64*64*128) * 2
    ("nemotron-3-nano-30b-a3b", 6 * 2 * 2 * 128 * 2, 23 * ((64 * 64 + 2 * 8 * 128) * 3 + 64 * 64 * 128) * 2),
]


@pytest.mark.parametrize("name, per_token, state", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_published_configs_size_exactly(name: str, per_token: int, state: int) -> None:
    kv = estimate_kv(imported(name), Workload(seq=4096))
    assert (kv.bytes_per_token, kv.state_bytes_per_sequence) == (per_token, state)


@pytest.mark.parametrize("name", NEW_PRESETS)
@pytest.mark.parametrize("engine", ["textbook", "vllm"])
def test_config_json_import_matches_the_preset(name: str, engine: str) -> None:
    preset, config = load_model(name), imported(name)
    assert config.layer_kinds() == preset.layer_kinds()
    for tp in (1, 2):
        work = Workload(seq=32_768, batch=2, tp=tp, engine=Engine(name=engine))
        a, b = estimate_kv(preset, work), estimate_kv(config, work)
        assert (a.bytes_per_token, a.state_bytes_per_sequence, a.total_bytes_per_batch, a.block_size) == (
            b.bytes_per_token,
            b.state_bytes_per_sequence,
            b.total_bytes_per_batch,
            b.block_size,
        )


def test_qwen3_5_state_dtype_is_the_configs_float32_under_vllm() -> None:
    # mamba_ssm_dtype float32: conv (10240, 3) in bf16 + recurrent (48, 128, 128) in fp32, per GDN layer
    kv = estimate_kv(imported("qwen3.5-27b"), Workload(seq=4096, engine=Engine(name="vllm")))
    (group,) = kv.state_groups
    assert (group.conv_dtype.value, group.recurrent_dtype.value) == ("bf16", "fp32")
    assert group.bytes_per_layer == 10240 * 3 * 2 + 48 * 128 * 128 * 4


def test_kda_recurrent_state_is_float32_under_vllm() -> None:
    # vllm mamba_utils.py kda_state_dtype: (state_dtype, torch.float32)
    kv = estimate_kv(imported("kimi-linear-48b-a3b"), Workload(seq=4096, engine=Engine(name="vllm")))
    (group,) = kv.state_groups
    assert group.bytes_per_layer == 3 * 4096 * 3 * 2 + 32 * 128 * 128 * 4
    # MLA kernels align the raised block to 64 (FlashMLA): 64 * cdiv(2,170,880, 64 * 1,152) = 1,920
    assert kv.block_size == 1920


@pytest.mark.parametrize(
    "kv_dtype, per_layer",
    [
        ("bf16", (512 + 64) * 2 + 132),
        # fp8_ds_mla: 512 fp8 + 512 // 128 * 4 fp32 scales + 64 * 2 bf16 rope = 656, plus the 132-byte indexer key
        ("fp8", 656 + 132),
    ],
)
def test_deepseek_v3_2_on_vllm(kv_dtype: str, per_layer: int) -> None:
    kv = estimate_kv(load_model("deepseek-v3.2"), Workload(seq=1000, kv_dtype=kv_dtype, engine=Engine(name="vllm")))
    assert kv.bytes_per_token == 61 * per_layer
    assert kv.block_size == 64  # FlashMLA sparse: 1,000 tokens in 16 blocks of 64
    assert kv.bytes_per_sequence == 61 * per_layer * 1024


@pytest.mark.parametrize(
    "backend, block",
    [
        (None, 64),  # FlashMLA, vLLM's default before Blackwell: a multiple of 64
        ("cutlass_mla", 128),  # the default on SM100 Blackwell
        ("flashinfer_mla", 64),
        ("triton_mla", 16),  # keeps --block-size
    ],
)
def test_vllm_mla_block_size_follows_the_backend(cli, backend: str | None, block: int) -> None:
    flag = ["--attention-backend", backend] if backend else []
    kv = cli.json("size", "--model", "deepseek-v3", "--seq", "1000", "--engine", "vllm", *flag)["kv"]
    assert kv["block_size"] == block
    assert kv["bytes_per_sequence"] == 61 * (512 + 64) * 2 * -(-1000 // block) * block


def test_unknown_attention_backend_is_bad_input(cli) -> None:
    result = cli("size", "--model", "deepseek-v3", "--seq", "8", "--engine", "vllm", "--attention-backend", "flashmla2")
    assert result.exit_code == 2 and "--attention-backend" in result.stderr


def test_a_blackwell_gpu_picks_cutlass_mla_blocks_of_128() -> None:
    from kvcalc import capacity, weights
    from kvcalc.presets import load_gpu

    model, gpu = load_model("deepseek-v3"), load_gpu("b200")
    work = Workload(seq=1000, tp=8, engine=Engine(name="vllm"))
    budget = capacity.budget(model, work, gpu.memory_bytes, weights.weight_format(model), None, None, gpu.name)
    assert budget.engine.attention_backend == "cutlass_mla"
    report = capacity.fit(model, work, budget)
    assert report.bytes_per_sequence_per_gpu == 61 * 1152 * 1024  # 8 blocks of 128 tokens


@given(st.sampled_from(sorted(MLA_BLOCK_MULTIPLE)), st.sampled_from([None, 16, 32, 64, 128, 256, 512]), st.booleans())
def test_mla_blocks_are_what_the_backend_pages_in(backend: str, requested: int | None, sparse: bool) -> None:
    block = mla_block_size(backend, sparse, requested)
    if sparse:
        assert block == 64
    elif requested and (requested % MLA_BLOCK_MULTIPLE[backend] == 0 or (backend == "flashinfer_mla" and requested == 32)):
        assert block == requested  # a block the kernel takes is kept
    else:
        assert block % MLA_BLOCK_MULTIPLE[backend] == 0 and block >= 16


def test_gemma4_ties_k_to_v_but_caches_both() -> None:
    # vLLM gemma4.py (001cabc1) loads K's weights into both K and V slots: the cache holds both
    model = imported("gemma4-31b")
    assert model.kv_heads_of("full") == 4 and model.key_dim_of("full") == model.value_dim_of("full") == 512
    full = next(g for g in estimate_kv(model, Workload(seq=8)).groups if g.kind == "full")
    assert full.bytes_per_token_per_layer == 2 * 4 * 512 * 2


def test_gemma4_without_k_eq_v_keeps_the_sliding_kv_heads_on_global_layers(tmp_path) -> None:
    config = json.loads((HF_CONFIGS / "gemma4-31b-config.json").read_text())
    config["text_config"]["attention_k_eq_v"] = False  # Gemma4TextConfig: num_global_key_value_heads only with k_eq_v
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert load_model(str(path)).kv_heads_of("full") == 16


def test_gemma4_last_layer_is_always_global(tmp_path) -> None:
    config = json.loads((HF_CONFIGS / "gemma4-31b-config.json").read_text())
    config["text_config"]["layer_types"] = ["sliding_attention"] * 60  # Gemma4TextConfig forces the last to full
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert load_model(str(path)).layer_kinds()[-1] == "full"


def test_kimi_k25_wrapper_reads_its_deepseek_v3_text_model(tmp_path) -> None:
    config = json.loads((HF_CONFIGS / "deepseek-v3-config.json").read_text())
    path = tmp_path / "config.json"
    tower = json.loads((HF_CONFIGS / "kimi-k2.5-config.json").read_text())["vision_config"]  # MoonViT, now counted
    path.write_text(json.dumps({"model_type": "kimi_k25", "text_config": config, "vision_config": tower}))
    model = load_model(str(path))
    assert estimate_kv(model, Workload(seq=8)).bytes_per_token == 61 * (512 + 64) * 2
    assert model.vision and model.vision.params == 471_143_920


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"linear_attn_config": {"kda_layers": [1], "full_attn_layers": [2], "num_heads": 32}}, "must number the 27 layers"),
        ({"linear_attn_config": None}, "linear_attn_config: missing"),
        ({"kv_lora_rank": "512"}, "kv_lora_rank: expected an integer"),
    ],
)
def test_bad_kimi_linear_configs_are_one_line(cli, tmp_path, edit: dict, message: str) -> None:
    config = {**json.loads((HF_CONFIGS / "kimi-linear-48b-a3b-config.json").read_text()), **edit}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = cli("size", "--model", path, "--seq", "8")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_minimax_m2_with_a_lightning_layer_is_refused(cli, tmp_path) -> None:
    config = json.loads((HF_CONFIGS / "minimax-m2-config.json").read_text())
    config["attn_type_list"][0] = 0
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = cli("size", "--model", path, "--seq", "8")
    assert result.exit_code == 2 and "attn_type_list: marks a model with recurrent layers" in result.stderr


@pytest.mark.parametrize(
    "quantization",
    [
        {"quant_method": "modelopt", "quant_algo": "NVFP4"},
        {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized"},
    ],
)
def test_nvfp4_checkpoints_weigh_9_bytes_per_16(tmp_path, quantization: dict) -> None:
    config = {**json.loads((HF_CONFIGS / "minimax-m2-config.json").read_text()), "quantization_config": quantization}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert load_model(str(path)).weight_dtype.value == "nvfp4"


@given(st.integers(1, 64), st.sampled_from([64, 128, 256, 512]))
def test_per_token_head_scales_are_one_fp32_per_head(heads: int, head_dim: int) -> None:
    from kvcalc.units import PACKING, DType

    for dtype in (DType.int8_per_token_head, DType.fp8_per_token_head):
        assert PACKING[dtype].row_bytes(heads * head_dim, heads) == heads * (head_dim + 4)


def test_qwen3_5_config_json_on_vllm_user_story(cli) -> None:
    # 16 full layers of 4 KV heads x 256 in bf16 = 4,096 B per token each; a GDN state of
    # 10,240 * 3 * 2 + 48*128*128 * 4 = 3,207,168 B raises the block to 16 * cdiv(3,207,168, 16 * 4,096) = 784
    doc = cli.json("size", "--model", HF_CONFIGS / "qwen3.5-27b-config.json", "--seq", "32768", "--engine", "vllm")
    kv = doc["kv"]
    assert kv["block_size"] == 784
    assert kv["state_bytes_per_sequence"] == 48 * 784 * 4096  # each state padded to one attention page
    assert kv["bytes_per_sequence"] == 16 * 4096 * -(-32768 // 784) * 784
