"""llama.cpp across several GPUs (`--tp N` or several `--gpu`): llama.cpp's default `-sm layer` gives each GPU
whole layers and their cache (kvcalc.placement.LAYER_SPLIT_SOURCE, KV_DEVICE_SOURCE), never a share of the heads."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import kvcache, placement, presets
from kvcalc.spec import Engine, Workload
from kvcalc.units import GiB, MiB, parse_dtype
from kvcalc.weights import weight_format

LLAMACPP = ["--engine", "llamacpp"]


def _device(name: str, free: int) -> placement.PlacementDevice:
    return placement.PlacementDevice(
        name=name, free_bytes=free, margin_bytes=placement.DEFAULT_FIT_TARGET, bandwidth_bytes_per_s=448 * 10**9
    )


def test_two_rtx_5060_ti_hold_the_recurrent_state_of_their_own_layers() -> None:
    """A published llama-server start-up: Qwen3.5-27B Q4_K_M with its MTP layer on 2x RTX 5060 Ti, -ts 17,13, -kvu,
    q8_0 cache, n_ctx 262144, --spec-draft-n-max 3 (3 rs_seq). Its log prints "CUDA0 RS buffer size = 361.59,
    CUDA1 RS buffer size = 236.91" and a KV cache of 8704.00 MiB in all. Source: a Russian VRAM-budget calculator
    write-up (section 6), known only by the look-up index's id 57415677261 (no web address found); the same case is
    tests/fixtures/engine_logs/llamacpp_recurrent.yaml's "2x RTX 5060 Ti (-ts 17,13)". 64 layers + MTP + output = 66
    units: units 0-37 (17/30 of them) on CUDA0, holding 29 Gated DeltaNet and 9 attention layers; 38-65 on CUDA1."""
    model = presets.load_model("qwen3.5-27b")
    engine = Engine(name="llamacpp", kv_unified=True, n_rs_seq=3)
    work = Workload(seq=262144, batch=1, kv_dtype=parse_dtype("q8_0"), engine=engine)
    devices = [placement.placement_device(presets.load_gpu("rtx5060ti"), placement.DEFAULT_FIT_TARGET)] * 2
    request = placement.PlacementRequest(ctx_size=262144, tensor_split=[17, 13], mtp=True)
    plan = placement.plan(model, work, weight_format(model), devices, request)
    assert plan.tensor_split == [38, 28]
    assert "llama_memory_recurrent:      CUDA0 RS buffer size =     361.59 MiB" in plan.log_lines
    assert "llama_memory_recurrent:      CUDA1 RS buffer size =     236.91 MiB" in plan.log_lines
    kv = [d.kv_bytes - d.state_bytes for d in plan.devices]
    assert sum(kv) == 8704 * MiB and kv == [9 * 8704 * MiB // 16, 7 * 8704 * MiB // 16]  # 16 attention layers: 9 and 7


def test_two_rtx_4090_each_hold_the_cache_of_their_layers(cli) -> None:
    """Nixiesearch's published llama.cpp start-up (a 2024 build) of a 24-layer GGUF of Qwen2.5-0.5B's shapes on two
    RTX 4090, split by free memory, n_ctx 32768 in 4 slots, f16, no flash attention: "CUDA0 KV buffer size = 208.00 MiB",
    "CUDA1 KV buffer size = 176.00 MiB" (13 and 11 layers of 16 MiB; the second card also holds the output layer).
    https://github.com/nixiesearch/nixiesearch/blob/9edbb1611e7c5144be69378178ec636223f4394a/docs/docs/deployment/gpu.md
    (also scored with its weights and compute in tests/fixtures/placement/breakdowns.yaml, nixiesearch-2x4090)."""
    args = ["--model", "qwen2.5-0.5b", "--gpu", "rtx4090", "--tp", "2", "--seq", "32768", "--batch", "4", "-fa", "off"]
    doc = cli.json("fit", *args, *LLAMACPP)
    assert "llama_kv_cache:      CUDA0 KV buffer size =     208.00 MiB" in doc["placement"]["log_lines"]
    assert "llama_kv_cache:      CUDA1 KV buffer size =     176.00 MiB" in doc["placement"]["log_lines"]
    assert [d["layers"] for d in doc["placement"]["devices"]] == [13, 12]


MODELS = ["llama3-8b", "qwen3-30b-a3b", "qwen3.5-27b", "gemma2-9b"]


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(MODELS),
    shares=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=4).map(lambda s: s if any(s) else [1, *s[1:]]),
    offload=st.floats(min_value=0.0, max_value=1.0),
    batch=st.integers(min_value=1, max_value=4),
    ctx=st.sampled_from([4096, 10000, 32768]),
    q8=st.booleans(),
)
def test_devices_split_layers_and_their_cache_sums_to_one_gpus(
    name: str, shares: list[int], offload: float, batch: int, ctx: int, q8: bool
) -> None:
    """Whatever the split (-ts) and -ngl: the devices' layers (the output layer counted) sum to -ngl, all of them to
    the model's layers + 1; and the devices' and host's cache sums to the one-GPU cache (kvcalc.kvcache, same cells and
    cache type), its recurrent state included, since no head is split."""
    model = presets.load_model(name)
    work = Workload(seq=ctx, batch=batch, kv_dtype=parse_dtype("q8_0") if q8 else None, engine=Engine(name="llamacpp"))
    units = model.layers + 1
    ngl = round(offload * units)
    devices = [_device(f"gpu{i}", 24 * GiB) for i in range(len(shares))]
    request = placement.PlacementRequest(ctx_size=ctx, n_gpu_layers=ngl, tensor_split=[float(s) for s in shares])
    plan = placement.plan(model, work, weight_format(model), devices, request)
    assert sum(d.layers for d in plan.devices) == sum(plan.tensor_split) == plan.n_gpu_layers == ngl
    one_gpu = kvcache.estimate_kv(model, work)
    assert sum(d.kv_bytes for d in plan.devices) + plan.host.kv_bytes == one_gpu.total_bytes_per_batch
    assert sum(d.state_bytes for d in plan.devices) + plan.host.state_bytes == one_gpu.state_bytes_per_batch
    every = placement.plan(model, work, weight_format(model), devices, request.model_copy(update={"n_gpu_layers": units}))
    assert sum(d.layers for d in every.devices) == model.layers + 1 and every.host.kv_bytes == 0


def test_tp_n_is_n_gpus_of_whole_layers_whatever_the_heads(cli) -> None:
    """--tp 3 does not divide llama3-8b's 32 heads nor its 8 KV heads: llama.cpp runs it (-sm layer), 11 units each."""
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "rtx3090", "--tp", "3", "--seq", "8192", *LLAMACPP)
    devices = doc["placement"]["devices"]
    assert [d["layers"] for d in devices] == [11, 11, 11] and all(d["fits"] for d in devices)
    assert sum(d["kv_bytes"] for d in devices) == 8192 * 131072  # the one-GPU cache: 128 KiB per token
    assert doc["placement"]["command"].endswith("-ts 11,11,11")


