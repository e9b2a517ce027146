"""DeepSeek-V4's compressed caches, sized exactly (textbook) from its config.json and vLLM's layout.

DeepSeek-V4-Flash (https://huggingface.co/deepseek-ai/DeepSeek-V4-Flash/blob/main/config.json, trimmed in
tests/fixtures/hf/deepseek-v4-flash-config.json): 43 layers, head_dim 512, qk_rope_head_dim 64, sliding_window
128, index_head_dim 128, compress_ratios 0, 0, then 4 and 128 alternating, then 4 (21 ratio-4, 20 ratio-128 and
2 window-only layers). vLLM (vllm-project/vllm):
- a row is 448 fp8 + 64 * 2 bf16 rope + 448 // 64 scales + 1 pad = 584 B (deepseek_v4_attention.py @b92a330e
  head_bytes; sparse_swa.py @03dc5649 "584B per token"), in every layer's 128-token window (DeepseekV4SWACache)
  and, one per r tokens, in a ratio-r layer's compressed cache (MLAAttentionSpec compress_ratio);
- ratio-4 layers also keep the lightning indexer's key, 128 fp8 + one fp32 scale = 132 B per 4 tokens;
- each compressor keeps fp32 state (kv and score halves) of its last coff * r tokens, coff = 2 at r = 4
  (deepseek_compressor.py @0de10a27): 2 * 2 * 512 * 4 = 8,192 B over 8 tokens (main), 2 * 2 * 128 * 4 = 2,048 B
  over 8 tokens (indexer's), 2 * 1 * 512 * 4 = 4,096 B over 128 tokens (r = 128).
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import Workload, estimate_kv
from kvcalc.presets import load_model

from .conftest import HF_CONFIGS

CONFIG = HF_CONFIGS / "deepseek-v4-flash-config.json"
ROW, INDEXER_KEY = 584, 132
WINDOWS = 43 * 128 * ROW  # 3,214,336 B: every layer's full window
STATES = 21 * (8 * 8_192 + 8 * 2_048) + 20 * 128 * 4_096  # 12,206,080 B once the context passes 128 tokens
PER_128_TOKENS = 21 * 32 * (ROW + INDEXER_KEY) + 20 * 1 * ROW  # 492,832 B of compressed rows and indexer keys


def sequence_bytes(model: str, seq: int, tp: int = 1) -> int:
    return estimate_kv(load_model(model), Workload(seq=seq, tp=tp)).bytes_per_sequence


def test_v4_flash_golden_at_8k_and_1m() -> None:
    assert WINDOWS == 3_214_336 and STATES == 12_206_080 and PER_128_TOKENS == 492_832
    assert sequence_bytes("deepseek-v4-flash", 8_192) == WINDOWS + STATES + 64 * PER_128_TOKENS == 46_961_664
    assert sequence_bytes("deepseek-v4-flash", 1_048_576) == WINDOWS + STATES + 8_192 * PER_128_TOKENS == 4_052_700_160


def test_v4_flash_golden_below_the_window() -> None:
    """At 100 tokens: 100 window rows per layer, 25 ratio-4 rows and keys, no ratio-128 row yet (a row is
    written once its r tokens are complete: floor), the ratio-4 states full (8 tokens), the ratio-128 ones
    holding 100 tokens."""
    expected = 43 * 100 * ROW + 21 * 25 * (ROW + INDEXER_KEY) + 21 * 8 * (8_192 + 2_048) + 20 * 100 * 4_096
    assert sequence_bytes("deepseek-v4-flash", 100) == expected == 12_799_420


def test_config_json_and_preset_agree() -> None:
    for seq in (1, 127, 128, 129, 8_192, 100_000):
        assert sequence_bytes(str(CONFIG), seq) == sequence_bytes("deepseek-v4-flash", seq)


def test_tensor_parallel_replicates_the_caches() -> None:
    """One KV head: every rank keeps the whole cache (vLLM's MLA specs are replicated)."""
    kv = estimate_kv(load_model("deepseek-v4-flash"), Workload(seq=8_192, tp=8))
    assert kv.bytes_per_gpu == 46_961_664 and kv.bytes_per_sequence == 8 * 46_961_664
    assert not kv.replicated_kv_heads


@settings(max_examples=50, deadline=None)
@given(st.integers(128, 2_000_000))
def test_each_128_tokens_past_the_window_add_the_compressed_rows(seq: int) -> None:
    """Past the window the fixed parts stay; 128 more tokens add 32 ratio-4 rows and keys per ratio-4 layer
    and one row per ratio-128 layer, whatever the context."""
    assert sequence_bytes("deepseek-v4-flash", seq + 128) - sequence_bytes("deepseek-v4-flash", seq) == PER_128_TOKENS


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 500_000))
def test_bytes_never_shrink_with_the_context(seq: int) -> None:
    assert sequence_bytes("deepseek-v4-flash", seq + 1) >= sequence_bytes("deepseek-v4-flash", seq)


