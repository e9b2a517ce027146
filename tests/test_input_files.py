"""Input files and paths that used to crash or mislead: over-long names, deep nesting, a folder or a
device where a file belongs, presets without a name, mistyped config.json values, broken files in a
presets folder, recurrent architectures, dtype spellings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc.compare import parse_variants
from kvcalc.errors import InvalidInput, InvalidPreset
from kvcalc.files import MAX_NESTING, nesting_bound, read_mapping
from kvcalc.hf_config import RECURRENT
from kvcalc.presets import load_gpu, load_model, presets_listing
from kvcalc.units import parse_dtype, parse_size

from .conftest import FIXTURES

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
        (["presets", "show", LONG], f"unknown model or GPU {LONG!r}"),
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


def _depth(text: str) -> int:
    """How deep a YAML text nests, read from its parser's events."""
    depth = deepest = 0
    for event in yaml.parse(text):
        depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)
        deepest = max(deepest, depth)
    return deepest


_trees = st.recursive(
    st.integers(0, 9) | st.text("ab -?:[]{}#'\"", max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("abc", min_size=1, max_size=2), inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300)
@given(_trees, st.sampled_from([False, True, None]), st.integers(2, 6), st.booleans())
def test_the_nesting_bound_bounds_every_yaml_text(tree: object, flow: bool | None, indent: int, compact: bool) -> None:
    """Whatever style writes a document (block, flow, compact sequences, any indent), the bound that
    spares a usual file the event walk is at least its depth."""
    text = yaml.safe_dump({"root": tree}, default_flow_style=flow, indent=indent, width=20)
    if compact:  # `- - x`: sequences opened on one line, which safe_dump does not write itself
        text = text.replace("-\n" + " " * indent + "- ", "- - ")
    assert nesting_bound(text) >= _depth(text)


@pytest.mark.parametrize("text", ["- - - - x", "? - - a\n: - - b", "a:\n- b:\n  - c:\n    - d", "a: [[{b: [1]}]]"])
def test_the_nesting_bound_of_compact_forms(text: str) -> None:
    assert nesting_bound(text) >= _depth(text)


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


def _broken_presets(folder: Path) -> dict[str, tuple[Path, str]]:
    """A presets folder with one good model and broken files of every kind: the name each broken file
    claims (its readable `name:`, else its stem) -> its path and the reason a listing gives."""
    (folder / "models").mkdir()
    (folder / "good.yaml").write_text("name: good\n" + GOOD)
    (folder / "malformed.yaml").write_text("name: [oops\n")
    (folder / "dangling.yaml").symlink_to(folder / "nowhere.yaml")
    (folder / "folder.yaml").mkdir()
    os.mkfifo(folder / "pipe.yaml")  # reading it would block: refused before it is opened
    (folder / "markup.yaml").write_text("name: '[red]x'\n" + GOOD)
    (folder / "number.yaml").write_text("name: 123\n" + GOOD)
    (folder / "models" / "misplaced.yaml").write_text("memory_bytes: 1000\nbandwidth_bytes_per_s: 10\nbf16_flops: 5\n")
    return {
        "malformed": (folder / "malformed.yaml", "line 2: invalid YAML"),
        "dangling": (folder / "dangling.yaml", "a broken symbolic link"),
        "folder": (folder / "folder.yaml", "not a regular file"),
        "pipe": (folder / "pipe.yaml", "not a regular file"),
        "[red]x": (folder / "markup.yaml", "name: a name is 1 to 200 printable characters"),
        "number": (folder / "number.yaml", "name: Input should be a valid string"),
        "misplaced": (folder / "models" / "misplaced.yaml", "describes a GPU (it has memory_bytes) but is in a models folder"),
    }


@pytest.mark.parametrize("via", ["flag", "env"])
def test_a_broken_preset_file_is_an_error_only_when_asked_for(cli, tmp_path: Path, monkeypatch, via: str) -> None:
    broken = _broken_presets(tmp_path)
    flag: list[str | Path] = ["--presets", tmp_path] if via == "flag" else []
    if via == "env":
        monkeypatch.setenv("KVCALC_PRESETS", str(tmp_path))
    assert cli.json("size", "--model", "llama3-8b", "--seq", "8", *flag)["model"]["name"] == "llama3-8b"
    assert cli.json("size", "--model", "good", "--seq", "8", *flag)["model"]["name"] == "good"
    assert cli.json("fit", "--model", "llama3-8b", "--gpu", "l4", *flag)["gpu"] == "l4"
    for name, (file, reason) in broken.items():
        message = f"{file}:2: {reason.removeprefix('line 2: ')}" if reason.startswith("line 2: ") else f"{file}: {reason}"
        _fails(cli("size", "--model", name, "--seq", "8", *flag), message)
    _fails(cli("fit", "--model", "good", "--gpu", "misplaced", *flag), "misplaced.yaml: describes a GPU")
    unknown = cli("size", "--model", "zzz", "--seq", "8", *flag)
    _fails(unknown, "unknown model 'zzz'")
    assert f"({len(broken)} preset files are broken: `kvcalc presets list` says why)" in unknown.stderr


def test_presets_list_and_the_loader_agree(cli, tmp_path: Path) -> None:
    """One scan serves both: every listed name loads, every broken file is listed with its reason, nothing else."""
    broken = _broken_presets(tmp_path)
    listing = presets_listing([tmp_path])
    for entry in listing.models:
        assert load_model(entry.name, [tmp_path]).name == entry.name
    for entry in listing.gpus:
        assert load_gpu(entry.name, [tmp_path]).name == entry.name
    reasons = {problem.path: problem.reason for problem in listing.errors}
    assert set(reasons) == {file for file, _ in broken.values()}
    for file, reason in broken.values():
        assert reasons[file].startswith(reason), reasons[file]
    user = {e.name for e in listing.models + listing.gpus if e.origin == "user"}
    assert user == {"good"}  # not "x" for "[red]x", not "123", the misplaced GPU in neither list
    listed = cli.json("presets", "list", "--presets", tmp_path)
    assert "good" in {m["name"] for m in listed["models"]} and not user & {g["name"] for g in listed["gpus"]}


def test_presets_list_shows_broken_files(cli, tmp_path: Path) -> None:
    broken = _broken_presets(tmp_path)
    listed = cli.json("presets", "list", "--presets", tmp_path)
    assert {Path(e["path"]) for e in listed["errors"]} == {file for file, _ in broken.values()}
    table = cli("presets", "list", "--presets", tmp_path)
    assert table.exit_code == 0 and "good" in table.stdout
    assert len(table.stderr.strip().splitlines()) == len(broken) and "dangling.yaml" in table.stderr


def test_a_broken_user_preset_shadows_the_shipped_one(cli, tmp_path: Path) -> None:
    """A user file meant to override a shipped preset but broken is reported, never silently replaced by the shipped one."""
    (tmp_path / "llama3-8b.yaml").write_text("layers: [\n")
    _fails(cli("size", "--model", "llama3-8b", "--seq", "8", "--presets", tmp_path), "llama3-8b.yaml:2: invalid YAML")
    assert "llama3-8b" not in {e.name for e in presets_listing([tmp_path]).models}


@pytest.mark.parametrize("model_type", RECURRENT)
def test_recurrent_model_types_are_refused(cli, tmp_path: Path, model_type: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, "model_type": model_type}))
    _fails(cli("size", "-m", path, "-s", "8"), f"config.json: model_type {model_type!r} has recurrent layers")


