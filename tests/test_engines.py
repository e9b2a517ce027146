"""Engine profiles reproduce what transformers, llama.cpp and vLLM were measured to allocate
(shared/reference/engines.md), through the CLI. Each test names the rule and its source."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import get_args

import pytest

from kvcalc import engines
from kvcalc.engines import PROFILES
from kvcalc.spec import EngineName

from .conftest import TEST_PRESETS

SWA = str(TEST_PRESETS / "tiny-swa.yaml")  # 4 layers (S F S F), 2 KV heads of 32, bf16, W = 16
MLA = str(TEST_PRESETS / "tiny-mla.yaml")  # 2 layers, MLA r = 32, rope 16, 4 heads: nope 8, v 16
PER_TOKEN_LAYER = 2 * 2 * 32 * 2  # K and V, 2 KV heads of 32, 2 bytes: 256 B


def kv(cli, *args: str) -> dict:
    return cli.json("size", *args)["kv"]


def logged_as(doc: dict, name: str) -> dict:
    """The engine_log line of a fit document named `name`."""
    [line] = [line for line in doc["engine_log"] if line["name"] == name]
    return line


def held(doc: dict) -> dict[str, int]:
    return {g["kind"]: g["tokens_held"] for g in doc["groups"]}


# transformers (cache_utils.py)


def test_hf_full_layers_exact_and_sliding_layers_keep_w_minus_1(cli) -> None:
    # engines.md: full layers exactly 2*B*Hkv*d*s*bytes; sliding layers keep min(s, W - 1).
    doc = kv(cli, "--model", SWA, "--seq", "100", "--batch", "3", "--engine", "hf")
    assert held(doc) == {"sliding": 15, "full": 100}
    assert doc["bytes_per_batch"] == 3 * PER_TOKEN_LAYER * (2 * 15 + 2 * 100)


def test_hf_prefill_peak_is_the_full_attention_figure(cli) -> None:
    # engines.md: right after a prefill longer than W the sliding layer still pins the whole prefill.
    doc = kv(cli, "--model", SWA, "--seq", "100", "--engine", "hf")
    assert doc["peak_bytes_per_batch"] == PER_TOKEN_LAYER * 4 * 100


def test_hf_static_cache(cli) -> None:
    # engines.md: StaticCache full layers preallocate max_cache_len; sliding min(W, max_cache_len) (W, not W - 1).
    doc = kv(cli, "--model", SWA, "--seq", "40", "--engine", "hf", "--max-cache-len", "64")
    assert held(doc) == {"sliding": 16, "full": 64}
    result = cli("size", "--model", SWA, "--seq", "100", "--engine", "hf", "--max-cache-len", "64")
    assert result.exit_code == 2 and "exceeds the StaticCache's --max-cache-len 64" in result.stderr


def test_hf_deepseek_latent_in_5_and_heads_in_4(cli) -> None:
    # engines.md: 5.x caches keys [B,1,s,r] and values [B,1,s,rope]: L*B*s*(r+rope)*bytes;
    # 4.57 caches K [B,H,s,nope+rope] and V [B,H,s,v_head_dim].
    assert kv(cli, "--model", MLA, "--seq", "10", "--engine", "hf")["bytes_per_batch"] == 2 * 10 * (32 + 16) * 2
    v4 = kv(cli, "--model", MLA, "--seq", "10", "--engine", "hf", "--hf-version", "4")
    assert v4["bytes_per_batch"] == 2 * 10 * 4 * ((8 + 16) + 16) * 2


def test_hf_fp8_quantized_cache(cli, tmp_path) -> None:
    # engines.md: 1 byte per element plus one fp32 scale per K and per V per layer; refuses sliding models.
    full = tmp_path / "full.yaml"
    full.write_text("name: full\nlayers: 4\nheads: 4\nkv_heads: 2\nhead_dim: 32\ndtype: bf16\n")
    doc = kv(cli, "--model", str(full), "--seq", "10", "--engine", "hf", "--kv-dtype", "fp8")
    assert doc["bytes_per_batch"] == 4 * 10 * 2 * 2 * 32 * 1 + 4 * 2 * 4
    refused = cli("fit", "--model", "gemma2-9b", "--gpu", "l40s", "--engine", "hf", "--kv-dtype", "fp8")
    assert refused.exit_code == 2 and "only full attention layers" in refused.stderr  # fit refuses it too
    result = cli("size", "--model", SWA, "--seq", "10", "--engine", "hf", "--kv-dtype", "fp8")
    assert (
        result.exit_code == 2
        and "QuantizedCache (fp8) is only supported for models with only full attention layers" in result.stderr
    )


# llama.cpp (src/llama-context.cpp, src/llama-kv-cache.cpp, src/llama-kv-cache-iswa.cpp)


@pytest.mark.parametrize("n_ctx, cells", [(100, 256), (1000, 1024), (256, 256)])
def test_llamacpp_pads_n_ctx_to_256(cli, n_ctx: int, cells: int) -> None:
    doc = kv(cli, "--model", "llama3-8b", "--seq", str(n_ctx), "--engine", "llamacpp")
    assert held(doc) == {"full": cells}
    assert doc["bytes_per_batch"] == cells * 131_072


def test_llamacpp_q8_0_issue_example(cli) -> None:
    # n_ctx 1000 -> 1024 cells; q8_0 stores 34 B per 32 values: 32 layers * 2 * 1024 values / 32 * 34 B per token.
    doc = kv(cli, "--model", "llama3-8b", "--seq", "1000", "--engine", "llamacpp", "--kv-dtype", "q8_0")
    assert doc["bytes_per_batch"] == 1024 * 32 * 2 * (8 * 128 // 32) * 34


def test_llamacpp_sequences_share_n_ctx(cli) -> None:
    # engines.md: n_ctx=512 with 4 sequences becomes 4 x 256 = 1024 cells; unified: one buffer of 512.
    doc = kv(cli, "--model", "llama3-8b", "--seq", "512", "--batch", "4", "--engine", "llamacpp")
    assert held(doc) == {"full": 256} and doc["allocation_units"] == 4
    assert doc["bytes_per_batch"] == 1024 * 131_072
    # n_ctx is padded before it is shared: 770 -> 1024, / 3 = 341 -> 512 cells each (not PAD256(770 / 3) = 256)
    assert held(kv(cli, "--model", "llama3-8b", "--seq", "770", "--batch", "3", "--engine", "llamacpp")) == {"full": 512}
    unified = kv(cli, "--model", "llama3-8b", "--seq", "512", "--batch", "4", "--engine", "llamacpp", "--kv-unified")
    assert unified["allocation_units"] == 1 and unified["bytes_per_batch"] == 512 * 131_072


@pytest.mark.parametrize(
    "dtype, block_bytes", [("q8_0", 34), ("q4_0", 18), ("q4_1", 20), ("q5_0", 22), ("q5_1", 24), ("iq4_nl", 18), ("fp16", 64)]
)
def test_llamacpp_block_formats(cli, dtype: str, block_bytes: int) -> None:
    # ggml type traits: blocks of 32 values (f16: 2 B each, so 64 B per 32).
    doc = kv(cli, "--model", "llama3-8b", "--seq", "256", "--engine", "llamacpp", "--kv-dtype", dtype)
    assert doc["bytes_per_batch"] == 256 * 32 * 2 * (1024 // 32) * block_bytes


def test_llamacpp_iswa(cli) -> None:
    # engines.md: swa_full true (default): the sliding cache is as large as the full cache;
    # false: PAD256(min(n_ctx_seq, W * 1 + n_ubatch)) cells.
    assert held(kv(cli, "--model", SWA, "--seq", "4096", "--engine", "llamacpp")) == {"sliding": 4096, "full": 4096}
    assert held(kv(cli, "--model", SWA, "--seq", "4096", "--engine", "llamacpp", "--no-swa-full")) == {
        "sliding": 768,
        "full": 4096,
    }
    small = kv(cli, "--model", SWA, "--seq", "4096", "--engine", "llamacpp", "--no-swa-full", "--ubatch", "64")
    assert held(small)["sliding"] == 256  # PAD256(16 + 64)
    gemma = kv(cli, "--model", "gemma2-9b", "--seq", "8192", "--engine", "llamacpp", "--no-swa-full")
    assert held(gemma) == {"sliding": 4608, "full": 8192}  # PAD256(4096 + 512)


def test_llamacpp_mla_caches_k_only_latent(cli) -> None:
    # engines.md: modern DeepSeek GGUFs cache a K-only latent of r + rope per cell (V = 0).
    doc = kv(cli, "--model", MLA, "--seq", "10", "--engine", "llamacpp")
    assert doc["bytes_per_batch"] == 2 * 256 * (32 + 16) * 2


def test_llamacpp_refusals(cli, tmp_path) -> None:
    odd = tmp_path / "odd.yaml"
    odd.write_text("name: odd\nlayers: 2\nheads: 4\nkv_heads: 2\nhead_dim: 48\ndtype: bf16\n")
    cases = [
        (
            ["--model", str(odd), "--seq", "256", "--kv-dtype", "q8_0"],
            "K cache type q8_0 with block size 32 does not divide the K head width 48",
        ),
        (
            ["--model", "llama3-8b", "--seq", "256", "--kv-dtype", "q4_0", "-fa", "off"],
            "quantized V cache requires flash_attn to be enabled",
        ),
        (["--model", "llama3-8b", "--seq", "256", "--kv-dtype", "int4"], "--engine llamacpp caches"),
        (["--model", "llama3-8b", "--seq", "256", "--block-size", "16"], "--block-size does not apply to --engine llamacpp"),
        (["--model", "llama3-8b", "--seq", "2", "--batch", "4"], "must be at least the batch"),
        (["--model", "llama3-8b", "--seq", "65536", "--batch", "300"], "llama.cpp runs at most 256 sequences (n_seq_max, -np"),
    ]
    for args, expected in cases:
        result = cli("size", *args, "--engine", "llamacpp")
        assert result.exit_code == 2 and expected in result.stderr, (args, result.output)


# vLLM (vllm/v1/kv_cache_interface.py, vllm/v1/core/kv_cache_utils.py)


def test_vllm_pages_of_16(cli) -> None:
    # a page holds block_size tokens of one layer: 100 tokens take 7 pages = 112 slots.
    doc = kv(cli, "--model", "llama3-8b", "--seq", "100", "--engine", "vllm")
    assert held(doc) == {"full": 112} and doc["block_size"] == 16
    assert doc["paging_waste_bytes"] == 12 * 131_072


def test_vllm_mla_latent_576_k_only(cli) -> None:
    # engines.md: one latent of r + rope (576 for DeepSeek-V3) per token per layer, K only.
    doc = kv(cli, "--model", "deepseek-v3", "--seq", "4096", "--engine", "vllm")
    assert doc["groups"][0]["values_per_token"] == 576
    assert doc["bytes_per_batch"] == 61 * 4096 * 576 * 2


def test_vllm_fp8_is_half_of_bf16(cli) -> None:
    bf16 = kv(cli, "--model", "llama3-8b", "--seq", "4096", "--engine", "vllm")["bytes_per_batch"]
    fp8 = kv(cli, "--model", "llama3-8b", "--seq", "4096", "--engine", "vllm", "--kv-dtype", "fp8")["bytes_per_batch"]
    assert fp8 * 2 == bf16


def test_vllm_sliding_reservation(cli) -> None:
    # engines.md: cdiv(min(W - 1 + max_num_batched_tokens, max_model_len), block_size) + 1 blocks per request.
    doc = kv(cli, "--model", SWA, "--seq", "4096", "--engine", "vllm", "--max-num-batched-tokens", "64")
    assert held(doc) == {"sliding": (-(-(15 + 64) // 16) + 1) * 16, "full": 4096}
    # with a large max_num_batched_tokens a sliding model reserves more than full attention would
    big = kv(cli, "--model", "gemma2-9b", "--seq", "8192", "--engine", "vllm", "--max-num-batched-tokens", "8192")
    assert held(big)["sliding"] == (8192 // 16 + 1) * 16 > 8192


def test_vllm_max_concurrency_its_way(cli) -> None:
    # vLLM: num_blocks = usable // (page * layers in a group); concurrency = num_blocks / blocks per request.
    doc = cli.json("fit", "--model", "llama3-8b", "--memory", "80GiB", "--reserve", "0", "--seq", "8192", "--engine", "vllm")
    usable = doc["budget"]["usable_bytes"]
    num_blocks = usable // (16 * 4096 * 32)
    logged = logged_as(doc, "max_concurrency")
    assert logged["engine"] == "vLLM"
    assert logged["value"] == pytest.approx(num_blocks / (8192 // 16))
    assert logged["line"] == f"Maximum concurrency for 8,192 tokens per request: {num_blocks / 512:.2f}x"
    assert doc["max_batch"] == usable // (8192 * 131072) == 58  # kvcalc's own, whole sequences (0.92: vLLM's default)


def test_engine_compare_side_by_side(cli) -> None:
    doc = cli.json("compare", "textbook", "hf", "vllm", "llamacpp", "--model", "gemma2-9b", "--seq", "8192")
    assert [row["name"] for row in doc["variants"]] == ["textbook", "hf", "vllm", "llamacpp"]
    assert doc["kind"] == "engines" and doc["baseline"]["name"] == "textbook"
    by_name = {row["name"]: row["bytes_per_sequence"] for row in doc["variants"]}
    per_layer = 2 * 8 * 256 * 2
    assert by_name["textbook"] == 21 * per_layer * (4096 + 8192)
    assert by_name["hf"] == 21 * per_layer * (4095 + 8192)
    assert by_name["llamacpp"] == 42 * per_layer * 8192  # swa_full: no saving


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["size", "--model", "llama3-8b", "--seq", "8", "--engine", "hf", "--no-swa-full"],
            "--swa-full applies to --engine llamacpp, not hf",
        ),
        (
            ["size", "--model", "llama3-8b", "--seq", "8", "--engine", "vllm", "--hf-version", "4"],
            "--hf-version applies to --engine hf, not vllm",
        ),
        (
            ["size", "--model", "llama3-8b", "--seq", "8", "--kv-unified"],
            "--kv-unified applies to --engine llamacpp, not textbook",
        ),
        (
            ["size", "--model", "llama3-8b", "--seq", "8", "--engine", "tgi"],
            "unknown --engine 'tgi': choose textbook, hf, vllm, llamacpp, sglang or trtllm",
        ),
        (
            ["size", "--model", "llama3-8b", "--seq", "8", "--engine", "llamacpp", "-fa", "maybe"],
            "--flash-attn 'maybe': use on, off or auto",
        ),
        (["size", "--model", "llama3-8b", "--seq", "8", "--engine", "vllm", "--kv-dtype", "q4_0"], "--engine vllm caches"),
        (["size", "--model", "llama3-8b", "--seq", "8", "--engine", "hf", "--kv-dtype", "int8"], "--engine hf caches"),
        (
            ["size", "--model", "llama3-8b", "--seq", "8", "--engine", "hf", "--hf-version", "3"],
            "--hf-version: Input should be 4 or 5",
        ),
        (
            ["compare", "textbook", "hf", "--model", "gemma2-9b", "--max-num-batched-tokens", "64"],
            "applies to --engine vllm, which is not compared",
        ),
        (["compare", "textbook", "mha", "--model", "gemma2-9b"], "cannot mix engines"),
    ],
)
def test_engine_options_that_do_not_apply(cli, args: list[str], expected: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_hf_fit_judges_the_prefill_peak(cli) -> None:
    # mistral-7b-v0.1 (all layers sliding, W=4096) at 32,768 tokens: 4 GiB per sequence at the peak,
    # 0.5 GiB after the first decode step; what fits is set by the peak.
    doc = cli.json("fit", "--model", "mistral-7b-v0.1", "--gpu", "h100-sxm", "--seq", "32768", "--engine", "hf")
    assert doc["bytes_per_sequence_per_gpu"] == 32768 * 131_072
    assert doc["max_batch"] == doc["budget"]["usable_bytes"] // (32768 * 131_072)
    assert (
        cli(
            "fit", "--model", "mistral-7b-v0.1", "--gpu", "h100-sxm", "--seq", "32768", "--batch", "20", "--engine", "hf"
        ).exit_code
        == 1
    )


def test_hf_static_cache_bounds_the_context(cli) -> None:
    doc = cli.json(
        "fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "hf", "--max-cache-len", "1024", "--seq", "1024"
    )
    assert doc["max_context"] == 1024 and doc["max_context_limit"] == "max_cache_len"
    assert list(doc["max_batch_by_context"]) == ["1024"]


def test_vllm_concurrency_counts_the_busiest_stage(cli) -> None:
    # with --pp 2 each GPU pools blocks for its own 16 layers: twice the blocks of one GPU holding 32.
    doc = cli.json(
        "fit", "--model", "llama3-8b", "--memory", "80GiB", "--reserve", "0", "--seq", "8192", "--engine", "vllm", "--pp", "2"
    )
    num_blocks = doc["budget"]["usable_bytes"] // (16 * 4096 * 16)
    logged = logged_as(doc, "max_concurrency")
    assert logged["value"] == pytest.approx(num_blocks / 512)
    assert doc["max_batch"] == int(logged["value"])


def test_llamacpp_fit_counts_contexts_per_sequence(cli) -> None:
    # n_ctx 8192 over 4 sequences: 2,048 cells each; max batch counts sequences of 2,048 cells and the
    # model's max positions bounds each sequence's context, not n_ctx.
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "8192", "--batch", "4", "--engine", "llamacpp")
    assert doc["context_per_sequence"] == 2048 and doc["bytes_per_sequence_per_gpu"] == 2048 * 131_072
    assert doc["max_batch"] == doc["budget"]["usable_bytes"] // (2048 * 131_072)
    assert doc["max_context"] == 8192 and doc["max_context_limit"] == "max_positions"
    result = cli("size", "--model", "llama3-8b", "--seq", "32768", "--batch", "4", "--engine", "llamacpp")
    assert result.exit_code == 0 and "exceeds" not in result.stderr  # 8,192 per sequence is within the model's max


def test_llamacpp_max_batch_is_capped_at_256_sequences(cli) -> None:
    """llama_context refuses n_seq_max > LLAMA_MAX_SEQ = 256 (src/llama-context.cpp, src/llama-cparams.h):
    a small model on a large GPU holds far more short sequences by memory, but llama.cpp runs 256."""
    doc = cli.json("fit", "--model", "llama3.2-1b", "--gpu", "h200", "--seq", "256", "--engine", "llamacpp")
    assert doc["max_batch"] == 256 and doc["max_batch_limit"] == "max_seqs"
    assert max(doc["max_batch_by_context"].values()) == 256
    result = cli("fit", "--model", "llama3.2-1b", "--gpu", "h200", "--seq", "77000", "--batch", "300", "--engine", "llamacpp")
    assert result.exit_code == 2 and "llama.cpp runs at most 256 sequences" in result.stderr


# The registry and the layering (kvcalc/engines/__init__.py)


def test_registry_names_every_engine_the_cli_and_spec_accept() -> None:
    from kvcalc.cli.compare import ENGINE_NAMES

    assert tuple(PROFILES) == ENGINE_NAMES == get_args(EngineName)
    assert all(name == rules.name for name, rules in PROFILES.items())


def test_engine_modules_import_nothing_above_them() -> None:
    # An engine module may import the protocol, the activation formulas, spec, units, errors,
    # kvcalc.base, the decode profiles (pure data), GPU generations by name (kvcalc.gpu_families, pure), the state
    # shapes (kvcalc.state, pure) and a checkpoint's quantized layers (kvcalc.quantization, pure); never kvcache,
    # capacity or the CLI, which ask the engines.
    allowed = {
        "kvcalc.base",
        "kvcalc.decode_profiles",
        "kvcalc.engines.base",
        "kvcalc.engines.activations",
        "kvcalc.errors",
        "kvcalc.gpu_families",
        "kvcalc.quantization",
        "kvcalc.spec",
        "kvcalc.state",
        "kvcalc.units",
    }
    package = Path(engines.__file__).parent
    for module in package.glob("*.py"):
        imported = {
            node.module
            for node in ast.walk(ast.parse(module.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kvcalc")
        }
        if module.name == "__init__.py":  # the registry imports the engine modules themselves
            imported -= {f"kvcalc.engines.{name.stem}" for name in package.glob("*.py")}
        assert imported <= allowed, module.name


def test_no_module_outside_the_engines_tests_an_engine_name() -> None:
    test = re.compile(r"engine\.name\s*(==|!=|in\b)|\.name in \(")
    root = Path(engines.__file__).parent.parent
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in root.rglob("*.py")
        if "engines" not in path.relative_to(root).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if test.search(line)
    ]
    assert offenders == []


def test_llamacpp_keeps_recurrent_snapshots_for_speculative_rollback(cli) -> None:
    # src/llama-memory-recurrent.cpp: r_l and s_l have rs_size * (1 + n_rs_seq) rows. nemotron-h-8b's Mamba2 layer:
    # conv 10240 x 3 + recurrent 128 x 64 x 128 values in f32 = 4,317,184 B per cell; 24 layers, 2 sequences.
    args = ("size", "--model", "nemotron-h-8b", "--seq", "4096", "--batch", "2", "--engine", "llamacpp")
    plain = cli.json(*args)["kv"]
    rollback = cli.json(*args, "--n-rs-seq", "3")["kv"]
    assert plain["state_bytes_per_batch"] == 2 * 24 * 4_317_184
    assert rollback["state_bytes_per_batch"] == 2 * 24 * 4 * 4_317_184
    bad = cli("size", "--model", "nemotron-h-8b", "--seq", "8", "--engine", "vllm", "--n-rs-seq", "2")
    assert bad.exit_code == 2 and "--n-rs-seq applies to --engine llamacpp, not vllm" in bad.stderr


@pytest.mark.parametrize(
    "model, engine, named",
    [
        ("nemotron-h-8b", "hf", "use llamacpp, sglang, textbook or vllm"),  # SGLang's Mamba pool holds mamba2 layers
        ("nemotron-h-8b", "trtllm", "use llamacpp, sglang, textbook or vllm"),
        ("jamba-1.5-mini", "hf", "use llamacpp, textbook or vllm"),  # mamba1: not SGLang's
        ("jamba-1.5-mini", "sglang", "use llamacpp, textbook or vllm"),
    ],
)
def test_a_refusal_names_the_engines_that_model_the_layers(cli, model: str, engine: str, named: str) -> None:
    # issue 23 item 13: the refusal for hybrids named textbook, vllm or llamacpp, never SGLang, which models mamba2
    result = cli("fit", "--model", model, "--gpu", "h100-sxm", "--engine", engine)
    assert result.exit_code == 2 and named in result.stderr
