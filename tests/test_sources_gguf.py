"""GGUF files: the lean header reader, the model it implies, and every way a file can be wrong.

GGUF files are written by tests/gguf_writer.py (headers of real shapes, no tensor data)."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc.errors import InvalidPreset
from kvcalc.sources.gguf import GGML_TYPES, read_header
from kvcalc.sources.gguf_model import model_from_gguf

from .conftest import HF_CONFIGS
from .gguf_writer import ARRAY, I32, STRING, U16, U64, Typed, gguf_bytes, llama_metadata, llama_tensors, tensor_bytes, write_gguf

FIXTURE = Path(__file__).parent / "fixtures" / "gguf" / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"


def tiny_metadata(arch: str = "llama", **extra: object) -> dict[str, object]:
    """A 2-layer model: 4 heads of 16, 2 KV heads, hidden 64."""
    base = {
        "general.architecture": arch,
        f"{arch}.block_count": 2,
        f"{arch}.context_length": 4096,
        f"{arch}.embedding_length": 64,
        f"{arch}.feed_forward_length": 128,
        f"{arch}.attention.head_count": 4,
        f"{arch}.attention.head_count_kv": 2,
    }
    return {**base, **{k.replace("{arch}", arch): v for k, v in extra.items()}}


TINY_TENSORS = [("token_embd.weight", (64, 256), "q8_0"), ("blk.0.attn_q.weight", (64, 64), "q4_0")]


def tiny_gguf(tmp_path: Path, name: str = "tiny.gguf", tensors=None, **extra: object) -> Path:
    return write_gguf(tmp_path / name, tiny_metadata(**extra), TINY_TENSORS if tensors is None else tensors)


# The type table (ggml/src/ggml.c type_traits; gguf-py GGML_QUANT_SIZES, llama.cpp 0024aa74)


@pytest.mark.parametrize(
    "type_name, bits_per_weight",
    # k-quants (llama.cpp PR #1684 description): Q3_K 3.4375, Q4_K 4.5, Q5_K 5.5, Q6_K 6.5625 bpw; Q2_K 2.625
    # (ggml-common.h block_q2_K: fp16 d and dmin + 16 scale bytes + 64 quant bytes per 256; the PR's 2.5625 predates the mins);
    # 32-value blocks (DESIGN.md section 4): q8_0 34 B, q4_0 18, q4_1 20, q5_0 22, q5_1 24, iq4_nl 18; MXFP4 16 B + one e8m0 scale.
    [("q2_K", 2.625), ("q3_K", 3.4375), ("q4_K", 4.5), ("q5_K", 5.5), ("q6_K", 6.5625), ("q8_0", 8.5), ("q4_0", 4.5),
     ("q4_1", 5.0), ("q5_0", 5.5), ("q5_1", 6.0), ("iq4_nl", 4.5), ("mxfp4", 4.25), ("f16", 16), ("bf16", 16), ("f32", 32)],
)  # fmt: skip
def test_type_table_bits_per_weight(type_name: str, bits_per_weight: float) -> None:
    (_, block, size) = next(entry for entry in GGML_TYPES.values() if entry[0] == type_name)
    assert size * 8 / block == bits_per_weight


def test_mixed_tensor_types_sum_exactly(tmp_path: Path) -> None:
    tensors = [
        ("a", (64, 2), "q4_0"),  # 4 blocks of 18 B
        ("b", (256, 4), "q4_K"),  # 4 super-blocks of 144 B
        ("c", (10,), "f32"),  # 40 B
        ("d", (512,), "iq2_xxs"),  # 2 blocks of 66 B
        ("e", (64, 1, 3), "mxfp4"),  # 6 blocks of 17 B
        ("f", (256,), "tq1_0"),  # 1 block of 54 B
        ("g", (8, 8), "bf16"),  # 128 B
    ]
    header = read_header(write_gguf(tmp_path / "m.gguf", {"general.architecture": "llama"}, tensors))
    assert [t.bytes for t in header.tensors] == [72, 576, 40, 132, 102, 54, 128]
    assert [t.values for t in header.tensors] == [128, 1024, 10, 512, 192, 256, 64]


def test_llama31_q4_k_m_fixture() -> None:
    """Llama-3.1-8B in llama.cpp's Q4_K_M mix: 8,030,261,248 params (keras-hub llama3_8b_en) + 64 rope
    frequencies; q4_K except output, and attn_v / ffn_down on 16 of 32 layers, in q6_K: 4.58 GiB, 4.89 bits
    per weight, the "model size" llama.cpp prints for this file."""
    model = model_from_gguf(FIXTURE)
    assert model.stored_weights is not None
    assert model.stored_weights.params == model.params == 8_030_261_312
    assert model.stored_weights.bytes == 4_912_898_304
    assert round(model.stored_weights.bytes / 2**30, 2) == 4.58
    assert round(model.stored_weights.bytes * 8 / model.stored_weights.params, 2) == 4.89
    assert list(model.stored_weights.types) == ["q4_K", "q6_K", "f32"]
    assert (model.layers, model.heads, model.kv_heads, model.head_dim, model.max_positions) == (32, 32, 8, 128, 131072)
    assert model.dtype.value == "fp16" and model.name == "Meta-Llama-3.1-8B-Instruct-Q4_K_M"
    assert "GGUF v3" in (model.source or "") and "Meta Llama 3.1 8B Instruct" in (model.source or "")


def test_fixture_is_what_the_script_writes() -> None:
    from scripts.make_gguf_fixture import fixture_bytes

    assert FIXTURE.read_bytes() == fixture_bytes(), "run python scripts/make_gguf_fixture.py"


def test_gguf_kv_equals_its_config_json_and_the_llamacpp_rules(cli, tmp_path: Path) -> None:
    """A header with Llama-3-8B's metadata and tensors gives the config.json's KV figures, under
    every engine; under llama.cpp's rules n_ctx 1000 pads to 1024 cells of 131,072 B (test_engines)."""
    gguf = write_gguf(tmp_path / "Meta-Llama-3-8B-Q4_K_M.gguf", llama_metadata("Meta Llama 3 8B", context=8192), llama_tensors())
    config = HF_CONFIGS / "llama3-8b-config.json"
    for args in (
        ["--seq", "8192"],
        ["--seq", "1000", "--engine", "llamacpp"],
        ["--seq", "4096", "--batch", "4", "--engine", "llamacpp"],
    ):
        from_gguf = cli.json("size", "--model", gguf, *args)["kv"]
        from_config = cli.json("size", "--model", config, "--kv-dtype", "f16", *args)["kv"]
        assert {**from_gguf, "model": "", "explain": []} == {**from_config, "model": "", "explain": []}
    assert cli.json("size", "--model", gguf, "--seq", "1000", "--engine", "llamacpp")["kv"]["bytes_per_batch"] == 1024 * 131_072


