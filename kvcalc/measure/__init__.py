"""Measure the cache for real: allocate it with torch and time attention decode.

torch is imported only inside this package's `bench` module, which the measure command
imports lazily; `plan` is pure and torch-free.
"""

from __future__ import annotations

import warnings

from kvcalc.errors import MeasureUnavailable


def require_torch() -> None:
    """Import torch (quietly: a torch without numpy warns that it cannot use it, which measure never
    does), or fail with the install hint when it is missing."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
            import torch  # noqa: F401
    except ImportError:
        raise MeasureUnavailable('measure needs torch: pip install "kvcalc[measure]"') from None
