"""Input files and paths that used to crash or mislead: over-long names, deep nesting, a folder or a
device where a file belongs, presets without a name, mistyped config.json values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvcalc.errors import InvalidPreset
from kvcalc.presets import MAX_NESTING, read_mapping

LONG = "a" * 300  # over the 255-byte limit of a file name
GOOD = "layers: 2\nheads: 8\nkv_heads: 2\nhead_dim: 64\ndtype: bf16\n"
LLAMA = {"model_type": "llama", "num_attention_heads": 8, "hidden_size": 512, "num_hidden_layers": 2}


def _fails(result, expected: str) -> None:
    """Exit 2 with `expected` in a one-line message, and no traceback."""
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output and result.stdout == ""


@pytest.mark.parametrize(
    "args, expected",
    [
        (["size", "-m", LONG, "-s", "8"], f"unknown model {LONG!r}"),
        (["fit", "-m", "llama3-8b", "--gpu", LONG], f"unknown GPU {LONG!r}"),
        (["presets", "show", LONG], f"unknown model {LONG!r}"),
        (["size", "-m", f"{LONG}.yaml", "-s", "8"], "cannot open (File name too long)"),
        (["check", f"{LONG}.yaml"], "cannot open (File name too long)"),
    ],
    ids=["model name", "GPU name", "presets show", "model file", "plan file"],
)
def test_over_long_names(cli, args: list[str], expected: str) -> None:
    _fails(cli(*args), expected)


def test_deep_json_config(cli, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"a": ' * 1500 + "1" + "}" * 1500)
    _fails(cli("size", "-m", path, "-s", "8"), "config.json: nested too deeply")


@pytest.mark.parametrize(
    "text",
    ["a: " + "[" * 30000 + "]" * 30000, "- " * 30000 + "x", "? " * 30000 + "x", "a: " + "{b: " * 30000 + "1" + "}" * 30000],
    ids=["flow sequences", "block sequences", "complex keys", "flow mappings"],
)
def test_deep_yaml_is_refused_before_libyaml_crashes(cli, tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    _fails(cli("size", "-m", path, "-s", "8"), f"deep.yaml: nested too deeply (more than {MAX_NESTING} levels)")


def test_nesting_limit_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("a: " + "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1))  # the root mapping is one level
    assert read_mapping(path)
    path.write_text("a: " + "[" * MAX_NESTING + "]" * MAX_NESTING)
    with pytest.raises(InvalidPreset, match="nested too deeply"):
        read_mapping(path)


def test_presets_flag_given_a_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "some.yaml"
    path.write_text(GOOD)
    _fails(cli("presets", "list", "--presets", path), "some.yaml: is a file, not a presets folder")


def test_presets_flag_empty(cli) -> None:
    _fails(cli("presets", "list", "--presets", ""), "--presets: empty folder name")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["size", "-m", "{dir}", "-s", "8"], "somedir.yaml: is a folder, not a file"),
        (["size", "-m", "/dev/null", "-s", "8"], "/dev/null: is not a regular file"),
        (["check", "{dir}"], "somedir.yaml: is a folder, not a plan file"),
        (["check", "/dev/null"], "/dev/null: is not a regular file"),
    ],
)
def test_folder_or_device_for_a_file(cli, tmp_path: Path, args: list[str], expected: str) -> None:
    folder = tmp_path / "somedir.yaml"
    folder.mkdir()
    _fails(cli(*[a.replace("{dir}", str(folder)) for a in args]), expected)


def test_preset_without_name_is_listed_and_loaded_by_stem(cli, tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(GOOD)
    listed = cli.json("presets", "list", "--presets", tmp_path)
    assert "tiny" in {m["name"] for m in listed["models"]}
    assert cli.json("size", "-m", "tiny", "--presets", tmp_path, "-s", "8")["model"]["name"] == "tiny"
    assert cli.json("presets", "show", tmp_path / "tiny.yaml")["spec"]["name"] == "tiny"


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("num_key_value_heads", 2.7, "num_key_value_heads: expected an integer, got 2.7"),
        ("num_attention_heads", True, "num_attention_heads: expected an integer, got true"),
        ("num_hidden_layers", "2", 'num_hidden_layers: expected an integer, got "2"'),
        ("tie_word_embeddings", "false", 'tie_word_embeddings: expected true or false, got "false"'),
        ("layer_types", "sliding_attention", "layer_types: expected a list of layer types"),
    ],
)
def test_config_json_wrong_types(cli, tmp_path: Path, key: str, value: object, expected: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, key: value}))
    _fails(cli("size", "-m", path, "-s", "8"), f"config.json: {expected}")


def test_config_json_negative_sliding_window_pattern(cli, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    config = {**LLAMA, "model_type": "gemma3_text", "sliding_window": 4, "sliding_window_pattern": -5}
    path.write_text(json.dumps(config))
    _fails(cli("size", "-m", path, "-s", "8"), "sliding_window_pattern: expected a positive integer, got -5")


def test_a_key_given_twice_is_refused(cli, tmp_path: Path) -> None:
    model = tmp_path / "twice.yaml"
    model.write_text("name: x\nlayers: 2\nheads: 8\nkv_heads: 2\nhead_dim: 64\nlayers: 4\n")
    _fails(cli("size", "-m", model, "-s", "8"), "twice.yaml:6: invalid YAML: 'layers' is given twice")
    unhashable = tmp_path / "key.yaml"
    unhashable.write_text("? [a, b]\n: 1\n")
    _fails(cli("size", "-m", unhashable, "-s", "8"), "found unhashable key")


def test_a_workload_name_used_twice_is_refused(cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    row = "{name: a, model: llama3-8b, gpu: h100-sxm, seq: 8}"
    plan.write_text(f"workloads:\n  - {row}\n  - {row}\n")
    _fails(cli("check", plan), "plan.yaml: workload name 'a' is used twice")
