"""Every shipped preset validates and agrees with the reference architectures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvcalc import ModelSpec, Workload, count_params, estimate_kv
from kvcalc.hf_config import model_fields_from_hf
from kvcalc.presets import list_presets, load_file, load_gpu, load_model, shipped_presets_dir

from .conftest import HF_CONFIGS

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "models.json"

REQUIRED_MODELS = {
    "llama2-7b", "gpt2", "llama3-8b", "llama3-70b", "llama3.1-405b", "llama3.2-1b", "mistral-7b", "qwen2.5-7b",
    "qwen2.5-72b", "qwen3-8b", "falcon-7b", "starcoder", "deepseek-v2-lite", "deepseek-v3", "mistral-7b-v0.1",
    "gemma2-9b", "gemma2-27b", "gemma3-27b", "gpt-oss-20b", "gpt-oss-120b", "mixtral-8x7b", "qwen3-30b-a3b",
}  # fmt: skip
REQUIRED_GPUS = {
    "h100-sxm",
    "h100-pcie",
    "h200",
    "a100-40gb",
    "a100-80gb",
    "l4",
    "l40s",
    "a10g",
    "t4",
    "rtx4090",
    "mi300x",
    "b200",
}


def test_required_presets_ship() -> None:
    assert REQUIRED_MODELS <= {e.name for e in list_presets("models")}
    assert REQUIRED_GPUS <= {e.name for e in list_presets("gpus")}


@pytest.mark.parametrize("entry", list_presets("models"), ids=lambda e: e.name)
def test_every_model_preset_validates_and_names_its_source(entry) -> None:
    model = load_file("models", entry.path)
    assert model.name == entry.path.stem and model.source
    assert estimate_kv(model, Workload(seq=4096)).bytes_per_sequence > 0
    assert count_params(model) is not None


@pytest.mark.parametrize("entry", list_presets("gpus"), ids=lambda e: e.name)
def test_every_gpu_preset_validates(entry) -> None:
    gpu = load_file("gpus", entry.path)
    assert gpu.name == entry.path.stem and gpu.source
    assert gpu.bf16_flops / gpu.bandwidth_bytes_per_s > 10  # a sane ridge point


@pytest.mark.skipif(not REFERENCE.is_file(), reason="shared/reference is not beside this checkout")
def test_presets_match_reference_kv_per_token() -> None:
    # shared/reference/models.json gives, per model, bf16 bytes per token with every layer full attention.
    checked = 0
    for ref in json.loads(REFERENCE.read_text()):
        per_token = ref.get("kv_bytes_per_token_bf16_all_layers_full")
        hf_id = ref["hf_id"].lower()
        match = [e for e in list_presets("models") if (load_model(e.name).source or "").lower().find(hf_id) >= 0]
        if not per_token or not match:
            continue
        model = load_model(match[0].name)
        full = model.model_copy(update={"sliding_window": None, "layer_pattern": None})
        assert estimate_kv(full, Workload(seq=1, kv_dtype="bf16")).bytes_per_token == per_token, model.name
        checked += 1
    assert checked >= 15


def test_shipped_dir_exists() -> None:
    assert (shipped_presets_dir() / "models" / "llama3-8b.yaml").is_file()


def test_hf_gemma2_pattern_and_head_dim() -> None:
    model = load_file("models", HF_CONFIGS / "gemma2-9b-config.json")
    assert model.head_dim == 256  # explicit, not hidden / heads = 224
    assert model.layer_kinds()[:4] == ["sliding", "full", "sliding", "full"]
    assert model.tied_embeddings and model.sliding_window == 4096


def test_hf_deepseek_v3_mla_latent() -> None:
    model = load_file("models", HF_CONFIGS / "deepseek-v3-config.json")
    assert estimate_kv(model, Workload(seq=1)).bytes_per_token == 61 * (512 + 64) * 2
    assert model.moe is not None and model.moe.dense_layers == 3


@pytest.mark.parametrize(
    "config, kv_heads, mlp",
    [
        (
            {
                "model_type": "falcon",
                "hidden_size": 4544,
                "num_attention_heads": 71,
                "num_hidden_layers": 32,
                "multi_query": True,
            },
            1,
            "plain",
        ),
        (
            {
                "model_type": "falcon",
                "hidden_size": 8192,
                "num_attention_heads": 128,
                "num_hidden_layers": 60,
                "new_decoder_architecture": True,
                "num_kv_heads": 8,
            },
            8,
            "plain",
        ),
        ({"model_type": "gpt_bigcode", "n_embd": 6144, "n_head": 48, "n_layer": 40, "multi_query": True}, 1, "plain"),
        ({"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12}, 12, "plain"),
        (
            {
                "model_type": "qwen2",
                "hidden_size": 3584,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "num_hidden_layers": 28,
                "sliding_window": 131072,
                "use_sliding_window": False,
            },
            4,
            "gated",
        ),
    ],
)
def test_hf_architectures(config: dict, kv_heads: int, mlp: str) -> None:
    fields = model_fields_from_hf(config, default_name="x", origin="config.json")
    assert fields["kv_heads"] == kv_heads and fields["mlp"] == mlp
    assert "sliding_window" not in fields  # qwen2's window is off; the others have none


def test_unknown_gpu_suggests(cli) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", "h100", "--seq", "8192")
    assert result.exit_code == 2
    assert "unknown GPU 'h100'; did you mean" in result.stderr and "h100-sxm" in result.stderr
    assert load_gpu("h100-sxm").name == "h100-sxm"


def test_phi3_preset_and_its_config_json_agree(cli) -> None:
    """Phi-3-mini-4k's config has sliding_window 2047 and no layer_types: every layer slides, read either way."""
    by_preset = cli.json("size", "--model", "phi3-mini-4k", "--seq", "4096")["kv"]["bytes_per_sequence"]
    by_config = cli.json("size", "--model", HF_CONFIGS / "phi3-mini-4k-config.json", "--seq", "4096")["kv"]
    assert by_preset == by_config["bytes_per_sequence"] == 2047 * 32 * 2 * 32 * 96 * 2


