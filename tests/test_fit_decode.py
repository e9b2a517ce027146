"""`fit` and `decode` through the CLI: budgets, limits, exit codes and bad input."""

from __future__ import annotations

import pytest

from kvcalc import Workload
from kvcalc.capacity import budget, fit
from kvcalc.latency import decode, expected_experts_touched
from kvcalc.presets import load_gpu, load_model
from kvcalc.spec import ModelSpec
from kvcalc.units import GiB
from kvcalc.weights import count_params

from .conftest import FIXTURES, TEST_PRESETS


def test_fit_golden_57_through_cli(cli) -> None:
    # 80 GiB * 0.9 - 16,060,522,496 B weights = 61,248,888,832 B; / 1 GiB per sequence -> 57 (see test_golden).
    doc = cli.json("fit", "--model", "llama3-8b", "--memory", "80GiB", "--reserve", "0", "--seq", "8192")
    assert doc["max_batch"] == 57 and doc["budget"]["usable_bytes"] == 61_248_888_832
    assert doc["max_batch_by_context"]["2048"] == 61_248_888_832 // (131_072 * 2048)


def test_fit_max_context_at_batch_limited_by_positions_or_memory(cli) -> None:
    doc = cli.json("fit", "--model", "llama3-8b", "--memory", "80GiB", "--reserve", "0", "--batch", "32")
    assert doc["max_context_limit"] == "max_positions" and doc["max_context"] == 8192
    doc = cli.json("fit", "--model", "llama3-8b", "--memory", "80GiB", "--reserve", "0", "--batch", "64")
    # 61,248,888,832 // (64 * 131,072) = 7,301 tokens
    assert doc["max_context_limit"] == "memory" and doc["max_context"] == 7301


def test_fit_says_what_memory_alone_allows_when_max_positions_binds(cli) -> None:
    # 61,248,888,832 B usable // 131,072 B per token (test_golden) = 467,291 tokens of llama3-8b at batch 1;
    # at batch 4 a quarter each: 116,822
    args = ("fit", "--model", "llama3-8b", "--memory", "80GiB", "--reserve", "0")
    doc = cli.json(*args)
    assert (doc["max_context"], doc["max_context_limit"]) == (8192, "max_positions")
    assert doc["max_context_by_memory"] == 61_248_888_832 // 131_072 == 467_291
    assert cli.json(*args, "--batch", "4")["max_context_by_memory"] == 61_248_888_832 // (4 * 131_072) == 116_822
    assert "(limited by the model's max positions; memory would allow 467,291 tokens)" in cli(*args).stdout
    # memory binds: nothing more to say
    assert cli.json(*args, "--batch", "64")["max_context_by_memory"] is None


def test_fit_memory_alone_sets_no_limit_for_a_sliding_model(cli) -> None:
    # mistral-7b-v0.1 holds min(s, 4,096) tokens per layer: past the window a longer context costs nothing more
    args = ("fit", "--model", "mistral-7b-v0.1", "--memory", "80GiB", "--reserve", "0")
    assert cli.json(*args)["max_context_by_memory"] == 2**31
    assert "memory alone sets no limit up to 2^31 tokens" in cli(*args).stdout


@pytest.mark.parametrize("seq", ["3000", "12k", "2048"])
def test_fit_table_includes_the_requested_context(cli, seq: str) -> None:
    doc = cli.json("fit", "--model", "llama3.1-8b", "--memory", "80GiB", "--reserve", "0", "--seq", seq)
    assert doc["max_batch_by_context"][str(doc["seq"])] == doc["max_batch"]
    assert list(map(int, doc["max_batch_by_context"])) == sorted(map(int, doc["max_batch_by_context"]))
    table = cli("fit", "--model", "llama3.1-8b", "--memory", "80GiB", "--reserve", "0", "--seq", seq).stdout
    assert f"┃ {doc['seq']:,} ┃" in table or f"┃ {doc['seq']:,} " in table


def test_fit_sliding_model_context_is_exact() -> None:
    # mistral-7b-v0.1: every layer holds min(s, 4096): past the window a sequence costs no more,
    # so with room for 4096 tokens the context reaches the model's limit.
    model = load_model("mistral-7b-v0.1")
    work = Workload(seq=4096, batch=1)
    report = fit(model, work, budget(model, work, 80 * GiB, utilization=0.9, reserve_bytes=0))
    assert report.max_context == model.max_positions and report.max_context_limit == "max_positions"


