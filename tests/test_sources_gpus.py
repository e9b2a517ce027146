"""GPUs by the names vendors' tools print, and `--gpu auto` / `--tp auto` from a faked nvidia-smi
(the module's command runner replaced, or a fake nvidia-smi script first on PATH)."""

from __future__ import annotations

import json
import os
import stat
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from kvcalc.presets import list_presets, load_file, load_gpu
from kvcalc.sources import gpus

H100 = "0, GPU-1111, NVIDIA H100 80GB HBM3, 81559\n1, GPU-2222, NVIDIA H100 80GB HBM3, 81559\n"
MI300X = {
    "gpu_data": [{"gpu": 0, "asic": {"market_name": "AMD Instinct MI300X"}, "vram": {"size": {"value": 196592, "unit": "MB"}}}]
}


@pytest.fixture(autouse=True)
def _no_gpu_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML and amdsmi do not import (a None in sys.modules is an ImportError) unless a test fakes them."""
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Fake this machine's tools: what nvidia-smi and amd-smi print (None: not installed); torch sees nothing."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("HIP_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpus, "_torch", lambda: [])

    def fake(nvidia: str | None = None, amd: object = None) -> None:
        outputs = {"nvidia-smi": nvidia, "amd-smi": json.dumps(amd) if amd is not None else None}
        monkeypatch.setattr(gpus, "command_output", lambda argv: outputs[argv[0]])

    return fake


def test_every_alias_names_one_preset() -> None:
    seen: dict[str, str] = {}
    for entry in list_presets("gpus"):
        for alias in load_file("gpus", entry.path).aliases or []:
            assert alias.lower() not in seen, f"{alias} names {seen[alias.lower()]} and {entry.name}"
            seen[alias.lower()] = entry.name
            assert load_gpu(alias).name == entry.name
    printed = {"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090", "NVIDIA L40S", "AMD Instinct MI300X"}
    assert {name.lower() for name in printed} <= set(seen)


@pytest.mark.parametrize(
    "printed, preset",
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("nvidia  h100 80gb hbm3", "h100-sxm"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA GeForce RTX 4090", "rtx4090"),
        ("NVIDIA L40S", "l40s"),
        ("AMD Instinct MI300X", "mi300x"),
        ("Tesla T4", "t4"),
    ],
)
def test_gpu_names_as_tools_print_them(cli, printed: str, preset: str) -> None:
    assert cli.json("fit", "--model", "llama3.2-1b", "--gpu", printed)["gpu"] == preset


def test_unknown_device_names_suggest_by_alias(cli) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", "NVIDIA H100 80GB HBM2e")
    assert result.exit_code == 2 and "unknown GPU 'NVIDIA H100 80GB HBM2e'; did you mean" in result.stderr
    assert "h100-sxm" in result.stderr
    assert "h100-nvl, h100-pcie, h100-sxm" in cli("fit", "--model", "llama3-8b", "--gpu", "h100").stderr  # names still come first


def test_gpu_auto_reads_nvidia_smi(cli, machine) -> None:
    machine(nvidia=H100)
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "auto")
    assert doc["gpu"] == "h100-sxm" and doc["budget"]["memory_bytes"] == 81559 * 2**20
    shown = cli.json("presets", "show", "auto")["spec"]
    assert (
        shown["source"]
        == "this machine (nvidia-smi): 2 x NVIDIA H100 80GB HBM3; --tp auto uses all 2; bandwidth and FLOP/s from preset h100-sxm"
    )
    assert shown["memory_note"] == "81,559 MiB as nvidia-smi reports it"


def test_tp_auto_uses_every_identical_gpu_only_when_asked(cli, machine) -> None:
    machine(nvidia=H100)
    one = cli.json("size", "--model", "llama3-8b", "--seq", "8192", "--gpu", "auto")
    two = cli.json("size", "--model", "llama3-8b", "--seq", "8192", "--gpu", "auto", "--tp", "auto")
    assert one["kv"]["tp"] == 1 and two["kv"]["tp"] == 2
    assert two["kv"]["bytes_per_gpu"] * 2 == one["kv"]["bytes_per_gpu"]


def test_cuda_visible_devices(cli, machine, monkeypatch: pytest.MonkeyPatch) -> None:
    machine(nvidia=H100)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert cli.json("size", "--model", "llama3-8b", "--seq", "8", "--tp", "auto")["kv"]["tp"] == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-2222,GPU-1111")
    assert cli.json("size", "--model", "llama3-8b", "--seq", "8", "--tp", "auto")["kv"]["tp"] == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    result = cli("fit", "--model", "llama3-8b", "--gpu", "auto")
    assert result.exit_code == 2 and "--gpu auto: no GPU found" in result.stderr


def test_gpu_auto_reads_amd_smi(cli, machine) -> None:
    machine(amd=MI300X)
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "auto")
    assert doc["gpu"] == "mi300x" and doc["budget"]["memory_bytes"] == 196_592 * 2**20
    machine(
        amd=[{"gpu": 0, "asic": {"market_name": "AMD Instinct MI300X"}, "vram": {"vram_size": {"value": 1024, "unit": "GB"}}}]
    )
    assert cli.json("fit", "--model", "llama3-8b", "--gpu", "auto")["budget"]["memory_bytes"] == 1024 * 2**30


@pytest.mark.parametrize(
    "nvidia, args, message",
    [
        (None, ["fit", "-m", "llama3-8b", "--gpu", "auto"], "--gpu auto: no GPU found (nvidia-smi, amd-smi and torch report none); name one with --gpu, or give --memory"),
        (None, ["size", "-m", "llama3-8b", "-s", "8", "--tp", "auto"], "--tp auto: no GPU found (nvidia-smi, amd-smi and torch report none); give --tp N"),
        ("0, GPU-1, NVIDIA H100 80GB HBM3, 81559\n1, GPU-2, NVIDIA L4, 23034\n", ["fit", "-m", "llama3-8b", "--gpu", "auto"],
         "--gpu auto: this machine has different GPUs (NVIDIA H100 80GB HBM3, NVIDIA L4); name one with --gpu"),
        ("0, GPU-1, NVIDIA H800 PCIe, 81559\n", ["fit", "-m", "llama3-8b", "--gpu", "auto"],
         "--gpu auto: found 1 x NVIDIA H800 PCIe (81,559 MiB), which no GPU preset names (close: h100-pcie"),
        ("0, GPU-1, NVIDIA H800 PCIe, 81559\n", ["fit", "-m", "llama3-8b", "--gpu", "auto"], "give --memory 81559MiB, or --gpu with a preset"),
        ("0, GPU-1, NVIDIA H100 80GB HBM3, [N/A]\n", ["fit", "-m", "llama3-8b", "--gpu", "auto"], "--gpu auto: no GPU found"),
        (H100, ["size", "-m", "llama3-8b", "-s", "8", "--tp", "two"], "--tp 'two': give a positive integer, or auto (the GPUs in this machine)"),
        (H100, ["size", "-m", "llama3-8b", "-s", "8", "--tp", "0"], "--tp must be a positive integer, got 0"),
    ],
)  # fmt: skip
def test_local_gpu_errors_are_one_line(cli, machine, nvidia: str | None, args: list[str], message: str) -> None:
    machine(nvidia=nvidia)
    result = cli(*args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr


def test_a_fake_nvidia_smi_on_path(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real command runner, with a script named nvidia-smi first on PATH that checks its arguments."""
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "--query-gpu=index,uuid,name,memory.total" ] && [ "$2" = "--format=csv,noheader,nounits" ] || exit 9\n'
        "echo '0, GPU-abc, NVIDIA GeForce RTX 4090, 24564'\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpus.local_gpus() == [gpus.LocalGpu(name="NVIDIA GeForce RTX 4090", memory_bytes=24564 * 2**20, tool="nvidia-smi")]
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "auto")
    assert doc["gpu"] == "rtx4090" and doc["budget"]["memory_bytes"] == 25_757_220_864  # the preset's, as nvidia-smi reports it


