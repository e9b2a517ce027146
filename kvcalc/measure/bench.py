"""Allocate the planned KV cache with torch, and sample the figures a decode step is judged by.

Runs inside a measure worker process (kvcalc.measure.worker), never in the CLI's own process.
Paths timed, each reading every measured layer's cache once per step (layer-rotated, as a real
model does, so a small cache cannot sit in the CPU's last-level cache between reads):
- sdpa: scaled_dot_product_attention(q, k, v, enable_gqa=True), q of shape (B, H, 1, d)
- grouped: q reshaped to (B, Hkv, H/Hkv, d) against K/V with batched matmuls, no copies
- repeat_kv: K/V materialised to H heads (repeat_interleave), the naive GQA
Interleaved with them, round by round: the read bandwidth (a batched GEMV, one query row per head,
over a buffer far larger than the last-level cache), the copy bandwidth, and the compute rate of
decode's own kernels at the variant's shape on a block that stays in cache.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from kvcalc.errors import DoesNotFit, MeasureUnavailable
from kvcalc.kvcache import attention_layers, layer_caches, state_layout, tokens_held
from kvcalc.latency import attention_flops
from kvcalc.measure import short
from kvcalc.measure.figures import REPEATS, ROUNDS, interleaved
from kvcalc.measure.plan import MeasurePlan
from kvcalc.units import DType, MiB

TORCH_DTYPES = {DType.fp32: torch.float32, DType.fp16: torch.float16, DType.bf16: torch.bfloat16}
Progress = Callable[[str], None]
HOT_BYTES = 8 * MiB  # the cache-resident block of the CPU compute rate: a quarter of a 32 MiB L3


def pick_device(name: str, rank: int = 0) -> torch.device:
    """`cuda` (or `cuda:N`; rank r of a process group takes cuda:r) when available, else `cpu`."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MeasureUnavailable("no CUDA device is available; use --device cpu")
    if name == "cuda":
        return torch.device("cuda", rank)
    return torch.device(name)


def cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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
    """Free device memory (CUDA), or available RAM (MemAvailable) within this process's address-space limit."""
    if device.type == "cuda":
        torch.cuda.empty_cache()  # hand cached blocks of earlier runs back before asking
        return int(torch.cuda.mem_get_info(device)[0])
    available = _meminfo("/proc/meminfo", "MemAvailable:")
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, ValueError, OSError):
        limit = -1
    used = _meminfo("/proc/self/status", "VmSize:")
    if limit >= 0 and used is not None:  # RLIM_INFINITY is -1
        available = min(available, max(0, limit - used))
    return available


def _meminfo(path: str, key: str) -> int | None:
    """A `key: N kB` line of a /proc file, in bytes."""
    try:
        with open(path, encoding="utf-8") as info:
            for line in info:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def last_level_cache_bytes(device: torch.device) -> int | None:
    """The GPU's L2, or the CPU's largest cache level (sysfs); None when unknown."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)) or None
    sizes = []
    for index in range(8):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size", encoding="utf-8") as size:
                text = size.read().strip()
        except OSError:
            break
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes, default=None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Seconds of one call: CUDA events on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":

        def gpu(fn: Callable[[], object]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return gpu

    def cpu(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return cpu


def start_threads() -> None:
    """Start torch's intra-op threads now, before any cache is allocated, so a failure to start
    them happens here (a stage the worker names) and not in the middle of a timed run."""
    torch.ones(1 << 20).add_(1.0)  # a parallel region: above at::internal::GRAIN_SIZE (32768)


class Cache:
    """Per-layer K and V tensors (or the MLA latent) with the planned shapes, and each state layer's
    conv and recurrent state (hybrid models; not read by the timed steps)."""

    def __init__(self) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.states: list[torch.Tensor] = []

    def release(self) -> None:
        self.layers.clear()
        self.states.clear()
        gc.collect()


def is_oom(exc: BaseException) -> bool:
    """An allocator's out-of-memory, whatever its type (torch raises RuntimeError on the CPU)."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate" in text or "bad_alloc" in text or "cannot allocate memory" in text