@pytest.mark.parametrize(
    "quantization, expected",
    [
        ({"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}, ("fp8_block", None)),
        ({"quant_method": "fp8", "fmt": "e4m3"}, ("fp8", None)),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, ("int4", None)),
        ({"quant_method": "awq", "bits": 8, "group_size": 128}, ("int8", None)),
        ({"quant_method": "bitsandbytes"}, ("int4", None)),  # vLLM's default: load_in_4bit
    ],
)
def test_config_quantization_sets_the_weights_format(quantization: dict, expected: tuple) -> None:
    config = json.loads((HF_CONFIGS / "llama3-8b-config.json").read_text())
    fields = model_fields_from_hf({**config, "quantization_config": quantization}, "x", "config.json")
    assert (fields.get("weight_dtype"), fields.get("moe")) == expected


def test_gpt_oss_config_has_mxfp4_experts() -> None:
    config = {
        "model_type": "gpt_oss", "num_hidden_layers": 24, "num_attention_heads": 64, "num_key_value_heads": 8,
        "head_dim": 64, "hidden_size": 2880, "intermediate_size": 2880, "vocab_size": 201088, "num_local_experts": 32,
        "num_experts_per_tok": 4, "sliding_window": 128, "max_position_embeddings": 131072,
        "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]},
    }  # fmt: skip
    spec = ModelSpec(**model_fields_from_hf(config, "gpt-oss-20b", "config.json"))
    assert spec.moe is not None and spec.moe.expert_dtype == "mxfp4" and spec.weight_dtype is None


# Golden KV figures for new presets, each computed by hand from its published config.json (bf16, 2 B per element).
@pytest.mark.parametrize(
    "preset, seq, expected",
    [
        # https://huggingface.co/Qwen/Qwen3-14B/blob/main/config.json: 40 layers, 8 KV heads, head_dim 128 (K and V).
        ("qwen3-14b", 1, 2 * 40 * 8 * 128 * 2),
        # https://huggingface.co/Qwen/Qwen3-235B-A22B/blob/main/config.json: 94 layers, 4 KV heads, head_dim 128.
        ("qwen3-235b-a22b", 1, 2 * 94 * 4 * 128 * 2),
        # https://huggingface.co/zai-org/GLM-4.5/blob/main/config.json: 92 layers, 8 KV heads, head_dim 128
        # (explicit: 96 heads x 128 = 12288 is not hidden 5120).
        ("glm-4.5", 1, 2 * 92 * 8 * 128 * 2),
        # https://huggingface.co/moonshotai/Kimi-K2-Instruct/blob/main/config.json: MLA caches one latent per token
        # per layer, kv_lora_rank 512 + qk_rope_head_dim 64, over 61 layers (not 64 heads of K and V).
        ("kimi-k2", 1, 61 * (512 + 64) * 2),
        # https://huggingface.co/google/gemma-3-12b-it/blob/main/config.json (text_config): 48 layers, 8 KV heads,
        # head_dim 256, sliding_window 1024, every 6th layer global: at 8192 tokens 40 sliding layers hold 1024
        # tokens and 8 full layers hold all 8192.
        ("gemma3-12b", 8192, (40 * 1024 + 8 * 8192) * 2 * 8 * 256 * 2),
    ],
)
def test_new_preset_kv_from_its_config(preset: str, seq: int, expected: int) -> None:
    assert estimate_kv(load_model(preset), Workload(seq=seq)).bytes_per_sequence == expected


@pytest.mark.parametrize(
    "preset, published",
    [
        ("llama3.1-8b", 8_030_261_248),  # keras-hub llama3.1_8b; no biases or extra norms, so the shapes match
        ("mistral-small-3.1", 23_572_403_200),  # keras-hub magistral_small_2506_en (the same text decoder)
    ],
)
def test_new_preset_shapes_give_the_published_count(preset: str, published: int) -> None:
    model = load_model(preset)
    assert model.params == published
    assert count_params(model.model_copy(update={"params": None})).total == published


# transformers' class defaults for keys a config.json leaves out (configuration_mistral.py, _qwen3.py,
# _gemma2.py, _gpt_oss.py): what an engine that loads the config builds, so what kvcalc counts.
@pytest.mark.parametrize(
    "model_type, absent, expected",
    [
        ("mistral", {}, {"kv_heads": 8, "sliding_window": 4096}),
        ("llama", {}, {"kv_heads": 32, "head_dim": 128}),
        ("qwen3", {"num_key_value_heads": 8}, {"head_dim": 128}),
        ("gemma2", {"num_key_value_heads": 8}, {"head_dim": 256, "sliding_window": 4096, "layer_pattern": ["sliding", "full"]}),
        ("gpt_oss", {"num_key_value_heads": 8}, {"head_dim": 64, "sliding_window": 128}),
    ],
)
def test_config_keys_left_out_take_transformers_defaults(model_type: str, absent: dict, expected: dict) -> None:
    config = {"model_type": model_type, "num_attention_heads": 32, "hidden_size": 4096, "num_hidden_layers": 4, **absent}
    fields = model_fields_from_hf(config, "x", "config.json")
    assert {key: fields.get(key) for key in expected} == expected


def test_config_dtype_key_wins_over_torch_dtype() -> None:
    """PreTrainedConfig: "If both are provided, keep `dtype`"; every torch spelling is read."""
    config = json.loads((HF_CONFIGS / "llama3-8b-config.json").read_text())
    assert model_fields_from_hf({**config, "torch_dtype": "float32", "dtype": "float16"}, "x", "c")["dtype"] == "fp16"
    assert model_fields_from_hf({**config, "torch_dtype": "float8_e4m3fn"}, "x", "c")["dtype"] == "fp8_e4m3"


def test_config_layer_types_spell_each_layer() -> None:
    config = {
        "model_type": "gemma3_text", "num_attention_heads": 8, "num_key_value_heads": 4, "hidden_size": 512,
        "num_hidden_layers": 3, "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    }  # fmt: skip
    fields = model_fields_from_hf(config, "x", "config.json")
    assert fields["layer_pattern"] == ["sliding", "full", "sliding"] and fields["sliding_window"] == 16
    all_full = model_fields_from_hf({**config, "layer_types": ["full_attention"] * 3}, "x", "config.json")
    assert "layer_pattern" not in all_full and "sliding_window" not in all_full


def test_presets_list_shows_each_models_shape_and_figures(cli) -> None:
    listed = cli.json("presets", "list")
    models = {m["name"]: m for m in listed["models"]}
    # llama3-8b: 32 layers x 8 KV heads x (128 + 128) values x 2 B = 131,072 B per token (test_golden);
    # params as published (keras-hub llama3_8b_en)
    llama = models["llama3-8b"]
    assert (llama["layers"], llama["kv_heads"], llama["head_dim"], llama["attention"]) == (32, 8, 128, ["full"])
    assert (llama["max_positions"], llama["params"], llama["kv_bytes_per_token"]) == (8192, 8_030_261_248, 131_072)
    # gemma2-9b: 42 layers alternate sliding (W 4,096) and full; 42 x 8 x (256 + 256) x 2 B per token
    gemma = models["gemma2-9b"]
    assert (gemma["attention"], gemma["sliding_window"], gemma["kv_bytes_per_token"]) == (["sliding", "full"], 4096, 344_064)
    # deepseek-v3: one MLA latent of 512 + 64 rope values per layer: 61 x 576 x 2 B; K heads 192 wide, V 128
    deepseek = models["deepseek-v3"]
    assert (deepseek["attention"], deepseek["kv_bytes_per_token"]) == (["mla"], 61 * 576 * 2)
    assert (deepseek["head_dim"], deepseek["v_head_dim"]) == (192, 128)
    # a hybrid lists its state layers and their state per sequence; a chunked model its chunk
    jamba = models["jamba-1.5-mini"]
    state = estimate_kv(load_model("jamba-1.5-mini"), Workload(seq=1)).state_bytes_per_sequence
    assert (jamba["attention"], jamba["state"], jamba["state_bytes_per_sequence"]) == (["full"], ["mamba1"], state) and state
    scout = models["llama4-scout"]
    assert (scout["attention"], scout["attention_chunk_size"], scout["state_bytes_per_sequence"]) == (
        ["chunked", "full"],
        8192,
        0,
    )
    h100 = {g["name"]: g for g in listed["gpus"]}["h100-sxm"]
    assert (h100["memory_bytes"], h100["bandwidth_bytes_per_s"]) == (85_520_809_984, 3_350_000_000_000)
    assert all(m["kv_bytes_per_token"] and m["attention"] for m in listed["models"])


def test_presets_list_table_has_the_figures(cli) -> None:
    table = cli("presets", "list").stdout
    llama = next(line for line in table.splitlines() if line.startswith("│ llama3-8b "))
    assert [cell.strip() for cell in llama.split("│")[1:-1]] == [
        "llama3-8b", "32", "8", "128", "full", "8,192", "8.03B", "128.00 KiB", "-", "shipped",
    ]  # fmt: skip
    assert "full + mamba1" in table and "chunked 8,192 + full" in table
    deepseek = next(line for line in table.splitlines() if line.startswith("│ deepseek-v3 "))
    assert [cell.strip() for cell in deepseek.split("│")[3:6]] == ["latent", "192/128", "mla"]
    assert "sliding 4,096 + full" in table
    h100 = next(line for line in table.splitlines() if line.startswith("│ h100-sxm "))
    assert "79.65 GiB" in h100 and "3.35 TB/s" in h100


def test_presets_show_lists_every_field_with_its_source(cli, tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text("layers: 2\nheads: 4\nkv_heads: 2\nhidden: 256\nmax_positions: 4096\n")
    shown = cli.json("presets", "show", tmp_path / "tiny.yaml")
    assert list(shown["sources"]) == list(ModelSpec.model_fields) == list(shown["spec"])
    assert shown["path"] == str(tmp_path / "tiny.yaml")
    sources = shown["sources"]
    assert (sources["layers"], sources["max_positions"]) == ("file", "file")
    assert (sources["name"], sources["head_dim"]) == ("derived: the file's name", "derived: hidden / heads")
    assert (sources["dtype"], sources["mlp"], sources["sliding_window"], sources["mla"]) == ("default",) * 2 + ("not given",) * 2
    assert shown["spec"]["head_dim"] == 64
    table = cli("presets", "show", tmp_path / "tiny.yaml").stdout
    assert any(
        line.split() == ["│", "head_dim", "│", "derived:", "hidden", "/", "heads", "│", "64", "│"] for line in table.splitlines()
    )
    assert any(line.split() == ["│", "sliding_window", "│", "not", "given", "│", "-", "│"] for line in table.splitlines())


def test_presets_show_names_the_file_of_a_preset_and_a_gpu(cli) -> None:
    shown = cli.json("presets", "show", "gemma2-9b")
    assert Path(shown["path"]) == shipped_presets_dir() / "models" / "gemma2-9b.yaml"
    assert shown["sources"]["sliding_window"] == "file" and shown["sources"]["mlp"] == "default"
    gpu = cli.json("presets", "show", "h100-sxm")
    assert Path(gpu["path"]) == shipped_presets_dir() / "gpus" / "h100-sxm.yaml"
    assert list(gpu["sources"]) == list(gpu["spec"]) and gpu["sources"]["backend"] == "default"
    by_device_name = cli.json("presets", "show", "NVIDIA H100 80GB HBM3")  # no file named: the alias found it
    assert by_device_name["spec"] == gpu["spec"] and by_device_name["path"] is None
    assert by_device_name["sources"]["memory_bytes"] == "given"


def test_presets_show_without_a_name_lists_the_names(cli) -> None:
    # issue 23 item 13: `presets show` alone was Typer's "Missing argument"
    result = cli("presets", "show")
    assert result.exit_code == 0
    models, gpus = result.stdout.splitlines()[:2]
    assert models.startswith("models (") and "llama3-8b" in models.split(": ", 1)[1].split(", ")
    assert gpus.startswith("GPUs (") and "h100-sxm" in gpus
    refused = cli("presets", "show", "--json")
    assert refused.exit_code == 2 and "give a preset name" in refused.stderr
