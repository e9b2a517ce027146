"""Bad input across every command: one line on stderr naming the file or flag, exit 2, no traceback.

And random valid specs never crash a command, and --json always parses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GOOD = "name: x\nlayers: 2\nheads: 8\nkv_heads: 2\nhead_dim: 64\ndtype: bf16\n"
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
        "layers: Input should be less than or equal to 2147483648",
    ),
    (
        "inf layers",
        GOOD.replace("layers: 2", "layers: .inf"),
        ["size", "-m", "{f}", "-s", "8"],
        "layers: Input should be a finite number",
    ),
    (
        "NaN heads",
        GOOD.replace("heads: 8", "heads: .nan"),
        ["size", "-m", "{f}", "-s", "8"],
        "heads: Input should be a finite number",
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
        "must be positive integers",
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
    ("memory under a byte", None, ["fit", "-m", "llama3-8b", "--memory", "0.4"], "--memory: size '0.4' must be at least 1 byte"),
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
