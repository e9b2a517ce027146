"""Write the safetensors part of tests/fixtures/hf-cache: Meta-Llama-3-8B's four bf16 shards as
header-only files (each tensor's real name, dtype and shape; no tensor data, about 40 KB in all) and
their model.safetensors.index.json, beside the cached config.json. The README's Hub examples read
them; tests check they are up to date. The tensors' split over the shards is even, not the repo's.

    python scripts/make_hf_cache_fixture.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests/fixtures/hf-cache/models--meta-llama--Meta-Llama-3-8B/snapshots/0000000000000000000000000000000000c0ffee"


def fixture_files() -> dict[str, bytes]:
    """Each file's name in the snapshot and its bytes."""
    sys.path.insert(0, str(ROOT))
    import tempfile

    from tests.safetensors_writer import in_shards, llama_tensors, write_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        write_checkpoint(Path(folder), in_shards(llama_tensors(), 4))
        return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir())}


def main() -> int:
    for name, content in fixture_files().items():
        (SNAPSHOT / name).write_bytes(content)
        print(f"wrote {(SNAPSHOT / name).relative_to(ROOT)} ({len(content):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
