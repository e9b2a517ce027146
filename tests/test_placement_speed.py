"""The host's share of a llama.cpp split decode (kvcalc.placement.host_bytes_per_s, split_decode): the RAM's
bandwidth or the cores llama.cpp computes on, whichever is slower; the published cases it was fitted on;
and --cpu-cores on the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import placement, presets
from kvcalc.decode_profiles import profile_for
from kvcalc.spec import Engine, Workload
from kvcalc.units import GiB, parse_dtype
from kvcalc.weights import weight_format

SPEEDS = yaml.safe_load((Path(__file__).parent / "fixtures" / "placement" / "speeds.yaml").read_text())
DECODE = ["decode", "--model", "llama3-8b", "--gpu", "rtx3060", "--engine", "llamacpp", "--seq", "4096", "-ngl", "10"]


def test_the_slower_of_ram_and_cores_binds() -> None:
    """Hand-worked: DDR5-6000 on two channels (96 GB/s) at 0.74 is 71.04 GB/s; eight cores at 5.1 GB/s are
    40.8 GB/s, so the cores bind; sixteen (81.6 GB/s) leave the RAM binding."""
    ram = 96 * 10**9
    assert placement.host_bytes_per_s(placement.HostSpeed(ram_bandwidth_bytes_per_s=ram, cpu_cores=8)) == (
        8 * placement.CORE_BYTES_PER_S,
        "cores",
    )
    rate, bound = placement.host_bytes_per_s(placement.HostSpeed(ram_bandwidth_bytes_per_s=ram, cpu_cores=16))
    assert bound == "RAM" and rate == pytest.approx(ram * placement.HOST_EFFICIENCY)


@settings(max_examples=50, deadline=None)
@given(
    ram=st.integers(min_value=10 * 10**9, max_value=800 * 10**9),
    cores=st.integers(min_value=1, max_value=128),
    more=st.integers(min_value=1, max_value=64),
)
def test_cores_only_ever_cap_the_ram(ram: int, cores: int, more: int) -> None:
    """A core count never makes the host faster than its RAM's share, and more cores never slow it."""
    without = placement.host_bytes_per_s(placement.HostSpeed(ram_bandwidth_bytes_per_s=ram))[0]
    some = placement.host_bytes_per_s(placement.HostSpeed(ram_bandwidth_bytes_per_s=ram, cpu_cores=cores))[0]
    plenty = placement.host_bytes_per_s(placement.HostSpeed(ram_bandwidth_bytes_per_s=ram, cpu_cores=cores + more))[0]
    assert some <= without and some <= plenty <= without


def _cpu_only(model_name: str, dtype: str, host: placement.HostSpeed) -> placement.SplitDecode:
    model = presets.load_model(model_name)
    fmt = weight_format(model, parse_dtype(dtype))
    work = Workload(seq=2048, kv_dtype=parse_dtype("q8_0"), engine=Engine(name="llamacpp", flash_attn=True))
    plan = placement.plan(model, work, fmt, [], placement.PlacementRequest(ctx_size=2048, n_gpu_layers=0))
    return placement.split_decode(model, work, fmt, plan, [], host, profile_for("llamacpp"))


def test_four_threads_on_ddr4_2133_are_core_bound() -> None:
    """llama.cpp PR #12922 (https://github.com/ggml-org/llama.cpp/pull/12922): DeepSeek-Coder-V2-Lite Q6_K_L
    on a Ryzen 7 5800X with two sticks of DDR4-2133 (34.1 GB/s) at -t 4, all on the CPU: 9.51 tok/s. Four
    cores (20.4 GB/s) bind before the RAM (25.3 GB/s), and kvcalc lands within 5%; at eight cores the RAM binds."""
    ram = 2133 * 10**6 * 8 * 2
    four = _cpu_only("deepseek-v2-lite", "q6_k", placement.HostSpeed(ram_bandwidth_bytes_per_s=ram, cpu_cores=4))
    assert four.host_bound == "cores" and four.tokens_per_s == pytest.approx(9.51, rel=0.05)
    eight = _cpu_only("deepseek-v2-lite", "q6_k", placement.HostSpeed(ram_bandwidth_bytes_per_s=ram, cpu_cores=8))
    assert eight.host_bound == "RAM" and eight.tokens_per_s > four.tokens_per_s
    assert eight.host_bytes == four.host_bytes and "cores bound" in " ".join(four.explain)


def test_every_speed_case_names_its_machines_cores() -> None:
    """The core count is a stated input: every machine gives its cores and where they come from; a case's -t is
    at most its machine's cores (llama.cpp computes on physical cores by default)."""
    for name, machine in SPEEDS["machines"].items():
        assert machine["cpu_cores"] >= 1 and machine["cpu_source"], name
    for case in SPEEDS["cases"]:
        assert 1 <= case.get("threads", 1) <= SPEEDS["machines"][case["machine"]]["cpu_cores"], case["url"]


