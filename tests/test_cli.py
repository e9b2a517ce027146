"""The CLI through Typer's CliRunner: outputs, JSON, exit codes and every bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import HF_CONFIGS, TEST_PRESETS


def test_size_table_and_explain(cli) -> None:
    result = cli("size", "--model", "llama3-8b", "--seq", "8192", "--explain")
    assert result.exit_code == 0, result.output
    assert "1,073,741,824 B" in result.stdout and "1.00 GiB" in result.stdout
    assert "(d_k + d_v) * Hkv * b = (128 + 128) * 8 * b = 4,096 B" in result.stdout


def test_size_json_has_integer_bytes(cli) -> None:
    doc = cli.json("size", "--model", "llama3-8b", "--seq", "8192", "--batch", "16", "--kv-dtype", "fp8")
    assert doc["kv"]["bytes_per_batch"] == 16 * 8192 * 65_536
    assert doc["kv"]["kv_dtype"] == "fp8"
    assert doc["weights"]["bytes"] == 16_060_522_496


def test_size_units_gb(cli) -> None:
    result = cli("size", "--model", "llama3-8b", "--seq", "8192", "--units", "gb")
    assert "1.07 GB" in result.stdout


def test_size_with_gpu_fits_and_decodes(cli) -> None:
    doc = cli.json("size", "--model", "llama3-8b", "--seq", "8192", "--gpu", "h100-sxm")
    assert doc["fit"]["fits"] is True
    assert doc["decode"]["roofline"]["bound"] == "memory"


def test_size_per_layer_kind_for_hybrid_models(cli) -> None:
    result = cli("size", "--model", "gemma2-9b", "--seq", "8192")
    assert result.exit_code == 0
    assert "sliding W=4,096" in result.stdout and "Per layer kind" in result.stdout


def test_size_paged_shows_waste(cli) -> None:
    result = cli("size", "--model", "llama3-8b", "--seq", "1000", "--block-size", "16")
    assert "allocated beyond the textbook need" in result.stdout and "1,048,576 B" in result.stdout


def test_size_from_user_yaml_and_hf_config(cli) -> None:
    assert cli.json("size", "--model", TEST_PRESETS / "seed-7b.yaml", "--seq", "1024")["kv"]["bytes_per_sequence"] == 536_870_912
    doc = cli.json("size", "--model", HF_CONFIGS / "llama3-8b-config.json", "--seq", "4096")
    assert doc["kv"]["bytes_per_token"] == 131_072
    assert doc["weights"]["params"]["total"] == 8_030_261_248


def test_python_dash_m(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "kvcalc", "size", "--model", "llama3-8b", "--seq", "8192", "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert '"bytes_per_token": 131072' in out.stdout


def test_presets_list_and_show(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = cli.json("presets", "list")
    assert len(doc["models"]) >= 20 and len(doc["gpus"]) >= 12
    shown = cli.json("presets", "show", "gemma2-9b")
    assert shown["kind"] == "model" and shown["spec"]["sliding_window"] == 4096 and shown["spec"]["source"]
    gpu = cli.json("presets", "show", "h100-sxm")
    assert gpu["kind"] == "gpu" and gpu["spec"]["bandwidth_bytes_per_s"] == 3_350_000_000_000


def test_user_presets_folder_wins_and_is_listed(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ours.yaml").write_text("name: llama3-8b\nlayers: 1\nheads: 8\nkv_heads: 8\nhead_dim: 64\ndtype: fp16\n")
    monkeypatch.setenv("KVCALC_PRESETS", str(tmp_path))
    assert cli.json("size", "--model", "llama3-8b", "--seq", "1")["kv"]["bytes_per_token"] == 2 * 8 * 64 * 2
    listed = {e["name"]: e for e in cli.json("presets", "list")["models"]}
    assert listed["llama3-8b"]["origin"] == "user"
    monkeypatch.delenv("KVCALC_PRESETS")
    assert cli.json("size", "--model", "llama3-8b", "--seq", "1", "--presets", tmp_path)["kv"]["bytes_per_token"] == 2048


def test_seq_beyond_max_positions_warns_and_still_prints(cli) -> None:
    result = cli("size", "--model", "llama3-8b", "--seq", "32768")
    assert result.exit_code == 0
    assert "exceeds llama3-8b's max positions 8,192" in result.stderr
    assert "4,294,967,296 B" in result.stdout


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


GOOD = "name: x\nlayers: 2\nheads: 8\nkv_heads: 2\nhead_dim: 64\ndtype: bf16\n"


@pytest.mark.parametrize(
    "file_text, expected",
    [
        ("name: x\nlayers: 2\nheads: 8\nkv_heads: 3\nhead_dim: 64\n", "heads (8) must be divisible by kv_heads (3)"),
        ("name: x\nlayers: 2\nheads: 8\nkv_heads: 2\n", "head_dim is missing"),
        ("name: x\nheads: 8\nkv_heads: 2\nhead_dim: 64\n", "layers: Field required"),
        ("name: x\nlayers: 0\nheads: 8\nkv_heads: 2\nhead_dim: 64\n", "layers: Input should be greater than 0"),
        ("name: x\nlayers: -4\nheads: 8\nkv_heads: 2\nhead_dim: 64\n", "layers: Input should be greater than 0"),
        (GOOD.replace("bf16", "fp12"), "unknown dtype 'fp12'"),
        (GOOD + "layerz: 3\n", "layerz: unknown field"),
        (GOOD + "kv_head: 3\n", "did you mean 'kv_heads'?"),
        ("name: x\nlayers: [1, 2\n", ":3: invalid YAML"),
        ("- 1\n- 2\n", "expected a mapping of fields, found a list"),
        ("", "found an empty file"),
        ("!!python/object/apply:os.system ['echo hi']\n", "invalid YAML"),
        (b"name: \xff\xfe\n", "not UTF-8"),
        (GOOD.replace("layers: 2", "layers: two"), "layers: Input should be a valid integer"),
        (GOOD.replace("layers: 2", "layers: true"), "layers: expected a number, got true"),
        (GOOD.replace("name: x", 'name: "[red]x[/red]"'), "name: a name is 1 to 200 printable characters"),
        (GOOD.replace("name: x", 'name: "x\\x1b[31m"'), "without control characters"),
        (GOOD + "sliding_window: false\n", "sliding_window: expected a number, got false"),
    ],
)
def test_bad_model_files(cli, tmp_path: Path, file_text: str | bytes, expected: str) -> None:
    path = _write(tmp_path, "m.yaml", file_text)
    result = cli("size", "--model", path, "--seq", "128")
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert str(path) in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "llama3-8", "--seq", "1"], "unknown model 'llama3-8'; did you mean llama3-8b"),
        (["--model", "./missing.yaml", "--seq", "1"], "no such file"),
        (["--model", "llama3-8b", "--seq", "0"], "Invalid value for '--seq' / '-s': token count '0' must be at least 1 token"),
        (["--model", "llama3-8b", "--seq", "-5"], "Invalid value for '--seq' / '-s': token count '-5' must be positive"),
        (["--model", "llama3-8b", "--seq", "8", "--batch", "0"], "--batch must be a positive integer"),
        (["--model", "llama3-8b", "--seq", "8", "--kv-dtype", "fp7"], "unknown dtype 'fp7'"),
        (["--model", "llama3-8b", "--seq", "8", "--tp", "3"], "--tp 3 does not divide the 32 attention heads"),
        (["--model", "llama3-8b", "--seq", "100000", "--tp", "3"], "--tp 3 does not divide"),  # no context warning too
        (["--model", "llama3-8b", "--seq", "8", "--tp", "4", "--pp", "64"], "--pp 64 exceeds the model's 32 layers"),
        (["--model", "llama3-8b", "--seq", "8", "--memory", "80XB"], "cannot read size '80XB'"),
        (["--model", "llama3-8b", "--seq", "8", "--memory", "1e400"], "--memory: size '1e400' is more than 1 EB"),
        (["--model", "llama3-8b", "--seq", "8", "--memory", "80GB", "--reserve", "1e309"], "more than 1 EB"),
        # issue 23 item 8: bits are not bytes, a byte is whole, digits are ASCII (as --seq reads them)
        (
            ["--model", "llama3-8b", "--seq", "8", "--memory", "80Gb"],
            "--memory: size '80Gb' is in bits (Gb: a small b is a bit); kvcalc reads bytes: write 80GB",
        ),
        (
            ["--model", "llama3-8b", "--seq", "8", "--memory", "1.5B"],
            "--memory: size '1.5B' is 1.5 bytes, not a whole number of bytes",
        ),
        (["--model", "llama3-8b", "--seq", "8", "--memory", "\u0668\u0660GB"], "cannot read size"),
        (["--model", "llama3-8b", "--seq", "8", "--tp", "\u0662"], "--tp '\u0662': give a positive integer, or auto"),
        (["--model", "llama3-8b", "--seq", "8", "--units", "kb"], "--units 'kb'"),
        (["--model", HF_CONFIGS / "bert-config.json", "--seq", "8"], "model_type 'bert' is not supported"),
        (["--model", "llama3-8b", "--seq", "8", "--presets", "/nonexistent"], "presets folder does not exist"),
    ],
)
def test_bad_size_arguments(cli, args: list, expected: str) -> None:
    result = cli("size", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_duplicate_names_in_one_folder(cli, tmp_path: Path) -> None:
    """Two files of one folder naming one preset: asking for it is an error, and it is not listed."""
    _write(tmp_path, "a.yaml", GOOD)
    _write(tmp_path, "b.yaml", GOOD)
    result = cli("size", "--model", "x", "--seq", "8", "--presets", tmp_path)
    assert result.exit_code == 2
    assert "b.yaml: preset name 'x' is also defined in" in result.stderr and "a.yaml" in result.stderr
    listed = cli.json("presets", "list", "--presets", tmp_path)
    assert "x" not in {m["name"] for m in listed["models"]}


def test_help_lists_commands_in_order_and_keeps_brackets(cli) -> None:
    commands_panel = cli("--help").stdout.split("Commands")[1]
    listed = re.findall(r"^│ (\w+) {2,}", commands_panel, flags=re.MULTILINE)
    assert listed == ["size", "fit", "decode", "compare", "measure", "check", "schema", "presets"]
    measure_help = cli("measure", "--help").stdout
    assert "kvcalc[measure]" in measure_help and "cuda[:N]" in measure_help  # not eaten as Rich markup


def test_unknown_command_suggests_the_closest(cli) -> None:
    result = cli("sise", "--model", "llama3-8b")
    assert result.exit_code == 2 and "Did you mean 'size'?" in result.output


def test_version(cli) -> None:
    from importlib.metadata import version

    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"kvcalc {version('kvcalc')}\n"


def test_sizes_are_read_exactly(cli) -> None:
    """Sizes go through decimal arithmetic, not floats: 2^53 + 1 bytes stays itself."""
    doc = cli.json("fit", "--model", "llama3-8b", "--memory", "9007199254740993", "--reserve", "0.5GiB")
    assert doc["budget"]["memory_bytes"] == 9_007_199_254_740_993 and doc["budget"]["reserve_bytes"] == 2**29
    for exponent in ("8E10", "8e10", "8e+10", "80e+9"):  # an exponent with or without its sign, either case
        assert cli.json("fit", "--model", "llama3-8b", "--memory", exponent)["budget"]["memory_bytes"] == 8 * 10**10


def test_explain_says_which_part_of_an_mla_latent_takes_which_dtype(cli) -> None:
    """Textbook MLA stores the latent as K and the rope key as V: 512 * 1 B (fp8) + 64 * 2 B (bf16) = 640 B;
    llama.cpp stores one K-only row, so --v-dtype does not apply to it: (512 + 64) * 34/32 B (q8_0) = 612 B."""
    base = ["size", "--model", "deepseek-v2-lite", "--seq", "8k", "--explain"]
    textbook = cli(*base, "--k-dtype", "fp8", "--v-dtype", "bf16").stdout
    assert "kv_lora_rank * b_K + qk_rope_head_dim * b_V = 512 * b_K + 64 * b_V (latent as K, rope key as V) = 640 B" in textbook
    llamacpp = cli(*base, "--k-dtype", "q8_0", "--v-dtype", "bf16", "--engine", "llamacpp").stdout
    assert "(kv_lora_rank + qk_rope_head_dim) * b_K = (512 + 64) * b_K (one K-only row: b_V unused) = 612 B" in llamacpp


@pytest.mark.parametrize(
    "args, expected",
    [
        (["size", "--model", "llama3-8b"], "Missing option '--seq' / '-s' (see kvcalc size --help)"),
        (["size", "--model", "llama3-8b", "--seq", "1.5"], "Invalid value for '--seq'"),
        (["fit", "--model", "llama3-8b", "--utilization", "90%"], "Invalid value for '--utilization'"),
        (["size", "--model", "llama3-8b", "--sq", "8"], "No such option: --sq"),
        (["compare"], "Missing argument 'names' (see kvcalc compare --help)"),
        (["--bogus"], "No such option: --bogus (see kvcalc --help)"),
    ],
)
def test_usage_errors_are_one_line(cli, args: list[str], expected: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2 and result.stdout == ""
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_group_alone_prints_its_help(cli) -> None:
    assert "Usage: kvcalc presets" in cli("presets").output


def test_presets_show_finds_gpus_and_says_what_is_wrong_with_one(cli, tmp_path: Path) -> None:
    assert cli.json("presets", "show", "h100-sxm")["kind"] == "gpu"
    unknown = cli("presets", "show", "h100")
    assert unknown.exit_code == 2 and "unknown model or GPU 'h100'; did you mean h100-nvl, h100-pcie, h100-sxm" in unknown.stderr
    gpu = _write(tmp_path, "g.yaml", "name: g\nmemory_bytes: 1000\nbandwidth_bytes_per_s: 0\nbf16_flops: 5\n")
    bad = cli("presets", "show", gpu)
    assert bad.exit_code == 2 and "bandwidth_bytes_per_s: Input should be greater than 0" in bad.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["compare", "mha", "mha"], "'mha' is named twice"),
        (["compare", "MHA", "mha"], "'mha' is named twice"),
        (["size", "--model", "llama3-8b", "--seq", "8", "--kv-dtype", ""], "unknown dtype ''"),
        (["fit", "--model", "gpt-oss-20b", "--memory", "80GB", "--weight-dtype", ""], "unknown dtype ''"),
    ],
)
def test_empty_or_repeated_arguments(cli, args: list[str], expected: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2 and expected in result.stderr


def test_engine_names_and_switches_read_loosely(cli) -> None:
    assert cli.json("size", "--model", "llama3-8b", "--seq", "8", "--engine", "VLLM")["kv"]["engine"] == "vllm"
    assert [row["name"] for row in cli.json("compare", "VLLM", "hf")["variants"]] == ["vllm", "hf"]
    args = ("size", "--model", "gemma2-9b", "--seq", "8192", "--engine", "llamacpp")
    assert cli.json(*args, "--swa-full", "no")["kv"] == cli.json(*args, "--swa-full", "false")["kv"]


def test_help_paragraphs_are_single_lines() -> None:
    """Typer keeps a docstring's line breaks inside a paragraph; one line each lets it reflow."""
    import inspect

    from kvcalc.cli import COMMANDS, command_app

    apps = [command_app(name) for name in COMMANDS]
    docs = [inspect.cleandoc(c.callback.__doc__ or "") for a in apps for c in a.registered_commands if c.callback]
    assert len(docs) == 9 and all("\n" not in paragraph for doc in docs for paragraph in doc.split("\n\n"))


