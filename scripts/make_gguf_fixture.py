"""Write tests/fixtures/gguf/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf: the header of a Llama-3.1-8B
Q4_K_M GGUF (its metadata and the tensor infos of its real shapes, in llama.cpp's Q4_K_M type mix)
without tensor data, about 20 KB. The README's GGUF examples read it; tests check it is up to date.

    python scripts/make_gguf_fixture.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "gguf" / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"


def fixture_bytes() -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.gguf_writer import gguf_bytes, llama_metadata, llama_tensors

    metadata = llama_metadata("Meta Llama 3.1 8B Instruct", context=131072)
    return gguf_bytes(metadata, llama_tensors(rope_freqs=True))


def main() -> int:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_bytes(fixture_bytes())
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