def test_tp_with_as_many_gpus_as_given(cli) -> None:
    """--tp 2 with two --gpu is those two, split by their free memory."""
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "rtx3090", "--gpu", "rtx3060", "--tp", "2", *LLAMACPP)
    assert [d["name"] for d in doc["placement"]["devices"]] == ["rtx3090", "rtx3060"]


def test_explain_names_the_split_and_its_llamacpp_source(cli) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", "rtx3090", "--tp", "2", "--explain", *LLAMACPP)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "-sm layer (llama.cpp's default split mode): whole layers per device in proportion to free memory" in text
    assert "CUDA0 17, CUDA1 16 units" in text
    assert "src/llama-kv-cache.cpp llama_kv_cache::llama_kv_cache" in text and "ggml-org/llama.cpp 3514e9f6" in text
    assert "rtx3090 (CUDA1): 16 layers from 17" in text


def test_a_device_over_its_memory_exits_1_with_its_own_verdict(cli) -> None:
    """-ngl 33 -ts 1,0 puts all of llama3-8b's 16 GB of bf16 weights on the first 12 GB card: it alone is over."""
    args = ["fit", "--model", "llama3-8b", "--gpu", "rtx3060", "--tp", "2", "-ngl", "33", "-ts", "1,0", *LLAMACPP]
    result = cli(*args, "--json")
    assert result.exit_code == 1
    devices = json.loads(result.stdout)["placement"]["devices"]
    assert [d["fits"] for d in devices] == [False, True] and devices[1]["layers"] == 0


def test_decode_times_each_device_of_the_split(cli) -> None:
    doc = cli.json("decode", "--model", "llama3-8b", "--gpu", "rtx3090", "--tp", "2", "--seq", "8192", *LLAMACPP)
    assert len(doc["placement"]["devices"]) == len(doc["split"]["device_seconds"]) == 2


def test_other_engines_keep_tp_as_a_head_split(cli) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", "rtx3090", "--tp", "3")
    assert result.exit_code == 2 and "--tp 3 does not divide the 32 attention heads" in result.stderr


@pytest.mark.parametrize("command", [["size", "--engine", "llamacpp"], ["compare", "textbook", "llamacpp", "--gpu", "rtx3090"]])
def test_commands_without_a_plan_refuse_a_llamacpp_head_split(cli, command: list[str]) -> None:
    """size and compare budget per-GPU head shares, which llama.cpp never allocates: one line, exit 2."""
    result = cli(*command, "--model", "llama3-8b", "--seq", "8192", "--tp", "2")
    assert result.exit_code == 2, result.output
    assert "llama.cpp splits whole layers over GPUs (-sm layer), not heads, so --tp 2 is no head share" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--gpu", "rtx3090", "--gpu", "rtx3060", "--gpu", "rtx3060", "--tp", "2"],
            "--tp 2 with --engine llamacpp splits layers over 2 GPUs, and 3 --gpu are given: give one --gpu (used 2 times) or 2",
        ),
        (
            ["--memory", "24GiB", "--tp", "2"],
            "--tp 2 with --engine llamacpp puts whole layers on each of 2 GPUs (-sm layer): give --gpu",
        ),
        (["--gpu", "rtx3090", "--tp", "0"], "--tp must be a positive integer, got 0"),
        (["--gpu", "rtx3090", "--tp", "two"], "--tp 'two': give a positive integer, or auto"),
        (
            ["--gpu", "rtx3090", "--tp", "2", "--pp", "2"],
            "llama.cpp has no pipeline stages to budget (--pp 2): its layer split (-sm layer) puts whole layers on each GPU",
        ),
        (
            ["--gpu", "rtx3090", "--tp", "17"],
            "--tp 17: 17 GPUs, and llama.cpp uses at most 16 (llama_max_devices(), src/llama.cpp)",
        ),
        (
            ["--gpu", "rtx3060"] * 17,
            "--gpu: 17 GPUs, and llama.cpp uses at most 16 (llama_max_devices(), src/llama.cpp)",
        ),
        (
            ["--gpu", "apple-m4-max", "--tp", "2"],
            "--tp 2: apple-m4-max is a Mac's one GPU sharing unified memory (Metal): llama.cpp has no second one",
        ),
        (
            ["--gpu", "apple-m4-max", "--gpu", "rtx3090"],
            "--gpu: apple-m4-max is a Mac's one GPU sharing unified memory (Metal)",
        ),
    ],
)
def test_bad_multi_gpu_input_is_one_line_and_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli("fit", "--model", "llama3-8b", *args, *LLAMACPP)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_sixteen_gpus_are_llamacpps_most() -> None:
    """llama_max_devices() returns 16 (src/llama.cpp); GGML_CUDA_MAX_DEVICES is 16 (ggml/include/ggml-cuda.h)."""
    from kvcalc.cli.placement_options import tp_devices
    from kvcalc.engines.llamacpp import LLAMA_MAX_DEVICES

    gpu = presets.load_gpu("rtx3090")
    assert LLAMA_MAX_DEVICES == 16 and len(tp_devices([gpu], 16)) == 16


