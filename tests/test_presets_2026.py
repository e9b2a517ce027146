"""The 2026 GPUs by the names their tools print, the did-you-mean as users type them, each preset's
interconnect, and the model presets' count (issue 21 items 2 and 4, issue 24's Apple GiB)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc.presets import list_presets, load_gpu
from kvcalc.units import GiB, MiB

GPUS = {entry.name: load_gpu(entry.name) for entry in list_presets("gpus")}
ONE_GPU_SYSTEMS = {"dgx-spark", "jetson-agx-orin", "jetson-thor", "radeon-8060s"}  # and every Apple chip (backend metal)

# Each device name as the tool prints it, with the memory it reports where a published capture
# shows it (issues and READMEs with nvidia-smi tables / amd-smi JSON, found through the search tool).
PRINTED = [
    ("NVIDIA B300 SXM6 AC", "b300", 275040),  # issue 21; aiconfigurator b300_sxm.yaml
    ("NVIDIA GB300", "gb300", 284208),  # aiconfigurator gb300.yaml
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx-pro-6000", 97887),  # aiconfigurator rtx_pro_6000_server.yaml
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "rtx-pro-6000-ws", 97887),
    ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "rtx-pro-6000-maxq", 97887),
    ("NVIDIA GB10", "dgx-spark", None),  # nvidia-smi prints memory.total [N/A] on GB10
    ("NVIDIA H100 NVL", "h100-nvl", 95830),
    ("NVIDIA H200 NVL", "h200-nvl", 143771),
    ("AMD Instinct MI355X", "mi355x", 294896),  # amd-smi total_vram 294896 MB
    ("AMD Instinct MI350X", "mi350x", 294896),
    ("NVIDIA GeForce RTX 5070 Ti", "rtx5070ti", 16303),
    ("NVIDIA GeForce RTX 5070", "rtx5070", 12227),
    ("NVIDIA GeForce RTX 5060 Ti", "rtx5060ti", 16311),
    ("NVIDIA GeForce RTX 5060", "rtx5060", 8151),
    ("NVIDIA Thor", "jetson-thor", None),
    ("NVIDIA A100-PCIE-40GB", "a100-40gb-pcie", 40960),
    ("NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada", None),
    ("Radeon RX 7900 XTX", "rx7900xtx", None),  # amd-smi market_name
    ("Radeon 8060S Graphics", "radeon-8060s", None),  # HIP (llama.cpp, torch) device name
    ("Apple M4 Max", "apple-m4-max", None),
]


@pytest.mark.parametrize("printed, preset, mib", PRINTED, ids=[p for _, p, _ in PRINTED])
def test_the_2026_gpus_answer_to_the_names_their_tools_print(cli, printed: str, preset: str, mib: int | None) -> None:
    assert cli.json("fit", "--model", "llama3.2-1b", "--gpu", printed)["gpu"] == preset
    if mib is not None:
        assert GPUS[preset].memory_bytes == mib * MiB


@pytest.mark.parametrize(
    "typed, first",
    [
        ("rtx pro 6000", "rtx-pro-6000"),
        ("RTX-PRO-6000 Blackwell", "rtx-pro-6000"),
        ("dgx spark", "dgx-spark"),
        ("spark", "dgx-spark"),
        ("gb10", "dgx-spark"),
        ("GB-10", "dgx-spark"),
        ("h100 nvl", "h100-nvl"),
        ("jetson thor", "jetson-thor"),
        ("B300 SXM6", "b300"),
        ("rtx 5070", "rtx5070"),
    ],
)
def test_did_you_mean_finds_presets_as_users_type_them(cli, typed: str, first: str) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", typed)
    assert result.exit_code == 2
    assert f"unknown GPU {typed!r}; did you mean {first}" in result.stderr


@pytest.mark.parametrize("typed, first", [("gb10", "dgx-spark"), ("dgx spark", "dgx-spark"), ("rtx pro 6000", "rtx-pro-6000")])
def test_presets_show_suggests_gpus_by_their_aliases_too(cli, typed: str, first: str) -> None:
    # `presets show` searches models and GPUs: it suggested gb300, gb200, a10 for "gb10"
    result = cli("presets", "show", typed)
    assert result.exit_code == 2 and f"unknown model or GPU {typed!r}; did you mean {first}" in result.stderr


@pytest.mark.parametrize("typed", ["b300", "B300", "DGX-Spark", "rtx-pro-6000", "gb300", "mi355x"])
def test_preset_names_are_accepted_whatever_the_case(cli, typed: str) -> None:
    assert cli.json("fit", "--model", "llama3.2-1b", "--gpu", typed)["gpu"] == typed.lower()


@given(name=st.sampled_from(sorted(GPUS)), upper=st.booleans(), joiner=st.sampled_from([" ", "_", ".", "  "]))
def test_a_preset_name_spelled_with_other_separators_is_suggested_first(name: str, upper: bool, joiner: str) -> None:
    from kvcalc.sources import gpus

    typed = name.replace("-", joiner)
    typed = typed.upper() if upper else typed
    if typed.lower() == name:
        return  # accepted as the name itself
    error = gpus.unknown_gpu(typed, lambda: list(GPUS.values()))
    assert str(error).startswith(f"unknown GPU {typed!r}; did you mean {name}")


def test_every_gpu_preset_carries_the_names_its_tools_print() -> None:
    assert [name for name, gpu in GPUS.items() if not gpu.aliases] == []


def test_every_multi_gpu_preset_says_how_its_gpus_talk() -> None:
    single = {name for name, gpu in GPUS.items() if gpu.backend == "metal"} | ONE_GPU_SYSTEMS
    assert [name for name, gpu in GPUS.items() if gpu.interconnect is None and name not in single] == []
    assert all(GPUS[name].interconnect is None for name in single)
    assert all("interconnect" in (GPUS[name].source or "") for name, gpu in GPUS.items() if gpu.interconnect)


@pytest.mark.parametrize(
    "names, interconnect",
    [
        # SXM and OAM modules (vendors' datasheets): NVLink / NVSwitch, Infinity Fabric
        (["h100-sxm", "h200", "b200", "b300", "gb200", "gb300", "a100-80gb", "v100-32gb", "h20"], "nvlink"),
        (["mi300x", "mi325x", "mi350x", "mi355x"], "xgmi"),
        # GeForce from the 4090 on has no P2P; the 3090's NVLink bridge is an option, not the default
        (["rtx4090", "rtx5090", "rtx5080", "rtx5070ti", "rtx5070", "rtx5060ti", "rtx5060", "rtx3090"], "pcie"),
        (["rtx-pro-6000", "rtx-pro-6000-ws", "rtx-pro-6000-maxq", "h100-pcie", "l40s", "rtx-6000-ada"], "pcie-p2p"),
    ],
)
def test_interconnect_follows_the_form_factor(names: list[str], interconnect: str) -> None:
    assert {name: GPUS[name].interconnect for name in names} == dict.fromkeys(names, interconnect)


def test_apple_unified_memory_counts_binary_gigabytes() -> None:
    apple = {name: gpu for name, gpu in GPUS.items() if gpu.backend == "metal"}
    assert len(apple) >= 10
    assert {name: gpu.memory_bytes % GiB for name, gpu in apple.items()} == dict.fromkeys(apple, 0)
    assert GPUS["apple-m3-ultra"].memory_bytes == 512 * GiB  # Apple's "512 GB" configuration


def test_presets_list_shows_at_least_100_models(cli) -> None:
    assert len(cli.json("presets", "list")["models"]) >= 100