def test_help_lists_each_command_as_built() -> None:
    """--help lists each command without building its options; the name and text are the built command's."""
    from kvcalc.cli import COMMANDS, built_command, listed_command

    for name in COMMANDS:
        listed, built = listed_command(name), built_command(name)
        assert (listed.name, listed.help) == (built.name, built.help)


@pytest.mark.parametrize(
    "words, env, expected",
    [
        ("kvcalc s", {}, ["size", "schema"]),  # command names: every command module imported
        ("kvcalc size --model llama3.2", {}, ["llama3.2-1b", "llama3.2-3b"]),
        ("kvcalc fit --gpu h100", {}, ["h100-nvl", "h100-pcie", "h100-sxm"]),
        ("kvcalc presets show h100", {}, ["h100-nvl", "h100-pcie", "h100-sxm"]),
        (f"kvcalc size --presets {TEST_PRESETS} --model seed", {}, ["seed-7b", "seed-tiny"]),
        ("kvcalc size --model llama3.2", {"KVCALC_PRESETS": "/nonexistent"}, []),  # no error printed mid-completion
        ("kvcalc size --kv-dtype fp8", {}, ["fp8", "fp8_e4m3", "fp8_e5m2"]),  # issue 23 item 13: dtypes, schema commands
        ("kvcalc fit --k-dtype q4", {}, ["q4_0", "q4_1"]),
        ("kvcalc schema pre", {}, ["presets-list", "presets-show"]),
    ],
)
def test_shell_completes_preset_names(words: str, env: dict[str, str], expected: list[str]) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, **env, "_KVCALC_COMPLETE": "complete_bash", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split()) - 1)
    code = "from kvcalc.cli import app; app(prog_name='kvcalc')"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.split() == expected and run.stderr == ""