def test_size_explains_each_cache(cli) -> None:
    result = cli("size", "--model", "deepseek-v4-flash", "--seq", "8k", "--explain")
    assert result.exit_code == 0, result.output
    assert "compressed r=4, W=128" in result.stdout
    assert "compressed rows, one per 4 tokens: 448 fp8 + 64 * 2 bf16 rope + 448 // 64 scales + 1 pad = 584 B" in result.stdout
    assert "indexer keys, one per 4 tokens: 128 fp8 + 128 // 128 * 4 fp32 scales = 132 B" in result.stdout
    assert "per sequence = 21 * 1,623,040 = 34,083,840 B" in result.stdout
    assert cli.json("size", "--model", "deepseek-v4-flash", "--seq", "8k")["kv"]["bytes_per_sequence"] == 46_961_664


def test_size_table_counts_each_compressed_groups_rows(cli) -> None:
    # at 131,072 tokens a ratio-4 layer keeps 131,072 // 4 = 32,768 rows, a ratio-128 layer 1,024, beside the 128-token window
    result = cli("size", "--model", "deepseek-v4-flash", "--seq", "131072")
    assert result.exit_code == 0
    assert "128 + 32,768 rows" in result.stdout and "128 + 1,024 rows" in result.stdout
    groups = cli.json("size", "--model", "deepseek-v4-flash", "--seq", "131072")["kv"]["groups"]
    assert sorted((g["compress_ratio"], g["compressed_rows"]) for g in groups) == [(1, 0), (4, 32768), (128, 1024)]


def test_fit_textbook_solves_the_context(cli) -> None:
    """The longest context whose exact bytes fit what the budget leaves (sub-linear: windows and states fixed)."""
    answer = cli.json("fit", "--model", "deepseek-v4-flash", "--memory", "10GiB", "--reserve", "0", "--utilization", "1",
                      "--params", "1", "--batch", "1")  # fmt: skip
    usable, held = answer["budget"]["usable_bytes"], answer["max_context_by_memory"]
    assert held == 2_784_759
    assert sequence_bytes("deepseek-v4-flash", held) <= usable < sequence_bytes("deepseek-v4-flash", held + 1)


def test_other_engines_refuse(cli) -> None:
    for engine in ("vllm", "sglang", "llamacpp", "trtllm", "hf"):
        result = cli("size", "--model", "deepseek-v4-flash", "--seq", "8k", "--engine", engine)
        assert result.exit_code == 2, (engine, result.output)
        assert f"--engine {engine}: kvcalc does not model how" in result.stderr
        assert "compressed caches" in result.stderr and "Traceback" not in result.stderr


def test_measure_refuses(cli) -> None:
    result = cli("measure", "--device", "cpu", "--model", "deepseek-v4-flash", "--seq", "256")
    assert result.exit_code == 2
    assert "measure allocates K and V per token: it does not allocate deepseek-v4-flash's compressed caches" in result.stderr


def test_a_cache_dtype_other_than_fp8_is_refused(cli) -> None:
    result = cli("size", "--model", "deepseek-v4-flash", "--seq", "8k", "--kv-dtype", "bf16")
    assert result.exit_code == 2
    assert "deepseek-v4-flash keeps its caches as fp8 rows" in result.stderr
    assert "--kv-dtype fp8 or none, not bf16" in result.stderr


def test_weights_say_why_they_are_unknown(cli) -> None:
    """A config.json gives no params; the preset gives the published total."""
    result = cli("size", "--model", CONFIG, "--seq", "8k")
    assert result.exit_code == 0
    assert "kvcalc does not count DeepSeek-V4's weights from its shapes" in " ".join(result.output.split())


def _config(tmp_path, **changes):  # noqa: ANN001, ANN202
    config = {**json.loads(CONFIG.read_text()), **changes}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_bad_configs_are_refused_in_one_line(cli, tmp_path) -> None:
    cases = [
        ({"compress_ratios": [4] * 10}, "compress_ratios lists 10 ratios, fewer than num_hidden_layers (43)"),
        ({"compress_ratios": [8] * 44}, "compress ratio 8 is not one vLLM's DeepSeek-V4 layers take (0, 1, 4 or 128)"),
        ({"compress_ratios": "4"}, "compress_ratios: expected a list of integers"),
        ({"compress_ratios": None}, "compress_ratios: missing"),
        ({"index_head_dim": 100}, "index_head_dim (100) must be a multiple of 128"),
        ({"qk_rope_head_dim": 100}, "must be a positive multiple of 64"),
    ]
    for changes, message in cases:
        result = cli("size", "--model", _config(tmp_path, **changes), "--seq", "8k")
        assert result.exit_code == 2, (changes, result.output)
        assert message in " ".join(result.stderr.split()), (changes, result.stderr)
        assert "Traceback" not in result.stderr


def test_compare_labels_compressed_rows_and_says_to_compare_per_sequence(cli) -> None:
    args = ("compare", "deepseek-v4-flash", "deepseek-v3.2", "--seq", "131072")
    result = cli(*args)
    assert result.exit_code == 0 and "compressed" in result.stdout and "compare per sequence" in result.stdout
    rows = {row["name"]: row for row in cli.json(*args)["variants"]}
    v4, v32 = rows["deepseek-v4-flash"], rows["deepseek-v3.2"]
    assert v4["compressed_cache"] and v4["kv_heads"] is None and not v32["compressed_cache"]
    assert v4["bytes_per_sequence"] < v32["bytes_per_sequence"]  # 496 MiB against 9.56 GiB at 128k
