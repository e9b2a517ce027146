"""The host's share of a llama.cpp split decode (kvcalc.placement.host_bytes_per_s, split_decode): RAM bandwidth
* HOST_EFFICIENCY, HOP_SECONDS per hop between the host and a device, the tested cap per core, and the published
cases they were fitted on (tests/fixtures/placement/speeds.yaml)."""

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
DDR4_2133X2 = 2133 * 10**6 * 8 * 2  # the Ryzen 7 5800X of llama.cpp PR #12922: 34.1 GB/s


def test_the_host_streams_its_rams_fitted_share() -> None:
    """Hand-worked: DDR5-6000 on two channels (96 GB/s) at 0.63 is 60.48 GB/s, bound by the RAM."""
    rate, bound = placement.host_bytes_per_s(placement.HostSpeed(ram_bandwidth_bytes_per_s=96 * 10**9))
    assert bound == "RAM" and rate == pytest.approx(96 * 10**9 * placement.HOST_EFFICIENCY)


def test_the_tested_core_cap_binds_only_below_the_ram() -> None:
    """The variant docs/placement.md scores: eight cores at 5 GB/s (40 GB/s) bind below 60.48 GB/s; sixteen
    (80 GB/s) leave the RAM binding. A core count without a rate per core caps nothing (none is shipped)."""
    ram, per_core = 96 * 10**9, 5 * 10**9
    eight = placement.HostSpeed(ram_bandwidth_bytes_per_s=ram, cpu_cores=8, core_bytes_per_s=per_core)
    assert placement.host_bytes_per_s(eight) == (40 * 10**9, "cores")
    sixteen = eight.model_copy(update={"cpu_cores": 16})
    assert placement.host_bytes_per_s(sixteen)[1] == "RAM"
    alone = placement.HostSpeed(ram_bandwidth_bytes_per_s=ram, cpu_cores=2)
    assert placement.host_bytes_per_s(alone) == placement.host_bytes_per_s(placement.HostSpeed(ram_bandwidth_bytes_per_s=ram))


@settings(max_examples=50, deadline=None)
@given(
    ram=st.integers(min_value=10 * 10**9, max_value=800 * 10**9),
    cores=st.integers(min_value=1, max_value=128),
    more=st.integers(min_value=1, max_value=64),
    per_core=st.integers(min_value=10**9, max_value=20 * 10**9),
)
def test_cores_only_ever_cap_the_ram(ram: int, cores: int, more: int, per_core: int) -> None:
    """A core cap never makes the host faster than its RAM's share, and more cores never slow it."""
    without = placement.host_bytes_per_s(placement.HostSpeed(ram_bandwidth_bytes_per_s=ram))[0]
    host = placement.HostSpeed(ram_bandwidth_bytes_per_s=ram, cpu_cores=cores, core_bytes_per_s=per_core)
    some = placement.host_bytes_per_s(host)[0]
    plenty = placement.host_bytes_per_s(host.model_copy(update={"cpu_cores": cores + more}))[0]
    assert some <= without and some <= plenty <= without


def _cpu_only(model_name: str, dtype: str, host: placement.HostSpeed) -> placement.SplitDecode:
    model = presets.load_model(model_name)
    fmt = weight_format(model, parse_dtype(dtype))
    work = Workload(seq=2048, kv_dtype=parse_dtype("q8_0"), engine=Engine(name="llamacpp", flash_attn=True))
    plan = placement.plan(model, work, fmt, [], placement.PlacementRequest(ctx_size=2048, n_gpu_layers=0))
    return placement.split_decode(model, work, fmt, plan, [], host, profile_for("llamacpp"))


def test_a_cpu_only_decode_has_no_hops() -> None:
    """llama.cpp PR #12922 (https://github.com/ggml-org/llama.cpp/pull/12922): DeepSeek-Coder-V2-Lite Q6_K_L on a
    Ryzen 7 5800X with two sticks of DDR4-2133 at -t 4, all on the CPU: 9.51 tok/s. kvcalc's RAM share lands
    within 15%, the speed fit's leave-one-source-out error on this case (10.5 tok/s in-sample, docs/placement.md);
    nothing crosses to a device, so no hop is paid."""
    split = _cpu_only("deepseek-v2-lite", "q6_k", placement.HostSpeed(ram_bandwidth_bytes_per_s=DDR4_2133X2))
    assert split.hops == 0 and split.hop_seconds == 0
    assert split.host_bound == "RAM" and split.tokens_per_s == pytest.approx(9.51, rel=0.15)
    capped = _cpu_only(
        "deepseek-v2-lite", "q6_k",
        placement.HostSpeed(ram_bandwidth_bytes_per_s=DDR4_2133X2, cpu_cores=2, core_bytes_per_s=5 * 10**9),
    )  # fmt: skip
    assert capped.host_bound == "cores" and capped.host_bytes == split.host_bytes
    assert capped.tokens_per_s < split.tokens_per_s and "cores bound" in " ".join(capped.explain)


