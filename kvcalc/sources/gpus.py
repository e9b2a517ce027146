"""GPUs by the names vendors' tools print, and the GPUs in this machine (`--gpu auto`, `--tp auto`).

A GPU preset's `aliases` hold the names nvidia-smi and amd-smi print ("NVIDIA H100 80GB HBM3",
"AMD Instinct MI300X"), matched case-blind. The local GPUs come from the vendors' libraries where
they import (`pip install "kvcalc[gpu]"`): NVML through nvidia-ml-py's pynvml, pure Python over the
driver's libnvidia-ml, and amdsmi; else from their tools' output,
`nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits` (the devices
CUDA_VISIBLE_DEVICES leaves visible), then `amd-smi static --asic --vram --json` (HIP_VISIBLE_DEVICES);
else torch when it is already installed (imported only here). Memory is the total each reports,
validated as --memory is (device_memory), whichever reported it.

A GPU split into MIG slices (`nvidia-smi -L` lists `MIG 1g.10gb Device 0: (UUID: MIG-...)` under it)
counts as its slices, each with the memory `nvidia-smi -q -x` reports for it (its mig_device's
fb_memory_usage total; the query above reports the whole GPU's); a slice whose memory it does not
report makes `--gpu auto` ask for --memory. A process uses one slice (NVIDIA's MIG user guide,
"CUDA Device Enumeration"), so `--tp auto` is 1 on slices.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import subprocess
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from kvcalc.errors import InvalidInput, PresetNotFound
from kvcalc.spec import GpuSpec
from kvcalc.units import MiB, parse_size

TOOL_TIMEOUT_S = 10  # nvidia-smi answers in about a second; one that hangs (a wedged driver) is reported, not waited on


class LocalGpu(NamedTuple):
    """A device as the machine's tools report it: a GPU, or a MIG slice (`mig`: its profile) of the GPU `name`."""

    name: str
    memory_bytes: int | None  # None: a MIG slice whose memory no tool reported
    tool: str
    mig: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} MIG {self.mig}" if self.mig else self.name