def test_compare_tells_files_apart_by_case(cli, tmp_path: Path) -> None:
    upper, lower = _write(tmp_path, "A.yaml", GOOD.replace("name: x", "name: big")), _write(tmp_path, "a.yaml", GOOD)
    assert [row["name"] for row in cli.json("compare", upper, lower)["variants"]] == ["big", "x"]


def test_published_params_below_the_embeddings_are_refused(cli, tmp_path: Path) -> None:
    model = _write(tmp_path, "m.yaml", GOOD + "hidden: 512\nintermediate: 1024\nvocab: 32000\nparams: 1000\n")
    result = cli("size", "--model", model, "--seq", "8")
    assert result.exit_code == 2 and "params 1,000 is less than its embeddings" in result.stderr


def test_embeddings_dtype_of_a_gguf_like_preset(cli, tmp_path: Path) -> None:
    shape = "hidden: 512\nintermediate: 1024\nvocab: 32000\nweight_dtype: q4_0\n"
    plain, quantized = (
        _write(tmp_path, "p.yaml", GOOD + shape),
        _write(tmp_path, "q.yaml", GOOD + shape + "embeddings_dtype: q8_0\n"),
    )
    embeddings = 2 * 32_000 * 512
    assert (
        cli.json("size", "--model", plain, "--seq", "8")["weights"]["bytes"]
        - cli.json("size", "--model", quantized, "--seq", "8")["weights"]["bytes"]
        == embeddings * 2 - embeddings * 34 // 32
    )