def test_exact_weights_drive_the_budget_and_decode(cli) -> None:
    fit = cli.json("fit", "--model", FIXTURE, "--gpu", "rtx4090", "--engine", "llamacpp")
    assert fit["budget"]["weights_bytes"] == 4_912_898_304
    decode = cli.json("decode", "--model", FIXTURE, "--gpu", "rtx4090", "--tp", "2")
    assert decode["decode"]["weights_read_bytes"] == 4_912_898_304 // 2
    explained = cli("fit", "--model", FIXTURE, "--gpu", "rtx4090", "--explain")
    assert "weights = 4,912,898,304 B as stored (each tensor in its own type)" in explained.stdout
    size = cli("size", "--model", FIXTURE, "--seq", "8192")
    assert (
        "8,030,261,312 params (summed from the checkpoint's tensors) in q4_K, q6_K, f32 (as stored) = 4,912,898,304 B"
        in size.stdout
    )
    # --weight-dtype counts the parameters in that dtype instead
    assert cli.json("size", "--model", FIXTURE, "--seq", "8", "--weight-dtype", "fp16")["weights"]["bytes"] == 2 * 8_030_261_312


def test_moe_decode_reads_its_share_of_the_stored_bytes(cli, tmp_path: Path) -> None:
    tensors = [("token_embd.weight", (64, 256), "f16"), ("blk.0.ffn_gate_exps.weight", (64, 128, 8), "q4_0")]
    tensors += [("blk.0.ffn_up_exps.weight", (64, 128, 8), "q4_0"), ("blk.0.ffn_down_exps.weight", (128, 64, 8), "q4_0")]
    path = write_gguf(
        tmp_path / "moe.gguf",
        tiny_metadata(
            **{
                "{arch}.block_count": 1,
                "{arch}.expert_count": 8,
                "{arch}.expert_used_count": 2,
                "{arch}.expert_feed_forward_length": 128,
            }
        ),
        tensors,
    )
    model = model_from_gguf(path)
    assert model.moe is not None and (model.moe.experts, model.moe.experts_per_token) == (8, 2)
    stored = model.stored_weights
    assert stored is not None and stored.bytes == 64 * 256 * 2 + 3 * 64 * 128 * 8 // 32 * 18
    step = cli.json("decode", "--model", path, "--gpu", "h100-sxm", "--batch", "1")["decode"]
    assert 0 < step["weights_read_bytes"] < stored.bytes  # one token touches 2 of 8 experts


