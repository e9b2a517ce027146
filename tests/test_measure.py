"""measure on real tensors: CPU always (CI has no GPU), CUDA when one is present."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from kvcalc import Workload, estimate_kv
from kvcalc.compare import derive, parse_variant
from kvcalc.errors import DoesNotFit
from kvcalc.measure import bench
from kvcalc.measure.plan import plan_measurement, plan_variants, truncated
from kvcalc.presets import load_model

SMALL = ["--model", "llama3-8b", "--seq", "256", "--batch", "1", "--layers", "2"]
REQUIRED_KEYS = {
    "device", "device_name", "copy_bandwidth_bytes_per_s", "read_bandwidth_bytes_per_s", "judged", "why", "variants",
}  # fmt: skip
VARIANT_KEYS = {
    "dtype", "layers_measured", "predicted_bytes", "allocated_bytes", "predicted_seconds", "measured_seconds",
    "measured_over_predicted", "repeat_kv_seconds", "fastest_over_predicted",
}  # fmt: skip
RUN_KEYS = {"device", "device_name", "copy_bandwidth_bytes_per_s", "read_bandwidth_bytes_per_s", "judged", "why"}


def test_cpu_measure_allocates_exactly_the_prediction(cli) -> None:
    doc = cli.json("measure", "--device", "cpu", *SMALL)
    [variant] = doc["variants"]
    # issue 23 item 13: the run's fields and the variants, the first variant no longer repeated at the top level
    assert REQUIRED_KEYS <= set(doc) and VARIANT_KEYS <= set(variant) and not VARIANT_KEYS & set(doc)
    assert doc["version"] == 3
    # 2 layers x 8 KV heads x (128 + 128) x 256 tokens x 4 B (fp32 on the CPU)
    assert variant["predicted_bytes"] == variant["allocated_bytes"] == 2 * 8 * 256 * 256 * 4
    assert variant["layers_measured"] == 2 and doc["device"] == "cpu" and variant["dtype"] == "fp32"
    for key in ("copy_bandwidth_bytes_per_s", "read_bandwidth_bytes_per_s"):
        assert math.isfinite(doc[key]) and doc[key] > 0, key
    for key in ("predicted_seconds", "measured_seconds"):
        assert math.isfinite(variant[key]) and variant[key] > 0, key
    # every figure the verdict rests on is in the document, sampled in interleaved rounds
    names = {f["name"] for f in variant["figures"]} | {f["name"] for f in doc["run_figures"]}
    assert {"hot sdpa", "hot grouped", "step sdpa", "step grouped", "read sdpa", "read grouped", "copy"} <= names
    assert all(f["samples"] == 10 for f in variant["figures"] if f["name"] != "step repeat_kv")  # the naive path: 3 runs
    assert_verdict(doc)


def assert_verdict(doc: dict) -> None:
    """A judged run has its ratios and no reason against it; an unjudged one says why and prints no ratio."""
    assert isinstance(doc["judged"], bool) and doc["tolerance"] == pytest.approx(4 / 3)
    for v in doc["variants"]:
        assert v["fastest_seconds"] == min(
            v[path]["steady"] for path in ("sdpa", "grouped", "repeat_kv")
        )  # repeat_kv can win (MQA, busy CPU)
        if doc["judged"]:
            assert doc["why"] == []
            assert v["measured_over_predicted"] == pytest.approx(v["measured_seconds"] / v["predicted_seconds"])
            assert v["fastest_over_predicted"] >= 3 / 4  # beating the roofline by more than the tolerance is never judged
        else:
            assert doc["why"] and v["measured_over_predicted"] is None and v["fastest_over_predicted"] is None


def test_cpu_measure_variants_and_table(cli) -> None:
    doc = cli.json("measure", "--device", "cpu", *SMALL, "--variants", "mha,gqa,mqa")
    names = [v["variant"] for v in doc["variants"]]
    assert names == ["mha", "gqa", "mqa"]
    by_name = {v["variant"]: v for v in doc["variants"]}
    assert by_name["mha"]["allocated_bytes"] == 4 * by_name["gqa"]["allocated_bytes"] == 32 * by_name["mqa"]["allocated_bytes"]
    for v in doc["variants"]:
        assert VARIANT_KEYS <= set(v)
        assert v["allocated_bytes"] == v["predicted_bytes"]
    assert_verdict(doc)
    # the read bandwidth is one figure for the run: its samples come from every variant's rounds
    read = next(f for f in doc["run_figures"] if f["name"] == "read sdpa")
    assert read["samples"] == 3 * 10
    table = cli("measure", "--device", "cpu", *SMALL, "--variants", "mha,mqa")
    assert table.exit_code == 0, table.output
    assert "predicted vs allocated" in table.stdout and "mqa over mha" in table.stdout
    assert ("judged: every figure" in table.stdout) != ("cannot judge this run" in table.stdout)


def test_sliding_layers_hold_the_window_in_bf16() -> None:
    """gemma2's sliding layers keep min(s, 4096) tokens: allocated for real, as the core predicts."""
    model = truncated(load_model("gemma2-9b"), 2)
    work = Workload(seq=8192, kv_dtype="bf16")
    plan = plan_measurement(model, work, allowed_bytes=2**30)
    cache = bench.Cache()
    allocated = bench.allocate(plan, torch.device("cpu"), cache)
    assert [k.shape[2] for k, _ in cache.layers] == [4096, 8192] and cache.layers[0][0].dtype == torch.bfloat16
    assert allocated == plan.cache_bytes == estimate_kv(model, work).bytes_per_sequence
    cache.release()