def test_a_missing_or_failing_tool_reads_as_none(tmp_path: Path) -> None:
    assert gpus.command_output([str(tmp_path / "no-such-tool")]) is None
    failing = tmp_path / "fails"
    failing.write_text("#!/bin/sh\necho partial\nexit 3\n")
    failing.chmod(0o755)
    assert gpus.command_output([str(failing)]) is None


A100_MIG_LIST = """GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
  MIG 3g.20gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71585f52c)
  MIG 3g.20gb     Device  1: (UUID: MIG-cba663e8-9bed-5b25-b243-5985ef7c9beb)
"""


def mig_xml(*slices: tuple[int, int]) -> str:
    """`nvidia-smi -q -x` for GPU-5d5b…'s slices: (index, MiB) each (the elements kvcalc reads, as the driver nests them)."""
    devices = "".join(
        f"<mig_device><index>{index}</index><gpu_instance_id>{index + 1}</gpu_instance_id>"
        f"<fb_memory_usage><total>{mib} MiB</total><reserved>0 MiB</reserved><used>13 MiB</used></fb_memory_usage></mig_device>"
        for index, mib in slices
    )
    return (
        '<?xml version="1.0" ?><nvidia_smi_log><gpu id="00000000:07:00.0"><product_name>NVIDIA A100-SXM4-40GB</product_name>'
        "<uuid>GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77</uuid><mig_mode><current_mig>Enabled</current_mig></mig_mode>"
        f"<mig_devices>{devices}</mig_devices><fb_memory_usage><total>40960 MiB</total></fb_memory_usage></gpu></nvidia_smi_log>"
    )


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """A script named nvidia-smi first on PATH answering the query, -L and -q -x as given (a missing answer fails)."""
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        f'  "--query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits") cat "{tmp_path}/query" ;;\n'
        f'  "-L ") cat "{tmp_path}/list" ;;\n'
        f'  "-q -x") cat "{tmp_path}/xml" ;;\n'
        "  *) exit 9 ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)

    def answers(query: str, listing: str | None = None, xml: str | None = None) -> None:
        for name, text in (("query", query), ("list", listing), ("xml", xml)):
            (tmp_path / name).unlink(missing_ok=True)
            if text is not None:
                (tmp_path / name).write_text(text)

    return answers