def test_fit_tp_and_weight_dtype(cli) -> None:
    doc = cli.json("fit", "--model", "llama3-70b", "--gpu", "h100-sxm", "--tp", "4", "--batch", "32")
    params = count_params(load_model("llama3-70b")).total
    assert doc["budget"]["weights_bytes"] == -(-params * 2 // 4)
    doc = cli.json(
        "fit", "--model", "llama3-8b", "--memory", "24GiB", "--seq", "4096", "--kv-dtype", "fp8", "--weight-dtype", "int4"
    )
    assert doc["budget"]["weights_bytes"] == -(-8_030_261_248 // 128) * 68  # 4.25 bits per weight


def test_fit_paged_waste(cli) -> None:
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "1000", "--block-size", "16")
    assert doc["bytes_per_sequence_per_gpu"] == 131_072 * 1008
    assert doc["paging_waste_bytes_at_max_batch"] == doc["max_batch"] * 131_072 * 8


def test_reserve_zero_in_any_unit(cli) -> None:
    assert cli.json("fit", "--model", "llama3-8b", "--memory", "80GiB", "--reserve", "0GiB")["max_batch"] == 57


def test_fit_max_seqs_binds(cli) -> None:
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "512", "--max-seqs", "256")
    assert doc["max_batch"] == 256 and doc["max_batch_limit"] == "max_seqs"


def test_weights_too_big_is_an_answer_exit_1(cli) -> None:
    result = cli("fit", "--model", "llama3-70b", "--gpu", "l4", "--seq", "4096")
    assert result.exit_code == 1
    assert "weights exceed the budget by" in result.stdout and "--tp" in result.stdout
    doc = cli("fit", "--model", "llama3-70b", "--gpu", "l4", "--seq", "4096", "--json")
    assert doc.exit_code == 1 and '"shortfall_bytes"' in doc.stdout


def test_batch_too_big_exit_1_with_shortfall(cli) -> None:
    result = cli("fit", "--model", "llama3-8b", "--memory", "80GiB", "--reserve", "0", "--batch", "58", "--seq", "8192")
    assert result.exit_code == 1 and "does not fit" in result.stdout
    assert (
        cli("size", "--model", "llama3-8b", "--seq", "8192", "--batch", "58", "--memory", "80GiB", "--reserve", "0").exit_code
        == 1
    )


