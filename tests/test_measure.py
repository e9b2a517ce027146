"""measure on real tensors: CPU always (CI has no GPU), CUDA when one is present."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from kvcalc import Workload, estimate_kv
from kvcalc.errors import DoesNotFit
from kvcalc.measure import bench
from kvcalc.measure.plan import plan_measurement, truncated
from kvcalc.presets import load_model

SMALL = ["--model", "llama3-8b", "--seq", "256", "--batch", "1", "--layers", "2"]
REQUIRED_KEYS = {
    "device", "device_name", "dtype", "layers_measured", "predicted_bytes", "allocated_bytes",
    "copy_bandwidth_bytes_per_s", "predicted_seconds", "measured_seconds", "measured_over_predicted", "repeat_kv_seconds",
}  # fmt: skip


def test_cpu_measure_allocates_exactly_the_prediction(cli) -> None:
    doc = cli.json("measure", "--device", "cpu", *SMALL)
    assert REQUIRED_KEYS <= set(doc)
    # 2 layers x 8 KV heads x (128 + 128) x 256 tokens x 4 B (fp32 on the CPU)
    assert doc["predicted_bytes"] == doc["allocated_bytes"] == 2 * 8 * 256 * 256 * 4
    assert doc["layers_measured"] == 2 and doc["device"] == "cpu" and doc["dtype"] == "fp32"
    for key in (
        "copy_bandwidth_bytes_per_s",
        "predicted_seconds",
        "measured_seconds",
        "repeat_kv_seconds",
        "measured_over_predicted",
    ):
        assert math.isfinite(doc[key]) and doc[key] > 0, key


def test_cpu_measure_variants_and_table(cli) -> None:
    doc = cli.json("measure", "--device", "cpu", *SMALL, "--variants", "mha,gqa,mqa")
    names = [v["variant"] for v in doc["variants"]]
    assert names == ["mha", "gqa", "mqa"]
    by_name = {v["variant"]: v for v in doc["variants"]}
    assert by_name["mha"]["allocated_bytes"] == 4 * by_name["gqa"]["allocated_bytes"] == 32 * by_name["mqa"]["allocated_bytes"]
    for v in doc["variants"]:
        assert REQUIRED_KEYS - {"device", "device_name", "copy_bandwidth_bytes_per_s"} <= set(v)
        assert v["allocated_bytes"] == v["predicted_bytes"]
    table = cli("measure", "--device", "cpu", *SMALL, "--variants", "mha,mqa")
    assert table.exit_code == 0, table.output
    assert "predicted vs allocated" in table.stdout and "mqa over mha" in table.stdout


def test_cpu_measure_sliding_and_mla_shapes(cli) -> None:
    doc = cli.json("measure", "--device", "cpu", "--model", "gemma2-9b", "--seq", "8192", "--layers", "2", "--kv-dtype", "bf16")
    model = truncated(load_model("gemma2-9b"), 2)
    assert doc["allocated_bytes"] == estimate_kv(model, Workload(seq=8192, kv_dtype="bf16")).bytes_per_sequence
    doc = cli.json("measure", "--device", "cpu", "--model", "deepseek-v2-lite", "--seq", "512", "--layers", "2")
    assert doc["allocated_bytes"] == doc["predicted_bytes"] == 2 * 512 * (512 + 64) * 4


def test_plan_shrinks_layers_then_batch_and_scales_prediction() -> None:
    model = load_model("llama3-8b")
    plan = plan_measurement(model, Workload(seq=8192, batch=4), allowed_bytes=300 * 2**20)
    assert plan.model.layers < 32 and plan.notes
    assert plan.cache_bytes == estimate_kv(plan.model, plan.workload).bytes_per_batch
    plan = plan_measurement(model, Workload(seq=8192, batch=64), allowed_bytes=400 * 2**20)
    assert plan.model.layers == 1 and plan.workload.batch < 64


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
