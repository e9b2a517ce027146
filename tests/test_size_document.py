"""`size --json` prints SizeDocument part by part (kvcalc.size_document.size_json): the very JSON,
key order included, that SizeDocument itself would print, for dense, MoE, MLA and hybrid models,
every engine, with and without a GPU, under tensor parallelism."""

from __future__ import annotations

import json

import pytest

from kvcalc import size_document
from kvcalc.size_document import SizeDocument

RUNS = [
    ["--model", "llama3-8b", "--seq", "8192"],
    ["--model", "llama3-70b", "--seq", "32k", "--batch", "8", "--gpu", "h100-sxm", "--tp", "2"],  # does not fit
    ["--model", "deepseek-v3", "--seq", "16k", "--gpu", "h200", "--engine", "vllm", "--tp", "8"],  # MLA, MoE
    ["--model", "qwen3-next-80b-a3b", "--seq", "64k"],  # gated DeltaNet hybrid
    ["--model", "jamba-1.5-mini", "--seq", "64k", "--gpu", "h100-sxm", "--engine", "vllm"],  # mamba hybrid
    ["--model", "gemma3-27b", "--seq", "128k", "--kv-dtype", "fp8", "--gpu", "a100-80gb", "--engine", "vllm"],
    ["--model", "granite-4.0-h-small", "--seq", "32k", "--engine", "sglang", "--gpu", "h100-sxm"],
    ["--model", "qwen3-8b", "--seq", "32k", "--engine", "llamacpp", "--gpu", "rtx3090", "--weight-dtype", "q4_k_m"],
    ["--model", "qwen3-8b", "--seq", "8k", "--engine", "trtllm", "--gpu", "h100-sxm"],
    ["--model", "mixtral-8x7b", "--seq", "4k", "--gpu", "rtx3090", "--engine", "hf"],
]


@pytest.mark.parametrize("args", RUNS, ids=[" ".join(run[1:4]) for run in RUNS])
def test_size_json_prints_what_size_document_would(cli, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    documents: list[SizeDocument] = []

    def size_json(*parts):  # noqa: ANN002, ANN202
        documents.append(SizeDocument(**dict(zip(("model", "kv", "weights", "fit", "decode"), parts, strict=True))))
        return original(*parts)

    original = size_document.size_json
    monkeypatch.setattr(size_document, "size_json", size_json)
    result = cli("size", *args, "--json")
    assert result.exit_code in (0, 1), result.output
    (document,) = documents
    assert result.stdout == json.dumps(document.model_dump(mode="json"), indent=2) + "\n"