def command_output(argv: Sequence[str]) -> str | None:
    """A command's stdout, or None when it is missing or fails; one that hangs is an InvalidInput
    saying so (tests replace this)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise InvalidInput(f"{argv[0]} did not answer within {TOOL_TIMEOUT_S} s (a hung driver?)") from None
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def device_memory(amount: str, tool: str, name: str) -> int:
    """A device's memory as a tool or library reports it ("81559MiB", "85520809984"), in bytes,
    validated by the rules of --memory (parse_size: ASCII digits, at least 1 byte, at most 1 EB);
    anything else is an InvalidInput naming the tool, whatever reported it."""
    try:
        return parse_size(amount)
    except InvalidInput:
        shown = amount if len(amount) <= 30 else amount[:27] + "..."
        raise InvalidInput(f"{tool} reports {shown!r} of memory for {name}, not a size from 1 byte to 1 EB") from None


def _visible(index: str, uuid: str, variable: str) -> bool:
    """Whether the device is among those `variable` (CUDA_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES) lists; all when unset."""
    listed = os.environ.get(variable)
    if listed is None:
        return True
    entries = [entry.strip() for entry in listed.split(",") if entry.strip()]
    return any(entry == index or (uuid and uuid.startswith(entry)) for entry in entries)


def _nvidia() -> list[LocalGpu]:
    output = command_output(["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"])
    slices = _mig_slices() if output else {}
    gpus = []
    for line in (output or "").splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4 or fields[-1].strip("[]") == "N/A":
            continue  # a header, a blank line or "[N/A]" memory
        index, uuid, name = fields[0], fields[1], ", ".join(fields[2:-1])
        for profile, slice_uuid, memory in slices.get(uuid, []):
            if _visible(index, uuid, "CUDA_VISIBLE_DEVICES") or _visible("", slice_uuid, "CUDA_VISIBLE_DEVICES"):
                gpus.append(LocalGpu(name=name, memory_bytes=memory, tool="nvidia-smi", mig=profile))
        if uuid not in slices and _visible(index, uuid, "CUDA_VISIBLE_DEVICES"):
            memory = device_memory(f"{fields[-1]}MiB", "nvidia-smi", name)
            gpus.append(LocalGpu(name=name, memory_bytes=memory, tool="nvidia-smi"))
    return gpus


def _nvml() -> list[LocalGpu] | None:
    """The GPUs NVML reports (nvidia-ml-py's pynvml: nvmlDeviceGetName, nvmlDeviceGetMemoryInfo().total
    in bytes); None when pynvml is not installed or NVML fails, and when a GPU is split into MIG
    slices (nvidia-smi's listing reads those)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml.NVMLError: no driver, or no libnvidia-ml
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            if _mig_enabled(pynvml, handle):
                return None
            name, uuid = _text(pynvml.nvmlDeviceGetName(handle)), _text(pynvml.nvmlDeviceGetUUID(handle))
            if _visible(str(index), uuid, "CUDA_VISIBLE_DEVICES"):
                memory = device_memory(str(pynvml.nvmlDeviceGetMemoryInfo(handle).total), "NVML", name)
                gpus.append(LocalGpu(name=name, memory_bytes=memory, tool="NVML"))
        return gpus
    except pynvml.NVMLError:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _mig_enabled(pynvml: Any, handle: Any) -> bool:
    try:
        current, _ = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:  # NVMLError_NotSupported: a GPU without MIG
        return False
    return bool(current == pynvml.NVML_DEVICE_MIG_ENABLE)


def _text(value: str | bytes) -> str:
    """NVML's strings: bytes in nvidia-ml-py before 11.515, str since."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


_GPU_LINE = re.compile(r"^GPU \d+: .*\(UUID: (?P<uuid>[^)]+)\)")
_MIG_LINE = re.compile(r"^\s+MIG (?P<profile>\S+)\s+Device\s+(?P<index>\d+): \(UUID: (?P<uuid>[^)]+)\)")


def _mig_slices() -> dict[str, list[tuple[str, str, int | None]]]:
    """Each MIG-split GPU's slices by the GPU's UUID: (profile, slice UUID, memory in bytes or None),
    from `nvidia-smi -L` and the memory `nvidia-smi -q -x` reports per slice."""
    slices: dict[str, list[tuple[str, str, str]]] = {}
    parent = None
    for line in (command_output(["nvidia-smi", "-L"]) or "").splitlines():
        if gpu := _GPU_LINE.match(line):
            parent = gpu["uuid"]
        elif (mig := _MIG_LINE.match(line)) and parent:
            slices.setdefault(parent, []).append((mig["profile"], mig["index"], mig["uuid"]))
    memory = _mig_memory() if slices else {}
    return {gpu: [(profile, uuid, memory.get((gpu, index))) for profile, index, uuid in found] for gpu, found in slices.items()}


def _mig_memory() -> dict[tuple[str, str], int]:
    """Each MIG slice's memory by (GPU UUID, slice index), from `nvidia-smi -q -x`; empty when it says nothing readable."""
    try:
        log = ElementTree.fromstring(command_output(["nvidia-smi", "-q", "-x"]) or "<none/>")
    except ElementTree.ParseError:
        return {}
    memory = {}
    for gpu in log.iter("gpu"):
        for device in gpu.iter("mig_device"):
            total = re.fullmatch(r"(\d+) MiB", (device.findtext("fb_memory_usage/total") or "").strip())
            if total:
                memory[(gpu.findtext("uuid", "").strip(), device.findtext("index", "").strip())] = int(total[1]) * MiB
    return memory


_AMD_UNITS = {"B": "B", "KB": "KiB", "MB": "MiB", "GB": "GiB"}  # amd-smi writes MB for MiB (MI300X: 196,592 MB = 192 GiB)


def _section(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The first of `keys` that holds a mapping; {} when amd-smi wrote "N/A", a list or nothing there."""
    found = next((mapping[key] for key in keys if isinstance(mapping.get(key), dict)), {})
    return found  # type: ignore[no-any-return]


def _amd() -> list[LocalGpu]:
    output = command_output(["amd-smi", "static", "--asic", "--vram", "--json"])
    try:
        data: Any = json.loads(output) if output else []
    except (ValueError, RecursionError):  # not JSON, a number past int's digit limit, nesting past the recursion limit
        return []
    devices = data.get("gpu_data", []) if isinstance(data, dict) else data
    gpus = []
    for position, device in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(device, dict):
            continue
        name = _section(device, "asic").get("market_name")
        size = _section(_section(device, "vram"), "size", "vram_size")
        value, unit = size.get("value"), str(size.get("unit", "MB")).upper()
        index = str(device.get("gpu", position))
        if not isinstance(name, str) or value in (None, "N/A") or not _visible(index, "", "HIP_VISIBLE_DEVICES"):
            continue  # a device whose name or memory amd-smi does not know (as nvidia-smi's [N/A])
        memory = device_memory(f"{value}{_AMD_UNITS.get(unit, unit)}", "amd-smi", name)
        gpus.append(LocalGpu(name=name, memory_bytes=memory, tool="amd-smi"))
    return gpus


def _amdsmi() -> list[LocalGpu] | None:
    """The GPUs the amdsmi library reports (amdsmi_get_gpu_asic_info's market_name,
    amdsmi_get_gpu_memory_total of VRAM in bytes); None when it is not installed or fails."""
    try:
        import amdsmi
    except ImportError:
        return None
    try:
        amdsmi.amdsmi_init()
    except Exception:  # amdsmi.AmdSmiException: no driver
        return None
    try:
        gpus = []
        for index, handle in enumerate(amdsmi.amdsmi_get_processor_handles()):
            name = amdsmi.amdsmi_get_gpu_asic_info(handle).get("market_name")
            if not isinstance(name, str) or not _visible(str(index), "", "HIP_VISIBLE_DEVICES"):
                continue
            total = amdsmi.amdsmi_get_gpu_memory_total(handle, amdsmi.AmdSmiMemoryType.VRAM)
            gpus.append(LocalGpu(name=name, memory_bytes=device_memory(str(total), "amdsmi", name), tool="amdsmi"))
        return gpus
    except amdsmi.AmdSmiException:
        return None
    finally:
        try:
            amdsmi.amdsmi_shut_down()
        except amdsmi.AmdSmiException:
            pass


def _torch() -> list[LocalGpu]:
    """The devices torch sees, only when torch is installed (it is imported for this alone)."""
    if importlib.util.find_spec("torch") is None:
        return []
    with warnings.catch_warnings():  # torch without numpy warns on import: a notice, not this command's output
        warnings.simplefilter("ignore")
        import torch

    if not torch.cuda.is_available():
        return []
    properties = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return [LocalGpu(name=p.name, memory_bytes=p.total_memory, tool="torch") for p in properties]


def local_gpus() -> list[LocalGpu]:
    """The GPUs this process can use, from the first library or tool that reports any."""
    for detect in (_nvml, _nvidia, _amdsmi, _amd, _torch):
        found = detect()
        if found:
            return found
    return []


def identical(flag: str, instead: str) -> list[LocalGpu]:
    """The machine's GPUs, which `flag` (--gpu auto, --tp auto) needs to be present and all alike."""
    try:
        found = local_gpus()
    except InvalidInput as exc:  # a tool that hangs, or reports memory that is no size
        raise InvalidInput(f"{flag}: {exc}; {instead}") from None
    if not found:
        raise InvalidInput(f"{flag}: no GPU found (nvidia-smi, amd-smi and torch report none); {instead}")
    names = sorted({gpu.label for gpu in found})
    if len(names) > 1:
        fix = (
            "set CUDA_VISIBLE_DEVICES to one slice's UUID (nvidia-smi -L)" if any(g.mig for g in found) else "name one with --gpu"
        )
        raise InvalidInput(f"{flag}: this machine has different GPUs ({', '.join(names)}); {fix}")
    return found


def tensor_parallel_gpus() -> int:
    """--tp auto: the machine's identical GPUs; 1 on MIG slices, as a process uses one."""
    found = identical("--tp auto", "give --tp N")
    return 1 if found[0].mig else len(found)


def _normal(name: str) -> str:
    return " ".join(name.lower().split())


KnownGpus = Callable[[], Iterable[GpuSpec]]  # the GPU presets, listed only when a name must be matched


def _presets_by_alias(known: KnownGpus) -> dict[str, GpuSpec]:
    """Every GPU preset under each of its aliases (normalised) and its own name."""
    found: dict[str, GpuSpec] = {}
    for spec in known():
        for alias in spec.aliases or []:
            found.setdefault(_normal(alias), spec)
        found.setdefault(_normal(spec.name), spec)
    return found


def gpu_by_device_name(ref: str, known: KnownGpus) -> GpuSpec | None:
    """The preset one of whose aliases is `ref` (case and spacing ignored), or None."""
    return _presets_by_alias(known).get(_normal(ref))


def _words(name: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", name.lower())


def _spelled_alike(ref: str, key: str) -> int | None:
    """0 when `key` (a name or alias) is `ref` but for spaces and punctuation ("dgx spark", "rtx pro 6000"),
    1 when `ref` is a run of its words ("gb10" in "NVIDIA GB10", "pro 6000"), else None."""
    wanted, words = "".join(_words(ref)), _words(key)
    if not wanted:
        return None
    if wanted == "".join(words):
        return 0
    runs = ("".join(words[start:end]) for start in range(len(words)) for end in range(start + 1, len(words) + 1))
    return 1 if wanted in runs else None


def _alike_presets(ref: str, by_alias: dict[str, GpuSpec]) -> list[str]:
    """The presets a name or alias of which `_spelled_alike` matches to `ref`, the closest first."""
    alike = sorted((rank, spec.name) for key, spec in by_alias.items() if (rank := _spelled_alike(ref, key)) is not None)
    return list(dict.fromkeys(name for _, name in alike))


def alike_gpus(ref: str, known: KnownGpus) -> list[str]:
    """The GPU presets a name or alias of which `ref` spells alike ("dgx spark", "gb10"), the closest first."""
    return _alike_presets(ref, _presets_by_alias(known))


def _close_presets(ref: str, by_alias: dict[str, GpuSpec], close: Sequence[str] = ()) -> list[str]:
    """Up to three presets: those spelled alike (`_alike_presets`), then the `close` names, then those
    whose name or aliases difflib finds spelled close to `ref`."""
    similar = difflib.get_close_matches(_normal(ref), list(by_alias), n=6, cutoff=0.5)
    return list(dict.fromkeys([*_alike_presets(ref, by_alias), *close, *(by_alias[key].name for key in similar)]))[:3]


def unknown_gpu(ref: str, known: KnownGpus, close: Sequence[str] = ()) -> PresetNotFound:
    """The error for a GPU no preset names, suggesting presets whose name or aliases `ref` spells
    alike ("dgx spark", "gb10"), then the `close` names, then presets spelled close."""
    by_alias = _presets_by_alias(known)
    names = _close_presets(ref, by_alias, close)
    count = len({spec.name for spec in by_alias.values()})
    hint = f"did you mean {', '.join(names)}?" if names else f"`kvcalc presets list` shows all {count}"
    return PresetNotFound(f"unknown GPU {ref!r}; {hint}")


def auto_gpu(known: KnownGpus) -> GpuSpec:
    """This machine's GPU: the preset its name matches, with the memory the tool reports (a MIG slice's own)."""
    found = identical("--gpu auto", "name one with --gpu, or give --memory")
    device = found[0]
    by_alias = _presets_by_alias(known)
    preset = by_alias.get(_normal(device.name))
    sizes = [gpu.memory_bytes for gpu in found if gpu.memory_bytes is not None]
    if len(sizes) < len(found):
        with_preset = f" and --gpu {preset.name}" if preset else ""
        raise InvalidInput(
            f"--gpu auto: this machine's {device.name} is split into MIG slices ({device.mig}) and nvidia-smi does"
            f" not report their memory; give --memory with the slice's memory{with_preset}"
        )
    memory = min(sizes)
    if preset is None:
        close = _close_presets(device.name, by_alias)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise PresetNotFound(
            f"--gpu auto: found {len(found)} x {device.label} ({memory // MiB:,} MiB), which no GPU preset names{hint};"
            f" give --memory {memory // MiB}MiB, or --gpu with a preset or a GPU YAML"
        )
    if device.mig:
        note = f"{memory // MiB:,} MiB of a MIG {device.mig} slice as {device.tool} reports it"
        source = (
            f"this machine ({device.tool}): {len(found)} x MIG {device.mig} slice of {device.name}; bandwidth and FLOP/s"
            f" from preset {preset.name} are the whole GPU's (a slice has a share of them)"
        )
    else:
        others = f"; --tp auto uses all {len(found)}" if len(found) > 1 else ""
        note = f"{memory // MiB:,} MiB as {device.tool} reports it"
        source = (
            f"this machine ({device.tool}): {len(found)} x {device.name}{others}; bandwidth and FLOP/s from preset {preset.name}"
        )
    return preset.model_copy(update={"memory_bytes": memory, "memory_note": note, "source": source})


def every_gpu(known: KnownGpus) -> list[GpuSpec]:
    """`--gpu auto` for a llama.cpp placement: each of this machine's GPUs in device order, alike or
    not, as the preset its name matches with the memory its tool reports."""
    found = local_gpus()
    if not found:
        raise InvalidInput("--gpu auto: no GPU found (nvidia-smi, amd-smi and torch report none); name each with --gpu")
    by_alias = _presets_by_alias(known)
    result = []
    for index, device in enumerate(found):
        preset = by_alias.get(_normal(device.name))
        if device.mig:
            raise InvalidInput(f"--gpu auto: GPU {index} is a MIG slice ({device.label}); llama.cpp places layers on whole GPUs")
        if preset is None:
            raise PresetNotFound(
                f"--gpu auto: this machine's GPU {index} ({device.name}) matches no GPU preset; name each with --gpu"
            )
        memory = device.memory_bytes or preset.memory_bytes
        result.append(
            preset.model_copy(
                update={
                    "memory_bytes": memory,
                    "memory_note": f"{memory // MiB:,} MiB as {device.tool} reports it",
                    "source": f"this machine ({device.tool}): GPU {index}, {device.name}; bandwidth and FLOP/s from preset {preset.name}",
                }
            )
        )
    return result
