"""llama.cpp placements (kvcalc.placement): exact bytes from a GGUF, the fit's invariants, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import patch

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import placement, presets
from kvcalc.errors import InvalidInput
from kvcalc.sources.gguf_model import model_from_gguf
from kvcalc.spec import Engine, Workload
from kvcalc.units import GiB, MiB
from kvcalc.weights import layer_weights, weight_format

GGUF = Path(__file__).parent / "fixtures" / "gguf" / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
LLAMACPP = Engine(name="llamacpp")


def _device(name: str, free: int, bandwidth: int = 360 * 10**9) -> placement.PlacementDevice:
    return placement.PlacementDevice(
        name=name, free_bytes=free, margin_bytes=placement.DEFAULT_FIT_TARGET, bandwidth_bytes_per_s=bandwidth
    )


def test_gguf_buffers_are_llamacpps_own() -> None:
    """Full offload of bartowski's Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf: llama.cpp prints `CUDA0 model
    buffer size = 4403.49 MiB` and `CPU_Mapped model buffer size = 281.81 MiB` for this file (its 32
    blocks + output on the GPU, token_embd on the host); with flash attention `CUDA0 compute buffer size
    = 258.50 MiB` = 4 B * 512 * (128256 + 4096) and `CUDA_Host compute buffer size = 24.01 MiB` = the
    input rows 4 B * 512 * 4096 + the mask input 4 B * 8192 * 512 (builds before PR #23861, which reserved
    logits for the whole ubatch, and before PR #23764, which reserved the mask in f32)."""
    model = model_from_gguf(GGUF)
    work = Workload(seq=8192, engine=LLAMACPP)
    request = placement.PlacementRequest(ctx_size=8192, all_logits_reserved=True, f32_mask_reserved=True)
    plan = placement.plan(model, work, weight_format(model), [_device("gpu", 24 * GiB)], request)
    gpu, host = plan.devices[0], plan.host
    assert (plan.n_gpu_layers, plan.fits) == (33, True)
    assert round(gpu.weights_bytes / MiB, 2) == 4403.49
    assert round((host.weights_bytes) / MiB, 2) == 281.81
    assert gpu.kv_bytes == 1024 * MiB
    assert gpu.compute_bytes == 258.5 * MiB and round(host.compute_bytes / MiB) == 24
    assert "load_tensors: offloaded 33/33 layers to GPU" in plan.log_lines
    assert plan.command == "llama-server -c 8192 -ngl 33"
    current = placement.plan(
        model, work, weight_format(model), [_device("gpu", 24 * GiB)], placement.PlacementRequest(ctx_size=8192)
    )
    # one logits row: the MLP's 4 B * 512 * (2 * 14336 + 2 * 4096) and the f16 mask 2 B * 8192 * 512 are the peak
    assert current.devices[0].compute_bytes == (72 + 8) * MiB and current.host.compute_bytes == (8 + 8) * MiB


def test_context_reduced_when_unset_as_fit_cpp_interpolates() -> None:
    model = model_from_gguf(GGUF)
    work = Workload(seq=8192, engine=LLAMACPP)
    plan = placement.plan(model, work, weight_format(model), [_device("gpu", 12 * GiB)], placement.PlacementRequest())
    assert plan.n_gpu_layers == 33 and plan.fits
    assert plan.ctx_size % 256 == 0 and placement.DEFAULT_FIT_CTX <= plan.ctx_size < 131072
    assert any("context reduced from 131,072" in step for step in plan.steps)


def test_dense_layers_fill_back_to_front_and_the_rest_runs_on_the_cpu() -> None:
    model = model_from_gguf(GGUF)
    work = Workload(seq=131072, engine=LLAMACPP)
    plan = placement.plan(
        model, work, weight_format(model), [_device("gpu", 12 * GiB)], placement.PlacementRequest(ctx_size=131072)
    )
    assert 0 < plan.n_gpu_layers < 33
    assert plan.devices[0].first_layer == 33 - plan.n_gpu_layers  # the last layers and the output layer
    assert plan.host.kv_bytes > 0 and plan.devices[0].fits


def test_moe_fit_keeps_the_last_layers_experts_on_the_cpu() -> None:
    """fit.cpp step 4 turns dense-only layers back into full layers front to back, so the experts left
    in host memory are the last layers' (llama-fit-params prints them as -ot patterns, not --n-cpu-moe),
    with part of one more layer before them."""
    model = presets.load_model("qwen3-30b-a3b")
    work = Workload(seq=32768, engine=LLAMACPP)
    gpu = [_device("gpu", 12 * GiB)]
    plan = placement.plan(model, work, weight_format(model), gpu, placement.PlacementRequest(ctx_size=32768))
    assert plan.n_gpu_layers == model.layers + 1  # every layer's attention stays on the GPU
    cpu = plan.cpu_expert_layers
    assert 0 < len(cpu) < model.layers and cpu == list(range(model.layers - len(cpu), model.layers))
    assert "--n-cpu-moe" not in plan.command and plan.overrides[0].endswith(f"{placement.EXPERT_PATTERN}=CPU")
    for split in plan.partial_layers:  # fit.cpp's LAYER_FRACTION_UP / _GATE on the layer before them
        assert split.layer == cpu[0] - 1 and split.overflow == placement.CPU
        assert plan.overrides[-1].startswith(rf"blk\.{split.layer}\.ffn_") and plan.overrides[-1].endswith("=CPU")
    # the split layer's experts all on the GPU would not fit: the partial layer is the last step
    whole = placement.PlacementRequest(ctx_size=32768, n_gpu_layers=49, expert_layers_on_cpu=cpu)
    assert not placement.plan(model, work, weight_format(model), gpu, whole).fits or not plan.partial_layers


def test_n_cpu_moe_keeps_the_first_layers_experts_on_the_cpu() -> None:
    model = presets.load_model("qwen3-30b-a3b")
    work = Workload(seq=8192, engine=LLAMACPP)
    request = placement.PlacementRequest(ctx_size=8192, n_gpu_layers=49, n_cpu_moe=10)
    plan = placement.plan(model, work, weight_format(model), [_device("gpu", 24 * GiB)], request)
    assert plan.cpu_expert_layers == list(range(10)) and "--n-cpu-moe 10" in plan.command


@settings(max_examples=25, deadline=None)
@given(ngl=st.integers(min_value=0, max_value=49), n_cpu_moe=st.integers(min_value=0, max_value=48), old=st.booleans())
def test_every_weight_byte_is_placed_once(ngl: int, n_cpu_moe: int, old: bool) -> None:
    """However -ngl, --n-cpu-moe and the build split a model, the devices and the host hold its weights once."""
    model = presets.load_model("qwen3-30b-a3b")
    work = Workload(seq=4096, engine=LLAMACPP)
    fmt = weight_format(model)
    devices = [_device("a", 24 * GiB), _device("b", 12 * GiB)]
    request = placement.PlacementRequest(ctx_size=4096, n_gpu_layers=ngl, n_cpu_moe=n_cpu_moe, output_first=not old)
    plan = placement.plan(model, work, fmt, devices, request)
    w = layer_weights(model, fmt)
    assert sum(d.weights_bytes for d in plan.devices) + plan.host.weights_bytes == (
        w.embeddings + sum(w.layers) + sum(w.experts) + w.output
    )
    assert plan.n_gpu_layers == min(ngl, 49) and sum(plan.tensor_split) == plan.n_gpu_layers


def test_builds_before_pr_18148_offload_the_output_layer_last() -> None:
    """b5466 printed `offloading 30 repeating layers to GPU ... offloaded 30/49` (llama.cpp #13729); 2026
    builds offload the output layer first, so -ngl 30 is the output layer and 29 layers."""
    model = presets.load_model("qwen3-30b-a3b")
    work = Workload(seq=4096, engine=LLAMACPP)
    gpu = [_device("gpu", 24 * GiB)]
    old = placement.plan(
        model, work, weight_format(model), gpu, placement.PlacementRequest(ctx_size=4096, n_gpu_layers=30, output_first=False)
    )
    new = placement.plan(model, work, weight_format(model), gpu, placement.PlacementRequest(ctx_size=4096, n_gpu_layers=30))
    assert (old.devices[0].first_layer, new.devices[0].first_layer) == (18, 19)
    w = layer_weights(model, weight_format(model))
    assert old.host.weights_bytes - new.host.weights_bytes == w.output - (w.layers[18] + w.experts[18])


def test_mtp_layers_count_as_layers_before_the_output() -> None:
    """`offloading 40 repeating layers to GPU ... offloaded 42/42 layers to GPU` for a Qwen3.6-35B-A3B GGUF
    with its MTP layer (llama.cpp PR #22673): 40 layers, the MTP layer and the output layer."""
    model = presets.load_model("qwen3.6-35b-a3b").model_copy(update={"mtp_layers": 1})
    work = Workload(seq=4096, engine=LLAMACPP)
    request = placement.PlacementRequest(ctx_size=4096, mtp=True)
    plan = placement.plan(model, work, weight_format(model), [_device("gpu", 96 * GiB)], request)
    assert plan.n_gpu_layers == 42 and "load_tensors: offloaded 42/42 layers to GPU" in plan.log_lines
    without = placement.plan(
        model, work, weight_format(model), [_device("gpu", 96 * GiB)], placement.PlacementRequest(ctx_size=4096)
    )
    assert plan.devices[0].weights_bytes > without.devices[0].weights_bytes
    with pytest.raises(InvalidInput, match="no MTP layers"):
        placement.plan(presets.load_model("qwen3-30b-a3b"), work, weight_format(model), [_device("gpu", 96 * GiB)], request)


def test_fit_mtp_flag(cli) -> None:
    base = ["fit", "--model", "glm-4.5", "--gpu", "rtx-pro-6000", "--gpu", "rtx4090", "--engine", "llamacpp", "--seq", "32768"]
    plan = cli.json(*base, "--weight-dtype", "q4_k_m", "--mtp")["placement"]
    assert (plan["mtp_layers"], plan["n_gpu_layers"]) == (1, 94)  # 92 layers, the MTP layer, the output layer
    assert all(d["total_bytes"] <= d["target_bytes"] for d in plan["devices"]) and 92 in plan["cpu_expert_layers"]
    result = cli("fit", "--model", "qwen3-30b-a3b", "--gpu", "rtx4090", "--engine", "llamacpp", "--mtp")
    assert result.exit_code == 2 and "has no MTP layers" in result.stderr


def test_logits_reserved_per_sequence_since_pr_23861() -> None:
    """Before PR #23861 the compute buffer held logits for the whole ubatch: 4 B * 512 * (151936 + 2048) =
    300.75 MiB for Qwen2.5-3B (LLamaSharp #1099, build 4701); since, one row per sequence."""
    model = presets.load_model("qwen2.5-3b")
    assert placement.compute_buffer_bytes(model, 4096, 512, True, True, 512) == round(300.75 * MiB)
    assert placement.compute_buffer_bytes(model, 4096, 512, True, True, 1) < 64 * MiB


def test_two_gpus_take_full_layers_front_to_back() -> None:
    """On several devices fit.cpp converts dense-only layers to full ones from the first device on; a
    partial layer's other experts overflow to the next device."""
    model = presets.load_model("qwen3-30b-a3b")
    work = Workload(seq=16384, engine=LLAMACPP)
    devices = [_device("a", 8 * GiB), _device("b", 8 * GiB)]
    plan = placement.plan(model, work, weight_format(model), devices, placement.PlacementRequest(ctx_size=16384))
    assert plan.n_gpu_layers == 49 and all(d.fits for d in plan.devices)
    assert plan.devices[0].first_layer == 0 and plan.devices[1].first_layer == plan.devices[0].layers
    assert plan.cpu_expert_layers == list(range(48 - len(plan.cpu_expert_layers), 48))
    for split in plan.partial_layers:
        assert split.overflow in (1, placement.CPU)


def test_a_tensor_split_over_three_gpus_places_and_times_each_share() -> None:
    """-ngl 33 -ts 15/15/3 of Mixtral-8x22B's 56 layers (llama.cpp PR #11397's rig, a build that offloads the
    output layer last): the last 33 layers go 15, 15 and 3 to the devices in order, the rest and the output
    layer stay on the host, and two identical GPUs holding equal shares take equal time."""
    from kvcalc.decode_profiles import profile_for

    model = presets.load_model("mixtral-8x22b")
    work = Workload(seq=4096, engine=LLAMACPP)
    fmt = weight_format(model)
    devices = [_device("a", 24 * GiB, 936 * 10**9), _device("b", 24 * GiB, 936 * 10**9), _device("c", 6 * GiB, 336 * 10**9)]
    request = placement.PlacementRequest(ctx_size=4096, n_gpu_layers=33, tensor_split=[15, 15, 3], output_first=False)
    plan = placement.plan(model, work, fmt, devices, request)
    assert plan.tensor_split == [15, 15, 3]
    assert [d.first_layer for d in plan.devices] == [23, 38, 53]
    one_layer = plan.devices[0].weights_bytes // 15
    assert plan.host.weights_bytes > 23 * one_layer  # 23 layers, the input table and the output layer
    host = placement.HostSpeed(ram_bandwidth_bytes_per_s=62 * 10**9)
    speed = placement.split_decode(model, work, fmt, plan, devices, host, profile_for("llamacpp"))
    assert speed.device_seconds[0] == speed.device_seconds[1] > speed.device_seconds[2] > 0
    assert speed.host_seconds > sum(speed.device_seconds)


def test_working_set_of_a_mac() -> None:
    assert placement.working_set_bytes(64 * GiB) == 48 * GiB
    assert placement.working_set_bytes(128 * GiB, 112 * GiB) == 112 * GiB


@settings(max_examples=25, deadline=None)
@given(
    free=st.lists(st.integers(min_value=2, max_value=48), min_size=1, max_size=3),
    extra=st.integers(min_value=1, max_value=8),
    moe=st.booleans(),
)
def test_fit_invariants(free: list[int], extra: int, moe: bool) -> None:
    """No device over its free memory less the margin; more memory never gives fewer GPU layers."""
    model = presets.load_model("qwen3-30b-a3b" if moe else "llama3-8b")
    work = Workload(seq=16384, engine=LLAMACPP)
    fmt = weight_format(model)
    request = placement.PlacementRequest(ctx_size=16384, ram_bytes=512 * GiB)
    devices = [_device(f"gpu{i}", f * GiB) for i, f in enumerate(free)]
    plan = placement.plan(model, work, fmt, devices, request)
    if plan.n_gpu_layers:
        assert all(d.total_bytes <= d.target_bytes for d in plan.devices)
    assert plan.host.fits == (plan.host.total_bytes <= 512 * GiB)
    more = placement.plan(model, work, fmt, [_device(d.name, d.free_bytes + extra * GiB) for d in devices], request)
    assert more.n_gpu_layers >= plan.n_gpu_layers
    assert sum(more.tensor_split) == more.n_gpu_layers
    if moe and more.n_gpu_layers == plan.n_gpu_layers == model.layers + 1:  # nor more layers' experts on the CPU
        assert len(more.cpu_expert_layers) <= len(plan.cpu_expert_layers)


def test_split_speed_is_slower_with_layers_on_the_cpu() -> None:
    model = model_from_gguf(GGUF)
    work = Workload(seq=4096, engine=LLAMACPP)
    fmt = weight_format(model)
    devices = [_device("gpu", 24 * GiB)]
    from kvcalc.decode_profiles import profile_for

    speeds = []
    for ngl in (33, 20, 0):
        plan = placement.plan(model, work, fmt, devices, placement.PlacementRequest(ctx_size=4096, n_gpu_layers=ngl))
        host = placement.HostSpeed(ram_bandwidth_bytes_per_s=80 * 10**9)
        speeds.append(placement.split_decode(model, work, fmt, plan, devices, host, profile_for("llamacpp")).tokens_per_s)
    assert speeds[0] > speeds[1] > speeds[2]


def test_fit_json_places_two_gpus(cli) -> None:
    doc = cli.json(
        "fit",
        "--model",
        str(GGUF),
        "--gpu",
        "rtx3090",
        "--gpu",
        "rtx3060",
        "--engine",
        "llamacpp",
        "--seq",
        "131072",
        "--ram",
        "64GiB",
    )
    plan = doc["placement"]
    assert plan["n_gpu_layers"] == sum(plan["tensor_split"]) and len(plan["devices"]) == 2
    assert plan["host"]["ram_bytes"] == 64 * GiB and "-ts" in plan["command"]
    assert all(d["total_bytes"] <= d["free_bytes"] - 1024 * MiB for d in plan["devices"])


def test_fit_table_shows_the_plan(cli) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", "rtx3060", "--engine", "llamacpp", "--seq", "8192", "-ngl", "20")
    assert result.exit_code == 0, result.output
    assert "llama.cpp placement: -ngl 20" in result.stdout and "offloaded 20/33 layers to GPU" in result.stdout


def test_fit_exit_1_when_host_ram_is_short(cli) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", "rtx3060", "--engine", "llamacpp", "--seq", "8192", "--ram", "1GiB")
    assert result.exit_code == 1, result.output


def test_decode_speed_of_a_split(cli) -> None:
    doc = cli.json(
        "decode", "--model", "llama3-8b", "--gpu", "rtx3060", "--engine", "llamacpp", "--seq", "4096", "-ngl", "20",
        "--ram-bandwidth", "ddr5-6000x2",
    )  # fmt: skip
    split = doc["split"]
    assert split["host_seconds"] > 0 and 0 < split["tokens_per_s"] < doc["decode"]["tokens_per_s"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fit", "--model", "llama3-8b", "--gpu", "rtx3090", "--gpu", "rtx3060"], "add --engine llamacpp"),
        (
            ["fit", "--model", "llama3-8b", "--gpu", "rtx3090", "--gpu", "rtx3060", "--engine", "llamacpp", "-ts", "1"],
            "one per GPU",
        ),
        (
            ["fit", "--model", "llama3-8b", "--gpu", "rtx3090", "--engine", "llamacpp", "-ts", "a,b"],
            "numbers separated by commas",
        ),
        (["fit", "--model", "llama3-8b", "--gpu", "rtx3090", "--engine", "llamacpp", "--fit-target", "x"], "--fit-target"),
        (["fit", "--model", "llama3-8b", "--gpu", "rtx3090", "--engine", "llamacpp", "--n-cpu-moe", "2"], "has none"),
        (["decode", "--model", "llama3-8b", "--gpu", "rtx3060", "--engine", "llamacpp", "-ngl", "10"], "--ram-bandwidth"),
        (
            [
                "decode",
                "--model",
                "llama3-8b",
                "--gpu",
                "rtx3060",
                "--engine",
                "llamacpp",
                "-ngl",
                "10",
                "--ram-bandwidth",
                "fast",
            ],
            "--ram-bandwidth",
        ),
    ],
)
def test_bad_placement_input_is_one_line_and_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "Traceback" not in result.output


def test_placement_document_round_trips(cli) -> None:
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "rtx3060", "--engine", "llamacpp", "--seq", "8192", "-ngl", "10")
    from kvcalc.documents import FitDocument

    assert json.loads(FitDocument.model_validate(doc).model_dump_json()) == doc


BREAKDOWNS = yaml.safe_load((Path(__file__).parent / "fixtures" / "placement" / "breakdowns.yaml").read_text())


@pytest.mark.parametrize("case", BREAKDOWNS, ids=lambda c: c["id"])
def test_published_breakdowns(case: dict) -> None:
    """Every published memory breakdown is scored: within 5% or 256 MiB on each place it quotes (a fit's
    layers within one layer), or documented as a miss (its `miss` says why) instead of fitted away."""
    from scripts import placement_cases

    ok, cells = placement_cases.score(case)
    assert ok == ("miss" not in case), f"{case['url']}: {cells}"
    assert case["url"] in DOCS and case["what"] in DOCS


def test_a_case_its_source_lets_kvcalc_check_in_part_is_a_miss_on_the_rest() -> None:
    """Nixiesearch's 2x RTX 4090 start-up prints no free memory nor file type, from a build whose compute kvcalc does
    not model (`checks: [context]`): its weights and compute, 16 % off on each card, would pass the bar only by its
    256 MiB floor; they count as a miss, and its KV split (exact) is scored on its own."""
    from scripts import placement_cases

    (case,) = [case for case in BREAKDOWNS if case["id"] == "nixiesearch-2x4090"]
    ok, cells = placement_cases.score(case)
    assert not ok
    assert cells[-1] == (
        "what the source lets kvcalc check: RTX 4090 #0 context 208.00 vs 208.00 MiB (within);"
        " RTX 4090 #1 context 176.00 vs 176.00 MiB (within)"
    )
    assert placement_cases.score({k: v for k, v in case.items() if k != "checks"})[0]  # by the floor alone


@pytest.mark.parametrize("checks", [["kv"], [], "context", ["context", "weights"]])
def test_a_checks_entry_that_names_no_part_is_refused_naming_the_case(checks: object) -> None:
    from scripts import placement_cases

    (case,) = [case for case in BREAKDOWNS if case["id"] == "nixiesearch-2x4090"]
    with pytest.raises(ValueError, match=r"^nixiesearch-2x4090: checks: .* is not a list of model, context, compute$"):
        placement_cases.score({**case, "checks": checks})


def test_partly_checked_cases_are_counted_among_the_misses_only() -> None:
    from scripts import placement_cases

    (case,) = [case for case in BREAKDOWNS if case["id"] == "nixiesearch-2x4090"]
    checked_all = {**case, "checks": ["model", "context", "compute"]}  # a `checks` naming every part scores as none
    assert placement_cases.score(checked_all)[0]
    with patch.object(placement_cases, "breakdowns", return_value=[case, checked_all]):
        _, explained, total, partly_checked = placement_cases.breakdown_rows()
    assert (explained, total, partly_checked) == (1, 2, 1)


DOCS = (Path(__file__).parents[1] / "docs" / "placement.md").read_text()


def test_projector_and_draft_take_room_on_the_first_gpu(cli, tmp_path: Path) -> None:
    from .gguf_writer import write_gguf

    projector = write_gguf(
        tmp_path / "mmproj.gguf", {"general.architecture": "clip"}, [("v.patch_embd.weight", (1024, 1024), "f16")]
    )
    base = ["fit", "--model", "llama3-8b", "--gpu", "rtx3090", "--engine", "llamacpp", "--seq", "8192", "--weight-dtype", "q4_0"]
    alone = cli.json(*base, "-ngl", "33")["placement"]["devices"][0]
    with_projector = cli.json(*base, "--mmproj", str(projector))["placement"]["devices"][0]
    assert with_projector["resident_bytes"] == 1024 * 1024 * 2
    assert with_projector["total_bytes"] == alone["total_bytes"] + 1024 * 1024 * 2
    drafted = cli.json(*base, "--model-draft", "qwen3-0.6b")["placement"]["devices"][0]
    assert drafted["resident_bytes"] > 1024**3  # 0.6B bf16 weights and an 8K cache
    result = cli(*base, "--mmproj", str(tmp_path / "missing.gguf"))
    assert result.exit_code == 2 and "--mmproj" in result.stderr


def test_speed_steps_trade_experts_on_the_cpu_for_speed(cli) -> None:
    doc = cli.json(
        "fit", "--model", "qwen3-30b-a3b", "--gpu", "rtx3060", "--engine", "llamacpp", "--seq", "32768", "--ram", "64GiB",
        "--ram-bandwidth", "ddr5-6000x2",
    )  # fmt: skip
    steps = doc["speed_steps"]
    speeds = [s["tokens_per_s"] for s in steps]
    assert [s["n_cpu_moe"] for s in steps] == sorted(s["n_cpu_moe"] for s in steps)
    assert speeds == sorted(speeds, reverse=True)  # every layer's experts moved to the CPU costs speed
    assert any(s["fits"] for s in steps) and not steps[0]["fits"]


def test_a_mac_offers_its_working_set_and_shares_its_ram(cli) -> None:
    """apple-m4-max: 128 GB of unified memory; the GPU may use three quarters (older macOS), or --wired-limit."""
    base = [
        "fit",
        "--model",
        "llama3.1-70b",
        "--gpu",
        "apple-m4-max",
        "--engine",
        "llamacpp",
        "--seq",
        "8192",
        "--weight-dtype",
        "q4_0",
    ]
    plan = cli.json(*base)["placement"]
    device = plan["devices"][0]
    assert device["free_bytes"] == 128 * GiB * 3 // 4 and plan["host"]["ram_bytes"] == 128 * GiB  # Apple GB are GiB
    assert "MTL0_Mapped model buffer size" in "\n".join(plan["log_lines"])
    wired = cli.json(*base, "--wired-limit", "114688")["placement"]["devices"][0]
    assert wired["free_bytes"] == 114688 * MiB
    tight = cli.json(*base, "--wired-limit", "20480")["placement"]
    assert tight["n_gpu_layers"] < 81 and tight["fits"]


def test_a_config_json_is_planned_too(cli) -> None:
    from .conftest import HF_CONFIGS

    doc = cli.json(
        "fit", "--model", str(HF_CONFIGS / "llama3-8b-config.json"), "--gpu", "rtx3060", "--engine", "llamacpp", "--seq", "32768"
    )
    plan = doc["placement"]
    assert 0 < plan["n_gpu_layers"] < 33 and plan["devices"][0]["total_bytes"] <= plan["devices"][0]["free_bytes"] - 1024 * MiB


def test_published_cases_in_the_docs_are_current() -> None:
    """docs/placement.md shows what scripts/placement_cases.py computes now, and the host constants are its fit."""
    from scripts import placement_cases

    section = placement_cases.section()
    assert section in DOCS, "run python scripts/placement_cases.py"
    setup = placement_cases.speeds()
    assert (placement.HOST_EFFICIENCY, None, placement.HOP_SECONDS) == placement_cases.fitted(setup["cases"], setup)
    score = placement_cases.speed_score()
    assert len(setup["cases"]) >= 15 and len(placement_cases.breakdowns()) >= 15
    # the issue's bar: 25% on cases the fit never saw; the hop term is kept only while it beats the one constant
    # it replaced on the sources left out, and the cap per core stays out while it does not beat the hop model
    assert score.inside <= 0.25 and score.outside <= 0.25 and score.outside < score.one_outside
    assert score.per_core_outside >= score.outside


def test_ram_auto_reads_this_machines_available_memory(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvcalc.cli import placement_options

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       65536000 kB\nMemAvailable:   32768000 kB\n")
    monkeypatch.setattr(placement_options, "MEMINFO", str(meminfo))
    base = ["fit", "--model", "llama3-8b", "--gpu", "rtx3060", "--engine", "llamacpp", "--seq", "8192", "--ram", "auto"]
    assert cli.json(*base)["placement"]["host"]["ram_bytes"] == 32768000 * 1024
    meminfo.write_text("MemTotal:       65536000 kB\n")
    result = cli(*base)
    assert result.exit_code == 2 and "--ram auto" in result.stderr


def test_gpu_auto_places_over_each_of_this_machines_gpus(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvcalc.sources import gpus

    smi = "0, GPU-a, NVIDIA GeForce RTX 3090, 24576\n1, GPU-b, NVIDIA GeForce RTX 3060, 12288\n"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpus, "_torch", lambda: [])
    monkeypatch.setattr(gpus, "command_output", lambda argv: smi if argv[0] == "nvidia-smi" else None)
    plan = cli.json("fit", "--model", "llama3-8b", "--gpu", "auto", "--engine", "llamacpp", "--seq", "65536")["placement"]
    assert [d["name"] for d in plan["devices"]] == ["rtx3090", "rtx3060"]
    assert [d["free_bytes"] for d in plan["devices"]] == [24576 * MiB, 12288 * MiB]  # as nvidia-smi reports them
    monkeypatch.setattr(gpus, "command_output", lambda argv: "0, GPU-a, Mystery GPU, 1000\n" if argv[0] == "nvidia-smi" else None)
    result = cli("fit", "--model", "llama3-8b", "--gpu", "auto", "--engine", "llamacpp")
    assert result.exit_code == 2 and "matches no GPU preset" in result.stderr


GEMMA_STRIX = "https://github.com/kyuz0/amd-strix-halo-toolboxes/issues/89"


def _gemma_plan(ctx: int, old_build: bool, flash_attn: bool = True) -> placement.Placement:
    """Gemma-4-31B whole on one device, four unified sequences, window-sized sliding caches (the Strix Halo case),
    in a build before PRs #23764 and #23861 (`old_build`) or after both."""
    model = presets.load_model("gemma4-31b")
    engine = Engine(name="llamacpp", ubatch=512, flash_attn=flash_attn, swa_full=False, kv_unified=True)
    work = Workload(seq=ctx, batch=4, engine=engine)
    request = placement.PlacementRequest(ctx_size=ctx, all_logits_reserved=old_build, f32_mask_reserved=old_build)
    return placement.plan(model, work, weight_format(model), [_device("gpu", 128 * GiB)], request)


def test_attention_masks_size_the_compute_buffers_at_long_context() -> None:
    """b9124 printed `Vulkan0 compute buffer size = 866 MiB` and `Vulkan_Host ... = 542 MiB` at n_ctx 262,144
    (GEMMA_STRIX): a 262,144 x 512 and a 4,608 x 512 mask, f32 on the host (521 MiB) beside the input rows
    (10.5), an f32 copy and its f16 cast on the GPU (781.5) beside the MLP's 105 MiB."""
    old = _gemma_plan(262144, old_build=True)
    assert old.devices[0].compute_bytes == round(886.5 * MiB)
    assert old.host.compute_bytes == round(531.5 * MiB)
    assert any(
        "attention masks: n_kv x n_ubatch 512 each, full n_kv 262,144 (536,870,912 B on the host, 805,306,368 B on a device)"
        in line
        for line in old.explain
    )
    new = _gemma_plan(262144, old_build=False)  # PR #23764: the f16 mask only; PR #23861: 4 logits rows
    assert new.devices[0].compute_bytes == round((105 + 260.5) * MiB)
    assert new.host.compute_bytes == round((10.5 + 260.5) * MiB)


@settings(max_examples=20, deadline=None)
@given(
    small=st.integers(min_value=1, max_value=512),
    extra=st.integers(min_value=1, max_value=512),
    f32=st.booleans(),
    fa=st.booleans(),
)
def test_compute_buffers_never_shrink_with_the_context(small: int, extra: int, f32: bool, fa: bool) -> None:
    """Every mask is n_kv x n_ubatch, so a longer context never gives a smaller compute buffer, on the device or the host."""
    short, long = _gemma_plan(small * 256, f32, fa), _gemma_plan((small + extra) * 256, f32, fa)
    assert long.devices[0].compute_bytes >= short.devices[0].compute_bytes
    assert long.host.compute_bytes >= short.host.compute_bytes


def test_mla_cache_per_head_in_builds_before_pr_12801() -> None:
    """ollama #8447 (llama.cpp of Jan 2025) printed a 9,760 MiB cache for DeepSeek-R1 at 2,048 cells: K and V per head,
    61 x 2,048 x (128 x 192 + 128 x 128) x 2 B; later builds keep MLA's latent, 512 + 64 values per cell."""
    model = presets.load_model("deepseek-r1")
    work = Workload(seq=2048, engine=Engine(name="llamacpp", flash_attn=False))
    cpu_only = placement.PlacementRequest(ctx_size=2048, n_gpu_layers=0)
    old = placement.plan(model, work, weight_format(model), [], cpu_only.model_copy(update={"mla_per_head": True}))
    assert old.host.kv_bytes == 9760 * MiB
    assert any("K and V per head" in line for line in old.explain)
    new = placement.plan(model, work, weight_format(model), [], cpu_only)
    assert new.host.kv_bytes == 61 * 2048 * 576 * 2
    with pytest.raises(InvalidInput, match="has no MLA"):
        llama = presets.load_model("llama3.1-8b")
        placement.plan(llama, work, weight_format(llama), [], cpu_only.model_copy(update={"mla_per_head": True}))
