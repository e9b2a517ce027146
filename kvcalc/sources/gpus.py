"""GPUs by the names vendors' tools print, and the GPUs in this machine (`--gpu auto`, `--tp auto`).

A GPU preset's `aliases` hold the names nvidia-smi and amd-smi print ("NVIDIA H100 80GB HBM3",
"AMD Instinct MI300X"), matched case-blind. The local GPUs come from
`nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits` (the devices
CUDA_VISIBLE_DEVICES leaves visible), else `amd-smi static --asic --vram --json` (HIP_VISIBLE_DEVICES),
else torch when it is already installed (imported only here). Memory is the total each tool reports.

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
from kvcalc.units import GiB, MiB

TOOL_TIMEOUT_S = 20


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
    """A command's stdout, or None when it is missing, fails or hangs (tests replace this)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


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
        if len(fields) < 4 or not fields[-1].isdigit():
            continue  # a header, a blank line or "[N/A]" memory
        index, uuid, name, mib = fields[0], fields[1], ", ".join(fields[2:-1]), int(fields[-1])
        for profile, slice_uuid, memory in slices.get(uuid, []):
            if _visible(index, uuid, "CUDA_VISIBLE_DEVICES") or _visible("", slice_uuid, "CUDA_VISIBLE_DEVICES"):
                gpus.append(LocalGpu(name=name, memory_bytes=memory, tool="nvidia-smi", mig=profile))
        if uuid not in slices and _visible(index, uuid, "CUDA_VISIBLE_DEVICES"):
            gpus.append(LocalGpu(name=name, memory_bytes=mib * MiB, tool="nvidia-smi"))
    return gpus


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


_AMD_UNITS = {"B": 1, "KB": 2**10, "MB": MiB, "GB": GiB}  # amd-smi writes MB for MiB (MI300X: 196,592 MB = 192 GiB)


def _amd() -> list[LocalGpu]:
    output = command_output(["amd-smi", "static", "--asic", "--vram", "--json"])
    try:
        data: Any = json.loads(output) if output else []
    except json.JSONDecodeError:
        return []
    devices = data.get("gpu_data", []) if isinstance(data, dict) else data
    gpus = []
    for position, device in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(device, dict):
            continue
        name = (device.get("asic") or {}).get("market_name")
        vram = device.get("vram") or {}
        size = vram.get("size") or vram.get("vram_size") or {}
        value, unit = size.get("value"), str(size.get("unit", "MB")).upper()
        index = str(device.get("gpu", position))
        if isinstance(name, str) and isinstance(value, int) and unit in _AMD_UNITS and _visible(index, "", "HIP_VISIBLE_DEVICES"):
            gpus.append(LocalGpu(name=name, memory_bytes=value * _AMD_UNITS[unit], tool="amd-smi"))
    return gpus


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
    """The GPUs this process can use, from the first tool that reports any."""
    for detect in (_nvidia, _amd, _torch):
        found = detect()
        if found:
            return found
    return []


def identical(flag: str, instead: str) -> list[LocalGpu]:
    """The machine's GPUs, which `flag` (--gpu auto, --tp auto) needs to be present and all alike."""
    found = local_gpus()
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


def _close_presets(ref: str, by_alias: dict[str, GpuSpec]) -> list[str]:
    """Up to three presets whose name or aliases are spelled close to `ref`."""
    close = difflib.get_close_matches(_normal(ref), list(by_alias), n=6, cutoff=0.5)
    return list(dict.fromkeys(by_alias[key].name for key in close))[:3]


def unknown_gpu(ref: str, known: KnownGpus, close: Sequence[str] = ()) -> PresetNotFound:
    """The error for a GPU no preset names, suggesting the `close` names, then presets whose name
    or aliases are spelled close."""
    by_alias = _presets_by_alias(known)
    names = list(dict.fromkeys([*close, *_close_presets(ref, by_alias)]))[:3]
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
