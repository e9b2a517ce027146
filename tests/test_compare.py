"""`kvcalc compare` through the CLI: the seeds' figures, row order, GPU columns and every bad input."""

from __future__ import annotations

import pytest

from .conftest import TEST_PRESETS

SEED_TINY = TEST_PRESETS / "seed-tiny.yaml"  # hidden 512, 8 heads of 64, int8, one layer
SEED_7B = TEST_PRESETS / "seed-7b.yaml"  # 32 layers, 32 heads of 128, fp16


def rows(doc: dict, field: str) -> list:
    return [row[field] for row in doc["variants"]]


def test_seed_per_token_per_layer_int8(cli) -> None:
    # Source: shared/seeds 000 (MHA/GQA/MQA table): hidden 512, 8 heads of 64, INT8, one token:
    # MHA 2 * 512 = 1024 B, GQA with groups of 2 (4 KV heads) 2 * 256 = 512 B, MQA 2 * 64 = 128 B.
    doc = cli.json("compare", "mha", "gqa:4", "mqa", "--model", SEED_TINY, "--seq", "1")
    assert rows(doc, "kv_heads") == [8, 4, 1]
    assert rows(doc, "bytes_per_token_per_layer") == [1024, 512, 128]


def test_seed_per_token_per_layer_in_the_table(cli) -> None:
    result = cli("compare", "mha", "gqa:4", "mqa", "--model", SEED_TINY, "--seq", "1")
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert "1,024" in lines["mha"] and "512" in lines["gqa:4"] and "128" in lines["mqa"]


def test_seed_7b_cache_at_1024_tokens(cli) -> None:
    # Source: shared/seeds 003 (7B example): 32 layers * Hkv * 128 * 2 (K and V) * 2 B (fp16) * 1024 tokens:
    # MHA (32 heads) 536,870,912 B, GQA (8 KV heads) 134,217,728 B, MQA (1 KV head) 16,777,216 B.
    doc = cli.json("compare", "mha", "gqa:8", "mqa", "--model", SEED_7B, "--seq", "1024")
    assert rows(doc, "bytes_per_sequence") == [536_870_912, 134_217_728, 16_777_216]
    assert rows(doc, "bytes_per_batch") == [536_870_912, 134_217_728, 16_777_216]


def test_groups_of_4_save_75_percent(cli) -> None:
    # Source: shared/seeds 000 (self-check 2): 32 query heads in groups of 4 = 8 KV heads, 8/32 of MHA: 75% saved.
    doc = cli.json("compare", "mha", "gqa:8", "--model", SEED_7B, "--seq", "1024")
    gqa = doc["variants"][1]
    assert gqa["kv_heads"] == 8
    assert gqa["saved_percent"] == 75.0
    assert gqa["saved_bytes"] == 536_870_912 - 134_217_728
    assert doc["baseline"] == {"name": "mha", "kv_dtype": "fp16"}


def test_json_keeps_the_order_given_and_finds_the_mha_baseline(cli) -> None:
    doc = cli.json("compare", "mqa", "gqa:4", "MHA", "gqa", "--model", SEED_7B, "--seq", "1024")
    assert rows(doc, "name") == ["mqa", "gqa:4", "mha", "gqa"]
    assert rows(doc, "kv_heads") == [1, 4, 32, 32]  # plain gqa: the model's own KV heads (seed-7b is MHA)
    assert doc["baseline"]["name"] == "mha"
    assert rows(doc, "saved_percent")[0] == 100 * (32 - 1) / 32


def test_each_variant_in_each_cache_dtype(cli) -> None:
    doc = cli.json("compare", "mha", "mqa", "--model", SEED_7B, "--seq", "1024", "--kv-dtype", "fp16,fp8,q4_0")
    assert [(r["name"], r["kv_dtype"]) for r in doc["variants"]] == [
        ("mha", "fp16"), ("mha", "fp8"), ("mha", "q4_0"), ("mqa", "fp16"), ("mqa", "fp8"), ("mqa", "q4_0"),
    ]  # fmt: skip
    # Source: llama.cpp ggml-common.h block_q4_0 = 18 B per 32 values: K and V rows of 32 * 128 values -> 2 * 128 * 18.
    assert rows(doc, "bytes_per_token_per_layer") == [16_384, 8_192, 4_608, 512, 256, 144]
    assert all(isinstance(value, int) for value in rows(doc, "bytes_per_sequence"))
    assert doc["baseline"] == {"name": "mha", "kv_dtype": "fp16"}  # the first mha row: fp8 shows both savings
    assert rows(doc, "saved_percent")[1] == 50.0