@pytest.mark.parametrize("marker", ["layers_block_type", "hybrid_override_pattern", "attn_type_list", "full_attn_idxs"])
def test_hybrid_markers_are_refused_whatever_the_model_type(cli, tmp_path: Path, marker: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, marker: ["attention", "mamba"]}))
    _fails(cli("size", "-m", path, "-s", "8"), f"config.json: {marker}: marks a model with recurrent layers")


def test_null_means_what_transformers_makes_of_none(cli, tmp_path: Path) -> None:
    """num_key_value_heads null: one per head; head_dim null: hidden / heads; sliding_window null: no window."""
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({**LLAMA, "model_type": "mistral", "num_key_value_heads": None, "head_dim": None, "sliding_window": None})
    )
    model = cli.json("size", "-m", path, "-s", "8")["model"]
    assert (model["kv_heads"], model["head_dim"], model.get("sliding_window")) == (8, 64, None)


@pytest.mark.parametrize(
    "spellings, dtype",
    [
        (["fp32", "float32", "float", "f32"], "fp32"),
        (["fp16", "float16", "half", "f16"], "fp16"),
        (["bf16", "bfloat16"], "bf16"),
        (["fp8", "float8"], "fp8"),
        (["fp8_e4m3", "float8_e4m3fn", "fp8_e4m3fn", "float8_e4m3fnuz", "e4m3"], "fp8_e4m3"),
        (["fp8_e5m2", "float8_e5m2", "float8_e5m2fnuz", "e5m2"], "fp8_e5m2"),
    ],
)
def test_dtype_spellings_of_torch_hf_and_vllm(cli, spellings: list[str], dtype: str) -> None:
    for spelling in spellings:
        assert parse_dtype(spelling) == parse_dtype(spelling.upper()) == dtype
        assert cli.json("size", "-m", "llama3-8b", "-s", "8", "--kv-dtype", spelling)["kv"]["kv_dtype"] == dtype