def _every_help_page() -> list[list[str]]:
    """The argument lists of every --help page: the group, each command, and the presets subcommands."""
    from kvcalc.cli import COMMANDS

    return [[], *[[name] for name in COMMANDS], ["presets", "list"], ["presets", "show"]]


@pytest.mark.parametrize("words", _every_help_page(), ids=lambda words: " ".join(words) or "kvcalc")
def test_switches_show_no_placeholder(cli, words: list[str]) -> None:
    """A switch takes no value: Typer 0.29 would print <bool> beside --json, --explain and --help."""
    text = cli.help(*words)
    assert "<bool>" not in text and "--help Show this message and exit." in text


def test_fit_help_says_gpu_or_memory_is_required(cli) -> None:
    text = cli.help("fit")
    assert "Needs --gpu or --memory (one of them is required)" in text and "Required unless --memory." in text
    result = cli("fit", "--model", "llama3-8b")
    assert result.exit_code == 2 and "give --gpu NAME or --memory SIZE" in result.stderr


def test_compare_help_names_the_engines(cli) -> None:
    from kvcalc import engines

    text = cli.help("compare")
    assert f"engines allocating for --model ({', '.join(engines.PROFILES)})" in text
    assert "kvcalc compare textbook hf vllm llamacpp --model gemma2-9b" in text