def test_default_model_is_llama3_8b(cli) -> None:
    # Source: meta-llama/Meta-Llama-3-8B config.json: 8 KV heads; 2 * 32 layers * 8 * 128 * 2 B = 131,072 B per token.
    doc = cli.json("compare", "gqa", "mha")
    assert doc["model"] == "llama3-8b" and doc["seq"] == 8192
    assert rows(doc, "kv_heads") == [8, 32]
    assert rows(doc, "bytes_per_token") == [131_072, 524_288]


def test_mla_caches_one_latent(cli) -> None:
    # Source: DESIGN.md section 4 (DeepSeek-V2 MLA): (kv_lora_rank + qk_rope_head_dim) * b per token per layer,
    # (512 + 64) * 2 B = 1,152 B in fp16; no heads.
    doc = cli.json("compare", "mla", "--model", SEED_7B, "--seq", "1024")
    mla = doc["variants"][0]
    assert mla["kv_heads"] is None and mla["latent_width"] == 576
    assert mla["bytes_per_token_per_layer"] == 1_152
    assert mla["bytes_per_sequence"] == 32 * 1_152 * 1024
    narrow = cli.json("compare", "mla", "--model", SEED_7B, "--kv-lora-rank", "256", "--rope-dim", "32")
    assert narrow["variants"][0]["bytes_per_token_per_layer"] == (256 + 32) * 2


def test_table_footnote_and_chart(cli) -> None:
    result = cli("compare", "mha", "gqa:4", "gqa:8", "mqa", "mla", "--units", "gb")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # the footnote wraps at the runner's 80 columns
    assert "KV cache by attention variant: llama3-8b, bf16, seq 8,192" in out
    assert "latent 576" in out and "baseline" in out and "75.0%" in out
    assert "4.29 GB" in out  # MHA: 4,294,967,296 B per sequence, in decimal units
    assert "saved: per batch, against mha" in out and "keep everything but the KV layout" in out
    assert "mla caches one latent of kv_lora_rank 512 + rope 64" in out
    assert "KV bytes per token (all layers)" in out and "█" * 40 in out


def test_variants_keep_the_weights_and_agree_with_fit(cli) -> None:
    doc = cli.json("compare", "mha", "gqa", "mqa", "--gpu", "h100-sxm")
    assert len(set(rows(doc, "fit")[i]["weights_bytes"] for i in range(3))) == 1
    assert doc["gpu"] == "h100-sxm"
    # gqa is llama3-8b itself: the same max batch and max context as `kvcalc fit`.
    fit = cli.json("fit", "--model", "llama3-8b", "--gpu", "h100-sxm")
    assert doc["variants"][1]["fit"]["max_batch"] == fit["max_batch"] == 55
    assert doc["variants"][1]["fit"]["max_context"] == fit["max_context"]
    batches = [row["fit"]["max_batch"] for row in doc["variants"]]
    assert batches[0] < batches[1] < batches[2]
    assert {row["decode"]["bound"] for row in doc["variants"]} == {"memory"}


def test_models_side_by_side_agree_with_size(cli) -> None:
    names = ["llama3-8b", "mistral-7b", "qwen2.5-7b", "gemma2-9b"]
    doc = cli.json("compare", *names, "--seq", "8192", "--gpu", "l40s")
    assert rows(doc, "name") == names and doc["model"] is None and doc["note"] is None
    assert doc["baseline"]["name"] == "llama3-8b"
    for name, row in zip(names, doc["variants"], strict=True):
        size = cli.json("size", "--model", name, "--seq", "8192", "--gpu", "l40s")
        assert row["bytes_per_sequence"] == size["kv"]["bytes_per_sequence"]
        assert row["fit"]["max_batch"] == size["fit"]["max_batch"]
        assert row["decode"]["seconds_per_token"] == size["decode"]["seconds_per_token"]