A100_QUERY = "0, GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77, NVIDIA A100-SXM4-40GB, 40960\n"


def test_gpu_auto_on_mig_slices_uses_a_slices_memory(cli, nvidia_smi) -> None:
    nvidia_smi(A100_QUERY, A100_MIG_LIST, mig_xml((0, 19968), (1, 19968)))
    doc = cli.json("fit", "--model", "llama3.2-1b", "--gpu", "auto", "--tp", "auto")
    assert doc["gpu"] == "a100-40gb" and doc["budget"]["memory_bytes"] == 19968 * 2**20  # not the whole GPU's 40,960 MiB
    shown = cli.json("presets", "show", "auto")["spec"]
    assert shown["memory_note"] == "19,968 MiB of a MIG 3g.20gb slice as nvidia-smi reports it"
    assert shown["source"] == (
        "this machine (nvidia-smi): 2 x MIG 3g.20gb slice of NVIDIA A100-SXM4-40GB; bandwidth and FLOP/s"
        " from preset a100-40gb are the whole GPU's (a slice has a share of them)"
    )
    assert cli.json("size", "--model", "llama3.2-1b", "--seq", "8", "--tp", "auto")["kv"]["tp"] == 1  # a process uses one slice


def test_mig_slices_of_different_sizes_and_cuda_visible_devices(cli, nvidia_smi, monkeypatch: pytest.MonkeyPatch) -> None:
    nvidia_smi(
        A100_QUERY, A100_MIG_LIST.replace("3g.20gb     Device  1", "1g.5gb      Device  1"), mig_xml((0, 19968), (1, 4864))
    )
    result = cli("fit", "--model", "llama3.2-1b", "--gpu", "auto")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert (
        "this machine has different GPUs (NVIDIA A100-SXM4-40GB MIG 1g.5gb, NVIDIA A100-SXM4-40GB MIG 3g.20gb);"
        " set CUDA_VISIBLE_DEVICES to one slice's UUID (nvidia-smi -L)" in result.stderr
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-cba663e8-9bed-5b25-b243-5985ef7c9beb")
    assert cli.json("fit", "--model", "llama3.2-1b", "--gpu", "auto")["budget"]["memory_bytes"] == 4864 * 2**20
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-c6d4f1ef")  # a prefix, as CUDA accepts
    assert cli.json("fit", "--model", "llama3.2-1b", "--gpu", "auto")["budget"]["memory_bytes"] == 19968 * 2**20


@pytest.mark.parametrize("xml", [None, "<nvidia_smi_log><gpu>", mig_xml((0, 19968))])
def test_mig_without_a_slices_memory_asks_for_memory(cli, nvidia_smi, xml: str | None) -> None:
    """No -q -x answer, an unreadable one, or one missing a slice: one line saying to pass --memory."""
    nvidia_smi(A100_QUERY, A100_MIG_LIST, xml)
    result = cli("fit", "--model", "llama3.2-1b", "--gpu", "auto")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert (
        "--gpu auto: this machine's NVIDIA A100-SXM4-40GB is split into MIG slices (3g.20gb) and nvidia-smi does"
        " not report their memory; give --memory with the slice's memory and --gpu a100-40gb" in result.stderr
    )
    assert cli("fit", "--model", "llama3.2-1b", "--memory", "19968MiB", "--gpu", "a100-40gb").exit_code == 0


def test_a_gpu_without_mig_slices_is_read_whole(cli, nvidia_smi) -> None:
    nvidia_smi(A100_QUERY, A100_MIG_LIST.splitlines()[0] + "\n")  # nvidia-smi -L lists no slice
    assert cli.json("fit", "--model", "llama3.2-1b", "--gpu", "auto")["budget"]["memory_bytes"] == 40960 * 2**20


# The vendors' libraries (issue 23 item 4), through fake modules: NVML's and amdsmi's own calls.


class NVMLError(Exception):
    pass


def fake_pynvml(devices: list[tuple[str, int]], mig: bool = False) -> types.ModuleType:
    """pynvml (nvidia-ml-py) reporting `devices` as (name, total memory in bytes)."""
    module = types.ModuleType("pynvml")
    module.NVMLError, module.NVML_DEVICE_MIG_ENABLE = NVMLError, 1  # type: ignore[attr-defined]
    module.nvmlInit = module.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda i: devices[i][0].encode()  # type: ignore[attr-defined]  # bytes, as before 11.515
    module.nvmlDeviceGetUUID = lambda i: f"GPU-{i}"  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda i: types.SimpleNamespace(total=devices[i][1])  # type: ignore[attr-defined]

    def mig_mode(i: int) -> tuple[int, int]:
        if not mig:
            raise NVMLError("Not Supported")
        return 1, 1

    module.nvmlDeviceGetMigMode = mig_mode  # type: ignore[attr-defined]
    return module


def test_gpu_auto_reads_nvml_first(cli, machine, monkeypatch: pytest.MonkeyPatch) -> None:
    machine(nvidia="0, GPU-1, NVIDIA L4, 23034\n")
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([("NVIDIA H100 80GB HBM3", 85_520_809_984)] * 2))
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "auto", "--tp", "auto")
    assert doc["gpu"] == "h100-sxm" and doc["budget"]["memory_bytes"] == 85_520_809_984
    assert cli.json("presets", "show", "auto")["spec"]["memory_note"] == "81,559 MiB as NVML reports it"
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([("NVIDIA A100-SXM4-40GB", 42_949_672_960)], mig=True))
    assert cli.json("fit", "--model", "llama3-8b", "--gpu", "auto")["gpu"] == "l4"  # MIG slices: nvidia-smi reads them