@pytest.mark.parametrize("command", [["fit", "--gpu", "rtx3090"], ["size"], ["check"]], ids=["fit", "size", "check"])
def test_pipeline_stages_are_refused_for_llamacpp(cli, command: list[str], tmp_path) -> None:
    """llama.cpp has no pipeline stages: --pp 2 (or a plan's pp: 2) is one line and exit 2, pointing at --tp N."""
    if command == ["check"]:
        plan = tmp_path / "plan.yaml"
        plan.write_text("workloads:\n  - {name: w, model: llama3-8b, gpu: rtx3090, seq: 8192, pp: 2, engine: llamacpp}\n")
        result = cli("check", str(plan))
    else:
        result = cli(*command, "--model", "llama3-8b", "--seq", "8192", "--pp", "2", *LLAMACPP)
    assert result.exit_code == 2, result.output
    assert "llama.cpp has no pipeline stages to budget (--pp 2)" in result.stderr
    assert "`kvcalc fit` or `decode --engine llamacpp --tp 2 --gpu G` plans each GPU's layers" in result.stderr


SPLIT_8B = ["--model", "llama3.1-8b", "--gpu", "rtx4090", "--tp", "3", *LLAMACPP]


def test_fit_verdict_and_exit_code_follow_the_split_and_the_rest_is_one_gpus(cli) -> None:
    """At 131,072 tokens llama3.1-8b's 16 GiB bf16 cache overflows one RTX 4090 (max batch 0) and fits three of them,
    5.5 GiB each at most: fits and verdict are the split's, budget_scope says the other figures are one GPU's."""
    doc = cli.json("fit", *SPLIT_8B, "--seq", "131072")
    assert (doc["fits"], doc["verdict"], doc["placement"]["fits"]) == (True, "fits", True)
    assert doc["budget_scope"] == "one GPU holding the whole model" and doc["max_batch"] == 0
    one = cli.json("fit", *SPLIT_8B[:4], *LLAMACPP, "--seq", "8192")
    assert one["budget_scope"] is None and one["placement"] is None