def test_gpu_table_and_max_batch_chart(cli) -> None:
    result = cli("compare", "mha", "gqa", "mqa", "--gpu", "h100-sxm")
    assert result.exit_code == 0, result.output
    assert "On h100-sxm" in result.stdout and "8,192 (model max)" in result.stdout
    assert "max batch at 8,192 tokens" in result.stdout and "memory" in result.stdout


def test_weights_that_do_not_fit_leave_max_batch_zero(cli) -> None:
    # llama3-70b: 141,107,412,992 B of bf16 weights > 0.9 * 80 GiB of one H100.
    result = cli("compare", "mha", "gqa", "mqa", "--model", "llama3-70b", "--seq", "32768", "--gpu", "h100-sxm")
    assert result.exit_code == 0, result.output
    assert "does not fit:" in result.stdout and "try a larger --tp" in result.stdout
    assert "KV bytes per token (all layers)" in result.stdout  # nothing fits: the chart falls back to bytes
    assert "exceeds llama3-70b's max positions" in result.stderr
    doc = cli.json("compare", "gqa", "--model", "llama3-70b", "--seq", "32768", "--gpu", "h100-sxm")
    assert doc["variants"][0]["fit"]["max_batch"] == 0 and not doc["variants"][0]["fit"]["weights_fit"]


def test_memory_alone_gives_fit_without_decode(cli) -> None:
    doc = cli.json("compare", "mha", "mqa", "--memory", "80GiB")
    assert doc["gpu"] == "80GiB"
    assert all(row["fit"]["max_batch"] > 0 and row["decode"] is None for row in doc["variants"])
    result = cli("compare", "mha", "mqa", "--memory", "80GiB")
    assert "On 80GiB" in result.stdout and "decode" not in result.stdout


def test_tp_beyond_the_kv_heads_warns_of_replicas(cli) -> None:
    result = cli("compare", "gqa", "mqa", "--tp", "8")
    assert result.exit_code == 0, result.output
    assert "tp 8: every GPU keeps a copy of one KV head or of the MLA latent for mqa;" in result.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["mha", "xqa"], "unknown variant 'xqa': choose mha, gqa"),
        (["gqa:3"], "gqa:3: 3 KV heads do not divide the 32 query heads of llama3-8b"),
        (["gqa:64"], "gqa:64: 64 KV heads do not divide the 32 query heads of llama3-8b"),
        (["gqa:0"], "variant 'gqa:0': G in gqa:G must be a whole number of KV heads, at least 1"),
        (["gqa:x"], "variant 'gqa:x': G in gqa:G must be a whole number"),
        (["mha:4"], "variant 'mha:4': only gqa takes a KV-head count"),
        (["mha", "llama3-8b"], "cannot mix variants (mha) with models (llama3-8b)"),
        (["llama3-8b", "nope-7b"], "unknown model 'nope-7b'"),
        (["llama3-8b", "mistral-7b", "--model", "llama3-70b"], "leave it out when comparing models"),
        (["mha", "--model", "nope-7b"], "unknown model 'nope-7b'"),
        (["mla", "--kv-lora-rank", "0"], "--kv-lora-rank must be a positive integer, got 0"),
        (["mha", "--kv-dtype", "fp16,fp7"], "unknown dtype 'fp7'"),
        (["mqa", "--tp", "3"], "--tp 3 does not divide the 32 attention heads of llama3-8b (mqa)"),
        (["mha", "--seq", "0"], "token count '0' must be at least 1 token"),
        (["mha", "--model", SEED_TINY, "--gpu", "h100-sxm"], "gives neither params nor hidden, intermediate and vocab"),
    ],
)
def test_bad_compare_arguments(cli, args: list, expected: str) -> None:
    result = cli("compare", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


def test_tp_rows_count_every_gpu_alike(cli) -> None:
    # llama3-70b at tp 4: MHA keeps 64 KV heads in all (16 per GPU); MQA replicates its one head on
    # each of 4 GPUs. Per-layer bytes times 80 layers must give the per-token bytes of the same row.
    doc = cli.json("compare", "mha", "mqa", "--model", "llama3-70b", "--seq", "8192", "--tp", "4")
    for row in doc["variants"]:
        assert row["bytes_per_token_per_layer"] * 80 == row["bytes_per_token"]
    assert [row["kv_heads"] for row in doc["variants"]] == [64, 4]