def test_gpu_auto_reads_amdsmi(cli, machine, monkeypatch: pytest.MonkeyPatch) -> None:
    machine()
    module = types.ModuleType("amdsmi")
    module.AmdSmiException = NVMLError  # type: ignore[attr-defined]
    module.AmdSmiMemoryType = types.SimpleNamespace(VRAM=0)  # type: ignore[attr-defined]
    module.amdsmi_init = module.amdsmi_shut_down = lambda: None  # type: ignore[attr-defined]
    module.amdsmi_get_processor_handles = lambda: ["h0"]  # type: ignore[attr-defined]
    module.amdsmi_get_gpu_asic_info = lambda h: {"market_name": "AMD Instinct MI300X"}  # type: ignore[attr-defined]
    module.amdsmi_get_gpu_memory_total = lambda h, kind: 196_592 * 2**20  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "amdsmi", module)
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "auto")
    assert doc["gpu"] == "mi300x" and doc["budget"]["memory_bytes"] == 196_592 * 2**20
    module.amdsmi_get_gpu_memory_total = lambda h, kind: 0  # type: ignore[attr-defined]
    result = cli("fit", "--model", "llama3-8b", "--gpu", "auto")
    assert result.exit_code == 2 and "--gpu auto: amdsmi reports '0' of memory for AMD Instinct MI300X" in result.stderr