def test_vocab_from_the_tokenizer_array_and_long_values_skipped(tmp_path: Path) -> None:
    tokens = [f"tok{i}" for i in range(3000)]
    path = tiny_gguf(
        tmp_path,
        **{"tokenizer.ggml.tokens": tokens, "tokenizer.chat_template": "x" * 100_000, "tokenizer.ggml.merges": ["a b"] * 10},
    )
    header = read_header(path)
    assert header.array_lengths["tokenizer.ggml.tokens"] == 3000 and header.metadata["tokenizer.ggml.tokens"] is None
    assert header.metadata["tokenizer.chat_template"] is None
    assert model_from_gguf(path).vocab == 3000


def test_vocab_size_key_wins_and_tied_embeddings(tmp_path: Path) -> None:
    model = model_from_gguf(tiny_gguf(tmp_path, **{"{arch}.vocab_size": 256}))
    assert model.vocab == 256 and model.tied_embeddings  # no output.weight tensor


def test_truncated_after_the_header_reads(tmp_path: Path) -> None:
    """A partial download that holds the whole header (no tensor data at all) is enough."""
    full = gguf_bytes(tiny_metadata(), TINY_TENSORS, data=True)
    header_only = gguf_bytes(tiny_metadata(), TINY_TENSORS)
    assert len(full) > len(header_only)
    (tmp_path / "partial.gguf").write_bytes(full[: len(header_only) + 7])
    assert model_from_gguf(tmp_path / "partial.gguf").stored_weights == model_from_gguf(tiny_gguf(tmp_path)).stored_weights


@given(cut=st.integers(min_value=0, max_value=10_000))
def test_any_cut_inside_the_header_is_one_clear_error(tmp_path_factory: pytest.TempPathFactory, cut: int) -> None:
    data = gguf_bytes(tiny_metadata(**{"tokenizer.ggml.tokens": ["a", "bb", "ccc"]}), TINY_TENSORS)
    cut %= len(data)
    path = tmp_path_factory.mktemp("cut") / "cut.gguf"
    path.write_bytes(data[:cut])
    with pytest.raises(InvalidPreset, match="inside its GGUF header|not a GGUF file"):
        read_header(path)


def _split(tmp_path: Path, parts: int, present: list[int]) -> list[Path]:
    """A model split into `parts` files, each holding one tensor; only the `present` parts are written."""
    paths = []
    for number in range(1, parts + 1):
        meta = tiny_metadata() if number == 1 else {}
        meta = {
            **meta,
            "split.no": Typed(U16, number - 1),
            "split.count": Typed(U16, parts),
            "split.tensors.count": Typed(I32, parts),
        }
        path = tmp_path / f"m-{number:05d}-of-{parts:05d}.gguf"
        if number in present:
            write_gguf(path, meta, [(f"t{number}.weight", (64, 4), "q8_0")])
        paths.append(path)
    return paths


