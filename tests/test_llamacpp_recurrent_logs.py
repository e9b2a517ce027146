"""llama.cpp's recurrent state and KV cache against published start-up logs of hybrid models
(tests/fixtures/engine_logs/llamacpp_recurrent.yaml: each case with where it was found, its build,
its flags and the MiB its log prints). kvcalc must print the same MiB to the log's two decimals."""

from __future__ import annotations

import json
import re
from math import prod

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc import Workload, estimate_kv
from kvcalc.presets import load_model
from kvcalc.spec import Engine
from tests.llamacpp_logs import case_id, load_cases, logged_mib, where_found

CASES = load_cases("llamacpp_recurrent")


def conv_and_recurrent_bytes(kv: dict) -> tuple[int, int]:
    """kvcalc's state bytes split into llama.cpp's R (conv, n_embd_r) and S (recurrent, n_embd_s) parts:
    every state layer keeps the same rows of each, so the split follows each group's element counts."""
    per_row = [
        (group["layers"] * prod(group["conv_shape_per_gpu"]), group["layers"] * prod(group["recurrent_shape_per_gpu"]))
        for group in kv["state_groups"]
    ]
    conv, recurrent = (sum(part) for part in zip(*per_row, strict=True))
    total = kv["state_bytes_per_batch"]
    r = total * conv // (conv + recurrent)
    return r, total - r


def test_every_case_names_where_it_was_found_and_what_it_logged() -> None:
    for case in CASES:
        assert where_found(case), case["name"]
        assert "rs" in case["logged"], case["name"]
        assert set(case["logged"]) <= {"kv", "rs", "r", "s"}, case["name"]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_kvcalc_prints_the_logged_recurrent_state_and_kv_cache(cli, case: dict) -> None:
    kv = cli.json("size", "--model", case["model"], "--engine", "llamacpp", *case["flags"])["kv"]
    logged = case["logged"]
    assert all(group["conv_dtype"] == group["recurrent_dtype"] == "fp32" for group in kv["state_groups"])  # type_r = type_s = f32
    assert logged_mib(kv["state_bytes_per_batch"]) == f"{logged['rs']:.2f}"
    if "kv" in logged:
        assert logged_mib(kv["bytes_per_batch"]) == f"{logged['kv']:.2f}"
    if "r" in logged:
        r, s = conv_and_recurrent_bytes(kv)
        assert (logged_mib(r), logged_mib(s)) == (f"{logged['r']:.2f}", f"{logged['s']:.2f}")


def recurrent_line(log: str) -> str | None:
    """The log's own "llama_memory_recurrent: size = ..." line, from the function name on, if it prints one whole."""
    found = re.search(r"llama_memory_recurrent: size = .*S \(f32\): +[\d.]+ MiB", log)
    return found.group(0) if found else None


LINE_CASES = [case for case in CASES if recurrent_line(case["log"])]


@pytest.mark.parametrize("case", LINE_CASES, ids=case_id)
def test_fit_prints_the_recurrent_line_as_llama_cpp_logs_it(cli, case: dict) -> None:
    result = cli("fit", "--model", case["model"], "--gpu", "h100-sxm", "--engine", "llamacpp", *case["flags"], "--json")
    assert result.exit_code == 0, result.output
    (line,) = [log["line"] for log in json.loads(result.stdout)["engine_log"] if log["name"] == "recurrent_state_mib"]
    logged = recurrent_line(case["log"])
    assert logged is not None
    if "rs_seq" not in logged:  # builds before n_rs_seq print "N seqs)" alone
        line = re.sub(r" +\d+ rs_seq", "", line)
    if "gguf_layers" in case:  # the GGUF's n_layer counts its MTP layer
        line = line.replace(f" {load_model(case['model']).layers} layers", f" {case['gguf_layers']} layers")
    assert "".join(line.split()) == "".join(logged.split())  # some pages print the line without its padding


def test_kvcalc_refuses_the_sequence_count_llama_cpp_refuses(cli) -> None:
    (case,) = [case for case in CASES if "refused_above" in case]
    limit = case["refused_above"]
    result = cli("size", "--model", case["model"], "--engine", "llamacpp", "--seq", "16384", "--batch", str(limit + 44))
    assert result.exit_code == 2 and f"llama.cpp runs at most {limit} sequences" in result.stderr
    assert cli("size", "--model", case["model"], "--engine", "llamacpp", "--seq", "16384", "--batch", str(limit)).exit_code == 0


@given(st.integers(1, 256), st.integers(0, 8), st.integers(256, 300_000), st.booleans())
def test_llamacpp_state_is_rows_of_one_sequence_whatever_the_context(batch: int, n_rs_seq: int, seq: int, unified: bool) -> None:
    # src/llama-memory-recurrent.cpp: r_l, s_l have max(1, n_seq_max) * (1 + n_rs_seq) rows, whatever n_ctx or kv_unified
    model = load_model("qwen3.5-9b")
    one = estimate_kv(model, Workload(seq=256, batch=1, engine=Engine(name="llamacpp"))).state_bytes_per_batch
    engine = Engine(name="llamacpp", kv_unified=unified, n_rs_seq=n_rs_seq)
    kv = estimate_kv(model, Workload(seq=max(seq, batch), batch=batch, engine=engine))
    assert kv.state_bytes_per_batch == batch * (1 + n_rs_seq) * one


def _recurrent_line(cli, *args: str) -> str:
    doc = cli.json(
        "fit", "--model", "qwen3.5-9b", "--gpu", "h100-sxm", "--engine", "llamacpp", "--seq", "8192", "--batch", "4", *args
    )
    (line,) = [log["line"] for log in doc["engine_log"] if log["name"] == "recurrent_state_mib"]
    return line


def test_the_recurrent_line_is_the_whole_models_state_on_several_gpus(cli) -> None:
    # llama.cpp splits layers across GPUs (-sm layer, -ts), not heads, and logs the whole model's state: the 2-GPU
    # Qwen3.5-27B case in llamacpp_recurrent.yaml logs the same 598.50 MiB a one-GPU run of its flags gives
    one = _recurrent_line(cli)
    assert "size =  201.00 MiB" in one  # 24 state layers * 4 rows: R 9.00 + S 192.00, as the b9849 -np 4 log prints
    assert _recurrent_line(cli, "--tp", "2") == one  # --pp is refused: llama.cpp has no pipeline stages


def test_n_rs_seq_is_refused_on_a_model_without_state_layers(cli) -> None:
    result = cli("size", "--model", "llama3-8b", "--engine", "llamacpp", "--seq", "4096", "--n-rs-seq", "2")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "Error: --n-rs-seq 2: llama3-8b has no recurrent-state layers, so llama.cpp keeps no rows to roll back"
    ]
    assert cli("size", "--model", "llama3-8b", "--engine", "llamacpp", "--seq", "4096", "--n-rs-seq", "0").exit_code == 0


def test_help_and_explain_say_which_architectures_keep_rollback_rows(cli) -> None:
    assert "Only the architectures llama.cpp's llm_arch_supports_rs_rollback lists keep them" in cli.help("size")
    result = cli("size", "--model", "qwen3.5-9b", "--engine", "llamacpp", "--seq", "8192", "--n-rs-seq", "2", "--explain")
    assert result.exit_code == 0, result.output
    explained = " ".join(result.stdout.split())
    assert "for any other hybrid llama_context clamps n_rs_seq to 0" in explained
    assert "the server checkpoints the state to host memory instead" in explained