def _amd_device(vram: object, asic: object = None) -> list[dict[str, object]]:
    return [{"gpu": 0, "asic": asic or {"market_name": "AMD Instinct MI300X"}, "vram": vram}]


@pytest.mark.parametrize(
    "nvidia, amd, message",
    [
        ("0, GPU-1, NVIDIA H100 80GB HBM3, \u00b2\n", None, "nvidia-smi reports '\u00b2MiB' of memory for NVIDIA H100 80GB HBM3"),
        ("0, GPU-1, NVIDIA H100 80GB HBM3, " + "9" * 400 + "\n", None, "nvidia-smi reports '" + "9" * 27 + "...' of memory"),
        ("0, GPU-1, NVIDIA H100 80GB HBM3, 0\n", None, "nvidia-smi reports '0MiB' of memory for NVIDIA H100 80GB HBM3"),
        ("0, GPU-1, NVIDIA H100 80GB HBM3, -5\n", None, "nvidia-smi reports '-5MiB' of memory"),
        ("0, GPU-1, NVIDIA H100 80GB HBM3, " + "1" + "0" * 20 + "\n", None, "not a size from 1 byte to 1 EB; name one with --gpu"),
        (None, _amd_device({"size": {"value": [1, 2], "unit": "MB"}}), "amd-smi reports '[1, 2]MiB' of memory"),
        (None, _amd_device({"size": {"value": 0, "unit": "MB"}}), "amd-smi reports '0MiB' of memory"),
        (None, _amd_device("N/A"), "--gpu auto: no GPU found"),
        (None, _amd_device([{"size": 1}]), "--gpu auto: no GPU found"),
        (None, _amd_device({"size": {"value": 1, "unit": "MB"}}, asic="N/A"), "--gpu auto: no GPU found"),
    ],
)  # fmt: skip
def test_tools_output_kvcalc_cannot_use(cli, machine, nvidia: str | None, amd: object, message: str) -> None:
    """Memory a tool reports is validated as --memory is: one line and exit 2, never a traceback or "does not fit"."""
    machine(nvidia=nvidia, amd=amd)
    result = cli("fit", "--model", "llama3-8b", "--gpu", "auto")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_hanging_nvidia_smi_is_named(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(gpus, "TOOL_TIMEOUT_S", 0.2)
    result = cli("size", "--model", "llama3-8b", "--seq", "8", "--tp", "auto")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "--tp auto: nvidia-smi did not answer within 0.2 s (a hung driver?); give --tp N" in result.stderr