def test_split_files_sum_every_part(tmp_path: Path) -> None:
    paths = _split(tmp_path, 3, [1, 2, 3])
    for given_part in paths:
        model = model_from_gguf(given_part)  # any part: the metadata come from part 1
        assert model.name == "m" and model.stored_weights is not None
        assert model.stored_weights.bytes == 3 * (64 * 4 // 32 * 34)
        assert "and its 2 other parts" in (model.source or "")


def test_split_files_with_missing_parts(cli, tmp_path: Path) -> None:
    paths = _split(tmp_path, 3, [1, 3])
    result = cli("size", "--model", paths[0], "--seq", "8")
    assert result.exit_code == 2
    assert "1 of the 3 parts of this split GGUF are missing beside it (m-00002-of-00003.gguf)" in result.stderr
    (tmp_path / "other").mkdir()
    no_first = _split(tmp_path / "other", 2, [2])
    result = cli("size", "--model", no_first[1], "--seq", "8")
    assert result.exit_code == 2 and "part 1 of this split GGUF (m-00001-of-00002.gguf)" in result.stderr


def _corrupt(data: bytes, at: int, replacement: bytes) -> bytes:
    return data[:at] + replacement + data[at + len(replacement) :]


HEADER = gguf_bytes({"general.architecture": "llama"}, [("t", (32,), "q8_0")])
KEY_TYPE_AT = 24 + 8 + len("general.architecture")  # magic, version, counts, key length, key


@pytest.mark.parametrize(
    "data, message",
    [
        (b"GGML" + HEADER[4:], "not a GGUF file (it starts with b'GGML'"),
        (b"", "not a GGUF file"),
        (b"FUGG" + HEADER[4:], "a big-endian GGUF"),
        (_corrupt(HEADER, 4, struct.pack(">I", 3)), "a big-endian GGUF"),
        (_corrupt(HEADER, 4, struct.pack("<I", 1)), "GGUF version 1 is not supported (re-convert it"),
        (_corrupt(HEADER, 4, struct.pack("<I", 4)), "GGUF version 4 is not supported"),
        (_corrupt(HEADER, 8, struct.pack("<Q", 2**40)), "it counts 1,099,511,627,776 tensor infos (kvcalc reads up to 65,536)"),
        (_corrupt(HEADER, 8, struct.pack("<Q", 2**15)), "inside its GGUF header (which needs 262,176 bytes)"),
        (_corrupt(HEADER, KEY_TYPE_AT, struct.pack("<I", 99)), "'general.architecture' has unknown value type 99"),
        (_corrupt(HEADER, KEY_TYPE_AT + 4, struct.pack("<Q", 2**50)), "an incomplete download or a corrupt file"),
        (HEADER[:-8 - 4 - 8] + struct.pack("<Q", 32) + struct.pack("<IQ", 77, 0), "ggml type 77, which kvcalc does not know"),
        (HEADER[:-8 - 4 - 8] + struct.pack("<Q", 33) + struct.pack("<IQ", 8, 0), "rows of 33 values are not whole q8_0 blocks"),
        (HEADER[:-8 - 4 - 8 - 4] + struct.pack("<I", 5), "has 5 dimensions"),
    ],
)  # fmt: skip
def test_corrupt_headers_are_refused(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(InvalidPreset, match=re.escape(message)):
        read_header(path)


def test_corrupt_gguf_on_the_command_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"FUGG" + HEADER[4:])
    result = cli("size", "--model", path, "--seq", "8")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "big-endian" in result.stderr
    missing = cli("fit", "--model", tmp_path / "none.gguf", "--gpu", "l4")
    assert missing.exit_code == 2 and "none.gguf: no such GGUF file" in missing.stderr


def test_per_layer_kv_heads(tmp_path: Path) -> None:
    uniform = tiny_gguf(tmp_path, "u.gguf", **{"{arch}.attention.head_count_kv": Typed(ARRAY, [2, 2], I32)})
    assert model_from_gguf(uniform).kv_heads == 2
    varied_ffn = tiny_gguf(tmp_path, "f.gguf", **{"{arch}.feed_forward_length": [128, 256]})
    assert model_from_gguf(varied_ffn).intermediate is None  # it only splits the parameters, which the tensors count
    mixed = tiny_gguf(tmp_path, "m.gguf", **{"{arch}.attention.head_count_kv": [2, 4]})
    with pytest.raises(InvalidPreset, match=r"llama.attention.head_count_kv differs between layers \(2, 4\)"):
        model_from_gguf(mixed)


@pytest.mark.parametrize(
    "arch, extra",
    [
        ("mamba", {}),
        ("qwen3next", {}),
        ("nemotron_h", {}),
        ("granitehybrid", {}),
        ("lfm2", {}),
        ("llama", {"{arch}.ssm.conv_kernel": 4}),
    ],
)
def test_recurrent_architectures_are_refused(cli, tmp_path: Path, arch: str, extra: dict[str, object]) -> None:
    path = write_gguf(tmp_path / f"{arch}.gguf", tiny_metadata(arch, **extra), TINY_TENSORS)
    result = cli("size", "--model", path, "--seq", "8")
    assert result.exit_code == 2 and "recurrent-state (SSM or linear-attention) layers" in result.stderr


def test_missing_keys_are_named(tmp_path: Path) -> None:
    meta = tiny_metadata()
    del meta["llama.block_count"]
    with pytest.raises(InvalidPreset, match="llama.block_count is missing"):
        model_from_gguf(write_gguf(tmp_path / "m.gguf", meta, TINY_TENSORS))
    with pytest.raises(InvalidPreset, match="no general.architecture"):
        model_from_gguf(write_gguf(tmp_path / "n.gguf", {"x": 1}, TINY_TENSORS))
    with pytest.raises(InvalidPreset, match="expected a non-negative integer"):
        model_from_gguf(tiny_gguf(tmp_path, "s.gguf", **{"{arch}.block_count": "two"}))


DEEPSEEK2 = {
    "{arch}.attention.head_count": 16, "{arch}.attention.head_count_kv": 1, "{arch}.attention.kv_lora_rank": 512,
    "{arch}.attention.key_length": 576, "{arch}.attention.value_length": 512, "{arch}.attention.key_length_mla": 192,
    "{arch}.attention.value_length_mla": 128, "{arch}.rope.dimension_count": 64, "{arch}.embedding_length": 2048,
}  # fmt: skip


def test_mla_gguf_caches_one_latent(cli, tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "dsv2.gguf", tiny_metadata("deepseek2", **DEEPSEEK2), [("token_embd.weight", (2048, 256), "q8_0")]
    )
    model = model_from_gguf(path)
    assert model.mla is not None and (model.mla.kv_lora_rank, model.mla.qk_rope_head_dim, model.mla.qk_nope_head_dim) == (
        512,
        64,
        128,
    )
    kv = cli.json("size", "--model", path, "--seq", "10", "--engine", "llamacpp")["kv"]
    assert kv["bytes_per_token"] == 2 * (512 + 64) * 2  # 2 layers, K-only latent, f16


def test_mla_gguf_of_the_old_conversion_caches_heads(tmp_path: Path) -> None:
    old = {k: v for k, v in DEEPSEEK2.items() if "_mla" not in k} | {
        "{arch}.attention.key_length": 192, "{arch}.attention.value_length": 128, "{arch}.attention.head_count_kv": 16,
    }  # fmt: skip
    model = model_from_gguf(write_gguf(tmp_path / "old.gguf", tiny_metadata("deepseek2", **old), TINY_TENSORS))
    assert model.mla is None and (model.kv_heads, model.key_dim, model.value_dim) == (16, 192, 128)


@pytest.mark.parametrize(
    "arch, extra, layers, expected",
    [
        ("gemma2", {"{arch}.attention.sliding_window": 4096}, 4, ["sliding", "full"]),
        ("gemma2", {}, 2, ["sliding", "full"]),  # Gemma 2's window defaults to 4096
        ("gemma3", {"{arch}.attention.sliding_window": 1024}, 12, ["sliding"] * 5 + ["full"]),
        ("llama", {"{arch}.attention.sliding_window": 1024, "{arch}.attention.sliding_window_pattern": 4}, 8, ["sliding"] * 3 + ["full"]),
        ("llama", {"{arch}.attention.sliding_window": 64, "{arch}.attention.sliding_window_pattern": [True, True, False]}, 3,
         ["sliding", "sliding", "full"]),
        ("qwen2", {"{arch}.attention.sliding_window": 4096}, 2, None),  # llama.cpp does not apply it
        ("llama", {"{arch}.attention.sliding_window": 64, "{arch}.attention.sliding_window_pattern": 0}, 2, ["sliding"]),
    ],
)  # fmt: skip
def test_sliding_window_patterns(
    tmp_path: Path, arch: str, extra: dict[str, object], layers: int, expected: list[str] | None
) -> None:
    meta = tiny_metadata(arch, **extra) | {f"{arch}.block_count": layers}
    model = model_from_gguf(write_gguf(tmp_path / "swa.gguf", meta, TINY_TENSORS))
    if expected is None:
        assert model.sliding_window is None
    else:
        assert model.layer_kinds() == [expected[i % len(expected)] for i in range(layers)]
        assert model.sliding_window == extra.get("{arch}.attention.sliding_window", 4096)


def test_refused_shapes(tmp_path: Path) -> None:
    bad_pattern = {"{arch}.attention.sliding_window": 64, "{arch}.attention.sliding_window_pattern": [True]}
    with pytest.raises(InvalidPreset, match="expected 2 true/false flags, one per layer"):
        model_from_gguf(tiny_gguf(tmp_path, "p.gguf", **bad_pattern))
    with pytest.raises(InvalidPreset, match="their own key width"):
        model_from_gguf(tiny_gguf(tmp_path, "k.gguf", **{"{arch}.attention.key_length_swa": 32}))
    with pytest.raises(InvalidPreset, match="share another layer's KV cache"):
        model_from_gguf(tiny_gguf(tmp_path, "s.gguf", **{"{arch}.attention.shared_kv_layers": 1}))
    with pytest.raises(InvalidPreset, match="heads \\(4\\) must be divisible by kv_heads \\(3\\)"):
        model_from_gguf(tiny_gguf(tmp_path, "h.gguf", **{"{arch}.attention.head_count_kv": 3}))


def test_value_types_are_read(tmp_path: Path) -> None:
    meta = {"general.architecture": "llama", "a": Typed(U64, 2**40), "b": 1.5, "c": [[1, 2], [3]], "d": Typed(STRING, "é")}
    header = read_header(write_gguf(tmp_path / "t.gguf", meta, []))
    assert header.metadata["a"] == 2**40 and header.metadata["b"] == 1.5 and header.metadata["d"] == "é"
    assert header.metadata["c"] is None and header.array_lengths["c"] == 2  # nested arrays are walked, not kept
    assert tensor_bytes((256,), "q6_K") == 210


def test_presets_show_says_where_a_gguf_came_from(cli) -> None:
    shown = cli.json("presets", "show", FIXTURE)["spec"]
    assert shown["source"].startswith("GGUF v3 file ") and shown["stored_weights"]["bytes"] == 4_912_898_304
    explained = cli("size", "--model", FIXTURE, "--seq", "8", "--explain")
    assert "model Meta-Llama-3.1-8B-Instruct-Q4_K_M: GGUF v3 file" in explained.stdout


def test_stored_weights_in_a_yaml_preset(cli, tmp_path: Path) -> None:
    """A preset may carry exact stored bytes too; their parameter count is the model's."""
    base = "name: mine\nlayers: 2\nheads: 4\nkv_heads: 2\nhead_dim: 16\nhidden: 64\nintermediate: 128\nvocab: 100\n"
    stored = "stored_weights: {bytes: 1000000, params: 2000000, types: {q4_K: 2000000}}\n"
    (tmp_path / "ok.yaml").write_text(base + stored)
    doc = cli.json("size", "--model", tmp_path / "ok.yaml", "--seq", "8")
    assert doc["weights"]["bytes"] == 1_000_000 and doc["weights"]["params"]["total"] == 2_000_000
    (tmp_path / "bad.yaml").write_text(base + stored + "params: 5\n")
    result = cli("size", "--model", tmp_path / "bad.yaml", "--seq", "8")
    assert result.exit_code == 2 and "params (5) must equal stored_weights.params (2000000)" in result.stderr


# Files that lie (issue 23 item 1): each is one line and exit 2, read without walking a lying count.


def _kv(key: str, kind: int, payload: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", kind) + payload


def _raw_gguf(kvs: list[bytes], tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kvs)) + b"".join(kvs)


def _refused_in_one_line(cli, path: Path, message: str) -> None:
    result = cli("size", "--model", path, "--seq", "8")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and len(result.stderr) < 600 and message in result.stderr, result.stderr


def test_arrays_nested_a_thousand_deep(cli, tmp_path: Path) -> None:
    nested = struct.pack("<IQ", ARRAY, 1) * 999 + struct.pack("<IQ", I32, 0)  # arrays of arrays ... of no numbers
    path = tmp_path / "deep.gguf"
    path.write_bytes(_raw_gguf([_kv("general.architecture", STRING, struct.pack("<Q", 5) + b"llama"), _kv("x", ARRAY, nested)]))
    _refused_in_one_line(cli, path, "'x' nests arrays more than 8 deep")


def test_lying_counts_are_refused_before_any_loop(cli, tmp_path: Path) -> None:
    keys = tmp_path / "keys.gguf"
    keys.write_bytes(_corrupt(HEADER, 16, struct.pack("<Q", 10**9)))
    _refused_in_one_line(cli, keys, "it counts 1,000,000,000 metadata keys (kvcalc reads up to 65,536)")
    tokens = tmp_path / "tokens.gguf"  # 2^23 empty strings in a sparse 64 MiB file: refused before the walk
    tokens.write_bytes(_raw_gguf([_kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 2**23))]))
    with tokens.open("r+b") as file:
        file.truncate(8 * 2**23 + 100)
    _refused_in_one_line(cli, tokens, "'tokenizer.ggml.tokens' is an array of 8,388,608 items (kvcalc reads up to 1,048,576)")
    arrays = tmp_path / "arrays.gguf"
    arrays.write_bytes(_raw_gguf([_kv("x", ARRAY, struct.pack("<IQ", ARRAY, 5000))]) + bytes(12 * 5000))
    _refused_in_one_line(cli, arrays, "'x' is an array of 5,000 items (kvcalc reads up to 4,096)")