def test_decode_takes_cpu_cores(cli) -> None:
    """Three cores cap a DDR5-6000 host at 15.3 GB/s, below its RAM's 71 GB/s share: the host takes longer."""
    free = cli.json(*DECODE, "--ram-bandwidth", "ddr5-6000x2")["split"]
    capped = cli.json(*DECODE, "--ram-bandwidth", "ddr5-6000x2", "--cpu-cores", "3")["split"]
    assert free["host_bound"] == "RAM" and capped["host_bound"] == "cores"
    assert capped["host_bytes_per_s"] == 3 * placement.CORE_BYTES_PER_S
    assert capped["host_seconds"] > free["host_seconds"] and capped["host_bytes"] == free["host_bytes"]


def test_fit_speed_steps_take_cpu_cores(cli) -> None:
    """Two cores slow the step with every layer's experts on the CPU (the last), not the one with none there."""
    args = ["fit", "--model", "qwen3-30b-a3b", "--gpu", "rtx3060", "--engine", "llamacpp", "--seq", "8192"]
    args += ["--ram", "64GiB", "--ram-bandwidth", "ddr5-6000x2"]
    free = cli.json(*args)["speed_steps"]
    capped = cli.json(*args, "--cpu-cores", "2")["speed_steps"]
    assert capped[0]["tokens_per_s"] == free[0]["tokens_per_s"] and capped[-1]["tokens_per_s"] < free[-1]["tokens_per_s"]


def test_explain_names_the_binding_host_term(cli) -> None:
    result = cli(*DECODE, "--ram-bandwidth", "ddr5-6000x2", "--cpu-cores", "3", "--explain")
    assert result.exit_code == 0, result.output
    assert f"3 cores * {placement.CORE_BYTES_PER_S:,} B/s" in result.stdout and "(cores bound)" in result.stdout


@pytest.mark.parametrize("cores", ["0", "-2"])
def test_cpu_cores_must_be_positive(cli, cores: str) -> None:
    result = cli(*DECODE, "--ram-bandwidth", "ddr5-6000x2", "--cpu-cores", cores)
    assert result.exit_code == 2, result.output
    assert f"--cpu-cores must be a positive number of cores, got {cores}" in result.stderr
    assert "Traceback" not in result.output


def test_each_layer_whose_experts_stay_on_the_cpu_costs_two_hops() -> None:
    """--n-cpu-moe 12 of gpt-oss-20b's 24 layers: every layer's attention on the GPU, twelve layers' experts on the
    CPU, so the step goes there and back twelve times; each hop costs HOP_SECONDS beside its bytes over PCIe."""
    model = presets.load_model("gpt-oss-20b")
    fmt = weight_format(model)
    work = Workload(seq=4096, engine=Engine(name="llamacpp", flash_attn=True))
    devices = [placement.PlacementDevice(name="gpu", free_bytes=8 * GiB, margin_bytes=0, bandwidth_bytes_per_s=448 * 10**9)]
    request = placement.PlacementRequest(ctx_size=4096, n_gpu_layers=99, n_cpu_moe=12)
    plan = placement.plan(model, work, fmt, devices, request)
    host = placement.HostSpeed(ram_bandwidth_bytes_per_s=102 * 10**9, cpu_cores=10)
    split = placement.split_decode(model, work, fmt, plan, devices, host, profile_for("llamacpp"))
    assert split.hops == 24
    free = host.model_copy(update={"hop_seconds": 0.0})
    without = placement.split_decode(model, work, fmt, plan, devices, free, profile_for("llamacpp"))
    assert split.hop_seconds - without.hop_seconds == pytest.approx(24 * placement.HOP_SECONDS)
    assert split.roofline_seconds == without.roofline_seconds  # the roofline counts bytes only


def test_split_of_a_gpu_keeps_the_host_share_only() -> None:
    """With every layer on the GPU the host reads only the input table's rows: the cores do not matter."""
    model = presets.load_model("llama3-8b")
    fmt = weight_format(model)
    work = Workload(seq=4096, engine=Engine(name="llamacpp"))
    devices = [placement.PlacementDevice(name="gpu", free_bytes=24 * GiB, margin_bytes=0, bandwidth_bytes_per_s=936 * 10**9)]
    plan = placement.plan(model, work, fmt, devices, placement.PlacementRequest(ctx_size=4096, n_gpu_layers=33))
    speeds = [
        placement.split_decode(
            model, work, fmt, plan, devices, placement.HostSpeed(ram_bandwidth_bytes_per_s=10**11, cpu_cores=n),
            profile_for("llamacpp"),
        ).tokens_per_s
        for n in (1, 64)
    ]  # fmt: skip
    assert speeds[0] == pytest.approx(speeds[1], rel=0.01)
