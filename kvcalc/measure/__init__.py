"""Measure the cache for real: allocate it with torch and time attention decode.

torch is imported only inside this package's `bench` module, which the measure command
imports lazily; `plan` is pure and torch-free.
"""

from __future__ import annotations

from kvcalc.errors import MeasureUnavailable


def require_torch() -> None:
    """Fail with the install hint when torch is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MeasureUnavailable('measure needs torch: pip install "kvcalc[measure]"') from None
