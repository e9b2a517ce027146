"""The memory an engine starts from: a GPU preset's CUDA-visible total, and memory already in use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kvcalc.capacity import CUDA_TOTAL_GAP_BYTES, budget
from kvcalc.presets import list_presets, load_gpu, load_model
from kvcalc.spec import GpuSpec, Workload

GiB = 2**30
LOGS = Path(__file__).parent / "fixtures" / "engine_logs"


def gpu_preset_names() -> list[str]:
    return [entry.name for entry in list_presets("gpus")]


def refused_json(cli, *args: str) -> dict:
    """fit --json of a deployment that does not start: exit 1, the report on stdout."""
    result = cli(*args, "--json")
    assert result.exit_code == 1, result.output
    return json.loads(result.stdout)


# (preset, CUDA's total in bytes, the log that prints it)
CUDA_TOTALS = [
    # "Free memory on device (78.57/79.18 GiB)", vLLM 0.11 on an NVIDIA H100 80GB HBM3
    (
        "h100-sxm",
        85_018_877_624,
        "https://github.com/kolyangg/mlops-assignment/blob/410b9585d5464a90c0fd357d85b1b5ca372a17eb/logs/vllm.log",
    ),
    # "of total memory 139.80084228515625GiB", TensorRT-LLM 1.2.0rc4 on an H200: exact bytes
    (
        "h200",
        150_110_011_392,
        "https://github.com/faradawn/bench3/blob/2d98d588434bfb5d69e117905d4f7566140f9f4d/logs/trtllm-serve-egine.log",
    ),
    # "GPU 1 has 23.56 GiB total", PyTorch on an RTX 3090
    ("rtx3090", 25_297_357_373, "https://github.com/noonghunna/club-3090/pull/708"),
    # "(GPU 0; 22.20 GiB total capacity; ...)", PyTorch on a g5.12xlarge (four A10Gs)
    ("a10g", 23_837_068_493, "https://github.com/XavierXiao/Dreambooth-Stable-Diffusion/issues/18"),
    # "(GPU 0; 23.64 GiB total capacity; ...)", PyTorch on an NVIDIA GeForce RTX 4090 24G
    ("rtx4090", 25_383_256_719, "https://github.com/TMElyralab/MuseTalk/issues/76"),
    # aiconfigurator gb10.yaml: 128,538,451,968 B usable to CUDA (nvidia-smi reports none on GB10)
    ("dgx-spark", 128_538_451_968, "ai-dynamo/aiconfigurator src/aiconfigurator/systems/gb10.yaml@f0f1266"),
]


@pytest.mark.parametrize(("name", "cuda_bytes", "source"), CUDA_TOTALS)
def test_preset_cuda_total_is_the_logged_one(name: str, cuda_bytes: int, source: str) -> None:
    gpu = load_gpu(name)
    assert gpu.cuda_memory_bytes == cuda_bytes
    assert source in (gpu.cuda_memory_source or "")
    assert gpu.cuda_memory_bytes <= gpu.memory_bytes


def test_a_cuda_total_names_its_source() -> None:
    base = load_gpu("h100-sxm").model_dump(exclude_none=True)
    with pytest.raises(ValidationError, match="go together"):
        GpuSpec(**{**base, "cuda_memory_source": None})
    with pytest.raises(ValidationError, match="above memory_bytes"):
        GpuSpec(**{**base, "cuda_memory_bytes": base["memory_bytes"] + 1})


def test_cuda_engines_size_from_the_cuda_total_and_say_so(cli) -> None:
    args = ("fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--seq", "8192")
    for engine in ("vllm", "sglang", "trtllm"):
        found = cli.json(*args, "--engine", engine)["budget"]
        assert found["memory_bytes"] == 85_018_877_624, engine
        assert any("what CUDA reports on a h100-sxm" in line for line in found["explain"]), engine
    assert cli.json(*args, "--engine", "textbook")["budget"]["memory_bytes"] == 85_520_809_984  # nvidia-smi's
    assert cli.json(*args, "--engine", "vllm", "--memory", "79.19GiB")["budget"]["memory_bytes"] == round(79.19 * GiB)
    no_cuda_total = cli.json("fit", "--model", "llama3.1-8b", "--gpu", "a100-80gb-pcie", "--engine", "vllm")["budget"]["explain"]
    assert any("CUDA may report up to 0.86 GiB less" in line for line in no_cuda_total)


def test_the_stated_cuda_gap_is_the_presets_largest() -> None:
    gaps = [g.memory_bytes - g.cuda_memory_bytes for g in map(load_gpu, gpu_preset_names()) if g.cuda_memory_bytes]
    assert max(gaps) == CUDA_TOTAL_GAP_BYTES


def test_sglang_takes_its_fraction_of_the_memory_free_on_a_gb10(cli) -> None:
    # SGLang 0.5.11 on a GB10 that logged "avail mem=112.26 GB" before loading and a 41.60 GiB pool (K + V):
    # https://github.com/jethac/dgx-spark-hijinks/blob/29166059ba96e77d33f60b7fd0e8032a40ab87e4/results/sglang_qwen25_1_5b_bf16auto_040mem_20260608T0409JST_server.log
    case = next(c for c in yaml.safe_load((LOGS / "published.yaml").read_text())["cases"] if "bf16auto_040mem" in c["url"])
    args = ("fit", "--model", "qwen2.5-1.5b", "--gpu", "dgx-spark", "--engine", "sglang", "--mem-fraction-static", "0.4")
    empty = cli.json(*args)["budget"]["usable_bytes"]
    shared = cli.json(*args, "--memory-in-use", case["memory_in_use"])["budget"]["usable_bytes"]
    logged = round(case["logged"]["available_kv_gib"] * GiB)
    assert empty - shared == pytest.approx(0.4 * int(case["memory_in_use"]), abs=1)  # f of what is held
    assert abs(shared - logged) < 0.5 * GiB < 3 * GiB < empty - logged


def test_vllm_refuses_to_start_when_too_little_is_free(cli) -> None:
    args = ("fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "8192")
    result = cli(*args, "--memory-in-use", "20GiB")
    assert result.exit_code == 1
    assert "vLLM refuses to start: free memory on device (59.18/79.18 GiB)" in result.stdout
    assert "--gpu-memory-utilization 0.74 or less starts" in result.stdout
    assert cli(*args, "--memory-in-use", "20GiB", "--gpu-memory-utilization", "0.74").exit_code == 0
    assert cli.json(*args, "--memory-in-use", "1GiB")["budget"]["usable_bytes"] == cli.json(*args)["budget"]["usable_bytes"]


def test_a_refused_start_reports_no_capacity(cli) -> None:
    args = ("fit", "--model", "qwen2.5-0.5b", "--gpu", "h100-sxm", "--engine", "vllm", "--seq", "8192", "--memory-in-use", "7GiB")
    found = refused_json(cli, *args)
    assert found["refused"].startswith("vLLM refuses to start")
    assert (found["max_batch"], found["max_context"], found["max_batch_by_context"], found["engine_log"]) == (0, 0, {}, [])
    shown = cli(*args).stdout
    assert "Available KV cache memory" not in shown and "vLLM refuses to start" in shown


def test_no_utilization_starts_when_almost_nothing_is_free(cli) -> None:
    args = ("fit", "--model", "qwen2.5-0.5b", "--gpu", "h100-sxm", "--engine", "vllm", "--memory-in-use", "78.5GiB")
    refused = refused_json(cli, *args)["refused"]
    assert refused.endswith("no --gpu-memory-utilization starts (even 0.01 asks for more than is free)")
    assert "0 or less" not in refused


@pytest.mark.parametrize("release", ["0.7.3", "0.9.0"])
def test_releases_before_the_start_check_do_not_refuse(cli, release: str) -> None:
    # vllm/v1/worker/gpu_worker.py init_device first checks free memory in the 0.9.1 wheel; V0's worker.py never does
    args = ("fit", "--model", "qwen2.5-0.5b", "--gpu", "h100-sxm", "--engine", "vllm", "--memory-in-use", "20GiB")
    assert cli.json(*args, "--vllm-version", release)["refused"] is None
    assert refused_json(cli, *args, "--vllm-version", "0.9.1")["refused"].startswith("vLLM refuses to start")


def test_llamacpp_places_layers_in_what_is_free(cli) -> None:
    args = ("fit", "--model", "qwen2.5-14b", "--gpu", "rtx3090", "--engine", "llamacpp", "--seq", "8192")
    empty, shared = (json.loads(cli(*args, *more, "--json").stdout)["placement"] for more in ((), ("--memory-in-use", "20GiB")))
    assert (empty["n_gpu_layers"], shared["n_gpu_layers"]) == (40, 3)  # 20 GiB of the 3090's 24 taken: 3 layers fit
    assert shared["devices"][0]["free_bytes"] == empty["devices"][0]["free_bytes"] - 20 * GiB


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-3GiB", "--memory-in-use: size '-3GiB' must not be negative"),
        ("80GiB", "--memory-in-use 85,899,345,920 B must be at least 0 and below the GPU's total 85,018,877,624 B"),
        ("lots", "--memory-in-use: cannot read size 'lots'"),
    ],
)
def test_bad_memory_in_use_is_one_line_and_exit_2(cli, value: str, message: str) -> None:
    result = cli("fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "sglang", "--memory-in-use", value)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_check_plan_states_memory_in_use(cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    row = "{name: shared, model: llama3.1-8b, gpu: h100-sxm, seq: 8192, engine: vllm, memory_in_use: 20GiB, expect: {fits: true}}"
    plan.write_text(f"workloads:\n  - {row}\n")
    result = cli("check", plan)
    assert result.exit_code == 1 and "FAIL shared: fits true" in result.stdout
    assert "FAIL shared: vLLM refuses to start: free memory on device" in result.stdout
    plan.write_text(f"workloads:\n  - {row.replace('20GiB', '20')}\n")
    assert cli("check", plan).exit_code == 2


def test_a_refused_start_fails_max_batch_in_a_plan(cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    row = "{name: busy, model: qwen2.5-0.5b, gpu: h100-sxm, seq: 8192, engine: vllm, memory_in_use: 7GiB, expect: {fits: false, max_batch_at_least: 10}}"
    plan.write_text(f"workloads:\n  - {row}\n")
    found = json.loads(cli("check", plan, "--json").stdout)["workloads"][0]
    assert found["max_batch"] == 0 and found["refused"].startswith("vLLM refuses to start")
    assert [a["name"] for a in found["assertions"] if not a["passed"]] == ["max_batch_at_least"]


def test_a_plans_bad_memory_in_use_names_the_plan_field(cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("workloads:\n  - {name: w, model: llama3.1-8b, gpu: h100-sxm, seq: 8192, memory_in_use: 90GiB}\n")
    result = cli("check", plan)
    assert result.exit_code == 2
    assert "workload 'w': memory_in_use 96,636,764,160 B must be at least 0 and below" in result.stderr
    assert "--memory-in-use" not in result.stderr


@given(
    engine=st.sampled_from(["textbook", "hf", "sglang", "trtllm"]),
    less=st.integers(0, 40 * GiB),
    more=st.integers(0, 40 * GiB),
)
def test_more_memory_in_use_never_leaves_more_kv(engine: str, less: int, more: int) -> None:
    model, work = load_model("llama3.1-8b"), Workload(seq=4096, engine={"name": engine})
    less, more = sorted((less, more))
    gpu = load_gpu("h100-sxm")
    found = [budget(model, work, gpu.memory_bytes, preset=gpu, in_use_bytes=n).usable_bytes for n in (less, more)]
    assert found[1] <= found[0]
