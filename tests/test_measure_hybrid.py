"""measure on hybrid models: each state layer's conv and recurrent state allocated as `size` counts it, to the byte."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kvcalc import Workload
from kvcalc.kvcache import batch_bytes
from kvcalc.measure import bench
from kvcalc.measure.plan import plan_measurement
from kvcalc.presets import load_model

PRESETS = Path(__file__).parent / "fixtures" / "presets"
HYBRID = PRESETS / "tiny-hybrid.yaml"  # 8 layers: (mamba2, mlp, mamba2, full) twice
DELTANET = PRESETS / "tiny-deltanet.yaml"  # 6 layers: (gated_deltanet, gated_deltanet, full) twice
# Mamba-2, vLLM's MambaStateShapeCalculator: conv ((d_inner + 2*G*N)/tp, k-1), ssm (H/tp, P, N); bf16
MAMBA2_LAYER = ((128 + 2 * 2 * 16) * 3 + 8 * 16 * 16) * 2  # 5,248 B per sequence at tp 1
# Gated DeltaNet: conv ((2*Hk*dk + Hv*dv)/tp, k-1), recurrent (Hv/tp, dv, dk); bf16
DELTANET_LAYER = ((2 * 2 * 16 + 4 * 16) * 3 + 4 * 16 * 16) * 2  # 2,816 B per sequence at tp 1
FULL_LAYER = 2 * 2 * 32 * 4  # K and V of 2 heads x 32 in fp32: 512 B per token


@pytest.mark.parametrize(
    "model, kv, state",
    [
        (HYBRID, 2 * 64 * FULL_LAYER, 4 * MAMBA2_LAYER),  # 2 full layers; 4 Mamba-2 layers; 2 mlp layers hold nothing
        (DELTANET, 2 * 64 * FULL_LAYER, 4 * DELTANET_LAYER),
    ],
)
def test_state_allocated_as_predicted(model: Path, kv: int, state: int) -> None:
    spec = load_model(str(model))
    plan = plan_measurement(spec, Workload(seq=64, batch=2, kv_dtype="fp32"), allowed_bytes=2**30)
    assert (plan.cache_bytes, plan.state_bytes) == (2 * kv, 2 * state)
    assert plan.cache_bytes + plan.state_bytes == batch_bytes(spec, plan.workload).per_gpu  # as `size` counts them
    cache = bench.Cache()
    assert bench.allocate(plan, torch.device("cpu"), cache) == 2 * kv
    assert bench.allocate_state(plan, torch.device("cpu"), cache) == 2 * state
    assert len(cache.layers) == 2 and len(cache.states) == 2 * 4  # a conv and a recurrent tensor per state layer
    assert {t.dtype for t in cache.states} == {torch.bfloat16}
    cache.release()


def test_measure_hybrid_reports_kv_and_state(cli) -> None:
    doc = cli.json("measure", "--device", "cpu", "--model", str(HYBRID), "--seq", "64", "--batch", "2")
    v = doc["variants"][0]
    assert v["predicted_kv_bytes"] == v["allocated_kv_bytes"] == 2 * 2 * 64 * FULL_LAYER
    assert v["predicted_state_bytes"] == v["allocated_state_bytes"] == 2 * 4 * MAMBA2_LAYER
    assert v["predicted_bytes"] == v["allocated_bytes"] and v["bytes_difference"] == 0
    assert v["kv_heads"] == 2 and v["layers_measured"] == 8
    assert any("reads the KV cache only" in note for note in v["notes"])


def test_tp2_splits_the_state_and_replicates_a_single_group(cli, tmp_path: Path) -> None:
    """One Mamba-2 group at --tp 2 is replicated on both ranks (vLLM's extra_groups_for_head_shards):
    conv ((128 + 2*2*16)/2, 3), ssm (8/2, 16, 16) per rank, more than half of tp 1's (128 + 2*1*16, 3)."""
    model = tmp_path / "one-group.yaml"
    model.write_text(HYBRID.read_text().replace("groups: 2", "groups: 1").replace("name: tiny-hybrid", "name: one-group"))
    doc = cli.json("measure", "--device", "cpu", "--model", str(model), "--seq", "64", "--tp", "2")
    per_rank_layer = ((128 + 2 * 2 * 16) // 2 * 3 + 4 * 16 * 16) * 2
    assert per_rank_layer > ((128 + 2 * 16) * 3 + 8 * 16 * 16) * 2 // 2
    per_rank = 2 * 64 * FULL_LAYER // 2 + 4 * per_rank_layer  # KV heads split 1 per rank
    for rank in doc["ranks"]:
        assert rank["predicted_bytes"] == rank["allocated_bytes"] == per_rank
    assert doc["tp_summary"]["every_rank_exact"] and doc["tp_summary"]["allocated_bytes"] == 2 * per_rank


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--layers", "3"], "--layers 3 holds no attention layer of tiny-hybrid to time: give at least 4"),
        (["--tp", "4"], "--tp 4 does not divide the 2 Mamba-2 groups of tiny-hybrid"),
    ],
)
def test_hybrid_bad_input(cli, args: list[str], expected: str) -> None:
    result = cli("measure", "--device", "cpu", "--model", str(HYBRID), "--seq", "64", *args)
    assert result.exit_code == 2 and expected in result.stderr, result.output


def test_a_model_without_attention_is_refused(cli, tmp_path: Path) -> None:
    model = tmp_path / "all-mamba.yaml"
    model.write_text(HYBRID.read_text().replace("[mamba2, mlp, mamba2, full]", "[mamba2]").replace("tiny-hybrid", "all-mamba"))
    result = cli("measure", "--device", "cpu", "--model", str(model), "--seq", "64")
    assert result.exit_code == 2 and "all-mamba has no attention layer" in result.stderr