def test_a_huge_block_count_with_sliding_layers(cli, tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path, arch="gemma2", **{"{arch}.block_count": Typed(U64, 2**40)})
    _refused_in_one_line(cli, path, "gemma2.block_count is 1,099,511,627,776; kvcalc models up to 10,000 layers")


@pytest.mark.parametrize(
    "value, what",
    [
        (["8", "8"], "an array of 2 strings"),
        (Typed(ARRAY, [8] * 70_000, I32), "an array of 70,000 numbers"),
        ("8" * 70_000, "a string of 70,000 bytes"),
        ([[8], [8]], "an array of arrays"),
    ],
)
def test_a_needed_key_that_cannot_be_read_is_not_taken_as_absent(cli, tmp_path: Path, value: object, what: str) -> None:
    """Without head_count_kv llama.cpp's default is MHA (4x the KV here): an unread value must not fall back to it."""
    path = tiny_gguf(tmp_path, **{"{arch}.attention.head_count_kv": value})
    _refused_in_one_line(cli, path, f"llama.attention.head_count_kv is {what}, which kvcalc does not read")


def test_duplicate_keys_and_tensor_infos(cli, tmp_path: Path) -> None:
    arch = _kv("general.architecture", STRING, struct.pack("<Q", 5) + b"llama")
    keys = tmp_path / "keys.gguf"
    keys.write_bytes(_raw_gguf([arch, arch]))
    _refused_in_one_line(cli, keys, "the metadata key 'general.architecture' is given twice")
    twice = tiny_gguf(tmp_path, "twice.gguf", tensors=TINY_TENSORS + TINY_TENSORS[:1])
    _refused_in_one_line(cli, twice, "the tensor 'token_embd.weight' is listed twice")