def test_cpu_measure_mla_latent(cli) -> None:
    [variant] = cli.json("measure", "--device", "cpu", "--model", "deepseek-v2-lite", "--seq", "512", "--layers", "2")["variants"]
    assert variant["allocated_bytes"] == variant["predicted_bytes"] == 2 * 512 * (512 + 64) * 4
    assert (
        variant["kv_heads"] == 0 and variant["flops"] == 2 * 16 * (576 + 512) * 512 * 2
    )  # absorbed: q.k over r + rope, p.v over r


def test_plan_shrinks_layers_then_batch_and_scales_prediction() -> None:
    model = load_model("llama3-8b")
    plan = plan_measurement(model, Workload(seq=8192, batch=4), allowed_bytes=300 * 2**20)
    assert plan.model.layers < 32 and plan.notes
    assert plan.cache_bytes == estimate_kv(plan.model, plan.workload).bytes_per_batch
    plan = plan_measurement(model, Workload(seq=8192, batch=64), allowed_bytes=400 * 2**20)
    assert plan.model.layers == 1 and plan.workload.batch < 64


def test_common_shape_says_why_layers_were_cut() -> None:
    model = load_model("llama3-8b")
    variants = [(name, derive(model, parse_variant(name))) for name in ("mha", "mqa")]
    plans = plan_variants(variants, Workload(seq=8192, batch=4, kv_dtype="fp32"), 4 * 2**30, 8)
    assert [plan.model.layers for _, plan in plans] == [2, 2]  # MHA's 8 layers of 4 GiB do not fit 4 GiB with scratch
    assert plans[1][1].notes == ["measuring 2 of 32 layers (so that every variant fits 4.00 GiB at one shape)"]
    plans = plan_variants(variants, Workload(seq=256, kv_dtype="fp32"), 4 * 2**30, 8)
    assert plans[0][1].notes == plans[1][1].notes == ["measuring 8 of 32 layers (--layers)"]


def test_more_layers_than_the_model_has_are_noted() -> None:
    plan = plan_measurement(load_model("llama3-8b"), Workload(seq=256, kv_dtype="fp32"), 2**30, max_layers=100)
    assert plan.model.layers == 32 and plan.notes == ["--layers 100 is more than the 32 layers of llama3-8b: measuring all 32"]


def test_request_larger_than_allowed_is_refused_cleanly(cli) -> None:
    result = cli("measure", "--device", "cpu", "--model", "llama3-8b", "--seq", "8192", "--max-memory", "1MiB")
    assert result.exit_code == 1
    assert "nothing was allocated" in result.stderr and "Traceback" not in result.output
    with pytest.raises(DoesNotFit):
        plan_measurement(load_model("llama3-8b"), Workload(seq=8192), allowed_bytes=2**20)


def test_out_of_memory_during_allocation_releases_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    model = truncated(load_model("llama3-8b"), 4)
    plan = plan_measurement(model, Workload(seq=64, kv_dtype="fp32"), allowed_bytes=2**30)
    real_randn, calls = torch.randn, []

    def failing_randn(*args, **kwargs):  # the third tensor fails as a real allocator would
        calls.append(args)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_randn(*args, **kwargs)

    monkeypatch.setattr(bench.torch, "randn", failing_randn)
    cache = bench.Cache()
    with pytest.raises(DoesNotFit, match="out of memory .* every tensor was released"):
        with bench.oom_guard(cache, torch.device("cpu")):
            bench.allocate(plan, torch.device("cpu"), cache)
    assert cache.layers == []


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--device", "cpu", "--model", "llama3-8b", "--kv-dtype", "q4_0"], "measure times fp32, fp16, bf16 caches, not q4_0"),
        (["--device", "cpu", "--model", "llama3-8b", "--variants", "mha,xyz"], "unknown variant 'xyz'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--device", "cuda:x"], "unknown device 'cuda:x'"),
        (["--device", "cpu", "--seq", "0"], "token count '0' must be at least 1 token"),
        (["--device", "cpu", "--layers", "0"], "--layers must be a positive integer"),
    ],
)
def test_bad_measure_input(cli, args: list, expected: str) -> None:
    result = cli("measure", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_flag_without_cuda(cli) -> None:
    result = cli("measure", "--gpu", *SMALL)
    assert result.exit_code == 2
    assert "no CUDA device is available; use --device cpu" in result.stderr
    # A fresh process imports torch itself: a torch without numpy must not add its warning to the one line.
    fresh = subprocess.run([sys.executable, "-m", "kvcalc", "measure", "--gpu"], capture_output=True, text=True)
    assert fresh.returncode == 2 and len(fresh.stderr.strip().splitlines()) == 1, fresh.stderr


def test_missing_torch_names_the_extra(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    result = cli("measure", "--device", "cpu", *SMALL)
    assert result.exit_code == 2
    assert 'pip install "kvcalc[measure]"' in result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_measure_allocates_exactly(cli) -> None:
    doc = cli.json("measure", "--gpu", "--model", "llama3-8b", "--seq", "4096", "--batch", "2", "--variants", "mha,gqa,mqa")
    for v in doc["variants"]:
        assert v["allocated_bytes"] == v["predicted_bytes"]
        assert v["measured_seconds"] > 0 and v["sdpa_backend"] != "unknown"
    assert doc["device"] == "cuda"
    assert_verdict(doc)
    assert {f["name"] for f in doc["variants"][0]["figures"]} >= {"hot bmm", "step sdpa", "step grouped"}
