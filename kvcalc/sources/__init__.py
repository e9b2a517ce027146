"""Readers of models and GPUs from where users keep them, beside the presets (kvcalc.presets
dispatches here by the reference's shape):

- `FILE.gguf`: a llama.cpp GGUF's header (gguf.py reads it, gguf_model.py maps it);
- `org/name[@revision]`: a Hugging Face repo's config.json, from the local cache first (hub.py),
  and its weights' exact bytes from the safetensors headers (safetensors.py reads them);
- a config.json inside a Hugging Face cache snapshot, named after its repo (hub.py);
- `auto` and the names nvidia-smi or amd-smi print, for GPUs (gpus.py).

Which wins: a name without a slash is a preset; `org/name` is a repo id unless a file of that
relative path exists; a path ending in .gguf, .json, .yaml or .yml is a file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from kvcalc.errors import InvalidInput, PresetNotFound
from kvcalc.spec import GpuSpec, ModelSpec

if TYPE_CHECKING:
    from kvcalc.sources.gpus import KnownGpus


def model_reference(ref: str) -> ModelSpec | None:
    """The model a GGUF file, a Hub repo id or a cache snapshot's config.json names; None when
    `ref` is none of these (a preset name, a YAML file, another config.json)."""
    if ref.endswith(".gguf"):
        from kvcalc.files import require_file
        from kvcalc.sources.gguf_model import model_from_gguf

        require_file(Path(ref), "GGUF file", "give the .gguf file inside it", PresetNotFound)
        return model_from_gguf(Path(ref))
    if "/" not in ref and not ref.endswith(".json"):
        return None  # a preset name: a repo id is org/name (the Hub's module is not imported for it)
    from kvcalc.sources import hub

    repo = hub.repo_reference(ref)
    if repo is not None:
        return hub.model_from_hub(*repo)
    if ref.endswith(".json") and _is_file(Path(ref)):
        snapshot = hub.snapshot_of(Path(ref))
        if snapshot is not None:
            return hub.model_from_snapshot(Path(ref), *snapshot)
    return None


def gpu_reference(ref: str, known: KnownGpus, by_device_name: bool = False) -> GpuSpec | None:
    """`auto` (this machine's GPU) or, with `by_device_name`, a name as a vendor's tool prints it; None
    otherwise. `known` lists the GPU presets (the caller's: the readers do not read presets)."""
    from kvcalc.sources import gpus

    if ref.strip().lower() == "auto":
        return gpus.auto_gpu(known)
    return gpus.gpu_by_device_name(ref, known) if by_device_name else None


def gpu_by_device_name(ref: str, known: KnownGpus, close: list[str]) -> GpuSpec:
    """The GPU preset one of whose aliases is `ref`; else PresetNotFound suggesting the `close`
    preset names and those whose aliases are spelled close."""
    from kvcalc.sources import gpus

    found = gpus.gpu_by_device_name(ref, known)
    if found is None:
        raise gpus.unknown_gpu(ref, known, close)
    return found


def tensor_parallel(value: int | str) -> int:
    """--tp: a count, or `auto` for the number of (identical) GPUs in this machine."""
    if isinstance(value, int):
        return value
    if value.strip().lower() == "auto":
        from kvcalc.sources import gpus

        return gpus.tensor_parallel_gpus()
    if not re.fullmatch(r"-?[0-9]+", value.strip()):  # ASCII digits, as --seq reads them (int() would take "٢")
        raise InvalidInput(f"--tp {value!r}: give a positive integer, or auto (the GPUs in this machine)")
    return int(value.strip())


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name the system cannot look up (too long)
        return False