@contextmanager
def oom_guard(cache: Cache, device: torch.device, where: str = ""):  # noqa: ANN201
    """Turn an out-of-memory error into DoesNotFit after freeing every tensor taken."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc):
            raise
        cache.release()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise DoesNotFit(f"out of memory on {device}{where} ({short(exc)}); every tensor was released") from None


def allocate(plan: MeasurePlan, device: torch.device, cache: Cache) -> int:
    """Allocate the plan's KV cache (one rank's shard under tensor parallelism) into `cache`; return
    the bytes the allocator reports holding. State and mlp-only layers hold no KV."""
    dtype = TORCH_DTYPES[plan.workload.kv_dtype or plan.model.dtype]
    batch = plan.workload.batch
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    for layer in attention_layers(layer_caches(plan.model, plan.workload.tp)):
        held = tokens_held(layer, plan.workload)
        if layer.kind == "mla":  # one latent per token, replicated on every rank; the rope key part rides along as "V"
            latent = torch.randn(batch, 1, held, layer.k_values + layer.v_values, device=device, dtype=dtype)
            cache.layers.append((latent, latent[..., : layer.k_values]))
        else:  # (B, Hkv, tokens, d), Hkv per rank
            k = torch.randn(batch, layer.kv_heads, held, layer.k_values // layer.kv_heads, device=device, dtype=dtype)
            v = torch.randn(batch, layer.kv_heads, held, layer.v_values // layer.kv_heads, device=device, dtype=dtype)
            cache.layers.append((k, v))
    return _held(device, before, [t for pair in cache.layers for t in pair])


def allocate_state(plan: MeasurePlan, device: torch.device, cache: Cache) -> int:
    """Allocate every state layer's conv and recurrent state for the batch, of the shapes and dtypes
    `size` counts (kvcalc.kvcache.state_layout on this rank), into `cache`; return the bytes held."""
    layout = state_layout(plan.model, plan.workload)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if layout.dtypes is not None:
        dtypes = (TORCH_DTYPES[layout.dtypes.conv], TORCH_DTYPES[layout.dtypes.recurrent])
        for state in filter(None, layout.states):
            for shape, dtype in zip((state.conv_shape, state.recurrent_shape), dtypes, strict=True):
                if shape:  # () where the kind has no such state
                    cache.states.append(torch.zeros(plan.workload.batch, *shape, device=device, dtype=dtype))
    return _held(device, before, cache.states)


def _held(device: torch.device, before: int, tensors: list[torch.Tensor]) -> int:
    """Bytes the allocator holds for `tensors`: its own count on CUDA, their distinct storages on the CPU."""
    if device.type == "cuda":
        synchronize(device)
        return torch.cuda.memory_allocated(device) - before
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def query_heads(plan: MeasurePlan) -> int:
    """Query heads on one rank: H / tp."""
    return plan.model.heads // plan.workload.tp


def _query(plan: MeasurePlan, cache: Cache, device: torch.device) -> torch.Tensor:
    k = cache.layers[0][0]
    return torch.randn(plan.workload.batch, query_heads(plan), 1, k.shape[-1], device=device, dtype=k.dtype)  # (B, H, 1, d)


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


STEPS = {"sdpa": sdpa_step, "grouped": grouped_step}


def sdpa_backend(q: torch.Tensor, cache: Cache) -> str:
    """The backend SDPA's dispatcher picks for these inputs (flash, efficient, cudnn or math)."""
    from torch.nn.attention import SDPBackend

    k, v = cache.layers[0]
    try:  # private but stable since torch 2.0: the same choice scaled_dot_product_attention makes
        return SDPBackend(torch._fused_sdp_choice(q, k, v, enable_gqa=True)).name.lower()
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return "unknown"


def attention_step_flops(plan: MeasurePlan) -> int:
    """FLOPs of one rank's attention for one step over the measured layers (core formula; heads split evenly)."""
    return attention_flops(plan.model, plan.workload, plan.workload.seq) // plan.workload.tp


