"""measure --tp N: real ranks (gloo on the CPU), each allocating its shard as `fit --tp N` predicts per GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from kvcalc import Workload
from kvcalc.documents import SCHEMAS
from kvcalc.kvcache import batch_bytes
from kvcalc.measure import bench
from kvcalc.measure.plan import plan_measurement, truncated
from kvcalc.presets import load_model

SMALL = ["--device", "cpu", "--model", "llama3-8b", "--seq", "256", "--layers", "2"]


def test_tp2_ranks_allocate_their_shards_on_cpu(cli) -> None:
    doc = cli.json("measure", *SMALL, "--tp", "2")
    # per rank: 2 layers x 4 of llama3-8b's 8 KV heads x (128 + 128) x 256 tokens x 4 B (fp32)
    shard = 2 * 4 * 256 * 256 * 4
    assert shard == batch_bytes(truncated(load_model("llama3-8b"), 2), Workload(seq=256, kv_dtype="fp32", tp=2)).per_gpu
    assert doc["tp"] == 2 and [r["rank"] for r in doc["ranks"]] == [0, 1]
    for rank in doc["ranks"]:
        assert rank["predicted_bytes"] == rank["allocated_bytes"] == shard and rank["bytes_difference"] == 0
        assert rank["all_reduce_bytes"] == 2 * 4096 * 4  # one (1, 32 x 128) fp32 attention output per layer
        assert rank["decode_seconds"] > 0 and rank["all_reduce_seconds"] > 0 and rank["decode"]["runs"] == 10
        assert rank["threads"] == max(1, (os.cpu_count() or 1) // 2)
    summary = doc["tp_summary"]
    assert summary["predicted_bytes"] == summary["allocated_bytes"] == 2 * shard and summary["every_rank_exact"]
    assert summary["step_seconds"] == pytest.approx(summary["decode_seconds"] + summary["all_reduce_seconds"])
    assert doc["variants"][0]["kv_heads"] == 4 and doc["variants"][0]["predicted_bytes"] == shard  # rank 0's shard
    assert doc["judged"] == all(r["judged"] for r in doc["ranks"])


def test_tp_beyond_the_kv_heads_replicates_them(cli, tmp_path: Path) -> None:
    """An MQA model on 2 ranks: each keeps the one KV head whole (as vLLM does), so each holds the full cache."""
    model = tmp_path / "mqa.yaml"
    model.write_text("name: tiny-mqa\nlayers: 2\nheads: 4\nkv_heads: 1\nhead_dim: 64\n")
    doc = cli.json("measure", "--device", "cpu", "--model", str(model), "--seq", "128", "--tp", "2")
    for rank in doc["ranks"]:
        assert (
            rank["predicted_bytes"] == rank["allocated_bytes"] == 2 * 1 * 128 * 128 * 4
        )  # layers x head x (64+64) x tokens x 4 B


@pytest.mark.parametrize(
    "model, tp, per_rank",
    [
        ("llama3-8b", 4, 2 * 2 * 256 * 256 * 4),  # 8 KV heads split 4 ways
        ("llama3-8b", 16, 2 * 1 * 256 * 256 * 4),  # 16 > 8 KV heads: one replicated head each
        ("deepseek-v2-lite", 2, 2 * 256 * (512 + 64) * 4),  # the MLA latent, replicated on every rank
    ],
)
def test_shard_allocation_matches_fit_per_gpu(model: str, tp: int, per_rank: int) -> None:
    spec = truncated(load_model(model), 2)
    work = Workload(seq=256, kv_dtype="fp32", tp=tp)
    plan = plan_measurement(spec, work, allowed_bytes=2**30)
    assert plan.cache_bytes == batch_bytes(spec, work).per_gpu == per_rank
    cache = bench.Cache()
    assert bench.allocate(plan, torch.device("cpu"), cache) == per_rank
    q = bench._query(plan, cache, torch.device("cpu"))
    assert q.shape[1] == spec.heads // tp  # the rank's query heads
    bench.grouped_step(q, cache)  # the shard's shapes run through decode
    cache.release()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--tp", "3"], "--tp 3 does not divide the 32 attention heads of llama3-8b"),
        (["--tp", "0"], "--tp must be a positive integer"),
        (["--tp", "2", "--variants", "mha,gqa"], "--tp measures one model at a time: drop --variants"),
        (["--tp", "1024"], "--tp 1024 is more CPU ranks than this machine runs sensibly"),
    ],
)
def test_bad_tp(cli, args: list[str], expected: str) -> None:
    result = cli("measure", *SMALL, *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_tp_on_cuda_takes_a_bare_device(cli) -> None:
    result = cli("measure", "--device", "cuda:1", "--tp", "2")
    assert result.exit_code == 2 and "--tp 2 puts rank r on cuda:r: give --device cuda, not cuda:1" in result.stderr


SITE = """
import atexit, os, resource
if os.environ.get("{marker}") and os.environ.get("RANK") == "1":
    limit = os.environ.get("KVCALC_TEST_RANK1_DATA")
    if limit:  # private memory for what a small run needed, and little more
        resource.setrlimit(resource.RLIMIT_DATA, (int(limit), resource.getrlimit(resource.RLIMIT_DATA)[1]))
    else:  # record what a small run needed, once it has freed its tensors
        def record():
            with open("/proc/self/status") as status, open(os.environ["KVCALC_TEST_DATA"], "w") as out:
                out.write(next(line for line in status if line.startswith("VmData:")).split()[1])
        atexit.register(record)
