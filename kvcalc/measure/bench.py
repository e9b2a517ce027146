"""Allocate the planned KV cache with torch and time one decode step three ways.

Paths timed, each reading every measured layer's cache once per step (layer-rotated, as a real
model does, so a small cache cannot sit in the CPU's last-level cache between reads):
- sdpa: scaled_dot_product_attention(q, k, v, enable_gqa=True), q of shape (B, H, 1, d)
- grouped: q reshaped to (B, Hkv, H/Hkv, d) against K/V with batched matmuls, no copies
- repeat_kv: K/V materialised to H heads (repeat_interleave), the naive GQA
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from kvcalc.errors import DoesNotFit, MeasureUnavailable
from kvcalc.kvcache import layer_caches, tokens_held
from kvcalc.latency import attention_flops
from kvcalc.measure.plan import MeasurePlan
from kvcalc.units import DType

TORCH_DTYPES = {DType.fp32: torch.float32, DType.fp16: torch.float16, DType.bf16: torch.bfloat16}
Progress = Callable[[str], None]


def pick_device(name: str) -> torch.device:
    """`cuda` (or `cuda:N`) when available, else `cpu`; a missing GPU is an error."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MeasureUnavailable("no CUDA device is available; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise MeasureUnavailable(f"unknown device {name!r}: use cpu or cuda")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The accelerator's marketing name, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def free_bytes(device: torch.device) -> int:
    """Free device memory (CUDA), or available RAM (MemAvailable)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()  # hand cached blocks of earlier runs back before asking
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn: Callable[[], Any], device: torch.device, min_seconds: float = 0.5, warmup: int = 3) -> list[float]:
    """Warm up, then time `fn` repeatedly (CUDA events on GPU, perf_counter on CPU): >= 5 runs, about min_seconds."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    while len(times) < 5 or (sum(times) < min_seconds and len(times) < 200):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Achievable bandwidth of a large device copy: (bytes read + bytes written) / time."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    times = time_runs(lambda: dst.copy_(src), device)
    return 2 * nbytes / statistics.median(times)


