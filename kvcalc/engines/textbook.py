"""textbook: the exact need. Every layer holds its tokens, a sliding-window layer at most its window;
no padding, whole pages only when --block-size asks for them."""

from __future__ import annotations

from kvcalc.engines.base import EngineProfile, cdiv
from kvcalc.spec import ModelSpec, Workload


class Textbook(EngineProfile):
    name = "textbook"
    label = "textbook"
    compressed_caches = (
        True  # the exact bytes of DeepSeek-V4's caches, in the format vLLM stores (kvcalc.kvcache.compressed_parts)
    )

    def tokens_per_unit(self, workload: Workload, window: int | None, seq: int, chunked: bool = False) -> int:
        """s, or min(s, W) in a window layer, rounded up to whole pages when paged. A chunked layer
        needs its chunk's tokens: min(s, C), the most it holds on the way to s.

        >>> from kvcalc.spec import Workload
        >>> Textbook().tokens_per_unit(Workload(seq=1000), 4096, 8192), Textbook().tokens_per_unit(Workload(seq=1, block_size=16), None, 1000)
        (4096, 1008)
        """
        held = min(seq, window) if window else seq
        block = self.block_size(workload)
        return held if block is None else cdiv(held, block) * block

    def rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        return [
            "textbook: exact bytes, no padding (every layer holds its tokens, a sliding layer at most its window,"
            " a chunked layer at most its chunk)"
        ]

    def tokens_formula(self, workload: Workload, window: int | None, exact_tokens: int, chunked: bool = False) -> str:
        letter = "C" if chunked else "W"
        held = f"min(s, {letter}) = min({workload.seq}, {window})" if window else f"s = {workload.seq}"
        block = self.block_size(workload)
        return held if block is None else f"ceil({held.split(' = ')[-1]} / {block}) * {block} (paged)"
