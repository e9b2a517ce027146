"""The published llama.cpp start-up logs the tests replay (tests/fixtures/engine_logs/llamacpp_*.yaml):
one loader and llama.cpp's way of printing MiB, shared by test_llamacpp_recurrent_logs.py and
test_llamacpp_swa_logs.py."""

import re
from pathlib import Path
from typing import Any

import yaml

LOGS = Path(__file__).parent / "fixtures" / "engine_logs"
MIB = 2**20


def load_cases(name: str) -> list[dict[str, Any]]:
    """The cases of tests/fixtures/engine_logs/<name>.yaml, in the file's order."""
    return yaml.safe_load((LOGS / f"{name}.yaml").read_text(encoding="utf-8"))


def logged_mib(nbytes: int) -> str:
    """Bytes as llama.cpp prints them: %.2f of bytes / 1024 / 1024 (src/llama-kv-cache.cpp, llama-memory-recurrent.cpp)."""
    return f"{nbytes / MIB:.2f}"


# llama_kv_cache's size line (with its K and V parts and n_seq_max/streams) and llama_kv_cache_iswa's "creating" lines;
# builds before the rename of 2025-10 call the classes llama_kv_cache_unified and llama_kv_cache_unified_iswa
KV_LINE = re.compile(
    r"llama_kv_cache(?:_unified)?(?:_iswa)?: (?:creating +(?:non-)?SWA KV cache, size = \d+ cells"
    r"|size = .*/\d+ seqs\), K \(\w+\): +[\d.]+ MiB, V \(\w+\): +[\d.]+ MiB)"
)


def kv_cache_lines(text: str) -> list[str]:
    """The KV-cache lines in `text`, from the function name on, their spaces removed and the classes' older
    names as current builds print them (some pages print the lines without their padding)."""
    return ["".join(line.replace("_unified", "").split()) for line in KV_LINE.findall(text)]


def case_id(case: dict[str, Any]) -> str:
    return case["name"]


def where_found(case: dict[str, Any]) -> bool:
    """Whether a case says where it was found (a web address, or the stored copy's index id), its build and its log."""
    return bool((case["found"]["index_id"] or case["url"]) and case["build"] and case["log"])