def test_fit_text_says_which_figures_are_one_gpus_and_gives_the_splits_verdict(cli) -> None:
    result = cli("fit", *SPLIT_8B, "--seq", "131072")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "llama.cpp splits the layers over 3 GPUs (-sm layer): the figures down to its placement are for one GPU" in text
    assert "Budget of one GPU holding the whole model: rtx4090 (llamacpp)" in text
    assert "of KV on one GPU holding the whole model: does not fit" in text
    assert "llama.cpp's split over 3 GPUs (-sm layer): fits" in text


def test_latency_targets_over_a_split_use_the_splits_time(cli) -> None:
    """--max-tpot-ms over --tp 3 judges the split's expected time per token (three devices and two hops), the one
    decode's placement table gives at that batch, not one GPU's; the cost bills the three GPUs."""
    decode = cli.json("decode", *SPLIT_8B, "--seq", "8192")
    split_seconds, one_gpu_seconds = decode["split"]["expected_seconds"], decode["decode"]["expected_seconds_per_token"]
    assert decode["decode_scope"] == "one GPU holding the whole model" and split_seconds > one_gpu_seconds
    between = f"{(split_seconds + one_gpu_seconds) / 2 * 1e3:.4f}"  # one GPU meets it, the split does not
    result = cli("fit", *SPLIT_8B, "--seq", "8192", "--max-tpot-ms", between, "--json")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["throughput"]["batch"] == 0
    above = f"{split_seconds * 1e3 * 1.0001:.4f}"
    for command in ("fit", "decode"):
        doc = cli.json(command, *SPLIT_8B, "--seq", "8192", "--max-tpot-ms", above, "--price-per-hour", "1")
        assert doc["throughput"]["seconds_per_token"] <= split_seconds * 1.0001 and doc["throughput"]["batch"] >= 1
        assert doc["cost"]["gpus"] == 3


