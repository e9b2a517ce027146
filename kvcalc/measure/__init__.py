"""Measure the cache for real: allocate it with torch and time attention decode.

The CLI's process never imports torch: it plans nothing, starts one worker process per
tensor-parallel rank (`python -m kvcalc.measure.worker`) and reads their results, so that torch
failing in any way (out of memory while importing it, starting its threads or allocating, or an
abort from a native library) reaches the user as one line and frees everything with the process.
`plan`, `figures` and `report` are pure; only `bench` and `worker` import torch.
"""

from __future__ import annotations

import importlib.util
import signal
import warnings

from kvcalc.errors import DoesNotFit, MeasureUnavailable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # a measure run stops every rank on these (kvcalc.measure.runner)

INSTALL_HINT = 'measure needs torch: pip install "kvcalc[measure]"'
MEMORY_SIGNS = (
    "out of memory", "cannot allocate memory", "bad_alloc", "failed to map segment", "memoryerror", "thread creation failed",
)  # fmt: skip


def torch_installed() -> bool:
    """Whether an importable torch is on the path, found without importing it."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken parent package, or a torch module without a spec
        return False


def looks_like_memory(text: str) -> bool:
    """Whether an error text is an out-of-memory one, whichever library wrote it."""
    lowered = text.lower()
    return any(sign in lowered for sign in MEMORY_SIGNS)


def at_memory_limit(margin: int = 256 * 2**20) -> bool:
    """Whether this process came within `margin` bytes of its address-space limit (RLIMIT_AS): an
    error it then raised, whatever its type, is most likely an allocation that did not fit."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        with open("/proc/self/status", encoding="utf-8") as status:
            peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmPeak:"))
    except (ImportError, OSError, ValueError, StopIteration):
        return False
    return limit != resource.RLIM_INFINITY and peak + margin >= limit


def short(exc: BaseException, width: int = 200) -> str:
    """An exception's first line, cut at a word before `width` characters."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first if len(first) <= width else first[: first.rfind(" ", 0, width)] + " ..."


def require_torch() -> None:
    """Import torch (quietly: a torch without numpy warns that it cannot use it, which measure never
    does). Missing torch is MeasureUnavailable with the install hint; torch that is installed but
    could not load for lack of memory is DoesNotFit (exit 1), never "measure needs torch"."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
            import torch  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "torch" and not torch_installed():
            raise MeasureUnavailable(INSTALL_HINT) from None
        raise unloadable(exc) from None
    except Exception as exc:  # noqa: BLE001 - out of memory surfaces as MemoryError, ImportError, OSError, RuntimeError, SystemError
        raise unloadable(exc) from None


def out_of_memory(exc: BaseException) -> bool:
    """Whether an error is an allocation that failed: a MemoryError, an error that says so, or any
    error raised at this process's address-space limit."""
    return isinstance(exc, MemoryError) or looks_like_memory(str(exc)) or at_memory_limit()


def unloadable(exc: BaseException) -> DoesNotFit | MeasureUnavailable:
    """torch is installed but did not import: out of memory when it was, else a broken install."""
    if out_of_memory(exc):
        return DoesNotFit(f"out of memory while importing torch ({short(exc)}); nothing was allocated")
    return MeasureUnavailable(f"torch is installed but failed to import: {type(exc).__name__}: {short(exc)}")
