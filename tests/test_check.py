"""`kvcalc check`: plan files, pass/fail exit codes, and bad plans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES

PLAN = FIXTURES / "check" / "kv-budget.yaml"


def test_readme_plan_passes(cli) -> None:
    doc = cli.json("check", PLAN)
    assert doc["passed"] is True and doc["version"] == 1
    chat = doc["workloads"][0]
    # llama3-8b at 8192 tokens: 1 GiB per sequence, 16 sequences = 16 GiB (test_golden); 55 fit on h100-sxm.
    assert chat["kv_bytes_per_gpu"] == 16 * 2**30 and chat["max_batch"] == 55
    ours = doc["workloads"][1]
    # our-13b: 40 layers x 8 KV heads x 256 values x 1 B (fp8) x 16384 tokens x 4 sequences / tp 2
    assert ours["model"] == "our-13b" and ours["kv_bytes_per_gpu"] == 40 * 8 * 256 * 16384 * 4 // 2


def _plan(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(body)
    return path


def test_failed_assertion_exits_1_and_says_which(cli, tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        "workloads:\n  - {name: big, model: llama3-8b, gpu: l4, seq: 8192, batch: 8, expect: {max_batch_at_least: 8, fits: true}}\n",
    )
    result = cli("check", plan)
    assert result.exit_code == 1
    assert "FAIL big: max_batch_at_least 8" in result.stdout and "fits true" in result.stdout
    assert "0 of 1 workloads pass" in result.stdout
    doc = cli("check", plan, "--json")
    assert doc.exit_code == 1 and '"passed": false' in doc.stdout


def test_decode_and_kv_limits(cli, tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        "workloads:\n  - name: fast\n    model: llama3-8b\n    gpu: h100-sxm\n    seq: 8192\n"
        "    expect: {decode_ms_at_most: 5.0, kv_bytes_at_most: 1073741824}\n",
    )
    result = cli("check", plan, "--json")
    assertions = {a["name"]: a for a in __import__("json").loads(result.stdout)["workloads"][0]["assertions"]}
    assert assertions["kv_bytes_at_most"]["passed"] is True  # exactly 1 GiB
    assert assertions["decode_ms_at_most"]["passed"] is False  # 5.11 ms (test_golden)
    assert result.exit_code == 1


@pytest.mark.parametrize(
    "body, expected",
    [
        ("workloads: []\n", "workloads: List should have at least 1 item"),
        (
            "workloads:\n  - {name: a, model: llama3-8b, gpu: h100-sxm, seq: 8, expect: {fitz: true}}\n",
            "workloads.0.expect.fitz: unknown field; did you mean 'fits'?",
        ),
        ("workloads:\n  - {name: a, model: llama3-8b, seq: 8}\n", "needs gpu or memory"),
        (
            "workloads:\n  - {name: a, model: llama3-8b, memory: 80GiB, seq: 8, expect: {decode_ms_at_most: 3}}\n",
            "decode_ms_at_most needs a gpu",
        ),
        (
            "workloads:\n  - {name: a, model: llama3-8b, gpu: h100-sxm, seq: 0}\n",
            "workloads.0.seq: Input should be greater than 0",
        ),
        ("workloads:\n  - {name: a, model: llama3-8b, gpu: h100-sxm, seq: 8, kv_dtype: fp9}\n", "unknown dtype 'fp9'"),
        ("workloads:\n  - {name: a, model: llama3-8b, memory: 80XB, seq: 8}\n", "cannot read size '80XB'"),
        (
            "workloads:\n  - {name: a, model: llama3-8b, gpu: h100-sxm, seq: 8, utilization: 1.5}\n",
            "utilization: Input should be less than or equal to 1",
        ),
        ("workloads:\n  - {name: a, model: llama9, gpu: h100-sxm, seq: 8}\n", "workload 'a': unknown model 'llama9'"),
        ("workloads:\n  - {name: a, model: llama3-8b, gpu: h100-sxm, seq: 8, tp: 3}\n", "workload 'a': --tp 3 does not divide"),
        (
            "presets: [./nowhere]\nworkloads:\n  - {name: a, model: llama3-8b, gpu: h100-sxm, seq: 8}\n",
            "'./nowhere' is neither a file nor a folder",
        ),
        ("- just a list\n", "expected a mapping of fields, found a list"),
    ],
)
def test_bad_plans_exit_2(cli, tmp_path: Path, body: str, expected: str) -> None:
    result = cli("check", _plan(tmp_path, body))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "plan.yaml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_missing_plan_file(cli, tmp_path: Path) -> None:
    result = cli("check", tmp_path / "none.yaml")
    assert result.exit_code == 2 and "no such plan file" in result.stderr


def test_workload_engine_by_name_or_with_options(cli, tmp_path: Path) -> None:
    # vLLM reserves cdiv(min(4095 + max_num_batched_tokens, 8192), 16) + 1 blocks per sliding layer of gemma2-9b;
    # on an L40S (below 70 GiB) max_num_batched_tokens defaults to 2048: 385 blocks.
    body = (
        "workloads:\n"
        "  - {name: a, model: gemma2-9b, gpu: l40s, seq: 8192, engine: vllm}\n"
        "  - {name: b, model: gemma2-9b, gpu: l40s, seq: 8192, engine: {name: llamacpp, swa_full: false}}\n"
    )
    doc = cli.json("check", _plan(tmp_path, body))
    per_layer = 2 * 8 * 256 * 2
    assert doc["workloads"][0]["kv_bytes_per_gpu"] == 21 * per_layer * (385 * 16 + 8192)
    assert doc["workloads"][1]["kv_bytes_per_gpu"] == 21 * per_layer * (4608 + 8192)
    bad = cli(
        "check",
        _plan(tmp_path, "workloads:\n  - {name: c, model: llama3-8b, gpu: l40s, seq: 8, engine: {name: hf, swa_full: false}}\n"),
    )
    assert bad.exit_code == 2 and "--swa-full applies to --engine llamacpp, not hf" in bad.stderr


def test_context_beyond_max_positions_warns(cli, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "workloads:\n  - {name: long, model: llama3-8b, gpu: h100-sxm, seq: 100000}\n")
    result = cli("check", plan, "--json")
    assert result.exit_code == 0
    assert "workload 'long': context 100,000 exceeds llama3-8b's max positions 8,192" in result.stderr
    assert json.loads(result.stdout)["workloads"][0]["warnings"][0].startswith("context 100,000 exceeds")


def test_memory_without_a_unit_says_to_add_one(cli, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "workloads:\n  - {name: a, model: llama3-8b, memory: 80, seq: 8192}\n")
    result = cli("check", plan)
    assert result.exit_code == 2 and "write a size with its unit, e.g. 80GiB or 80GB" in result.stderr


def test_piped_table_is_not_cut_to_80_columns() -> None:
    """CI logs are no terminal: Rich would cut names and figures to fit 80 columns."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run(
        [sys.executable, "-m", "kvcalc", "check", str(PLAN)], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "our-13b-long" in out and "decode/token" in out and "…" not in out