def test_an_empty_per_layer_array(cli, tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path, **{"{arch}.attention.head_count_kv": Typed(ARRAY, [], I32)})
    _refused_in_one_line(cli, path, "llama.attention.head_count_kv is an empty array")


def test_a_folder_or_a_fifo_named_gguf(cli, tmp_path: Path) -> None:
    (tmp_path / "dir.gguf").mkdir()
    _refused_in_one_line(cli, tmp_path / "dir.gguf", "dir.gguf: is a folder, not a GGUF file")
    os.mkfifo(tmp_path / "pipe.gguf")
    _refused_in_one_line(cli, tmp_path / "pipe.gguf", "pipe.gguf: is not a regular file")


def test_split_headers_that_lie(cli, tmp_path: Path) -> None:
    paths = _split(tmp_path, 3, [1, 2, 3])
    renamed = tmp_path / "renamed.gguf"
    renamed.write_bytes(paths[0].read_bytes())
    _refused_in_one_line(cli, renamed, "its header says it is part 1 of 3 files but its name says 1 (a renamed part?)")
    paths[1].write_bytes(paths[0].read_bytes())  # the same part twice
    _refused_in_one_line(cli, paths[0], "m-00002-of-00003.gguf: its header says split.no 0 of split.count 3")
    text = tmp_path / "text-00001-of-00002.gguf"
    write_gguf(text, tiny_metadata() | {"split.count": "2"}, TINY_TENSORS)
    _refused_in_one_line(cli, text, "split.count is '2'; a split GGUF's part count is a positive integer")
    many = tmp_path / "many-00001-of-65535.gguf"
    write_gguf(many, tiny_metadata() | {"split.no": Typed(U16, 0), "split.count": Typed(U16, 65535)}, TINY_TENSORS)
    _refused_in_one_line(
        cli, many, "65,534 of the 65,535 parts of this split GGUF are missing beside it (many-00002-of-65535.gguf"
    )