"""


def _run_tp(tmp_path: Path, marker: str, seq: int, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, marker: "1", "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "kvcalc", "measure", "--device", "cpu", "--tp", "2", "--layers", "2", "--json"]
    return subprocess.run(
        [*argv, "--seq", str(seq), "--batch", "2"], env=env | extra_env, capture_output=True, text=True, timeout=300
    )


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"{marker}=1".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_DATA (Linux 4.7+)")
def test_out_of_memory_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    """Rank 1 really runs out of memory allocating its 512 MiB shard: RLIMIT_DATA, set in that process
    only, caps its private memory as if another process had taken the rest after it planned (measure
    plans within RLIMIT_AS, not RLIMIT_DATA). One line, exit 1, and no rank process is left."""
    marker = f"KVCALC_TEST_{uuid.uuid4().hex}"
    (tmp_path / "sitecustomize.py").write_text(SITE.format(marker=marker))
    data_file = tmp_path / "data"
    small = _run_tp(tmp_path, marker, 256, {"KVCALC_TEST_DATA": str(data_file)})
    assert small.returncode == 0, small.stderr
    assert json.loads(small.stdout)["ranks"][1]["allocated_bytes"] == 2 * 4 * 256 * 256 * 4 * 2
    needed = int(data_file.read_text()) * 1024  # rank 1's private memory after a small run, tensors freed
    # seq 32768, batch 2: 2 layers x 4 KV heads x 256 x 32768 x 2 x 4 B = 512 MiB per rank, after a 128 MiB
    # bandwidth buffer; 256 MiB above the small run's leaves the shard short by half
    result = _run_tp(tmp_path, marker, 32768, {"KVCALC_TEST_RANK1_DATA": str(needed + 256 * 2**20)})
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    printed = json.loads(result.stdout)  # --json: "does not fit" is an answer, printed as a document
    assert printed["fits"] is False and printed["reason"] == line.removeprefix("Error: ")
    assert SCHEMAS["measure"].model_validate(printed).model_dump(mode="json") == printed
    assert line.startswith("Error: rank 1 of 2: out of memory on cpu while allocating"), line
    assert line.endswith("every rank was stopped and its memory released"), line
    assert _processes_with(marker) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_parent_stops_every_rank(signum: int) -> None:
    """The ranks run in their own sessions (a Ctrl-C reaches the parent only): a SIGTERM or SIGHUP to the
    parent stops them before the parent dies of it, rather than leaving them running (about 1.4 GB each on CUDA)."""
    marker = f"KVCALC_TEST_{uuid.uuid4().hex}"
    argv = [sys.executable, "-m", "kvcalc", "measure", *SMALL, "--tp", "2", "--json"]
    parent = subprocess.Popen(argv, env={**os.environ, marker: "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while len(_processes_with(marker)) < 3 and parent.poll() is None:  # the parent and its two ranks
            time.sleep(0.05)
        assert parent.poll() is None, "the run ended before both ranks started"
        parent.send_signal(signum)
        assert parent.wait(timeout=60) == -signum  # it dies of the signal, as it would have
        assert _processes_with(marker) == []  # and no rank outlives it
    finally:
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.gpu
@pytest.mark.skipif(bench.cuda_devices() < 2, reason="needs two CUDA devices")
def test_tp2_on_two_gpus_with_nccl(cli) -> None:
    doc = cli.json("measure", "--gpu", "--model", "llama3-8b", "--seq", "4096", "--batch", "2", "--tp", "2")
    assert [r["device"] for r in doc["ranks"]] == ["cuda:0", "cuda:1"]
    for rank in doc["ranks"]:  # bf16: 32 layers x 4 KV heads x 256 x 4096 x 2 sequences x 2 B
        assert rank["predicted_bytes"] == rank["allocated_bytes"] == 32 * 4 * 256 * 4096 * 2 * 2


def test_torchrun_launches_the_ranks_and_rank_0_reports_them_all() -> None:
    # issue 23 item 16: users with several machines check shards with the launcher they use; here two
    # local ranks on gloo (torchrun's env:// rendezvous), each one `kvcalc measure --tp 2` process
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "kvcalc", "measure", *SMALL, "--tp", "2", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "GLOO_SOCKET_IFNAME": "lo"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(run.stdout)  # one document: the other rank prints nothing
    shard = 2 * 4 * 256 * 256 * 4  # as test_tp2_ranks_allocate_their_shards_on_cpu
    assert doc["tp"] == 2 and [r["rank"] for r in doc["ranks"]] == [0, 1]
    assert all(r["predicted_bytes"] == r["allocated_bytes"] == shard for r in doc["ranks"])
    assert doc["tp_summary"]["every_rank_exact"]


def test_a_launch_of_another_size_than_tp_is_refused(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    launch = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    for name, value in launch.items():
        monkeypatch.setenv(name, value)
    result = cli("measure", *SMALL, "--tp", "4")
    assert result.exit_code == 2 and "the launcher started 2 ranks and --tp says 4: give --tp 2" in result.stderr
    monkeypatch.setenv("LOCAL_RANK", "two")
    result = cli("measure", *SMALL, "--tp", "2")
    assert result.exit_code == 2 and "must be integers" in result.stderr


def test_kvcalcs_own_workers_are_not_a_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    from kvcalc.measure.launched import launched

    # kvcalc's runner gives its workers RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, never LOCAL_RANK
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert launched() is None
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched() is not None and launched().rank == 1 and not launched().primary  # type: ignore[union-attr]
