"""vLLM's CUDA-graph estimate counts a PIECEWISE graph for every capture size and a FULL one only for the
sizes a decode step of max_num_seqs requests can take (kvcalc/engines/vllm.py full_graph_sizes). Sources:
vllm/v1/cudagraph_dispatcher.py initialize_cudagraph_keys (V1, 0.21.0 and 0.27.1 wheels) and
vllm/v1/worker/gpu/cudagraph_utils.py CudaGraphManager._init_candidates (V2, 0.30.0 wheel)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc import ModelSpec, Workload
from kvcalc.capacity import budget
from kvcalc.engines.vllm import CUDA_GRAPH_EACH_BYTES, CUDA_GRAPH_FIRST_BYTES, capture_sizes, full_graph_sizes
from kvcalc.spec import Engine
from kvcalc.units import GiB

# https://github.com/eslam-ahmed43/llm-lab/blob/0f01b470480ca624a0347b642d7d53897e085f31/logs/vllm_server.log: vLLM
# 0.30.0 on a compute capability 7.5 card of 14.56 GiB; its capture prints "Capturing CUDA graphs (PIECEWISE): 51/51" and
# "Capturing CUDA graphs (FULL): 35/35", and "Available KV cache memory: 8.67 GiB"
T4_LOG = [
    "fit", "--model", "qwen2.5-1.5b", "--seq", "4096", "--memory", "14.56GiB", "--engine", "vllm",
    "--gpu-memory-utilization", "0.85", "--no-enable-prefix-caching", "--vllm-version", "0.30.0",
]  # fmt: skip


def _graphs(doc: dict) -> dict:
    return next(term for term in doc["budget"]["terms"] if term["name"] == "CUDA graphs")


def test_the_published_0_30_log_captures_51_piecewise_and_35_full_graphs() -> None:
    # 256 sequences (a GPU under 70 GiB): sizes up to 512 for PIECEWISE, up to 256 for FULL
    assert len(capture_sizes(256)) == 51
    assert len(full_graph_sizes(256)) == 35


def test_the_estimate_counts_the_full_graphs_a_decode_step_can_take(cli) -> None:
    doc = cli.json(*T4_LOG)
    graphs = _graphs(doc)
    assert graphs["bytes"] == CUDA_GRAPH_FIRST_BYTES + ((51 - 1) + (35 - 1)) * CUDA_GRAPH_EACH_BYTES
    assert "51 PIECEWISE sizes" in graphs["formula"] and "35 FULL sizes up to max_num_seqs 256 * query_len 1" in graphs["formula"]
    # the log's budget: 8.67 GiB, within 2 % of the GPU's 14.56 GiB
    assert abs(doc["budget"]["usable_bytes"] - 8.67 * GiB) < 0.02 * 14.56 * GiB


def test_on_an_h100_every_size_has_both_graphs(cli) -> None:
    # max_num_seqs 1,024: 2 * 1,024 > 512, so the FULL sizes are all 51 (the v0.19-0.21 H100 logs the constants came from)
    doc = cli.json(
        "fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "8192", "--engine", "vllm", "--vllm-version", "0.21.0"
    )
    assert _graphs(doc)["bytes"] == CUDA_GRAPH_FIRST_BYTES + 2 * (51 - 1) * CUDA_GRAPH_EACH_BYTES


@pytest.mark.parametrize(
    ("seqs", "query_len", "expected"),
    [(2, 1, [1, 2]), (2, 4, [4, 8]), (1, 3, [3]), (64, 1, [1, 2, 4, *range(8, 65, 8)])],
)
def test_full_sizes_stop_at_max_num_seqs_times_the_query_length(seqs: int, query_len: int, expected: list[int]) -> None:
    assert full_graph_sizes(seqs, query_len) == expected


@given(st.integers(1, 2048), st.integers(1, 8))
def test_full_sizes_are_capture_sizes_a_decode_step_fills(seqs: int, query_len: int) -> None:
    full = full_graph_sizes(seqs, query_len)
    assert full and set(full) <= set(capture_sizes(seqs, query_len))
    assert all(query_len <= size <= seqs * query_len for size in full)


@given(st.integers(1, 1023))
def test_the_estimate_never_shrinks_with_more_sequences(seqs: int) -> None:
    model = ModelSpec(name="m", layers=2, heads=4, kv_heads=4, head_dim=64, hidden=256, intermediate=512, vocab=1000)

    def graphs(max_num_seqs: int) -> int:
        engine = Engine(name="vllm", vllm_version="0.21.0", max_num_seqs=max_num_seqs)
        result = budget(model, Workload(seq=1024, engine=engine), memory_bytes=80 * GiB)
        return next(term.bytes for term in result.terms if term.name == "CUDA graphs")

    assert graphs(seqs) <= graphs(seqs + 1)