@pytest.mark.parametrize(
    "args, expected",
    [
        (["fit", "--model", "llama3-8b", "--gpu", "h100"], "unknown GPU 'h100'; did you mean h100-"),
        (["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--utilization", "1.5"], "--utilization 1.5 must be in (0, 1]"),
        (["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--utilization", "0"], "--utilization 0.0 must be in (0, 1]"),
        (
            ["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--reserve", "-1GiB"],
            "--reserve: size '-1GiB' must not be negative",
        ),
        (["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--tp", "5"], "--tp 5 does not divide"),
        (["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--batch", "0"], "--batch must be a positive integer"),
        (["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "0"], "token count '0' must be at least 1 token"),
        (["fit", "--model", "llama3-8b"], "give --gpu NAME or --memory SIZE"),
        (["fit", "--model", TEST_PRESETS / "seed-7b.yaml", "--gpu", "h100-sxm"], "its weights are unknown"),
        (["fit", "--model", "llama3-8b", "--gpu", TEST_PRESETS / "seed-7b.yaml"], "memory_bytes: Field required"),
        (["decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--efficiency", "0"], "--efficiency 0.0 must be in [0.01, 1]"),
        (["decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--efficiency", "1e-320"], "must be in [0.01, 1]"),
        (["decode", "--model", "llama3-8b", "--gpu", "a100"], "unknown GPU 'a100'; did you mean"),
        (["decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--batch", "0"], "--batch must be a positive integer"),
    ],
)
def test_bad_fit_and_decode_input(cli, args: list, expected: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_decode_golden_through_cli(cli) -> None:
    doc = cli.json("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "8192", "--batch", "1")
    assert doc["decode"]["roofline"]["bytes_moved"] == 16_060_522_496 + 1_073_741_824
    assert doc["decode"]["seconds_per_token"] == pytest.approx(5.1147e-3, rel=1e-4)
    assert doc["prefill"]["roofline"]["bound"] == "compute"
    # naive attention materialises B * H * s^2 scores per layer: 1 * 32 * 8192^2 * 2 B
    assert doc["prefill"]["naive_scores_bytes_per_layer"] == 32 * 8192**2 * 2


def test_decode_efficiency_derates(cli) -> None:
    ideal = cli.json("decode", "--model", "llama3-8b", "--gpu", "h100-sxm")["decode"]["seconds_per_token"]
    derated = cli.json("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--efficiency", "0.8")["decode"][
        "seconds_per_token"
    ]
    assert derated == pytest.approx(ideal / 0.8)


def test_decode_moe_reads_only_touched_experts() -> None:
    # mixtral-8x7b: one token touches 2 of 8 experts; 64 tokens touch all 8 in expectation (8 * (1 - 0.75^64)).
    model, gpu = load_model("mixtral-8x7b"), load_gpu("a100-80gb")
    one = decode(model, Workload(seq=4096, batch=1, tp=2), gpu)
    many = decode(model, Workload(seq=4096, batch=64, tp=2), gpu)
    params = count_params(model)
    assert one.weights_read_bytes < many.weights_read_bytes <= -(-params.total * 2 // 2)
    assert expected_experts_touched(8, 2, 64) == pytest.approx(8.0, abs=1e-6)


def test_decode_batch_turns_compute_bound() -> None:
    model, gpu = load_model("llama3-8b"), load_gpu("h100-sxm")
    assert decode(model, Workload(seq=128, batch=1), gpu).roofline.bound == "memory"
    assert decode(model, Workload(seq=128, batch=1024), gpu).roofline.bound == "compute"


def test_model_without_max_positions_is_unbounded(cli, tmp_path) -> None:
    path = tmp_path / "slide.yaml"
    path.write_text("name: slide\nlayers: 2\nheads: 8\nkv_heads: 2\nhead_dim: 64\nsliding_window: 4096\nparams: 1000000\n")
    doc = cli.json("fit", "--model", str(path), "--gpu", "h100-sxm")
    assert doc["max_context_limit"] == "unbounded" and doc["max_context"] == 2**31


def test_reserve_not_weights_named_when_it_overflows(cli) -> None:
    result = cli("fit", "--model", "llama3.2-1b", "--gpu", "h100-sxm", "--reserve", "100GiB")
    assert result.exit_code == 1 and "weights + --reserve exceed the budget" in result.stdout
    assert "larger --tp" not in result.stdout


def test_max_context_never_passes_a_limit_of_one(cli) -> None:
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "hf", "--max-cache-len", "1", "--seq", "1")
    assert (doc["max_context"], doc["max_context_limit"]) == (1, "max_cache_len")


def test_utilization_share_is_exact(cli) -> None:
    args = ("--model", "llama3.2-1b", "--memory", "3GB", "--utilization", "0.7", "--reserve", "0", "--weight-dtype", "int4")
    assert cli.json("fit", *args)["budget"]["allowed_bytes"] == 2_100_000_000  # float math gives 2,099,999,999


# Pipeline parallelism: a GPU holds the weights of its stage, the largest one deciding the budget.
# Stage contents follow vLLM (vllm/model_executor/models/llama.py: embed_tokens on the first rank,
# and on the last rank too when the LM head is tied to it; norm and lm_head on the last rank).


def test_pp_weights_are_the_largest_stage_llama3_8b() -> None:
    # llama3-8b (meta-llama/Meta-Llama-3-8B config.json), 32 layers over pp 3: stages of 11/11/10 layers.
    # One layer: q 4096*4096 + k,v 2*4096*8*128 + o 4096*4096 + MLP 3*4096*14336 + 2 norms of 4096
    # = 218,112,000 params; the embedding table and the untied LM head 128,256*4096 = 525,336,576 each.
    # Stage 1: 11 * 218,112,000 + 525,336,576 = 2,924,568,576 params; stage 3: 10 layers + final norm
    # 4,096 + LM head = 2,706,460,672; stage 2: 2,399,232,000. bf16: 5,849,137,152 B per GPU, where
    # params / 3 would say 5,353,507,499.
    model = load_model("llama3-8b")
    work = Workload(seq=8192, pp=3)
    report = budget(model, work, 80 * GiB, utilization=0.9, reserve_bytes=0)
    assert report.weights_bytes == 5_849_137_152
    assert report.usable_bytes == 77_309_411_328 - 5_849_137_152
    # KV per GPU: the 11 layers of stage 1, 11 * 4,096 B * 8,192 tokens = 369,098,752 B per sequence:
    # 71,460,274,176 // 369,098,752 = 193 (params / 3 would have allowed 194).
    assert fit(model, work, report).max_batch == 193
    assert budget(model, Workload(seq=8192, tp=2, pp=3), 80 * GiB).weights_bytes == 2_924_568_576  # / tp 2


def test_pp_last_stage_holds_a_copy_of_a_tied_table() -> None:
    # 3 layers of 26 params (q 4 + k,v 8 + o 4 + norms 4 + MLP 3*2*1 = 6), a tied table of 10 * 2 = 20,
    # a final norm of 2: 100 params. pp 3: 46 / 26 / 2 + 26 + 20 = 48 (the last rank builds the table
    # for its tied LM head), so the last stage is the largest: 96 B in bf16. pp 2: 2 * 26 + 20 = 72 first.
    model = ModelSpec(name="tiny-tied", layers=3, heads=1, kv_heads=1, head_dim=2, hidden=2, intermediate=1, vocab=10,
                      tied_embeddings=True)  # fmt: skip
    assert count_params(model).total == 100
    assert budget(model, Workload(seq=1, pp=3), GiB).weights_bytes == 96
    assert budget(model, Workload(seq=1, pp=2), GiB).weights_bytes == 144
    assert budget(model, Workload(seq=1), GiB).weights_bytes == 200


def test_pp_published_count_without_shapes_splits_by_layers() -> None:
    # 1,000 params and no shapes: 4 layers over pp 3 are stages of 2/1/1 layers, the first holding
    # ceil(1,000 * 2 / 4) = 500 params = 1,000 B in bf16 (params / 3 would say 667).
    model = ModelSpec(name="counted", layers=4, heads=2, kv_heads=2, head_dim=8, params=1000)
    assert budget(model, Workload(seq=1, pp=3), GiB).weights_bytes == 1000


def test_pp_explain_states_the_stage_rule(cli) -> None:
    out = cli("fit", "--model", "llama3-8b", "--memory", "80GiB", "--reserve", "0", "--pp", "3", "--explain").stdout
    assert "pipeline stages of 11/11/10 layers" in out and "the first also the embedding table" in out
    assert "weights = stage 1 of 3 (layers 0-10): 2,924,568,576 params * bf16 / tp 1 = 5,849,137,152 B" in out
    assert cli.json("fit", "--model", "llama3-8b", "--memory", "80GiB", "--reserve", "0", "--pp", "3")["max_batch"] == 193


@pytest.mark.parametrize("command", ["fit", "decode"])
@pytest.mark.parametrize(
    "model, origin",
    [
        ("llama3-8b", "model llama3-8b: meta-llama/Meta-Llama-3-8B config.json (32 layers"),
        (f"{FIXTURES}/hf/llama3-8b-config.json", f"model llama3-8b: config.json at {FIXTURES}/hf/llama3-8b-config.json"),
        (
            f"{FIXTURES}/gguf/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
            f"model Meta-Llama-3.1-8B-Instruct-Q4_K_M: GGUF v3 file {FIXTURES}/gguf/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
        ),
        (
            "meta-llama/Meta-Llama-3-8B@main",
            "model meta-llama/Meta-Llama-3-8B@main: Hugging Face meta-llama/Meta-Llama-3-8B at main (commit 000000000000)",
        ),
    ],
)
def test_explain_says_where_the_model_comes_from(
    cli, monkeypatch: pytest.MonkeyPatch, command: str, model: str, origin: str
) -> None:
    """Preset, config.json, GGUF and Hub repo at a revision: fit's and decode's --explain name it first, as size's does."""
    monkeypatch.setenv("HF_HUB_CACHE", str(FIXTURES / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli(command, "--model", model, "--gpu", "h100-sxm", "--explain")
    assert result.exit_code == 0, result.output
    explained = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert explained[0].startswith(origin)
    if command == "decode":  # the roofline's bandwidth and FLOP/s come from the GPU
        assert explained[1].startswith("gpu h100-sxm: NVIDIA H100 datasheet (SXM)")


def test_decode_explain_and_naive_scores_are_per_rank_under_tp(cli) -> None:
    # issue 23 item 13: under --tp the FLOPs line left out the division by tp, and the naive attention
    # scores counted all 64 heads in a table whose figures are one rank's
    args = ("decode", "--model", "llama3.1-70b", "--gpu", "h100-sxm", "--seq", "8192")
    one, four = cli.json(*args), cli.json(*args, "--tp", "4")
    # llama3.1-70b: 64 query heads; bf16 scores of 8,192 x 8,192 per head and sequence
    assert one["prefill"]["naive_scores_bytes_per_layer"] == 64 * 8192 * 8192 * 2
    assert four["prefill"]["naive_scores_bytes_per_layer"] == 16 * 8192 * 8192 * 2
    [line] = [x for x in cli("decode", *args[1:], "--tp", "4", "--explain").stdout.splitlines() if "FLOPs = (" in x]
    assert ") / 4 = " in line and line.endswith("per rank")
