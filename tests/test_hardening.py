"""Bad input across every command: one line on stderr naming the file or flag, exit 2, no traceback.

And random valid specs never crash a command, and --json always parses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

GOOD = "name: x\nlayers: 2\nheads: 8\nkv_heads: 2\nhead_dim: 64\ndtype: bf16\n"
LLAMA = {"model_type": "llama", "num_attention_heads": 8, "hidden_size": 512, "num_hidden_layers": 2}
GPU = "name: g\nmemory_bytes: 80000000000\nbandwidth_bytes_per_s: 2000000000000\nbf16_flops: 300000000000000\n"
BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
)

# (what, file text or None, command args with {f} for the file, expected message)
CASES = [
    ("non-UTF-8 model", b"name: \xff\n", ["size", "-m", "{f}", "-s", "8"], "not UTF-8"),
    ("empty model", "", ["size", "-m", "{f}", "-s", "8"], "found an empty file"),
    ("list for a mapping", "- a\n- b\n", ["size", "-m", "{f}", "-s", "8"], "expected a mapping of fields, found a list"),
    ("scalar for a mapping", "42\n", ["size", "-m", "{f}", "-s", "8"], "expected a mapping of fields, found a int"),
    (
        "huge layers",
        GOOD.replace("layers: 2", "layers: 100000000000000000000"),
        ["size", "-m", "{f}", "-s", "8"],
        "layers: Input should be less than or equal to 10000",
    ),
    (
        "inf layers",
        GOOD.replace("layers: 2", "layers: .inf"),
        ["size", "-m", "{f}", "-s", "8"],
        "layers: Input should be a valid integer",
    ),
    (
        "NaN heads",
        GOOD.replace("heads: 8", "heads: .nan"),
        ["size", "-m", "{f}", "-s", "8"],
        "heads: Input should be a valid integer",
    ),
    (
        "fractional heads",
        GOOD.replace("heads: 8", "heads: 8.5"),
        ["size", "-m", "{f}", "-s", "8"],
        "heads: Input should be a valid integer",
    ),
    (
        "negative head_dim",
        GOOD.replace("head_dim: 64", "head_dim: -64"),
        ["size", "-m", "{f}", "-s", "8"],
        "head_dim: Input should be greater than 0",
    ),
    (
        "string for a number",
        GOOD.replace("kv_heads: 2", "kv_heads: two"),
        ["size", "-m", "{f}", "-s", "8"],
        "kv_heads: Input should be a valid integer",
    ),
    ("unknown key", GOOD + "hidden_size: 512\n", ["size", "-m", "{f}", "-s", "8"], "hidden_size: unknown field"),
    ("unknown key, close", GOOD + "kvheads: 2\n", ["size", "-m", "{f}", "-s", "8"], "did you mean 'kv_heads'?"),
    (
        "nested unknown key",
        GOOD + "moe: {experts: 8, experts_per_token: 2, expert_intermediate: 64, expert: 1}\n",
        ["size", "-m", "{f}", "-s", "8"],
        "moe.expert: unknown field; did you mean 'experts'?",
    ),
    (
        "heads not divisible",
        GOOD.replace("kv_heads: 2", "kv_heads: 3"),
        ["size", "-m", "{f}", "-s", "8"],
        "heads (8) must be divisible by kv_heads (3)",
    ),
    (
        "missing field",
        "name: x\nheads: 8\nkv_heads: 2\nhead_dim: 64\n",
        ["size", "-m", "{f}", "-s", "8"],
        "layers: Field required",
    ),
    ("unknown dtype in file", GOOD.replace("bf16", "fp6"), ["size", "-m", "{f}", "-s", "8"], "unknown dtype 'fp6'"),
    (
        "sliding without window",
        GOOD + "layer_pattern: [sliding, full]\n",
        ["size", "-m", "{f}", "-s", "8"],
        "sliding_window is not set",
    ),
    (
        "bad layer kind",
        GOOD + "sliding_window: 8\nlayer_pattern: [local]\n",
        ["size", "-m", "{f}", "-s", "8"],
        "layer_pattern.0: unknown layer kind 'local'",
    ),
    ("python tag", "!!python/object/apply:os.system ['true']\n", ["size", "-m", "{f}", "-s", "8"], "invalid YAML"),
    ("alias bomb", BOMB, ["size", "-m", "{f}", "-s", "8"], "YAML aliases (*name) are not accepted"),
    ("broken YAML", "name: x\nlayers: [1,\n", ["size", "-m", "{f}", "-s", "8"], ":3: invalid YAML"),
    ("broken JSON config", '{"model_type": "llama",\n', ["size", "-m", "{f}.json", "-s", "8"], ":2: invalid JSON"),
    (
        "unsupported architecture",
        '{"model_type": "t5", "hidden_size": 512, "num_attention_heads": 8}',
        ["size", "-m", "{f}.json", "-s", "8"],
        "model_type 't5' is not supported",
    ),
    (
        "config with zero heads",
        '{"model_type": "llama", "num_attention_heads": 0, "hidden_size": 4096, "num_hidden_layers": 2}',
        ["size", "-m", "{f}.json", "-s", "8"],
        "num_attention_heads: expected a positive integer, got 0",
    ),
    (
        "MLA config missing a width",
        '{"model_type": "deepseek_v3", "kv_lora_rank": 512, "num_attention_heads": 8, "hidden_size": 4096, "num_hidden_layers": 2}',
        ["size", "-m", "{f}.json", "-s", "8"],
        "qk_nope_head_dim: missing",
    ),
    (
        "plan with a huge seq",
        "workloads:\n  - {name: a, model: llama3-8b, gpu: h100-sxm, seq: 4294967296}\n",
        ["check", "{f}"],
        "seq: Input should be less than or equal to 2147483648",
    ),
    ("GPU with a model's fields", GOOD, ["fit", "-m", "llama3-8b", "--gpu", "{f}"], "memory_bytes: Field required"),
    (
        "GPU with zero bandwidth",
        GPU.replace("2000000000000", "0"),
        ["decode", "-m", "llama3-8b", "--gpu", "{f}"],
        "bandwidth_bytes_per_s: Input should be greater than 0",
    ),
    *[
        (what, json.dumps({**LLAMA, **fields}), ["size", "-m", "{f}.json", "-s", "8"], expected)
        for what, fields, expected in [
            ("config zero KV heads", {"num_key_value_heads": 0}, "num_key_value_heads: expected a positive integer, got 0"),
            ("config zero head_dim", {"head_dim": 0}, "head_dim: expected a positive integer, got 0"),
            ("config negative vocab", {"vocab_size": -1}, "vocab_size: expected a positive integer, got -1"),
            ("config zero window", {"model_type": "mistral", "sliding_window": 0}, "sliding_window: expected a positive"),
            (
                "config zero layer pattern",
                {"model_type": "gemma3_text", "sliding_window_pattern": 0},
                "sliding_window_pattern: expected a positive integer, got 0",
            ),
            ("config huge layers", {"num_hidden_layers": 2**40}, "num_hidden_layers: expected at most 10000"),
            ("config hidden under heads", {"hidden_size": 4}, "hidden_size (4) / num_attention_heads (8) leaves a head_dim of 0"),
            ("config KV heads not dividing", {"num_key_value_heads": 3}, "num_attention_heads (8) must be divisible by"),
            (
                "config layer_types too short",
                {"layer_types": ["full_attention"]},
                "layer_types: lists 1 layers but num_hidden_layers is 2",
            ),
            (
                "config linear attention layer",
                {"layer_types": ["full_attention", "linear_attention"]},
                "layer_types: 'linear_attention' layers are not supported",
            ),
            ("config mamba layer", {"layer_types": ["mamba", "attention"]}, "layer_types: 'mamba' layers are not supported"),
            (
                "config sliding layers without a window",
                {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": None},
                "has sliding_attention layers but sliding_window is null",
            ),
            ("config unknown dtype", {"torch_dtype": "float4"}, "torch_dtype: unknown dtype 'float4'"),
            ("config dtype not a string", {"torch_dtype": 16}, "torch_dtype: expected a string, got 16"),
            (
                "config hybrid marker",
                {"hybrid_override_pattern": "M-M*"},
                "hybrid_override_pattern: marks a model with recurrent layers",
            ),
            ("config recurrent model type", {"model_type": "bamba"}, "model_type 'bamba' has recurrent layers"),
            ("config experts without top-k", {"num_local_experts": 8}, "num_experts_per_tok: missing"),
            (
                "config top-k over experts",
                {"num_local_experts": 8, "num_experts_per_tok": 9},
                "num_experts_per_tok (9) exceeds num_local_experts (8)",
            ),
            ("config DeepSeek without MLA", {"model_type": "deepseek_v3"}, "kv_lora_rank: missing, and deepseek_v3"),
            (
                "config MLA width null",
                {"kv_lora_rank": 512, "qk_nope_head_dim": None, "qk_rope_head_dim": 64, "v_head_dim": 128},
                "qk_nope_head_dim: missing",
            ),
            (
                "config Qwen sliding without layer_types",
                {"model_type": "qwen2", "num_key_value_heads": 2, "use_sliding_window": True, "sliding_window": 8},
                "use_sliding_window: true without layer_types is not supported",
            ),
            ("config name not a string", {"_name_or_path": 5}, "_name_or_path: expected a string, got 5"),
        ]
    ],
    (
        "config key given twice",
        '{"model_type": "llama", "num_hidden_layers": 2, "num_hidden_layers": 4}',
        ["size", "-m", "{f}.json", "-s", "8"],
        "invalid JSON: 'num_hidden_layers' is given twice",
    ),
    (
        "config integer past Python's digit limit",
        '{"model_type": "llama",\n "num_hidden_layers": ' + "9" * 5000 + "}",
        ["size", "-m", "{f}.json", "-s", "8"],
        ":2: a number of 5,000 digits; kvcalc reads numbers of up to 4,300 digits",
    ),
    (
        "preset integer past Python's digit limit",
        GOOD.replace("layers: 2", "layers: " + "9" * 5000),
        ["size", "-m", "{f}", "-s", "8"],
        ":2: a number of 5,000 digits",
    ),
    (
        "plan integer past Python's digit limit",
        "workloads:\n  - {name: a, model: llama3-8b, gpu: h100-sxm, seq: " + "9" * 5000 + "}\n",
        ["check", "{f}"],
        ":2: a number of 5,000 digits",
    ),
    ("YAML date that does not exist", GOOD + "notes: 2024-02-30\n", ["size", "-m", "{f}", "-s", "8"], "a value cannot be read"),
    (
        "quoted number in a preset",
        GOOD.replace("layers: 2", "layers: '2'"),
        ["size", "-m", "{f}", "-s", "8"],
        "layers: Input should be a valid integer",
    ),
    (
        "float for an integer in a preset",
        GOOD.replace("layers: 2", "layers: 2.0"),
        ["size", "-m", "{f}", "-s", "8"],
        "layers: Input should be a valid integer",
    ),
    (
        "numeric name",
        GOOD.replace("name: x", "name: 123"),
        ["size", "-m", "{f}", "-s", "8"],
        "name: Input should be a valid string",
    ),
    ("markup name", GOOD.replace("name: x", "name: '[red]x'"), ["size", "-m", "{f}", "-s", "8"], "name: a name is 1 to 200"),
    ("repeated cache dtype", None, ["compare", "mha", "gqa", "--kv-dtype", "fp8,float8"], "cache dtype 'fp8' is named twice"),
    ("unknown preset of either kind", None, ["presets", "show", "zzz"], "unknown model or GPU 'zzz'"),
    ("memory of minus zero", None, ["fit", "-m", "llama3-8b", "--memory", "-0"], "--memory: size '-0' must be at least 1 byte"),
    ("unknown model", None, ["size", "-m", "lama3-8b", "-s", "8"], "did you mean llama3-8b"),
    ("unknown GPU", None, ["fit", "-m", "llama3-8b", "--gpu", "h1000"], "unknown GPU 'h1000'"),
    ("missing folder", None, ["presets", "list", "--presets", "/no/such/folder"], "presets folder does not exist"),
    (
        "huge seq",
        None,
        ["size", "-m", "llama3-8b", "-s", "100000000000000"],
        "--seq: Input should be less than or equal to 2147483648",
    ),
    ("negative batch", None, ["size", "-m", "llama3-8b", "-s", "8", "-b", "-2"], "--batch must be a positive integer"),
    ("bad size text", None, ["fit", "-m", "llama3-8b", "--memory", "eighty"], "cannot read size 'eighty'"),
    ("NaN memory", None, ["fit", "-m", "llama3-8b", "--memory", "nanGB"], "cannot read size 'nanGB'"),
    (
        "memory under a byte",
        None,
        ["fit", "-m", "llama3-8b", "--memory", "0.4"],
        "--memory: size '0.4' is 0.4 bytes, not a whole number of bytes",
    ),
    (
        "memory under a byte in KB",
        None,
        ["fit", "-m", "llama3-8b", "--memory", "0.0004KB"],
        "--memory: size '0.0004KB' must be at least 1 byte",
    ),
    ("utilization above 1", None, ["fit", "-m", "llama3-8b", "--gpu", "h100-sxm", "--utilization", "2"], "must be in (0, 1]"),
    ("tp not dividing", None, ["decode", "-m", "llama3-8b", "--gpu", "h100-sxm", "--tp", "6"], "--tp 6 does not divide"),
    ("unknown variant", None, ["compare", "mha", "gqq"], "gqq"),
    ("bad unit switch", None, ["size", "-m", "llama3-8b", "-s", "8", "--units", "mb"], "--units 'mb'"),
]


@pytest.mark.parametrize("what, text, args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(cli, tmp_path: Path, what: str, text: str | bytes | None, args: list[str], expected: str) -> None:
    path = tmp_path / "input.yaml"
    if text is not None:
        target = Path(str(path).removesuffix(".yaml") + ".json") if "{f}.json" in args else path
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
    argv = [a.replace("{f}.json", str(path).removesuffix(".yaml") + ".json").replace("{f}", str(path)) for a in args]
    before = sorted(tmp_path.iterdir())
    result = cli(*argv)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output and result.stdout == ""
    if text is not None:
        assert path.name in result.stderr or "input.json" in result.stderr  # the message names the file
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@st.composite
def model_yaml(draw: st.DrawFn) -> dict:
    kv_heads = draw(st.integers(1, 16))
    spec = {
        "name": "random",
        "layers": draw(st.integers(1, 128)),
        "heads": kv_heads * draw(st.integers(1, 8)),
        "kv_heads": kv_heads,
        "head_dim": draw(st.sampled_from([32, 64, 80, 128, 256])),
        "dtype": draw(st.sampled_from(["fp32", "fp16", "bf16"])),
        "hidden": draw(st.integers(64, 16384)),
        "intermediate": draw(st.integers(64, 65536)),
        "vocab": draw(st.integers(1000, 300000)),
        "max_positions": draw(st.integers(1, 1 << 20)),
    }
    if draw(st.booleans()):
        spec |= {
            "sliding_window": draw(st.integers(1, 8192)),
            "layer_pattern": draw(st.sampled_from([["sliding"], ["sliding", "full"]])),
        }
    if draw(st.booleans()):
        spec["moe"] = {
            "experts": 8,
            "experts_per_token": draw(st.integers(1, 8)),
            "expert_intermediate": draw(st.integers(64, 8192)),
        }
    return spec


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model_yaml(), st.integers(1, 200_000), st.integers(1, 512), st.sampled_from(["fp8", "q4_0", "bf16", "int4"]))
def test_random_valid_specs_never_crash(cli, tmp_path: Path, spec: dict, seq: int, batch: int, kv_dtype: str) -> None:
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(spec))
    common = ["--model", str(path), "--seq", str(seq), "--batch", str(batch), "--kv-dtype", kv_dtype, "--json"]
    for args in (
        ["size", *common, "--gpu", "h100-sxm"],
        ["fit", *common, "--gpu", "l4"],
        ["decode", *common, "--gpu", "a100-80gb"],
    ):
        result = cli(*args)
        assert result.exit_code in (0, 1), result.output  # 1: does not fit, an answer
        json.loads(result.stdout)
    result = cli("compare", "mha", "gqa", "mqa", "--model", str(path), "--seq", str(seq), "--kv-dtype", kv_dtype, "--json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)


SEQ = 1024
# transformers' class defaults for keys left out (configuration_<arch>.py), for the architectures this test
# sizes by hand: a null takes None's meaning instead (one KV head per attention head, hidden / heads).
ABSENT = {
    "llama": {}, "phi3": {}, "mixtral": {"num_key_value_heads": 8}, "mistral": {"num_key_value_heads": 8, "sliding_window": 4096},
    "qwen2": {"num_key_value_heads": 32}, "qwen3": {"num_key_value_heads": 32, "head_dim": 128},
}  # fmt: skip
WINDOWED = {"mistral", "mixtral", "phi3"}  # a window makes every layer slide
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1}

weird = st.one_of(
    st.none(),
    st.integers(-3, 0),
    st.sampled_from([2**31, 2**31 + 1, 10**30, -(10**30)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
    st.booleans(),
    st.lists(st.integers(0, 4), max_size=2),
)


@st.composite
def config_json(draw: st.DrawFn) -> dict:
    """A config.json of real field names: in two draws of three every value sensible (a supported model type,
    valid counts), else any value may be zero, negative, huge, mistyped or null."""
    sane = draw(st.sampled_from([True, True, False]))

    def pick(*valid: object) -> object:
        return draw(st.sampled_from(valid) if sane else st.one_of(*[st.sampled_from(valid)] * 3, weird))

    layers = pick(1, 2, 3, 4, 32)
    all_full = ["full_attention"] * layers if isinstance(layers, int) and 0 < layers < 64 else None
    config = {
        "model_type": pick(*sorted(ABSENT), *([] if sane else ["gemma2", "gpt_oss", "jamba", "t5", ""])),
        "num_hidden_layers": layers,
        "num_attention_heads": pick(1, 2, 4, 8, 32),
        "hidden_size": pick(64, 256, 4096),
    }
    optional = {
        "num_key_value_heads": lambda: pick(1, 2, 4, 8, None),
        "head_dim": lambda: pick(16, 64, 128, None),
        "intermediate_size": lambda: pick(128, 11008),
        "vocab_size": lambda: pick(1000, 32000),
        "max_position_embeddings": lambda: pick(512, 8192),
        "sliding_window": lambda: pick(16, 4096, None),
        "torch_dtype": lambda: pick(*sorted(BYTES)),
        "layer_types": lambda: pick(all_full, ["full_attention", "linear_attention"], ["mamba"] * 2, None),
        "use_sliding_window": lambda: pick(False),
        "tie_word_embeddings": lambda: pick(True, False),
    }
    for key, value in optional.items():
        if draw(st.booleans()):
            config[key] = value()
    return config


def hand_kv(config: dict) -> int | None:
    """KV bytes per sequence at SEQ by hand, 2 * layers * kv_heads * head_dim * bytes * tokens held, for the
    configs this test sizes by hand (every layer full attention, or every layer sliding); None for others."""
    arch = config["model_type"]
    if arch not in ABSENT or config.get("use_sliding_window") or "sliding_attention" in (config.get("layer_types") or []):
        return None
    given = {**ABSENT[arch], **config}
    heads = given["num_attention_heads"]
    kv_heads = given.get("num_key_value_heads") or heads  # null: one per head
    head_dim = given.get("head_dim") or given["hidden_size"] // heads  # null: hidden / heads
    window = given.get("sliding_window") if arch in WINDOWED and config.get("layer_types") is None else None
    held = min(window, SEQ) if window else SEQ
    return 2 * given["num_hidden_layers"] * kv_heads * head_dim * BYTES.get(given.get("torch_dtype"), 2) * held


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config_json())
def test_random_config_json_is_sized_by_hand_or_refused_in_one_line(cli, tmp_path: Path, config: dict) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = cli("size", "--model", path, "--seq", SEQ, "--json")
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "config.json" in result.stderr
        event("refused")
        return
    expected = hand_kv(config)
    event("sized by hand" if expected is not None else "sized (a window or pattern this test does not size)")
    if expected is not None:
        assert json.loads(result.stdout)["kv"]["bytes_per_sequence"] == expected, config