def test_check_help_documents_the_plan_and_its_example_runs(cli, tmp_path: Path) -> None:
    text = cli.help("check")
    for field in ("workloads:", "seq (8192 or 128k)", "expect: any of fits", "decode_judge: roofline", "docs/check.md"):
        assert field in text
    example = re.search(r"Example plan: (workloads: \[.*?\}\}\])", text)
    assert example is not None, text
    plan = _write(tmp_path, "plan.yaml", example.group(1) + "\n")
    assert cli.json("check", plan)["passed"] is True


def test_schema_help_says_what_each_document_covers(cli) -> None:
    from kvcalc.documents import SCHEMAS

    covers = cli.help("schema").split("Covers: ", 1)[1]
    assert all(f"{command} (" in covers for command in SCHEMAS)


@pytest.mark.parametrize("command", ["size", "fit", "compare"])
def test_every_engine_option_is_a_flag(cli, command: str) -> None:
    """with_engine_options gives size, fit and compare every Engine option (spec.ENGINE_OPTIONS), each defined once."""
    from kvcalc.spec import ENGINE_OPTIONS

    text = cli.help(command)
    assert [name for name in ENGINE_OPTIONS if f"--{name.replace('_', '-')} " not in text] == []


@pytest.mark.parametrize(
    "command", [["size", "--model", "llama3-8b", "--seq", "8"], ["compare", "mha", "gqa", "--model", "llama3-8b"]]
)
@pytest.mark.parametrize("flag, message", [("--gpu", "--gpu is empty: give a GPU preset"), ("--memory", "--memory is empty")])
def test_an_empty_gpu_or_memory_is_refused_not_dropped(cli, command: list[str], flag: str, message: str) -> None:
    for empty in ("", " "):
        result = cli(*command, flag, empty)
        assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