def test_minus_zero_is_zero(cli) -> None:
    """-0 is 0 for --reserve (which takes zero), as in parse_size everywhere; a negative size is refused."""
    assert parse_size("-0", allow_zero=True) == parse_size("-0GiB", allow_zero=True) == 0
    assert cli.json("fit", "-m", "llama3-8b", "--memory", "80GiB", "--reserve", "-0")["budget"]["reserve_bytes"] == 0
    _fails(cli("fit", "-m", "llama3-8b", "--memory", "80GiB", "--reserve", "-0.5"), "--reserve: size '-0.5' must not be negative")


def test_repeated_variants_are_refused() -> None:
    assert [v.name for v in parse_variants(["mha", "GQA:4"])] == ["mha", "gqa:4"]
    with pytest.raises(InvalidInput, match="variant 'mha' is named twice"):
        parse_variants(["mha", "MHA"])
    with pytest.raises(InvalidInput, match="unknown variant 'mla2'"):
        parse_variants(["mla2"])


def test_unknown_weights_of_a_config_json_names_the_file(cli, tmp_path: Path) -> None:
    """A config.json without the shapes the weights need: the fix names the file, not its folder (issue 11, finding 14)."""
    folder = tmp_path / "some-model"
    folder.mkdir()
    config = folder / "config.json"
    config.write_text(
        '{"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8}'
    )
    result = cli("fit", "--model", config, "--gpu", "h100-sxm")
    assert result.exit_code == 2, result.output
    assert f"add hidden_size, intermediate_size and vocab_size to {config}" in result.stderr


def test_a_config_json_in_the_current_folder_is_named_after_the_folder(cli, tmp_path: Path, monkeypatch) -> None:
    # issue 23 item 13: `--model config.json` run inside the model's folder named the model "config"
    folder = tmp_path / "Meta-Llama-3-8B"
    folder.mkdir()
    config = json.loads((FIXTURES / "hf" / "llama3-8b-config.json").read_text())
    config.pop("_name_or_path", None)  # a config that names itself keeps its name
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(folder)
    assert cli.json("size", "-m", "config.json", "-s", "8")["model"]["name"] == "Meta-Llama-3-8B"
