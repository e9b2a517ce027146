"""MTP layers a checkpoint stores beside the model's (num_nextn_predict_layers, mtp_num_hidden_layers):
counted on their own line, never in the weights an engine serves with, and the same figure the
--speculative-model mtp draft loads (one formula: kvcalc.weights.mtp_params)."""

from __future__ import annotations

import json

from kvcalc.presets import load_model
from kvcalc.weights import mtp_params, stored_mtp, weight_format

from .conftest import HF_CONFIGS

# DeepSeek-V3's MTP layer (config.json: hidden 7168, 128 heads, q_lora 1536, kv_lora 512, rope 64, nope 128,
# v 128, 256 routed experts of 2048 + 1 shared, num_nextn_predict_layers 1), a MoE decoder layer like layer 60:
H = 7168
MLA = H * 1536 + 1536 + 1536 * 128 * 192 + H * (512 + 64) + 512 + 512 * 128 * (128 + 128) + 128 * 128 * H
OWN = MLA + 2 * H + 3 * H * 2048 + H * 256  # + 2 norms, the shared expert, the router
ROUTED = 256 * 3 * H * 2048
DEEPSEEK_V3_MTP = OWN + ROUTED + 2 * H * H + 3 * H  # + eh_proj and enorm, hnorm, the shared head's norm


def test_deepseek_v3_mtp_layer_is_its_own_line(cli) -> None:
    doc = cli.json("size", "--model", "deepseek-v3", "--seq", "8k")
    mtp = doc["weights"]["mtp"]
    assert (mtp["layers"], mtp["params"]["total"]) == (1, DEEPSEEK_V3_MTP)
    assert mtp["bytes"] == DEEPSEEK_V3_MTP  # fp8: one byte per parameter
    assert doc["weights"]["params"]["total"] == 671_026_419_200  # the 61 layers' published count, MTP not in it
    assert "skip spec decode layers for main model" in mtp["source"]


def test_the_line_and_the_draft_read_one_formula(cli) -> None:
    """The stored MTP layers weigh what --speculative-model mtp loads, split over tp 8."""
    model = load_model("deepseek-v3")
    stored = stored_mtp(model, weight_format(model))
    assert stored is not None and stored.params == mtp_params(model)
    args = [
        "fit",
        "--model",
        "deepseek-v3",
        "--gpu",
        "h200",
        "--tp",
        "8",
        "--engine",
        "vllm",
        "--seq",
        "8k",
        "--speculative-model",
        "mtp",
    ]
    terms = cli.json(*args)["budget"]["terms"]
    (draft,) = [t for t in terms if t["name"] == "draft model weights (deepseek-v3 MTP)"]
    assert draft["bytes"] == -(-stored.bytes // 8)


def test_text_output_names_the_mtp_layers(cli) -> None:
    result = cli("size", "--model", "deepseek-v3", "--seq", "8k")
    assert result.exit_code == 0
    assert f"MTP layers: 1 stored in the checkpoint, not in the weights above: {DEEPSEEK_V3_MTP:,} params" in result.stdout


def test_a_model_without_mtp_layers_has_no_line(cli) -> None:
    assert cli.json("size", "--model", "llama3-8b", "--seq", "8k")["weights"]["mtp"] is None
    assert "MTP layers" not in cli("size", "--model", "llama3-8b", "--seq", "8k").stdout


# Qwen3.5-27B (config.json text_config: hidden 5120, 24 heads, 4 KV heads of 256, intermediate 17408,
# attn_output_gate true, mtp_num_hidden_layers 1): its MTP layer is a gated full-attention layer like its last.
# q_proj is 2 * 24 * 256 wide (query and gate halves: transformers modeling_qwen3_5.py Qwen3_5Attention; a
# published dump of the checkpoint reads layers.3.self_attn.q_proj.weight as (12288, 5120)).
QH = 5120
QWEN3_5_27B_ATTENTION = QH * 24 * 256 * 2 + 2 * QH * 4 * 256 + 24 * 256 * QH
QWEN3_5_27B_MTP = QWEN3_5_27B_ATTENTION + 2 * QH + 3 * QH * 17408 + 2 * QH * QH + 3 * QH


def test_qwen3_5_mtp_layer_from_config_json() -> None:
    """A hybrid whose MTP layer is a full-attention layer like its last is counted; config and preset agree."""
    config = load_model(str(HF_CONFIGS / "qwen3.5-27b-config.json"))
    preset = load_model("qwen3.5-27b")
    assert config.mtp_layers == preset.mtp_layers == 1
    assert config.attention_output_gate and preset.attention_output_gate
    params = mtp_params(config)
    assert params == mtp_params(preset) and params is not None
    assert params.total == QWEN3_5_27B_MTP == 424_698_880


def test_attn_output_gate_false_keeps_q_proj_single(tmp_path) -> None:
    config = json.loads((HF_CONFIGS / "qwen3.5-27b-config.json").read_text())
    config.setdefault("text_config", config)["attn_output_gate"] = False
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    params = mtp_params(load_model(str(path)))
    assert params is not None and params.total == QWEN3_5_27B_MTP - QH * 24 * 256


def test_a_stored_checkpoint_holds_its_mtp_layers_already() -> None:
    """Bytes read from a checkpoint's files include its MTP tensors: the line does not add them again."""
    config = json.loads((HF_CONFIGS / "deepseek-v3.2-config.json").read_text())
    model = load_model(str(HF_CONFIGS / "deepseek-v3.2-config.json"))
    assert config["num_nextn_predict_layers"] == model.mtp_layers == 1
    stored_fmt = weight_format(model).model_copy(
        update={"stored": {"bytes": 10**12, "params": 10**12}}  # any checkpoint read from its headers
    )
    stored = stored_mtp(model, stored_fmt)
    assert (
        stored is not None
        and stored.bytes is None
        and stored.formula == "in the stored bytes above where the checkpoint's files hold them"
    )