def test_decode_text_says_its_first_tables_are_one_gpus(cli) -> None:
    result = cli("decode", *SPLIT_8B, "--seq", "8192")
    assert result.exit_code == 0, result.output
    assert "the decode and prefill tables first are for one GPU holding the whole model" in " ".join(result.stdout.split())


def test_fit_text_prints_the_engine_log_when_the_model_does_not_fit_one_gpu(cli) -> None:
    """qwen3-next-80b-a3b's weights overflow one RTX 4090 (the plan keeps the rest in host RAM); the cache and
    state lines llama.cpp logs still print, as --json gives them."""
    args = ["fit", "--model", "qwen3-next-80b-a3b", "--gpu", "rtx4090", "--seq", "32768", *LLAMACPP]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    logged = cli(*args, "--json")
    lines = json.loads(logged.stdout)["engine_log"]
    assert len(lines) == 2
    for line in lines:
        assert f"llama.cpp would log: {' '.join(line['line'].split())}" in text


@pytest.mark.parametrize("command", ["fit", "decode", "size", "compare"])
def test_only_fit_and_decode_help_offer_the_llamacpp_split(cli, command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert ("llamacpp: N GPUs of --gpu holding whole layers each" in text) == (command in ("fit", "decode"))


def _layers_and_host_weights(cli, *args: str) -> tuple[int, int]:
    placed = cli.json("fit", *args)["placement"]
    return placed["n_gpu_layers"], placed["host"]["weights_bytes"]


def test_the_splits_batch_gives_each_sequence_its_own_seq_tokens(cli) -> None:
    """Over two RTX 4090 every sequence keeps its 8,192 tokens (-np B, n_ctx = B * 8,192): the split holds 30 of them
    with all 33 layers on the GPUs, as `fit --batch 30 --seq 245760` places them; at 31 llama.cpp's fit moves a layer to
    the host, another deployment, so 30 is the batch. One GPU's plan holds fewer (8), never the 256 cells-sharing gave."""
    args = ["--model", "llama3.1-8b", "--gpu", "rtx4090", *LLAMACPP]
    doc = cli.json("fit", *args, "--tp", "2", "--seq", "8192", "--price-per-hour", "1", "--ram-bandwidth", "80GB/s")
    held = doc["placement_max_batch"]
    assert held == doc["throughput"]["memory_batch"] == 30 and doc["throughput"]["seq"] == 8192
    one_gpu = cli.json("fit", *args, "--seq", "8192", "--fit-target", "1024")
    assert one_gpu["placement"]["devices"][0]["layers"] == 33 and 1 <= one_gpu["placement_max_batch"] < held
    at = _layers_and_host_weights(cli, *args, "--tp", "2", "--batch", str(held), "--seq", str(held * 8192))
    over = _layers_and_host_weights(cli, *args, "--tp", "2", "--batch", str(held + 1), "--seq", str((held + 1) * 8192))
    assert at[0] == 33 and (over[0] < 33 and over[1] > at[1])


def test_a_split_that_keeps_every_layer_on_its_gpus_needs_no_ram_bandwidth(cli) -> None:
    """Two RTX 3060 hold llama3.1-8b's layers at 8,192 tokens: the batch search never replans layers onto the host,
    so it neither asks for --ram-bandwidth nor counts a batch that would."""
    result = cli("decode", "--model", "llama3.1-8b", "--gpu", "rtx3060", "--tp", "2", "--seq", "8192", "--max-tpot-ms", "100",
                 *LLAMACPP, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["throughput"]
    assert 1 <= plan["batch"] <= plan["memory_batch"] < 256
    cells = str(plan["batch"] * 8192)  # the same placement asked for directly: n_ctx = B * 8,192 shared by B sequences
    direct = cli.json("decode", "--model", "llama3.1-8b", "--gpu", "rtx3060", "--tp", "2", "--seq", cells,
                      "--batch", str(plan["batch"]), *LLAMACPP)  # fmt: skip
    assert plan["seconds_per_token"] == pytest.approx(direct["split"]["expected_seconds"])


OFFLOAD_70B = ["--model", "llama3.1-70b", "--gpu", "rtx4090", "--seq", "8192", *LLAMACPP]


def test_one_gpu_with_host_offload_takes_the_plans_verdict_and_speed(cli) -> None:
    """llama3.1-70b overflows one RTX 4090: the plan keeps most layers in host RAM and fits, so fits is the plan's
    (the one-GPU figures say they are one GPU's), and --max-tpot-ms judges the plan's seconds per token, not one
    GPU's: a 5 s target is met, at the time decode's placement gives."""
    doc = cli.json("fit", *OFFLOAD_70B)
    assert (doc["fits"], doc["placement"]["fits"], doc["max_batch"]) == (True, True, 0)
    assert doc["budget_scope"] == "one GPU holding the whole model" and doc["placement_max_batch"] >= 1
    speed = [*OFFLOAD_70B, "--ram-bandwidth", "80GB/s"]
    decode = cli.json("decode", *speed)
    assert decode["decode_scope"] == "one GPU holding the whole model"
    split_seconds = decode["split"]["expected_seconds"]
    assert split_seconds > 10 * decode["decode"]["expected_seconds_per_token"]
    result = cli("fit", *speed, "--max-tpot-ms", "5000", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["throughput"]
    assert plan["batch"] >= 1 and plan["seconds_per_token"] >= split_seconds
    text = " ".join(cli("decode", *speed).stdout.split())
    assert "llama.cpp places the layers (its --fit): the decode and prefill tables first are for one GPU" in text


def test_fit_text_gives_the_placements_batch(cli) -> None:
    result = cli("fit", "--model", "llama3.1-8b", "--gpu", "rtx4090", "--tp", "2", "--seq", "8192", *LLAMACPP)
    assert result.exit_code == 0, result.output
    assert "llama.cpp's split over 2 GPUs (-sm layer): fits; it holds 30 sequences of 8,192 tokens" in result.stdout


def test_mixed_gpus_are_billed_at_their_own_prices_whatever_their_order(cli) -> None:
    """H200 (4.54/h) and B200 (6.03/h) presets: the split costs 10.57/h in either --gpu order, and the prompt rate
    (the slower GPU's prefill) does not follow the order."""
    costs = [
        cli.json("decode", "--model", "llama3.1-70b", "--gpu", a, "--gpu", b, *LLAMACPP)["cost"]
        for a, b in (("h200", "b200"), ("b200", "h200"))
    ]
    assert [c["price_per_hour"] for c in costs] == [pytest.approx(10.57)] * 2 and costs[0]["gpus"] == 2
    assert costs[0]["input_tokens_per_s"] == costs[1]["input_tokens_per_s"]
    explained = cli("decode", "--model", "llama3.1-70b", "--gpu", "h200", "--gpu", "b200", *LLAMACPP, "--explain")
    assert "price per hour = the GPUs' prices summed = USD 4.54 + USD 6.03 = USD 10.57" in " ".join(explained.stdout.split())


def test_check_names_llamacpps_device_cap_for_a_plan_over_it(cli, tmp_path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("workloads:\n  - {name: w, model: llama3-8b, gpu: rtx3090, seq: 8192, tp: 17, engine: llamacpp}\n")
    result = cli("check", str(plan))
    assert result.exit_code == 2, result.output
    assert "llama.cpp uses at most 16 GPUs (llama_max_devices()), so no plan splits over 17" in result.stderr
    assert "--tp 17 --gpu G" not in result.stderr


def test_plot_labels_llamacpps_f16_cache_of_an_fp32_checkpoint(cli, monkeypatch, tmp_path) -> None:
    """gpt2's checkpoint is fp32; llama.cpp keeps its cache in f16 (-ctk/-ctv default), and the chart says so."""
    from kvcalc import plots

    drawn = []
    monkeypatch.setattr(plots, "save", lambda chart, path: drawn.append(chart))
    result = cli("fit", "--model", "gpt2", "--gpu", "rtx4090", "--seq", "1024", *LLAMACPP, "--plot", str(tmp_path / "f.svg"))
    assert result.exit_code == 0, result.output
    assert drawn[0].title.startswith("Max batch: gpt2, fp16,")