def hot_block(cache: Cache, q: torch.Tensor, budget: int, flops: int) -> tuple[Cache, torch.Tensor, int]:
    """The decode kernel's own shape on a block that stays in cache: the first (batch, KV head) pairs
    of layer 0 at full length (fewer tokens when one pair exceeds `budget`), repeated until one run
    over it does about `flops` (a step's). Returns the block, its queries and the FLOPs of one run."""
    k, v = cache.layers[0]
    batch, kv_heads, tokens, _ = k.shape
    groups = q.shape[1] // kv_heads
    pair_bytes = tokens * (k.shape[-1] + v.shape[-1]) * k.element_size()
    pairs = max(1, min(batch * kv_heads, budget // pair_bytes))
    held = tokens if pair_bytes <= budget else max(1, budget // ((k.shape[-1] + v.shape[-1]) * k.element_size()))
    hot_k = k.reshape(1, batch * kv_heads, tokens, k.shape[-1])[:, :pairs, :held]  # views: layer 0's own memory
    hot_v = v.reshape(1, batch * kv_heads, tokens, v.shape[-1])[:, :pairs, :held]
    once = 2 * pairs * groups * held * (k.shape[-1] + v.shape[-1])
    repeats = max(1, math.ceil(flops / once))
    block = Cache()
    block.layers = [(hot_k, hot_v)] * repeats
    hot_q = q.reshape(1, batch * q.shape[1], 1, q.shape[-1])[:, : pairs * groups].contiguous()
    return block, hot_q, repeats * once


class Probe:
    """The run's bandwidth figures: an fp32 buffer, larger than any last-level cache, read by the
    decode kernels with one query row per head (batched GEMV) at the model's head width and the
    run's length, and copied half onto half."""

    def __init__(self, device: torch.device, nbytes: int, tokens: int, dim: int) -> None:
        tokens = max(1, min(tokens, nbytes // (4 * 2 * 4 * dim)))  # at least 4 (head, sequence) pairs
        heads = max(1, nbytes // (4 * 2 * tokens * dim))
        self.buffer = torch.empty(2 * heads * tokens * dim, dtype=torch.float32, device=device).fill_(0.5)
        shaped = self.buffer.view(2, 1, heads, tokens, dim)
        self.cache = Cache()
        self.cache.layers = [(shaped[0], shaped[1])]
        self.q = torch.full((1, heads, 1, dim), 0.01, dtype=torch.float32, device=device)
        half = self.buffer.numel() // 2
        self.copy_src, self.copy_dst = self.buffer[:half], self.buffer[half : 2 * half]

    @property
    def read_bytes(self) -> int:
        return self.buffer.numel() * 4

    @property
    def copy_bytes(self) -> int:
        return 2 * self.copy_src.numel() * 4  # read + written

    def tasks(self, passes: int) -> dict[str, Callable[[], object]]:
        """Each task makes `passes` passes over the buffer (the caller divides its times by them)."""
        return {
            "read sdpa": lambda: [sdpa_step(self.q, self.cache) for _ in range(passes)],
            "read grouped": lambda: [grouped_step(self.q, self.cache) for _ in range(passes)],
            "copy": lambda: [self.copy_dst.copy_(self.copy_src) for _ in range(passes)],
        }

    def release(self) -> None:
        self.cache.release()
        del self.buffer, self.copy_src, self.copy_dst


def compute_tasks(device: torch.device, q: torch.Tensor, cache: Cache, flops: int) -> tuple[dict[str, Callable[[], object]], int]:
    """The compute-rate tasks (about `flops` each on the CPU) and the FLOPs of one run of each.

    CPU: each decode path on a cache-resident block of the variant's own shape (G query rows per KV
    head, full length), so the skinny shapes' real efficiency counts. CUDA: such a block takes
    microseconds and launch overhead would dominate, so the rate is that of a (n, 128, d) @ (n, d, t)
    batched matmul, decode's q.K^T with a full tile of query rows: an upper bound on decode's matmuls.
    """
    if device.type == "cuda":
        pairs, rows, tokens, dim = 256, 128, 4096, cache.layers[0][0].shape[-1]
        a = torch.randn(pairs, rows, dim, device=device, dtype=q.dtype)
        b = torch.randn(pairs, dim, tokens, device=device, dtype=q.dtype)
        return {"hot bmm": lambda: torch.bmm(a, b)}, 2 * pairs * rows * dim * tokens
    block, hot_q, work = hot_block(cache, q, HOT_BYTES, flops)
    return {f"hot {path}": (lambda step=step: step(hot_q, block)) for path, step in STEPS.items()}, work


def run_variant(
    plan: MeasurePlan,
    device: torch.device,
    probe: Probe,
    progress: Progress,
    extra: Callable[[Cache], dict[str, Callable[[], object]]] = lambda _cache: {},
    settle: Callable[[], object] = lambda: None,
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    """Allocate one planned variant, check its bytes, and sample every figure in interleaved rounds;
    always frees its tensors. `extra` adds tasks on the cache (a tensor-parallel all-reduce).

    Every calibration sample does about a step's work (as many passes over the bandwidth buffer as
    the cache has bytes, as many runs over the hot block as the step has FLOPs), so interference
    that comes and goes weighs on the figures and the steps alike: a short sample would slip
    between its bursts more often than a long one. Bandwidth samples are returned per pass."""
    cache = Cache()
    with oom_guard(cache, device, f" while allocating {plan.model.name}'s cache"):
        progress(f"{plan.model.name}: allocating")
        allocated = allocate(plan, device, cache)
        allocated_state = allocate_state(plan, device, cache)
    with oom_guard(cache, device, f" while timing {plan.model.name}"):
        q = _query(plan, cache, device)
        hot, hot_flops = compute_tasks(device, q, cache, attention_step_flops(plan))
        passes = max(1, math.ceil(plan.cache_bytes / probe.read_bytes))
        steps = {f"step {p}": (lambda s=s: s(q, cache)) for p, s in STEPS.items()}
        tasks = {**probe.tasks(passes), **hot, **steps, **extra(cache)}
        progress(f"{plan.model.name}: timing {rounds} interleaved rounds")
        samples = interleaved(tasks, rounds, REPEATS, timer(device), settle)
        for name in probe.tasks(passes):
            samples[name] = [seconds / passes for seconds in samples[name]]
        progress(f"{plan.model.name}: timing repeat_kv")
        samples |= interleaved({"repeat_kv": lambda: repeat_kv_step(q, cache)}, 1, 3, timer(device), settle)
        backend = sdpa_backend(q, cache)
    cache.release()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "allocated_bytes": allocated,
        "allocated_state_bytes": allocated_state,
        "samples": samples,
        "hot_flops": hot_flops,
        "sdpa_backend": backend,
    }


def attention_outputs(plan: MeasurePlan, device: torch.device) -> list[torch.Tensor]:
    """One (B, H * d_v) attention output per measured attention layer: what row-parallel TP all-reduces after o_proj."""
    dtype = TORCH_DTYPES[plan.workload.kv_dtype or plan.model.dtype]
    width = plan.model.heads * plan.model.value_dim if plan.model.mla is None else plan.model.heads * plan.model.mla.v_head_dim
    return [
        torch.zeros(plan.workload.batch, width, device=device, dtype=dtype) for _ in attention_layers(layer_caches(plan.model))
    ]


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


def calibration_samples(
    device: torch.device, nbytes: int, layer_counts: tuple[int, ...], size_shares: tuple[int, ...], progress: Progress,
    rounds: int = ROUNDS,
) -> list[tuple[int, int, list[float]]]:  # fmt: skip
    """Decode-shaped reads of a buffer larger than any last-level cache: each size (the buffer over
    each share) read by SDPA with one query row per head, split over each layer count (one call
    per layer), sampled in interleaved rounds. Returns (bytes read, layers, seconds) per point."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dim, units = 128, max(layer_counts) * max(size_shares)  # every split takes whole heads
    tokens = max(1, min(1024, nbytes // (units * 2 * dim * dtype.itemsize)))  # shorter heads under a small --max-memory
    head_bytes = 2 * tokens * dim * dtype.itemsize  # K and V of one head
    heads = units * max(1, nbytes // (units * head_bytes))
    buffer = torch.empty(2, 1, heads, tokens, dim, dtype=dtype, device=device).fill_(0.5)
    tasks: dict[str, Callable[[], object]] = {}
    points: list[tuple[str, int, int]] = []
    for share in size_shares:
        used = heads // share
        for layers in layer_counts:
            per_layer = used // layers
            cache = Cache()
            cache.layers = [
                (buffer[0, :, i * per_layer : (i + 1) * per_layer], buffer[1, :, i * per_layer : (i + 1) * per_layer])
                for i in range(layers)
            ]
            q = torch.full((1, per_layer, 1, dim), 0.01, dtype=dtype, device=device)
            name = f"{layers} layers of {per_layer * layers} heads"
            tasks[name] = lambda q=q, cache=cache: sdpa_step(q, cache)
            points.append((name, per_layer * layers * head_bytes, layers))
    progress(f"calibrating: {len(tasks)} decode-shaped runs, {rounds} interleaved rounds")
    samples = interleaved(tasks, rounds, REPEATS, timer(device))
    del tasks, buffer
    gc.collect()
    return [(nbytes_read, layers, samples[name]) for name, nbytes_read, layers in points]


def matmul_samples(device: torch.device, rounds: int = ROUNDS) -> tuple[str, int, list[float]]:
    """A square matmul's dtype, FLOPs and seconds: bf16 (n = 8192) on CUDA, fp32 (n = 1024) on the CPU."""
    dtype, n = (torch.bfloat16, 8192) if device.type == "cuda" else (torch.float32, 1024)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    samples = interleaved({"matmul": lambda: torch.matmul(a, b)}, rounds, REPEATS, timer(device))
    return ("bf16" if dtype == torch.bfloat16 else "fp32"), 2 * n**3, samples["matmul"]


def total_memory_bytes(device: torch.device) -> int:
    """The device's whole memory: the GPU's, or the machine's MemTotal."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return _meminfo("/proc/meminfo", "MemTotal:") or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
