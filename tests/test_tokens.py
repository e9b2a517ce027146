"""Token counts typed as people write them: 8k, 128k, 1M, 8_192, 8,192 (units.parse_tokens), in options and plans."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kvcalc.errors import InvalidInput
from kvcalc.units import parse_tokens


@pytest.mark.parametrize(
    "text, tokens",
    [
        # k = 1,024 and M = 1,048,576 tokens, as context lengths are named: Llama-3.1's "128k" is
        # max_position_embeddings 131072 in its config.json
        ("8k", 8_192),
        ("32K", 32_768),
        ("128k", 131_072),
        ("1M", 1_048_576),
        ("1m", 1_048_576),
        ("8_192", 8_192),
        ("8,192", 8_192),
        ("1,048,576", 1_048_576),
        ("1.5k", 1_536),  # a fraction is fine when the count is whole
        ("0.5k", 512),
        (" 4096 ", 4_096),
        ("1", 1),
    ],
)
def test_spellings(text: str, tokens: int) -> None:
    assert parse_tokens(text) == tokens


@pytest.mark.parametrize(
    "text, says",
    [
        ("8kk", "cannot be read"),
        ("8 k", "cannot be read"),
        ("8g", "cannot be read"),  # tokens have no G
        ("1e3", "cannot be read"),
        ("81,92", "cannot be read"),  # commas group thousands
        ("8__192", "cannot be read"),
        ("", "cannot be read"),
        ("9" * 60, "cannot be read"),
        ("1.3k", "1,331.2 tokens, not a whole number"),
        ("1.5", "not a whole number"),
        ("-8k", "must be positive"),
        ("0", "must be at least 1 token"),
        ("0k", "must be at least 1 token"),
    ],
)
def test_bad_spellings(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_tokens(text)


@given(st.integers(1, 2**31), st.sampled_from(["plain", "underscores", "commas"]))
def test_every_grouping_reads_back(count: int, grouping: str) -> None:
    text = {"plain": f"{count}", "underscores": f"{count:_}", "commas": f"{count:,}"}[grouping]
    assert parse_tokens(text) == count


@given(st.integers(1, 2**21), st.sampled_from([("k", 2**10), ("K", 2**10), ("M", 2**20), ("m", 2**20)]))
def test_suffixes_are_binary(count: int, suffix: tuple[str, int]) -> None:
    letter, factor = suffix
    assert parse_tokens(f"{count}{letter}") == count * factor


def test_options_take_the_spellings(cli) -> None:
    assert cli.json("size", "--model", "llama3.1-8b", "--seq", "128k")["kv"]["seq"] == 131_072
    assert cli.json("size", "--model", "llama3.1-8b", "-s", "8,192")["kv"]["seq"] == 8_192
    assert cli.json("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "2k")["decode"]["seq"] == 2_048
    assert cli.json("compare", "mha", "gqa", "--seq", "4_096")["seq"] == 4_096
    assert cli.json("fit", "--model", "llama3.1-8b", "--memory", "80GB", "--seq", "32K")["seq"] == 32_768
    hf = cli.json("fit", "--model", "llama3-8b", "--memory", "80GB", "--seq", "512", "--engine", "hf", "--max-cache-len", "1k")
    assert (hf["max_context"], hf["max_context_limit"]) == (1_024, "max_cache_len")
    # the engine's token options read alike: 4k is 4096 on the command line as in the engine's own flag
    args = ("size", "--model", "gemma2-9b", "--seq", "8192", "--engine")
    vllm = cli.json(*args, "vllm", "--max-num-batched-tokens", "4k")["kv"]
    assert vllm == cli.json(*args, "vllm", "--max-num-batched-tokens", "4096")["kv"]
    llamacpp = cli.json(*args, "llamacpp", "--swa-full", "false", "--ubatch", "1k")["kv"]
    assert llamacpp == cli.json(*args, "llamacpp", "--swa-full", "false", "--ubatch", "1024")["kv"]


@pytest.mark.parametrize("value", ["8kk", "1.5", "-8k", "0", "1.3k", "8g"])
@pytest.mark.parametrize("flag", ["--seq", "--max-cache-len"])
def test_bad_spellings_in_options_are_one_line(cli, flag: str, value: str) -> None:
    args = ["size", "--model", "llama3-8b", "--engine", "hf", flag, value] + (["--seq", "8"] if flag != "--seq" else [])
    result = cli(*args)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"Invalid value for '{flag}'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_help_says_what_k_means(cli) -> None:
    text = cli.help("size")
    assert "TOKENS" in text and "k = 1,024 tokens" in text and "128k = 131,072" in text


def _plan(tmp_path: Path, seq: str, engine: str = "textbook") -> Path:
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"workloads:\n  - name: a\n    model: llama3.1-8b\n    gpu: h100-sxm\n    seq: {seq}\n    engine: {engine}\n")
    return plan


@pytest.mark.parametrize("seq", ["128k", "131_072", "131,072", "'131072'"])
def test_plans_take_the_spellings(cli, tmp_path: Path, seq: str) -> None:
    doc = cli.json("check", _plan(tmp_path, seq))
    assert doc["workloads"][0]["kv_bytes_per_gpu"] == 131_072 * 128 * 1024  # 128 KiB per token (test_golden)


def test_plan_engine_options_take_the_spellings(cli, tmp_path: Path) -> None:
    spelled = cli.json("check", _plan(tmp_path, "8k", "{name: vllm, max_num_batched_tokens: 2k}"))
    plain = cli.json("check", _plan(tmp_path, "8192", "{name: vllm, max_num_batched_tokens: 2048}"))
    assert spelled == plain


@pytest.mark.parametrize(
    "seq, says",
    [
        ("8kk", "workloads.0.seq: token count '8kk' cannot be read"),
        ("-8k", "workloads.0.seq: token count '-8k' must be positive"),
        ("0", "workloads.0.seq: Input should be greater than 0"),
        ("1.3k", "workloads.0.seq: token count '1.3k' is 1,331.2 tokens, not a whole number"),
        ("8.0", "workloads.0.seq: Input should be a valid integer"),  # a number stays strict: 8.0 is no integer
        ("true", "workloads.0.seq: expected a number, got true"),
    ],
)
def test_bad_spellings_in_plans(cli, tmp_path: Path, seq: str, says: str) -> None:
    result = cli("check", _plan(tmp_path, seq))
    assert result.exit_code == 2 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1


@given(st.integers(1, 2**40))
@example(1_072_640)  # 1,047.5k: a grouped count with a half k was printed and then refused
def test_formatted_counts_read_back(count: int) -> None:
    from kvcalc.units import format_tokens

    assert parse_tokens(format_tokens(count)) == count


@pytest.mark.parametrize(
    "engine, flag, spelled, plain",
    [
        ("sglang", "--max-total-tokens", "64k", "65536"),
        ("trtllm", "--max-tokens", "48k", "49152"),
        ("trtllm", "--max-num-tokens", "4k", "4096"),
        ("trtllm", "--max-seq-len", "16k", "16384"),
    ],
)
def test_engine_token_options_take_the_spellings(cli, engine: str, flag: str, spelled: str, plain: str) -> None:
    args = ("fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--seq", "8k", "--engine", engine, flag)
    assert cli.json(*args, spelled) == cli.json(*args, plain)
    bad = cli(*args, "8kk")
    assert bad.exit_code == 2 and f"Invalid value for '{flag}'" in bad.stderr
