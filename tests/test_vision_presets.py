"""The shipped vision-language presets carry their vision tower (issue 22): each tower's parameters
against the checkpoint's published total where one exists, worked by hand from the modeling file
otherwise; `fit --engine vllm` shows the tower and vLLM's multimodal profiling, which
`--language-model-only` removes; `decode` never reads the tower per token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kvcalc import presets, residents
from kvcalc.cli import app
from kvcalc.weights import count_params

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "presets" / "models"
VL_PRESETS = sorted(p.stem for p in SHIPPED.glob("*.yaml") if "vision" in yaml.safe_load(p.read_text(encoding="utf-8")))
runner = CliRunner()


def test_the_vl_presets_that_carry_a_tower() -> None:
    assert VL_PRESETS == sorted(
        [
            *(f"qwen3-vl-{size}" for size in ("2b", "4b", "8b", "32b", "30b-a3b", "235b-a22b")),
            *("qwen3.5-27b", "qwen3.5-35b-a3b", "qwen3.5-397b-a17b", "qwen3.6-27b", "qwen3.6-35b-a3b"),
            *("gemma3-4b", "gemma3-12b", "gemma3-27b", "gemma4-31b", "gemma4-26b-a4b"),
            *("mistral-small-3.1", "ministral-3-3b", "llama4-scout", "kimi-k2.5"),
        ]
    )


# The checkpoint's parameter count as the Hugging Face API publishes it (safetensors.total: every tensor,
# the tower's included), read from third-party copies of it: the text decoder as kvcalc counts it from the
# preset's shapes, plus the tower, must make it up exactly. Qwen3's q_norm and k_norm (head_dim each, per
# layer) are the only weights the shape count leaves out.
PUBLISHED_TOTALS = [
    ("qwen3-vl-2b", 2_127_532_032, "https://huggingface.co/api/models/Qwen/Qwen3-VL-2B-Instruct"),
    ("qwen3-vl-4b", 4_437_815_808, "https://huggingface.co/api/models/Qwen/Qwen3-VL-4B-Instruct"),
    ("qwen3-vl-8b", 8_767_123_696, "https://huggingface.co/api/models/Qwen/Qwen3-VL-8B-Instruct"),  # bf16 index 17,534,247,392 B
    ("qwen3-vl-30b-a3b", 31_070_754_032, "https://huggingface.co/api/models/Qwen/Qwen3-VL-30B-A3B-Instruct"),
    ("qwen3-vl-235b-a22b", 235_670_022_896, "https://huggingface.co/api/models/Qwen/Qwen3-VL-235B-A22B-Instruct"),
    ("ministral-3-3b", 3_849_090_048, "https://huggingface.co/api/models/mistralai/Ministral-3-3B-Instruct-2512"),
    ("llama4-scout", 108_641_793_536, "https://huggingface.co/api/models/meta-llama/Llama-4-Scout-17B-16E-Instruct"),
]


@pytest.mark.parametrize(("preset", "total", "url"), PUBLISHED_TOTALS, ids=[case[0] for case in PUBLISHED_TOTALS])
def test_text_decoder_and_tower_make_the_published_total(preset: str, total: int, url: str) -> None:
    model = presets.load_model(preset)
    assert model.vision and url.startswith("https://huggingface.co/api/models/")
    shapes = count_params(model.model_copy(update={"params": None, "active_params": None}))
    assert shapes and shapes.from_shapes
    qk_norms = 2 * model.head_dim * model.layers if preset.startswith("qwen3-vl") else 0
    assert shapes.total + qk_norms + model.vision.params == total
    assert model.params in (None, shapes.total)  # llama4-scout's params is that shape count, written out


# keras-hub's presets (keras_hub/src/models/gemma3/gemma3_presets.py, keras_hub/src/models/mistral3/mistral3_presets.py
# @c274763d): the -it checkpoint with its tower, and the text model alone (gemma3: vocab 262144, 64 rows short of the
# checkpoint's 262208).
@pytest.mark.parametrize(
    ("preset", "with_tower", "text_model"),
    [
        ("gemma3-4b", 4_299_915_632, 3_880_099_328),
        ("gemma3-12b", 12_187_079_280, 11_765_788_416),
        ("gemma3-27b", 27_432_062_576, 27_009_002_240),
        ("mistral-small-3.1", 24_011_361_280, 23_572_403_200),  # text model: magistral_small_2506_en, the same decoder
    ],
)
def test_the_tower_is_counted_once_beside_the_text_decoder(preset: str, with_tower: int, text_model: int) -> None:
    model = presets.load_model(preset)
    assert model.vision and model.params is not None
    assert model.vision.params == with_tower - text_model
    assert model.params == text_model + (model.vocab - 262_144 if preset.startswith("gemma3") else 0) * model.hidden


def test_qwen3_5_tower_worked_by_hand() -> None:
    # modeling_qwen3_5.py Qwen3_5VisionModel at Qwen3.5-27B's vision_config (depth 27, h 1152, I 4304, out 5120,
    # patch 16, temporal 2, 2304 positions): Conv3d with bias, the position table; per block two LayerNorms, qkv,
    # proj, fc1, fc2 with biases; the merger's LayerNorm(h) and its 4h -> 4h -> out linears; no DeepStack mergers.
    h, inter, wide, out = 1152, 4304, 4 * 1152, 5120
    patch = 3 * 2 * 16 * 16 * h + h
    block = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * inter + inter) + (inter * h + h)
    merger = 2 * h + (wide * wide + wide) + (wide * out + out)
    tower = presets.load_model("qwen3.5-27b").vision
    assert tower and tower.params == patch + 2304 * h + 27 * block + merger == 460_730_096
    qwen3_6 = presets.load_model("qwen3.6-27b").vision  # Qwen3.6-27B keeps Qwen3.5-27B's tower
    assert qwen3_6 and qwen3_6.model_dump(exclude={"source"}) == tower.model_dump(exclude={"source"})


def test_llama4_tower_worked_by_hand() -> None:
    # modeling_llama4.py at Llama-4-Scout's vision_config (h 1408, I 5632, 34 layers, 336 px, patch 14): class
    # embedding, 577 position rows, the unfold patch linear (588 -> h, no bias), pre and post LayerNorms; per layer
    # q, k, v, o and fc1, fc2 with biases, two LayerNorms; the adapter's fc1 (I -> 4096) and fc2 (4096 -> 4096) and
    # the projector (4096 -> text hidden 5120), no biases.
    h, inter = 1408, 5632
    layer = 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 2 * 2 * h
    modules = h + 577 * h + 588 * h + 2 * 2 * h + 34 * layer + inter * 4096 + 4096 * 4096 + 4096 * 5120
    tower = presets.load_model("llama4-scout").vision
    assert tower and tower.params == modules == 871_932_416


def test_gemma4_tower_worked_by_hand() -> None:
    # modeling_gemma4.py at Gemma 4 31B's vision_config (h 1152, I 4304, 27 layers, 16 heads and KV heads of 72,
    # patch 16, 10240 positions, standardize): the patch linear 3 * 16^2 -> h and the (2, 10240, h) position table;
    # per layer q, k, v, o (no biases), q and k norms of 72, four RMSNorms of h, gate, up and down (no biases); the
    # stored std_bias and std_scale; the embedder's h -> 5376 projection. 280 soft tokens of 3 x 3 patches each.
    h, inter = 1152, 4304
    layer = 4 * h * 16 * 72 + 2 * 72 + 4 * h + 3 * h * inter
    tower = presets.load_model("gemma4-31b").vision
    assert tower and tower.params == 3 * 16 * 16 * h + 2 * 10240 * h + 27 * layer + 2 * h + h * 5376 == 575_743_536
    assert (tower.patches_per_item, tower.tokens_per_item) == (280 * 9, 280)


def test_kimi_k25_moonvit_worked_by_hand() -> None:
    # vLLM kimi_k25_vit.py at Kimi-K2.5's vision_config (h 1152, I 4304, 27 layers, patch 14, a 64 x 64 position
    # table, 2 x 2 merge, text hidden 7168): Conv2d with bias, the table; per layer two LayerNorms, wqkv, wo, fc0, fc1
    # with biases; the final LayerNorm; the projector's LayerNorm(h), linear_1 (4h -> 4h) and linear_2 (4h -> 7168).
    h, inter, wide = 1152, 4304, 4 * 1152
    layer = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * inter + inter) + (inter * h + h)
    projector = 2 * h + (wide * wide + wide) + (wide * 7168 + 7168)
    tower = presets.load_model("kimi-k2.5").vision
    assert tower and tower.params == (3 * 14 * 14 * h + h) + 64 * 64 * h + 27 * layer + 2 * h + projector == 471_143_920
    assert tower.patches_per_item is None and "not modelled" in tower.source  # its processor's largest image is not read


@pytest.mark.parametrize("preset", VL_PRESETS)
def test_every_tower_names_its_config_and_modeling_file(preset: str) -> None:
    tower = presets.load_model(preset).vision
    assert tower and tower.hidden and tower.intermediate and "config.json" in tower.source
    assert ("modeling_" in tower.source and tower.patches_per_item and tower.tokens_per_item) or (
        "kimi_k25_vit.py" in tower.source and "profiling is not modelled" in tower.source
    )


def _fit(*extra: str) -> CliRunner:
    return runner.invoke(app, ["fit", "--model", "qwen3-vl-8b", "--gpu", "h100-sxm", "--engine", "vllm", *extra])


def test_fit_of_a_shipped_vl_preset_shows_the_tower_and_its_profiling() -> None:
    explained = _fit("--explain")
    assert explained.exit_code == 0, explained.output
    assert "vision tower weights = params * b = 576,388,336 * 2 = 1,152,776,672 B" in explained.stdout
    assert "multimodal profiling = max(encoder outputs, encoder peak - LM activation peak)" in explained.stdout
    assert "modeling_qwen3_vl.py" in explained.stdout
    budget = json.loads(_fit("--json").stdout)["budget"]
    terms = {term["name"]: term["bytes"] for term in budget["terms"]}
    assert budget["vision_bytes"] == terms[residents.VISION_TERM] == 576_388_336 * 2
    assert terms[residents.MM_PROFILE_TERM] > 0

    text = _fit("--language-model-only", "--json")
    assert text.exit_code == 0, text.output
    text_budget = json.loads(text.stdout)["budget"]
    assert text_budget["vision_bytes"] == 0
    assert not {residents.VISION_TERM, residents.MM_PROFILE_TERM} & {term["name"] for term in text_budget["terms"]}
    assert text_budget["usable_bytes"] == budget["usable_bytes"] + terms[residents.VISION_TERM] + terms[residents.MM_PROFILE_TERM]
    assert "vision tower weights =" not in _fit("--language-model-only", "--explain").stdout


@pytest.mark.parametrize("preset", VL_PRESETS)
def test_decode_never_reads_the_tower(preset: str, tmp_path: Path) -> None:
    spec = yaml.safe_load((SHIPPED / f"{preset}.yaml").read_text(encoding="utf-8"))
    del spec["vision"]
    text_only = tmp_path / f"{preset}.yaml"
    text_only.write_text(yaml.safe_dump(spec), encoding="utf-8")

    def read(model: str) -> int:
        result = runner.invoke(app, ["decode", "--model", model, "--gpu", "h200", "--tp", "8", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["decode"]["weights_read_bytes"]

    assert read(preset) == read(str(text_only))