def compute_rate(device: torch.device, dtype: torch.dtype, groups: int, key_dim: int, value_dim: int) -> float:
    """Achievable FLOP/s of decode's attention matmuls in `dtype`, on data that DRAM does not limit.

    CPU: the grouped decode kernel itself (q.K^T, softmax, P.V with G = H/Hkv query rows per KV
    head) on a block that stays in a core's L2, so the skinny shapes' real efficiency counts.
    CUDA: such a block takes microseconds and launch overhead would dominate, so the rate is that
    of a (n, 128, d) @ (n, d, t) batched matmul, decode's q.K^T with a full tile of query rows:
    an upper bound on what decode's matmuls can reach.
    """
    if device.type == "cuda":
        pairs, rows, tokens = 256, 128, 4096
        q = torch.randn(pairs, rows, key_dim, device=device, dtype=dtype)
        k = torch.randn(pairs, key_dim, tokens, device=device, dtype=dtype)
        times = time_runs(lambda: torch.bmm(q, k), device, min_seconds=0.2)
        return 2 * pairs * rows * key_dim * tokens / statistics.median(times)
    tokens = 256
    element = torch.finfo(dtype).bits // 8
    pairs = max(1, 2**20 // (tokens * (key_dim + value_dim) * element))  # (batch * kv heads) pairs in 1 MiB
    q = torch.randn(pairs, groups, 1, key_dim, device=device, dtype=dtype)  # (B*Hkv, G, 1, d)
    k = torch.randn(pairs, 1, tokens, key_dim, device=device, dtype=dtype)  # (B*Hkv, 1, t, d)
    v = torch.randn(pairs, 1, tokens, value_dim, device=device, dtype=dtype)
    cache = Cache()
    cache.layers = [(k, v)] * 16  # the same hot block 16 times per timed run
    times = time_runs(lambda: grouped_step(q, cache), device, min_seconds=0.2)
    return 16 * 2 * pairs * groups * tokens * (key_dim + value_dim) / statistics.median(times)


class Cache:
    """Per-layer K and V tensors (or the MLA latent) with the planned shapes."""

    def __init__(self) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def release(self) -> None:
        self.layers.clear()
        gc.collect()


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower() or "can't allocate" in str(exc).lower()


@contextmanager
def oom_guard(cache: Cache, device: torch.device):  # noqa: ANN201
    """Turn an out-of-memory error into DoesNotFit after freeing every tensor taken."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not (_is_oom(exc) or isinstance(exc, MemoryError)):
            raise
        cache.release()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise DoesNotFit(f"out of memory on {device}: {str(exc).splitlines()[0][:160]}; every tensor was released") from None


def allocate(plan: MeasurePlan, device: torch.device, cache: Cache) -> int:
    """Allocate the plan's cache into `cache`; return the bytes the allocator reports holding."""
    dtype = TORCH_DTYPES[plan.workload.kv_dtype or plan.model.dtype]
    batch = plan.workload.batch
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    for layer in layer_caches(plan.model):
        held = tokens_held(layer, plan.workload)
        if layer.kind == "mla":  # one latent per token; the rope key part rides along as "V"
            latent = torch.randn(batch, 1, held, layer.k_values + layer.v_values, device=device, dtype=dtype)
            cache.layers.append((latent, latent[..., : layer.k_values]))
        else:  # (B, Hkv, tokens, d)
            k = torch.randn(batch, layer.kv_heads, held, layer.k_values // layer.kv_heads, device=device, dtype=dtype)
            v = torch.randn(batch, layer.kv_heads, held, layer.v_values // layer.kv_heads, device=device, dtype=dtype)
            cache.layers.append((k, v))
    if device.type == "cuda":
        synchronize(device)
        return torch.cuda.memory_allocated(device) - before
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for pair in cache.layers for t in pair}
    return sum(storages.values())


def _query(plan: MeasurePlan, cache: Cache, device: torch.device) -> torch.Tensor:
    k = cache.layers[0][0]
    return torch.randn(plan.workload.batch, plan.model.heads, 1, k.shape[-1], device=device, dtype=k.dtype)  # (B, H, 1, d)


def sdpa_step(q: torch.Tensor, cache: Cache) -> None:
    for k, v in cache.layers:
        F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


def grouped_step(q: torch.Tensor, cache: Cache) -> None:
    batch, heads, _, dim = q.shape
    for k, v in cache.layers:
        kv_heads = k.shape[1]
        qg = q.view(batch, kv_heads, heads // kv_heads, dim)  # (B, Hkv, G, d)
        scores = torch.matmul(qg, k.transpose(-1, -2)) * (1 / math.sqrt(dim))  # (B, Hkv, G, s)
        torch.matmul(torch.softmax(scores.float(), dim=-1).to(v.dtype), v)  # (B, Hkv, G, d_v)


def repeat_kv_step(q: torch.Tensor, cache: Cache) -> None:
    heads = q.shape[1]
    for k, v in cache.layers:
        groups = heads // k.shape[1]
        F.scaled_dot_product_attention(q, k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1))  # (B, H, s, d)


def sdpa_backend(q: torch.Tensor, cache: Cache) -> str:
    """The backend SDPA's dispatcher picks for these inputs (flash, efficient, cudnn or math)."""
    from torch.nn.attention import SDPBackend

    k, v = cache.layers[0]
    try:  # private but stable since torch 2.0: the same choice scaled_dot_product_attention makes
        return SDPBackend(torch._fused_sdp_choice(q, k, v, enable_gqa=True)).name.lower()
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return "unknown"


def attention_step_flops(plan: MeasurePlan) -> int:
    """FLOPs of the measured layers' attention for one step (core formula, on the truncated model)."""
    return attention_flops(plan.model, plan.workload, plan.workload.seq)


def run_variant(plan: MeasurePlan, device: torch.device, progress: Progress) -> dict[str, Any]:
    """Allocate, check bytes and time the three paths for one planned variant; always frees its tensors."""
    cache = Cache()
    with oom_guard(cache, device):
        progress(f"{plan.model.name}: allocating")
        allocated = allocate(plan, device, cache)
        q = _query(plan, cache, device)
        progress(f"{plan.model.name}: timing sdpa")
        sdpa = time_runs(lambda: sdpa_step(q, cache), device)
        progress(f"{plan.model.name}: timing grouped matmul")
        grouped = time_runs(lambda: grouped_step(q, cache), device)
        progress(f"{plan.model.name}: timing repeat_kv")
        naive = time_runs(lambda: repeat_kv_step(q, cache), device)
        backend = sdpa_backend(q, cache)
    cache.release()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"allocated_bytes": allocated, "sdpa": sdpa, "grouped": grouped, "repeat_kv": naive, "sdpa_backend": backend}


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures depend on: torch, device, threads and how busy the machine was."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return {
        "torch_version": torch.__version__,
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
    }