@pytest.mark.parametrize(
    "field, expected",
    [
        ("utilization: true", "utilization: expected a number, got true"),
        ("expect: {kv_bytes_at_most: true}", "expect.kv_bytes_at_most: expected a number, got true"),
        ("memory: true", "memory: write a size with its unit, e.g. 80GiB or 80GB"),
        ("expect: {fits: 1}", "expect.fits: Input should be a valid boolean"),
        ("expect: {decode_ms_at_most: .inf}", "expect.decode_ms_at_most: Input should be a finite number"),
        ("expect: {fits: 'yes'}", "expect.fits: Input should be a valid boolean"),
        ("batch: '8'", "batch: Input should be a valid integer"),
        ("batch: 8.0", "batch: Input should be a valid integer"),
        ("utilization: '0.9'", "utilization: Input should be a valid number"),
        ("expect: {max_batch_at_least: '4'}", "expect.max_batch_at_least: Input should be a valid integer"),
        (
            "engine: {name: vllm, max_num_batched_tokens: 8192.0}",
            "engine.max_num_batched_tokens: Input should be a valid integer",
        ),
    ],
)
def test_plan_types_are_strict(cli, tmp_path: Path, field: str, expected: str) -> None:
    """One rule for every plan field, as for `fits`: a number is a number, not "8" or (for an integer) 8.0."""
    plan = _plan(tmp_path, f"workloads:\n  - {{name: a, model: llama3-8b, gpu: h100-sxm, seq: 8, {field}}}\n")
    result = cli("check", plan)
    assert result.exit_code == 2 and expected in result.stderr


def test_a_plan_names_models_by_hugging_face_repo_id(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`model: org/name` resolves as --model does: a repo id, unless that path exists relative to the plan."""
    from .test_sources_hub import cache_repo

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_repo(tmp_path / "hub", "meta-llama/Meta-Llama-3-8B")
    (tmp_path / "plans" / "org").mkdir(parents=True)
    (tmp_path / "plans" / "org" / "name").write_text((FIXTURES / "check" / "presets" / "our-13b.yaml").read_text())
    plan = _plan(
        tmp_path / "plans",
        "workloads:\n"
        "  - {name: hub, model: meta-llama/Meta-Llama-3-8B, memory: 80GiB, seq: 8192, batch: 2}\n"
        "  - {name: file, model: org/name, memory: 80GiB, seq: 8192}\n",
    )
    hub, file = cli.json("check", plan)["workloads"]
    assert hub["model"] == "meta-llama/Meta-Llama-3-8B" and hub["kv_bytes_per_gpu"] == 2 * 2**30  # 1 GiB a sequence
    assert file["model"] == "our-13b"
    missing = _plan(tmp_path / "plans", "workloads:\n  - {name: x, model: org/other.yaml, memory: 80GiB, seq: 8}\n")
    result = cli("check", missing)
    assert result.exit_code == 2 and "org/other.yaml: no such file" in result.stderr


def test_a_workload_without_expect_must_fit(cli, tmp_path: Path) -> None:
    # issue 23 item 9: a plan that sets no `expect` passed a workload that does not fit ("pass" beside
    # "fits: no", exit 0). llama3-8b's 16.06 GB of bf16 weights do not fit a 16 GiB card's 90 %.
    plan = _plan(tmp_path, "workloads:\n  - {name: tight, model: llama3-8b, memory: 16GiB, seq: 8192}\n")
    result = cli("check", plan, "--json")
    assert result.exit_code == 1
    [workload] = json.loads(result.stdout)["workloads"]
    assert workload["fits"] is False and workload["passed"] is False
    assert [(a["name"], a["limit"], a["passed"]) for a in workload["assertions"]] == [("fits", True, False)]


def test_a_plan_may_expect_a_workload_not_to_fit(cli, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "workloads:\n  - {name: tight, model: llama3-8b, memory: 16GiB, seq: 8192, expect: {fits: false}}\n")
    result = cli("check", plan)
    assert result.exit_code == 0, result.stdout
