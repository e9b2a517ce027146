"""Vision towers (kvcalc.vision) and what they take in a serving budget (kvcalc.residents): the
tower's weights from vision_config, vLLM's multimodal profiling run, the options that remove them,
and the published vision-model start-ups of tests/fixtures/engine_logs/vision.yaml replayed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from kvcalc import presets, residents, vision
from kvcalc.cli import app
from kvcalc.errors import InvalidPreset
from kvcalc.hf_config import model_fields_from_hf
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "tests" / "fixtures" / "engine_logs"
calibration = load_script("scripts/calibration.py")
CASES = yaml.safe_load((LOGS / "vision.yaml").read_text(encoding="utf-8"))
runner = CliRunner()
MISTRAL_SMALL = "mistral-small-3.1"  # the shipped preset, which carries its Pixtral tower

SIGLIP = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "image_size": 896, "patch_size": 14}


@pytest.mark.parametrize(
    ("text_hidden", "tower_params"),
    [
        # keras-hub's Gemma 3 checkpoints, as the gemma3-* presets' notes record them: the -it model less its
        # text decoder (both at vocab 262144) is the SigLIP tower and its projector.
        (2560, 4_299_915_632 - 3_880_099_328),  # gemma3_4b - gemma3_4b_text
        (3840, 12_187_079_280 - 11_765_788_416),  # gemma3_12b - gemma3_12b_text
        (5376, 27_432_062_576 - 27_009_002_240),  # gemma3_27b - gemma3_27b_text (27,009,002,240)
    ],
)
def test_gemma3_tower_is_the_checkpoint_less_its_text_decoder(text_hidden: int, tower_params: int) -> None:
    config = {"model_type": "gemma3", "vision_config": SIGLIP, "text_config": {"hidden_size": text_hidden}}
    assert vision.siglip_gemma3(SIGLIP, config)["params"] == tower_params


def test_qwen2_5_vl_tower_counts_every_module() -> None:
    # Hand-worked from modeling_qwen2_5_vl.py at Qwen2.5-VL-7B's vision_config (h 1280, I 3420, 32 blocks,
    # out 3584): patch 3*2*14*14*h; block 2h + (3h^2 + 3h) + (h^2 + h) + 2(hI + I) + (Ih + h); merger
    # h + (16h^2 + 4h) + (4h * 3584 + 3584).
    h, inter = 1280, 3420
    block = 2 * h + 3 * h * h + 3 * h + h * h + h + 2 * (h * inter + inter) + inter * h + h
    merger = h + 16 * h * h + 4 * h + 4 * h * 3584 + 3584
    expected = 3 * 2 * 14 * 14 * h + 32 * block + merger
    found = vision.qwen2_5_vl({"depth": 32, "hidden_size": h, "intermediate_size": inter, "out_hidden_size": 3584}, {})
    assert found["params"] == expected == 676_550_144
    assert (found["patches_per_item"], found["tokens_per_item"]) == (65_536, 16_384)  # the 16384 image tokens vLLM logs


def test_qwen3_5_drops_qwen3_vl_deepstack_mergers() -> None:
    tower = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "out_hidden_size": 4096}
    with_stack, without = vision.qwen3_vl(tower, {}), vision.qwen3_vl(tower, {}, deepstack=False)
    wide = 4 * 1152
    merger = 2 * wide + wide * wide + wide + wide * 4096 + 4096  # LayerNorm(4h) + fc1 + fc2, per DeepStack index
    assert with_stack["params"] - without["params"] == 3 * merger


def test_a_config_json_carries_its_tower() -> None:
    config = json.loads((ROOT / "tests" / "fixtures" / "hf" / "qwen3.5-397b-a17b-config.json").read_text())
    fields = model_fields_from_hf(config, "x", "config.json")
    assert fields["vision"]["params"] == vision.qwen3_vl(config["vision_config"], config, deepstack=False)["params"]
    assert "modeling_qwen3_5.py" in fields["vision"]["source"]


def test_a_llava_next_tower_other_than_siglip_is_noted_not_guessed() -> None:
    config = {
        "model_type": "llava_next", "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024},
        "text_config": {"model_type": "llama", "num_attention_heads": 8, "num_hidden_layers": 2, "hidden_size": 512},
    }  # fmt: skip
    fields = model_fields_from_hf(config, "x", "config.json")
    assert "vision" not in fields and "llava_next with a clip_vision_model vision_config) is not counted" in fields["notes"]


LLAVA_SIGLIP = {
    "model_type": "llava_next",
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                      "num_hidden_layers": 27, "image_size": 384},
    "text_config": {"model_type": "llama", "num_attention_heads": 8, "num_hidden_layers": 2, "hidden_size": 512,
                    "num_key_value_heads": 8, "intermediate_size": 1024, "vocab_size": 1000},
    "image_grid_pinpoints": [[384, 768]],
}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vision_feature_layer": [-30]}, "vision_feature_layer: expected layer indices of the tower's 27, got [-30]"),
        ({"image_grid_pinpoints": [[100, 768]]}, "image_grid_pinpoints: expected [height, width] pairs of at least 384 px"),
        # present but invalid: refused, not read as true (bool("no")) or as 'full'
        ({"multimodal_projector_bias": "no"}, "multimodal_projector_bias: expected true or false, got 'no'"),
        (
            {"vision_feature_select_strategy": "bogus"},
            "vision_feature_select_strategy: expected 'default' or 'full', got 'bogus'",
        ),
        ({"vision_feature_select_strategy": None}, "vision_feature_select_strategy: expected 'default' or 'full', got None"),
    ],
)
def test_a_bad_llava_next_config_exits_2(tmp_path: Path, change: dict, message: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**LLAVA_SIGLIP, **change}))
    result = runner.invoke(app, ["size", "--model", str(config), "--seq", "1024"])
    assert result.exit_code == 2 and message in result.stderr


def test_a_llava_next_siglip_config_carries_its_tower(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**LLAVA_SIGLIP, "vision_feature_layer": [-24, -1]}))
    model = presets.load_model(str(config))
    assert model.vision and model.vision.params == vision.llava_next(LLAVA_SIGLIP["vision_config"], {
        **LLAVA_SIGLIP, "vision_feature_layer": [-24, -1]})["params"]  # fmt: skip


def test_llava_next_defaults_apply_only_to_absent_keys() -> None:
    # transformers' LlavaNextConfig: multimodal_projector_bias True, vision_feature_select_strategy 'default' (one
    # row fewer in the base tile than 'full')
    vision_config, config = (
        LLAVA_SIGLIP["vision_config"],
        {"text_config": {"hidden_size": 512}, "image_grid_pinpoints": [[384, 768]]},
    )
    absent = vision.llava_next(vision_config, config)
    assert absent == vision.llava_next(
        vision_config, {**config, "multimodal_projector_bias": True, "vision_feature_select_strategy": "default"}
    )
    no_bias = vision.llava_next(vision_config, {**config, "multimodal_projector_bias": False})
    assert absent["params"] - no_bias["params"] == 512 + 512  # the two projector linears' biases
    full = vision.llava_next(vision_config, {**config, "vision_feature_select_strategy": "full"})
    assert full["tokens_per_item"] == absent["tokens_per_item"] + 1


def test_a_granite_vision_config_names_its_unsupported_text_model(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**LLAVA_SIGLIP, "text_config": {**LLAVA_SIGLIP["text_config"], "model_type": "granite"}}))
    result = runner.invoke(app, ["size", "--model", str(config), "--seq", "1024"])
    assert result.exit_code == 2
    assert (
        "model_type 'llava_next' wraps a text model of model_type 'granite' (text_config), which is not supported"
        in result.stderr
    )


def test_a_llama32_vision_config_is_refused_for_its_cross_attention(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    text = {"model_type": "mllama_text_model", "num_attention_heads": 32, "num_hidden_layers": 40, "hidden_size": 4096,
            "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38]}  # fmt: skip
    config.write_text(json.dumps({"model_type": "mllama", "text_config": text, "vision_config": {"hidden_size": 1280}}))
    result = runner.invoke(app, ["size", "--model", str(config), "--seq", "1024"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert (
        "model_type 'mllama': its text model's cross-attention layers, whose KV holds the image's encoder tokens, are not modelled"
        in result.stderr
    )


KIMI_VL_VISION = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27}  # Kimi-VL-A3B-Instruct


def test_kimi_vl_refuses_a_patch_wider_than_its_dummy_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidPreset, match=r"patch_size 2000 x merge_kernel_size \[2, 2\]: wider than the 1024-px image"):
        vision.kimi_vl({**KIMI_VL_VISION, "patch_size": 2000}, {"text_config": {"hidden_size": 2048}})
    # the widest accepted: 512 x 2 = 1024 px, one token of 2 x 2 patches
    found = vision.kimi_vl({**KIMI_VL_VISION, "patch_size": 512}, {"text_config": {"hidden_size": 2048}})
    assert (found["tokens_per_item"], found["patches_per_item"]) == (1, 4)


def test_kimi_vl_reads_in_token_limit_from_its_config() -> None:
    # KimiVLImageProcessor.rescale: (1024 // 14)^2 = 5,329 patches > the limit, so the side shrinks by sqrt(limit / 5,329)
    config = {"text_config": {"hidden_size": 2048}}
    assert vision.kimi_vl(KIMI_VL_VISION, config)["tokens_per_item"] == 1089  # 4096 by default: 896 px, 33 x 33 tokens
    smaller = vision.kimi_vl({**KIMI_VL_VISION, "in_token_limit": 1024}, config)
    side = int(1024 * (1024 / 5329) ** 0.5)  # 448 px
    assert smaller["tokens_per_item"] == (-(-side // 28)) ** 2 == 256 and "in_token_limit 1,024 patches" in smaller["source"]


def test_a_non_boolean_encoder_decoder_exits_2(tmp_path: Path) -> None:
    text = LLAMA32_VISION.read_text().replace("encoder_decoder: true", "encoder_decoder: sometimes")
    bad = tmp_path / "mllama.yaml"
    bad.write_text(text)
    result = runner.invoke(app, ["size", "--model", str(bad), "--seq", "1024"])
    assert result.exit_code == 2 and "encoder_decoder" in result.stderr


def test_an_unknown_tower_is_noted_not_guessed() -> None:
    config = {
        "model_type": "llava_next", "vision_config": {"hidden_size": 1024},
        "text_config": {"model_type": "llama", "num_attention_heads": 8, "num_hidden_layers": 2, "hidden_size": 512},
    }  # fmt: skip
    fields = model_fields_from_hf(config, "x", "config.json")
    assert "vision" not in fields and "is not counted" in fields["notes"]


def test_a_tower_field_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(InvalidPreset, match="vision_config.depth: expected a positive integer"):
        vision.tower(
            {"model_type": "qwen2_5_vl", "vision_config": {"hidden_size": 1280, "intermediate_size": 3420, "depth": "32"}},
            "config.json",
        )


@given(items=st.integers(min_value=1, max_value=4), tokens=st.integers(min_value=256, max_value=65_536))
def test_a_tower_adds_its_weights_and_never_frees_memory(items: int, tokens: int) -> None:
    # Whatever the budget, a tower and its profiling only take memory: the term is at least the encoder outputs.
    model, work, budget = _vllm_budget(tokens)
    settings = residents.Multimodal(limits={"image": items})
    terms = residents.multimodal_terms(model, work, budget, settings)
    assert [t.name for t in terms] == [residents.VISION_TERM, residents.MM_PROFILE_TERM]
    assert all(t.bytes > 0 for t in terms)
    after = residents.with_residents(budget, terms)
    assert after.usable_bytes == budget.usable_bytes - sum(t.bytes for t in terms) and after.vision_bytes == terms[0].bytes


def _vllm_budget(tokens: int):  # noqa: ANN202
    from kvcalc import capacity
    from kvcalc.spec import Engine, Workload

    model = presets.load_model(MISTRAL_SMALL)
    work = Workload(seq=8192, engine=Engine(name="vllm", max_num_batched_tokens=tokens))
    return model, work, capacity.budget(model, work, 80 * 2**30)


def _fit(*extra: str) -> dict:
    model = MISTRAL_SMALL
    result = runner.invoke(app, ["fit", "--model", model, "--gpu", "h100-sxm", "--engine", "vllm", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["budget"]


def test_text_only_flags_remove_the_tower_and_its_profiling() -> None:
    full = _fit()
    names = [t["name"] for t in full["terms"]]
    assert residents.VISION_TERM in names and residents.MM_PROFILE_TERM in names and full["vision_bytes"] == 438_958_080 * 2
    for flags in (["--limit-mm-per-prompt", '{"image": 0}'], ["--language-model-only"]):
        text = _fit(*flags)
        assert text["vision_bytes"] == 0 and not {residents.VISION_TERM, residents.MM_PROFILE_TERM} & {
            t["name"] for t in text["terms"]
        }
    skipped = _fit("--skip-mm-profiling")
    assert {t["name"] for t in skipped["terms"]} >= {residents.VISION_TERM} and residents.MM_PROFILE_TERM not in {
        t["name"] for t in skipped["terms"]
    }


def test_explain_names_the_tower_formula_and_source() -> None:
    model = MISTRAL_SMALL
    result = runner.invoke(app, ["fit", "--model", model, "--gpu", "h100-sxm", "--engine", "vllm", "--explain"])
    assert result.exit_code == 0
    assert "vision tower weights = params * b = 438,958,080 * 2" in result.stdout
    assert "modeling_pixtral.py" in result.stdout and "compute_mm_encoder_budget" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit-mm-per-prompt", "image=0"], "--limit-mm-per-prompt 'image=0': give a JSON object"),
        (["--limit-mm-per-prompt", '{"image": -1}'], "give a JSON object of items per modality"),
        (["--language-model-only", "--engine", "sglang"], "are vllm options: add --engine vllm"),
    ],
)
def test_bad_multimodal_options_exit_2(args: list[str], message: str) -> None:
    model = MISTRAL_SMALL
    engine = [] if "--engine" in args else ["--engine", "vllm"]
    result = runner.invoke(app, ["fit", "--model", model, "--gpu", "h100-sxm", *engine, *args])
    assert result.exit_code == 2 and message in result.stderr


def _profile_formula_of(model: str, version: str, *extra: str) -> str:
    args = ["fit", "--model", model, "--gpu", "h100-sxm", "--engine", "vllm", "--vllm-version", version, "--seq", "8192"]
    result = runner.invoke(app, [*args, *extra, "--json"])
    assert result.exit_code == 0, result.output
    terms = json.loads(result.stdout)["budget"]["terms"]
    (formula,) = [term["formula"] for term in terms if term["name"] == residents.MM_PROFILE_TERM] or [""]
    return formula


def test_the_image_limit_is_read_not_another_modalitys() -> None:
    # gemma3-4b's tower serves images: a video limit of 2 does not profile 2 images, an audio limit of 0 keeps the tower
    default = _profile_formula_of("gemma3-4b", "0.7.0")
    assert "limit 1 *" in default
    assert "limit 0 *" not in _profile_formula_of("gemma3-4b", "0.7.0", "--limit-mm-per-prompt", '{"image": 1, "video": 2}')
    assert _profile_formula_of("gemma3-4b", "0.7.0", "--limit-mm-per-prompt", '{"image": 0, "video": 2}') == ""
    assert _profile_formula_of("gemma3-4b", "0.7.0", "--limit-mm-per-prompt", '{"audio": 0}') == default
    assert "limit 2 *" in _profile_formula_of("gemma3-4b", "0.7.0", "--limit-mm-per-prompt", '{"image": 2, "audio": 0}')


def test_a_text_model_refuses_multimodal_options() -> None:
    result = runner.invoke(app, ["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--skip-mm-profiling"])
    assert result.exit_code == 2 and "llama3-8b has no vision tower" in result.stderr


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_published_vision_startups_land_within_2_percent(case: dict) -> None:
    assert case["url"].startswith("https://")
    model = str(LOGS / case["model"]) if case["model"].startswith("models/") else case["model"]
    assert presets.load_model(model).vision, case["name"]  # a shipped VL preset, or a checkpoint's file adding the tower
    error = calibration.predict(case)["error_percent"]
    if "miss" in case:
        assert abs(error) > calibration.BAR_PERCENT, f"{case['name']} now meets the bar ({error:+.2f} %): drop its miss note"
    else:
        assert abs(error) <= calibration.BAR_PERCENT, f"{case['name']}: {error:+.2f} % of GPU memory"


def test_mistral_small_3_2_on_the_v0_11_0_image_profiles_flashinfers_sampler() -> None:
    # llm-d-planner's empirical table (URL in vision.yaml): vLLM v0.11.0's Docker image ships FlashInfer, and 0.11.0's
    # TopKTopPSampler takes it unless VLLM_USE_FLASHINFER_SAMPLER=0; the native sorting sampler would charge 2.9 GiB
    # more than the 2.12 GiB activation peak logged. The sampler choice is the whole gap, so the case is held to it both ways.
    case = next(case for case in CASES if case["name"].startswith("Mistral-Small-3.2"))
    assert case["engine"]["vllm_version"] == "0.11.0" and case["engine"]["vllm_flashinfer_sampler"] is True
    native = {**case, "engine": {**case["engine"], "vllm_flashinfer_sampler": False}}
    assert abs(calibration.predict(case)["error_percent"]) <= calibration.BAR_PERCENT
    assert calibration.predict(native)["error_percent"] < -calibration.BAR_PERCENT


def test_llamacpp_leaves_the_tower_to_mmproj() -> None:
    # llama.cpp keeps the projector in its own GGUF (--mmproj, counted from the file): no tower term.
    model = MISTRAL_SMALL
    result = runner.invoke(app, ["fit", "--model", model, "--memory", "80GiB", "--engine", "llamacpp", "--json"])
    assert result.exit_code in (0, 1), result.output
    budget = json.loads(result.stdout)["budget"]
    assert budget["vision_bytes"] == 0 and residents.VISION_TERM not in {t["name"] for t in budget["terms"]}


QWEN3_VL_235B = ROOT / "tests" / "fixtures" / "hf" / "qwen3-vl-235b-a22b-config.json"


def test_qwen3_vl_moe_config_reads_its_text_model_and_tower() -> None:
    # tests/fixtures/hf/qwen3-vl-235b-a22b-config.json: Qwen/Qwen3-VL-235B-A22B-Thinking config.json as copied in
    # https://github.com/ai-dynamo/aiconfigurator/blob/51ecbbbc3aede81fd2325b6e24cfa3189defc26a/src/aiconfigurator/model_configs/Qwen--Qwen3-VL-235B-A22B-Thinking_config.json
    model = presets.load_model(str(QWEN3_VL_235B))
    assert (model.layers, model.kv_heads, model.head_dim) == (94, 4, 128) and model.moe and model.moe.experts == 128
    config = json.loads(QWEN3_VL_235B.read_text())
    assert model.vision and model.vision.params == vision.qwen3_vl(config["vision_config"], config)["params"]


def test_checkpoint_headers_give_the_tower_exactly_and_leave_it_out_of_params(tmp_path: Path) -> None:
    from kvcalc.sources import safetensors
    from kvcalc.sources.hub import Weights, model_from_config

    config = tmp_path / "config.json"
    config.write_text(QWEN3_VL_235B.read_text())
    language = [safetensors.Tensor("BF16", 1000, 2000, "model.language_model.layers.0.mlp.gate.weight")]
    tower = [
        safetensors.Tensor("BF16", 300, 600, "model.visual.blocks.0.attn.qkv.weight"),
        safetensors.Tensor("F32", 10, 40, "model.visual.merger.norm.weight"),
    ]
    model = model_from_config(config, "org/vl", "test", Weights([*language, *tower], "two shards"))
    assert model.params == 1000 and model.stored_weights and model.stored_weights.bytes == 2000
    assert model.vision and (model.vision.params, model.vision.stored_bytes) == (310, 640)
    assert model.vision.patches_per_item is not None  # the shapes still come from vision_config
    assert "2 tower and projector tensors" in model.vision.source


def test_a_tower_without_shapes_is_weighed_but_not_profiled() -> None:
    from kvcalc.spec import VisionSpec

    model, work, budget = _vllm_budget(8192)
    bare = model.model_copy(update={"vision": VisionSpec(params=1000, stored_bytes=4000, source="headers")})
    weights, profile = residents.multimodal_terms(bare, work, budget, residents.Multimodal())
    assert weights.bytes == 4000 and profile.bytes == 0 and "not modelled" in profile.formula


def _profile_formula(model, tokens: int, settings: residents.Multimodal) -> str:  # noqa: ANN001
    from kvcalc import capacity
    from kvcalc.spec import Engine, Workload

    work = Workload(seq=8192, engine=Engine(name="vllm", max_num_batched_tokens=tokens))
    budget = capacity.budget(model, work, 80 * 2**30)
    return residents.multimodal_profile_term(model, work, budget, settings).formula


def test_profiling_batch_matches_vllms_log_line() -> None:
    # vLLM 0.19 logged for google/gemma-3-4b-it at max_num_batched_tokens 8192: "Encoder cache will be initialized
    # with a budget of 8192 tokens, and profiled with 32 image items of the maximum feature size."
    # https://github.com/llm-d-incubation/llm-d-planner/blob/d3121e059da88662db39a926a3ead964be97359b/accuracy/results/v0.19.0/logs/google-gemma-3-4b-it--h100-80gb--tp1pp1dp1--8192.log
    assert "= 8,192: 32 items of 4,096 patches" in _profile_formula(presets.load_model("gemma3-4b"), 8192, residents.Multimodal())


def test_a_v0_release_batches_prompts_of_one_image() -> None:
    # vLLM 0.7.x (V0) vllm/worker/model_runner.py profile_run: min(max_num_seqs, max_num_batched_tokens //
    # max multimodal tokens) dummy prompts, one image each (registry.py: limit 1 per modality by default).
    # Mistral Small 3.1's largest image: 3,080 tokens; 8,192 // 3,080 = 2 prompts; with a limit of 2: 8,192 // 6,160 = 1.
    from kvcalc import capacity
    from kvcalc.spec import Engine, Workload

    model = presets.load_model(MISTRAL_SMALL)
    for limits, expected in (
        (None, "= 2 prompts of 1 item (vllm/worker/model_runner.py"),
        ({"image": 2}, "= 1 prompt of 2 items"),
    ):
        work = Workload(seq=8192, engine=Engine(name="vllm", vllm_version="0.7.3"))
        budget = capacity.budget(model, work, 80 * 2**30)
        term = residents.multimodal_profile_term(model, work, budget, residents.Multimodal(limits=limits))
        assert expected in term.formula and "V0: max(1, min(max_num_seqs 256, max_num_batched_tokens 8,192" in term.formula
    v1 = _profile_formula(model, 8192, residents.Multimodal())
    assert "V0:" not in v1 and "encoder budget max(max_num_batched_tokens 8,192" in v1


LLAMA32_VISION = LOGS / "models" / "vision" / "llama3.2-11b-vision.yaml"


def mllama_tower_params() -> int:
    """Llama-3.2-11B-Vision's tower, hand-worked from transformers v4.47.1 modeling_mllama.py MllamaVisionModel at
    configuration_mllama.py's defaults with the checkpoint's image_size 560 (h 1280, I 5120, 32 local + 8 global
    layers, 1601 patches per 560-px tile, 4 tiles, 8 aspect ratios, text hidden 4096): patch conv 3*14*14*h, class
    embedding h; position gate 1, table 1601h, tile table 9*4*1601h; pre/post tile tables 9*4h and a gate each;
    2 LayerNorms; per layer 2 LayerNorms (4h), q k v o without biases (4h^2), fc1 and fc2 with biases; 2 gates per
    global layer; projector 7680*4096 + 4096."""
    h, inter = 1280, 5120
    layer = 4 * h + 4 * h * h + (h * inter + inter) + (inter * h + h)
    return (
        3 * 14 * 14 * h + h + 1 + 1601 * h + 9 * 4 * 1601 * h + 2 * (9 * 4 * h + 1) + 4 * h
        + 40 * layer + 2 * 8 + 7680 * 4096 + 4096
    )  # fmt: skip


def test_llama32_vision_weights_match_the_logged_load() -> None:
    # https://github.com/vllm-project/vllm/pull/12126: "model weights take 19.86GiB" for meta-llama/Llama-3.2-11B-Vision
    model = presets.load_model(str(LLAMA32_VISION))
    assert model.vision and model.vision.params == mllama_tower_params() == 895_028_755
    # vLLM's get_max_mllama_image_tokens: 4 tiles * 1601 = 6404 tokens; its encoder pads each tile to 1608 rows
    assert (model.vision.tokens_per_item, model.vision.patches_per_item, model.vision.encoder_decoder) == (6404, 6432, True)
    total = 2 * (model.params + model.vision.params)
    assert abs(total / 2**30 - 19.86) < 0.02


@pytest.mark.parametrize(("version", "v0"), [("0.8.4", True), ("0.9.2", True), ("0.10.2", True), ("0.11.0", False)])
def test_an_encoder_decoder_model_falls_back_to_v0_before_0_11(version: str, v0: bool) -> None:
    # vLLM 0.8.4, 0.9.2 and 0.10.2 wheels: MllamaForConditionalGeneration is SupportsV0Only, so
    # engine/arg_utils.py _is_v1_supported_oracle falls back to V0 (_raise_or_fallback); 0.11 removed V0
    formula = _profile_formula_of(str(LLAMA32_VISION), version, "--max-num-seqs", "8")
    assert ("V0 encoder-decoder: max_num_seqs 8 prompts of 1 item" in formula) is v0, formula


def test_v0_encoder_decoder_profiles_every_sequence_with_an_image() -> None:
    # vllm/worker/enc_dec_model_runner.py profile_run (v0.7.0): max_num_seqs dummy prompts, one image each, uncapped;
    # the vllm#12126 start-up (max_num_seqs 128) ran 128 images of 4 tiles through the encoder.
    from kvcalc import capacity
    from kvcalc.spec import Engine, Workload

    model = presets.load_model(str(LLAMA32_VISION))
    work = Workload(seq=65536, engine=Engine(name="vllm", vllm_version="0.7.0", max_num_seqs=128))
    budget = capacity.budget(model, work, 80 * 2**30)
    term = residents.multimodal_profile_term(model, work, budget, residents.Multimodal())
    assert (
        "V0 encoder-decoder: max_num_seqs 128 prompts of 1 item" in term.formula and "128 items of 6,432 patches" in term.formula
    )


SWEEP = "https://github.com/llm-d-incubation/llm-d-planner/blob/d3121e059da88662db39a926a3ead964be97359b/accuracy/results/v0.19.0/logs/"


@pytest.mark.parametrize(
    ("model", "batch"),
    [
        # SWEEP + moonshotai-kimi-vl-a3b-i--h100-80gb--tp1pp1dp1--8192.log: "Encoder cache will be initialized with a
        # budget of 8192 tokens, and profiled with 7 image items of the maximum feature size."
        ("models/vision/kimi-vl-a3b.yaml", "= 8,192: 7 items of 4,356 patches"),
        # SWEEP + ibm-granite-granite-visi--h100-80gb--tp1pp1dp1--8192.log: "... a budget of 8289 tokens, and profiled
        # with 1 image items ..."
        ("models/vision/granite-vision-3.3-2b.yaml", "8,289 tokens per item) = 8,289: 1 item of 8,019 patches"),
        # SWEEP + meta-llama-llama-4-scout--h100-80gb--tp4pp1dp1--8192.log: "... a budget of 8192 tokens, and profiled
        # with 3 image items ..."
        ("llama4-scout", "= 8,192: 3 items of 9,809 patches"),
    ],
)
def test_profiling_batch_matches_the_sweeps_log_lines(model: str, batch: str) -> None:
    found = presets.load_model(str(LOGS / model) if model.startswith("models/") else model)
    assert batch in _profile_formula(found, 8192, residents.Multimodal())


def test_max_pixels_shrinks_a_qwen_image() -> None:
    model = presets.load_model(str(QWEN3_VL_235B))
    # 1,003,520 pixels / 14^2 = 5,120 patches, / 2^2 = 1,280 tokens; 8,192 // 1,280 = 6 items
    shrunk = _profile_formula(model, 8192, residents.Multimodal(max_pixels=1_003_520))
    assert "max(max_num_batched_tokens 8,192, 1,280 tokens per item) = 8,192: 6 items of 5,120 patches" in shrunk


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ('{"min_pixels": 3136}', "kvcalc reads max_pixels only, not min_pixels"),
        ('{"max_pixels": 0}', "max_pixels: expected a positive integer, got 0"),
        ("[1]", "give a JSON object"),
    ],
)
def test_bad_processor_kwargs_exit_2(kwargs: str, message: str) -> None:
    args = ["fit", "--model", str(QWEN3_VL_235B), "--gpu", "h200", "--tp", "8", "--engine", "vllm"]
    result = runner.invoke(app, [*args, "--mm-processor-kwargs", kwargs])
    assert result.exit_code == 2 and message in result.stderr


def test_max_pixels_needs_a_qwen_processor() -> None:
    model = MISTRAL_SMALL
    args = ["fit", "--model", model, "--gpu", "h100-sxm", "--engine", "vllm", "--mm-processor-kwargs", '{"max_pixels": 1000000}']
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "resizes Qwen-VL processors' images only" in result.stderr


TOWER_CONFIGS = {  # each architecture's published shapes (the checkpoints named), enough for its count
    "qwen2_vl": ({"embed_dim": 1280, "depth": 32, "hidden_size": 3584}, {}),  # Qwen2-VL-7B-Instruct
    "qwen2_5_vl": ({"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "out_hidden_size": 3584}, {}),
    "qwen3_vl": ({"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "out_hidden_size": 4096}, {}),
    "gemma3": (SIGLIP, {"text_config": {"hidden_size": 2560}}),  # gemma-3-4b-it
    "gemma4": (  # gemma-4-31B-it
        {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16, "head_dim": 72},
        {"text_config": {"hidden_size": 5376}, "vision_soft_tokens_per_image": 280},
    ),
    "llama4": (  # Llama-4-Scout-17B-16E vision_config
        {
            "hidden_size": 1408,
            "intermediate_size": 5632,
            "num_hidden_layers": 34,
            "projector_input_dim": 4096,
            "projector_output_dim": 4096,
            "vision_output_dim": 4096,
        },
        {"text_config": {"hidden_size": 5120}},
    ),  # fmt: skip
    "mistral3": (  # Mistral-Small-3.1-24B-Instruct-2503's Pixtral
        {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24},
        {"text_config": {"hidden_size": 5120}, "multimodal_projector_bias": False},
    ),
    "llava_next": (  # granite-vision-3.3-2b: SigLIP, four feature layers
        {
            "model_type": "siglip_vision_model",
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "image_size": 384,
        },
        {
            "text_config": {"hidden_size": 2048},
            "vision_feature_layer": [-24, -20, -12, -1],
            "image_grid_pinpoints": [[384, 768], [3840, 384]],
        },
    ),  # fmt: skip
    "kimi_vl": (  # Kimi-VL-A3B-Instruct's MoonViT
        {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27},
        {"text_config": {"hidden_size": 2048}},
    ),
    "internvl": (  # InternVL3-8B-hf: InternViT-300M, Qwen2.5-7B text
        {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "attention_bias": True},
        {"text_config": {"hidden_size": 3584}},
    ),
}
LAYER_KEYS = {"qwen2_vl": "depth", "qwen2_5_vl": "depth", "qwen3_vl": "depth"}


def test_pixtral_tower_counts_every_module() -> None:
    # modeling_pixtral.py / modeling_mistral3.py at Mistral Small 3.1's shapes (h 1024, I 4096, 24 layers, text 5120):
    # patch conv 3*14*14*h (no bias), ln_pre h; per layer 2 RMSNorms + q, k, v, o (4h^2) + gated MLP (3hI);
    # projector RMSNorm h, merger 4h*h, linear_1 h*5120, linear_2 5120^2 (no biases).
    h, inter = 1024, 4096
    expected = 3 * 14 * 14 * h + h + 24 * (2 * h + 4 * h * h + 3 * h * inter) + h + 4 * h * h + h * 5120 + 5120 * 5120
    vision_config, config = TOWER_CONFIGS["mistral3"]
    assert vision.pixtral(vision_config, config)["params"] == expected == 438_958_080


@given(arch=st.sampled_from(sorted(TOWER_CONFIGS)), extra=st.integers(min_value=1, max_value=8))
def test_a_deeper_tower_weighs_more_and_keeps_its_largest_image(arch: str, extra: int) -> None:
    vision_config, config = TOWER_CONFIGS[arch]
    key = LAYER_KEYS.get(arch, "num_hidden_layers")
    count = vision.TOWERS[arch]
    base, deeper = count(vision_config, config), count({**vision_config, key: vision_config[key] + extra}, config)
    assert deeper["params"] > base["params"] > 0
    assert (deeper["patches_per_item"], deeper["tokens_per_item"]) == (base["patches_per_item"], base["tokens_per_item"])
    # one token per patch at most, or per merged patches; LLaVA-NeXT adds a newline token per row of patches on top
    side = vision_config.get("image_size", 0) // vision_config.get("patch_size", 14)  # patches per tile row
    rows = base["patches_per_item"] // side if arch == "llava_next" else 0
    assert 0 < base["tokens_per_item"] <= base["patches_per_item"] + rows


def _profile_term(model: str, version: str, *extra: str) -> dict:
    args = ["fit", "--model", model, "--memory", "79.19GiB", "--tp", "2", "--engine", "vllm", "--vllm-version", version]
    result = runner.invoke(app, [*args, "--seq", "65536", *extra, "--json"])
    assert result.exit_code == 0, result.output
    (term,) = [t for t in json.loads(result.stdout)["budget"]["terms"] if t["name"] == residents.MM_PROFILE_TERM]
    return term


def test_qwen3_vl_video_profiled_and_padded_as_vllm_0_12_logs_it() -> None:
    """vLLM 0.12.0 with Qwen3-VL-30B-A3B logged "Encoder cache will be initialized with a budget of 153600 tokens, and
    profiled with 1 video items of the maximum feature size"
    (https://github.com/Zzsf11/VideoCuttingAgent/blob/4b5f0c326e790c4d43bda35b8e37ebe418b22580/vllm_serve.log): the video's
    12,288 tokens counted 12.5 times over (qwen3_vl.py get_max_video_tokens) outnumber the image's 16,384, and profile_run
    pads the 12,288 x 8,192 embeddings (the merger's 2,048 and three DeepStack levels) to 153,600 rows of zeros."""
    term = _profile_term("qwen3-vl-30b-a3b", "0.12.0")
    assert "max(max_num_batched_tokens 8,192, 153,600 tokens per item) = 153,600: 1 item of 49,152 patches" in term["formula"]
    assert term["bytes"] == 153_600 * 8_192 * 2 == 2_516_582_400
    assert "padded to the item's 153,600 tokens (vLLM 0.12.0" in term["formula"]


@pytest.mark.parametrize(
    ("version", "extra", "expected"),
    [
        ("0.12.0", ["--limit-mm-per-prompt", '{"video": 0}'], "16,384 tokens per item) = 16,384: 1 item of 65,536 patches"),
        ("0.13.0", [], "16,384 tokens per item) = 16,384: 1 item of 65,536 patches"),  # no x12.5 count from 0.13.0
    ],
)
def test_qwen3_vl_profiles_its_image_without_video_or_the_video_count(version: str, extra: list[str], expected: str) -> None:
    term = _profile_term("qwen3-vl-30b-a3b", version, *extra)
    assert expected in term["formula"]
    assert "outputs = items * rows * width * b = 1 * 16,384 * 8,192 * 2" in term["formula"]


def test_vllm_0_11_pads_each_dummy_output_to_the_encoder_budget() -> None:
    """vLLM 0.11.x pads every dummy encoder output to the encoder budget's rows (gpu_model_runner.py profile_run,
    new_zeros((encoder_budget, ...)), the 0.11.0-0.11.2 wheels); 0.19 keeps them as the tower returns them."""
    padded = _profile_formula_of("gemma3-4b", "0.11.0")
    assert "outputs = items * rows * width * b = 32 * 8,192 * 2,560 * 2, padded to the encoder budget (vLLM 0.11.0" in padded
    assert "outputs = items * rows * width * b = 32 * 256 * 2,560 * 2, as the tower returns them" in _profile_formula_of(
        "gemma3-4b", "0.19.0"
    )


def _terms_of(model: str, limit: str) -> dict[str, int]:
    args = ["fit", "--model", model, "--gpu", "h100-sxm", "--tp", "2", "--engine", "vllm", "--vllm-version", "0.12.0"]
    result = runner.invoke(app, [*args, "--limit-mm-per-prompt", limit, "--json"])
    assert result.exit_code == 0, result.output
    return {term["name"]: term["bytes"] for term in json.loads(result.stdout)["budget"]["terms"]}


def test_a_qwen_vl_model_is_text_only_when_image_and_video_are_both_0() -> None:
    """vLLM's Qwen-VL processing info serves image and video (qwen2_vl.py get_supported_mm_limits, inherited by
    qwen3_vl.py): video 1 with image 0 keeps the tower and profiles the largest video; both 0 drop them."""
    video_only = _terms_of("qwen3-vl-30b-a3b", '{"image": 0, "video": 1}')
    assert video_only[residents.VISION_TERM] > 0
    assert video_only[residents.MM_PROFILE_TERM] == 153_600 * 8_192 * 2  # the video, as vllm 0.12.0 logs it (above)
    text_only = _terms_of("qwen3-vl-30b-a3b", '{"image": 0, "video": 0}')
    assert residents.VISION_TERM not in text_only and residents.MM_PROFILE_TERM not in text_only


def test_an_image_0_limit_without_video_sizes_says_video_profiling_is_not_modelled() -> None:
    result = runner.invoke(
        app,
        [
            "fit",
            "--model",
            "qwen3-vl-8b",
            "--gpu",
            "h100-sxm",
            "--engine",
            "vllm",
            "--limit-mm-per-prompt",
            '{"image": 0}',
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    (term,) = [t for t in json.loads(result.stdout)["budget"]["terms"] if t["name"] == residents.MM_PROFILE_TERM]
    assert term["bytes"] == 0 and term["formula"].startswith("not modelled: images are limited to 0")


@pytest.mark.parametrize(("model", "served"), [("qwen3-vl-30b-a3b", "image and video"), ("gemma3-4b", "image")])
def test_a_misspelt_modality_exits_2_naming_those_served(model: str, served: str) -> None:
    args = ["fit", "--model", model, "--gpu", "h100-sxm", "--tp", "2", "--engine", "vllm"]
    result = runner.invoke(app, [*args, "--limit-mm-per-prompt", '{"vidoe": 1}'])
    assert result.exit_code == 2
    assert f"--limit-mm-per-prompt: 'vidoe' is not a modality; {model} serves {served}" in result.stderr