def test_every_speed_case_names_its_machines_cores() -> None:
    """The core count is recorded for the per-core variant: every machine gives its cores and where they come
    from; a case's -t is at most its machine's cores (llama.cpp computes on physical cores by default)."""
    for name, machine in SPEEDS["machines"].items():
        assert machine["cpu_cores"] >= 1 and machine["cpu_source"], name
    for case in SPEEDS["cases"]:
        assert 1 <= case.get("threads", 1) <= SPEEDS["machines"][case["machine"]]["cpu_cores"], case["url"]


def test_speed_cases_span_machines_and_sources() -> None:
    """The fit rests on more than one machine and source: at least 10 machines and 30 published speeds."""
    assert len(SPEEDS["machines"]) >= 10 and len(SPEEDS["cases"]) >= 30
    assert len({case["url"] for case in SPEEDS["cases"]}) >= 8


def test_explain_shows_the_ram_share_and_the_hop_cost(cli) -> None:
    result = cli(*DECODE, "--ram-bandwidth", "ddr5-6000x2", "--explain")
    assert result.exit_code == 0, result.output
    assert f"* {placement.HOST_EFFICIENCY} = " in result.stdout and "(RAM bound)" in result.stdout
    assert f"+ {placement.HOP_SECONDS * 1e6:.0f} µs fixed)" in result.stdout
    assert "--cpu-cores" not in cli("decode", "--help").stdout


def test_each_layer_whose_experts_stay_on_the_cpu_costs_two_hops() -> None:
    """--n-cpu-moe 12 of gpt-oss-20b's 24 layers: every layer's attention on the GPU, twelve layers' experts on the
    CPU, so the step goes there and back twelve times; each hop costs HOP_SECONDS beside its bytes over PCIe."""
    model = presets.load_model("gpt-oss-20b")
    fmt = weight_format(model)
    work = Workload(seq=4096, engine=Engine(name="llamacpp", flash_attn=True))
    devices = [placement.PlacementDevice(name="gpu", free_bytes=8 * GiB, margin_bytes=0, bandwidth_bytes_per_s=448 * 10**9)]
    request = placement.PlacementRequest(ctx_size=4096, n_gpu_layers=99, n_cpu_moe=12)
    plan = placement.plan(model, work, fmt, devices, request)
    host = placement.HostSpeed(ram_bandwidth_bytes_per_s=102 * 10**9)
    split = placement.split_decode(model, work, fmt, plan, devices, host, profile_for("llamacpp"))
    assert split.hops == 24
    free = host.model_copy(update={"hop_seconds": 0.0})
    without = placement.split_decode(model, work, fmt, plan, devices, free, profile_for("llamacpp"))
    assert split.hop_seconds - without.hop_seconds == pytest.approx(24 * placement.HOP_SECONDS)
    assert split.roofline_seconds == without.roofline_seconds  # the roofline counts bytes only


def test_split_of_a_gpu_keeps_the_host_share_only() -> None:
    """With every layer on the GPU the host reads only the input table's rows: its rate hardly matters."""
    model = presets.load_model("llama3-8b")
    fmt = weight_format(model)
    work = Workload(seq=4096, engine=Engine(name="llamacpp"))
    devices = [placement.PlacementDevice(name="gpu", free_bytes=24 * GiB, margin_bytes=0, bandwidth_bytes_per_s=936 * 10**9)]
    plan = placement.plan(model, work, fmt, devices, placement.PlacementRequest(ctx_size=4096, n_gpu_layers=33))
    speeds = [
        placement.split_decode(
            model, work, fmt, plan, devices,
            placement.HostSpeed(ram_bandwidth_bytes_per_s=10**11, cpu_cores=n, core_bytes_per_s=5 * 10**9),
            profile_for("llamacpp"),
        ).tokens_per_s
        for n in (1, 64)
    ]  # fmt: skip
    assert speeds[0] == pytest.approx(speeds[1], rel=0.01)


def test_a_hybrids_split_pays_llama_cpps_cost_per_recurrent_layer() -> None:
    """A split decode charges each recurrent-state layer llama.cpp's fitted cost (decode_fit.RECURRENT_LAYER_S), as
    kvcalc decode does on one GPU: qwen3.5-9b's 24 Gated DeltaNet layers; a dense model none."""
    from kvcalc import decode_fit
    from kvcalc.latency import recurrent_layers

    def split(name: str) -> placement.SplitDecode:
        model = presets.load_model(name)
        fmt = weight_format(model, parse_dtype("q4_k_m"))
        work = Workload(seq=4096, engine=Engine(name="llamacpp"))
        devices = [placement.PlacementDevice(name="gpu", free_bytes=4 * GiB, margin_bytes=0, bandwidth_bytes_per_s=360 * 10**9)]
        plan = placement.plan(model, work, fmt, devices, placement.PlacementRequest(ctx_size=4096))
        host = placement.HostSpeed(ram_bandwidth_bytes_per_s=60 * 10**9)
        return placement.split_decode(model, work, fmt, plan, devices, host, profile_for("llamacpp"))

    hybrid = presets.load_model("qwen3.5-9b")
    assert recurrent_layers(hybrid) == 24
    assert split("qwen3.5-9b").recurrent_seconds == pytest.approx(24 * decode_fit.RECURRENT_LAYER_S["llamacpp"])
    assert split("llama3-8b").recurrent_seconds == 0
