"""llama.cpp's sliding-window (iSWA) caches against published start-up logs
(tests/fixtures/engine_logs/llamacpp_swa.yaml: each case with where it was found, its build, its flags
and the cells, layers and MiB of each cache its log prints). kvcalc must hold the logged cells in each
cache and print the logged MiB to the log's two decimals."""

from __future__ import annotations

import json
import re

import pytest

from kvcalc import presets
from tests.llamacpp_logs import case_id, kv_cache_lines, load_cases, logged_mib, where_found
from tests.scripts import load_script

CASES = load_cases("llamacpp_swa")
# which of kvcalc's layer groups each logged cache holds: llama_kv_cache_iswa's non-SWA cache the full
# layers, its SWA cache the sliding and chunked ones (LLAMA_SWA_TYPE_CHUNKED); builds without iSWA one cache of all
CACHE_KINDS = {"full": {"full"}, "swa": {"sliding", "chunked"}, "all": {"full", "sliding", "chunked"}}


def kvcalc_caches(cli, case: dict) -> dict[str, dict]:
    """kvcalc's cells, layers and bytes for each cache the case logs, from `size --json`'s layer groups;
    layers that reuse another layer's KV (shared) hold no cells and are left out, as llama.cpp filters them."""
    kv = cli.json("size", "--model", case["model"], "--engine", "llamacpp", *case["flags"])["kv"]
    caches = {}
    for cache in case["logged"]:
        groups = [group for group in kv["groups"] if group["kind"] in CACHE_KINDS[cache] and not group["shared"]]
        caches[cache] = {
            "cells": {group["tokens_held"] for group in groups},
            "layers": sum(group["layers"] for group in groups),
            "bytes": sum(group["bytes_per_sequence"] for group in groups) * kv["allocation_units"],
        }
    return caches


def test_every_case_names_where_it_was_found_and_what_it_logged() -> None:
    for case in CASES:
        assert where_found(case), case["name"]
        assert set(case["logged"]) in ({"full", "swa"}, {"all"}, {"full"}), case["name"]  # {"full"}: an excerpt cut short
        assert all(set(cache) == {"cells", "layers", "mib"} for cache in case["logged"].values()), case["name"]
        assert ("--swa-full" in case["flags"]) != ("--no-swa-full" in case["flags"]), case["name"]  # the log's own choice


EXACT = [case for case in CASES if "miss" not in case]
MISSES = [case for case in CASES if "miss" in case]


@pytest.mark.parametrize("case", EXACT, ids=case_id)
def test_kvcalc_holds_the_logged_cells_and_mib_of_each_cache(cli, case: dict) -> None:
    for cache, predicted in kvcalc_caches(cli, case).items():
        logged = case["logged"][cache]
        assert predicted["cells"] == {logged["cells"]}, cache
        assert predicted["layers"] == logged["layers"], cache
        assert logged_mib(predicted["bytes"]) == f"{logged['mib']:.2f}", cache


@pytest.mark.parametrize("case", MISSES, ids=case_id)
def test_a_documented_miss_still_misses(cli, case: dict) -> None:
    # a case kvcalc cannot reproduce says why (`miss`); should kvcalc learn its build's rule, move it to the exact ones
    predicted = kvcalc_caches(cli, case)
    assert any(predicted[cache]["cells"] != {logged["cells"]} for cache, logged in case["logged"].items())


LINE_CASES = [case for case in [*CASES, *load_cases("llamacpp_recurrent")] if kv_cache_lines(case["log"]) and "miss" not in case]


@pytest.mark.parametrize("case", LINE_CASES, ids=case_id)
def test_fit_prints_the_kv_cache_lines_as_llama_cpp_logs_them(cli, case: dict) -> None:
    result = cli("fit", "--model", case["model"], "--gpu", "h100-sxm", "--engine", "llamacpp", *case["flags"], "--json")
    assert result.exit_code in (0, 1), result.output
    ours = kv_cache_lines("\n".join(log["line"] for log in json.loads(result.stdout)["engine_log"]))
    logged = kv_cache_lines(case["log"])
    assert [line for line in ours if line in logged] == logged  # every line the log prints, in its order


def test_the_kv_cache_lines_are_the_whole_cache(cli) -> None:
    args = ("fit", "--model", "gpt-oss-20b", "--gpu", "h100-sxm", "--engine", "llamacpp", "--seq", "8192")
    names = [log["name"] for log in cli.json(*args)["engine_log"]]
    assert names == ["full_kv_cache_cells", "full_kv_cache_mib", "swa_kv_cache_cells", "swa_kv_cache_mib"]
    two_gpus = cli.json(*args, "--tp", "2")["engine_log"]  # -sm layer: the same cache, its layers on two devices
    assert [log["line"] for log in two_gpus] == [log["line"] for log in cli.json(*args)["engine_log"]]
    dsa = ("fit", "--model", "deepseek-v3.2", "--memory", "2000GiB", "--engine", "llamacpp", "--seq", "8192")
    assert cli.json(*dsa)["engine_log"] == []  # its indexer keys are a cache of their own (llama_kv_cache_dsa)
    mla = cli.json("fit", "--model", "deepseek-v2-lite", "--gpu", "h100-sxm", "--engine", "llamacpp", "--seq", "8192")
    assert mla["engine_log"][0]["line"].endswith("K (f16):  243.00 MiB, V (f16):    0.00 MiB")  # a K-only latent row


def test_the_swa_cache_line_says_its_formula_with_its_values(cli) -> None:
    args = ("fit", "--model", "gpt-oss-20b", "--gpu", "h100-sxm", "--engine", "llamacpp", "--seq", "131072", "--no-swa-full")
    notes = {log["name"]: log["note"] for log in cli.json(*args, "--batch", "4", "--kv-unified")["engine_log"]}
    assert notes["swa_kv_cache_cells"].startswith(
        "PAD256(min(n_ctx_seq 131072, W 128 * 4 + n_ubatch 512)) = 1024 cells per stream"
    )
    notes = {log["name"]: log["note"] for log in cli.json(*args, "--batch", "4")["engine_log"]}
    assert notes["swa_kv_cache_cells"].startswith("PAD256(min(n_ctx_seq 32768, W 128 * 1 + n_ubatch 512)) = 768 cells per stream")
    assert ", 4 streams (n_seq_max 4)," in notes["swa_kv_cache_cells"]


def test_llama_server_and_the_library_default_differ_and_kvcalc_takes_the_librarys(cli) -> None:
    # libllama's llama_context_default_params() keeps swa_full = true (LM Studio's gpt-oss-120b case logs it);
    # llama-server's common/common.h has swa_full = false: kvcalc's default is the library's, --no-swa-full the server's
    (case,) = [case for case in CASES if case["name"].startswith("gpt-oss-120b, LM Studio")]
    flags = [flag for flag in case["flags"] if flag != "--swa-full"]
    default = kvcalc_caches(cli, {**case, "flags": flags})
    assert default == kvcalc_caches(cli, case)
    server = kvcalc_caches(cli, {**case, "flags": [*flags, "--no-swa-full"]})
    assert server["swa"]["cells"] == {768}  # PAD256(128 + 512): what llama-server would have allocated


def test_the_coverage_counts_a_model_only_through_cases_that_exercise_its_window_or_state() -> None:
    calibration = load_script("scripts/calibration.py")
    logs = {case["name"]: case for case in calibration.llamacpp_cases()}
    counted = {name for name, case in logs.items() if calibration.counts_toward_coverage(case)}
    gemma2 = next(name for name in logs if name.startswith("Gemma-2-2B"))  # its SWA cache is n_ctx: no window tested
    pre_iswa = next(name for name in logs if name.startswith("Gemma-3-1B"))  # a build without an SWA cache
    excerpt = next(name for name in logs if logs[name]["model"] == "gemma3n-e4b")  # stops before the SWA cache
    quoted = [name for name, case in logs.items() if "quoted" in case]
    missed = [name for name, case in logs.items() if "miss" in case]
    assert not {gemma2, pre_iswa, excerpt, *quoted, *missed} & counted
    assert all(name in counted for name, case in logs.items() if "rs" in case["logged"])  # every recurrent state logged
    serving = [  # the serving side under the same rule: a documented miss is left out there too
        {"model": "gpt-oss-20b", "kind": "sliding", "url": "https://a", "logged": {}},
        {"model": "phi3-mini-4k", "kind": "sliding", "url": "https://b", "logged": {}, "miss": "off by 2.3 %"},
        {"model": "llama3-8b", "kind": "dense", "url": "https://c", "logged": {}},
    ]
    assert calibration.covered_models(serving) == {"gpt-oss-20b": {True}}
    models = calibration.covered_models(calibration.llamacpp_cases())
    assert models["gemma3-4b"] == {False} and models["qwen3.5-9b"] == {True, False}  # index id only; both
    line = calibration.hybrid_coverage(serving)
    total = len(set(models) | {"gpt-oss-20b"})
    assert line.startswith(f"Hybrid or sliding-window models whose window or state a published case exercises and kvcalc"
                           f" reproduces, all engines: {total} (1 through vLLM/SGLang/TRT-LLM budgets: 1 cases;")  # fmt: skip
    assert "Documented misses and tables quoted from a page are left out on both sides." in line
    merged = {**models, "gpt-oss-20b": models["gpt-oss-20b"] | {True}}  # its serving case has a URL
    assert f"{sum(urls == {False} for urls in merged.values())} only on stored copies known by index id" in line
    assert "phi3-mini-4k" in line.split("Not counted: ")[1]
    assert calibration.counted_model("models/qwen3.6-27b-fp8.yaml") == calibration.counted_model("qwen3.6-27b")


def test_llama_cpp_runs_the_windows_of_phi3_and_mistral_as_full_layers(cli) -> None:
    # llama.cpp keeps a window only where an architecture's hparams set swa_type: Phi-3's are switched off
    # (n_swa = 0, PR #13676) and Mistral converts to the llama architecture, which reads none
    # (kvcalc.engines.llamacpp.LLAMACPP_WINDOWED_ARCHITECTURES): one cache of n_ctx cells, --no-swa-full or not
    for model, mib in (("phi3-mini-4k", "1536.00"), ("mistral-7b-v0.1", " 512.00")):
        args = ("fit", "--model", model, "--engine", "llamacpp", "--no-swa-full", "--seq", "4096", "--memory", "80GiB")
        (line,) = cli.json(*args)["engine_log"]
        assert line["name"] == "kv_cache_mib"
        assert line["line"].startswith(f"llama_kv_cache: size = {mib} MiB (  4096 cells,  32 layers,  1/1 seqs)")
        kv = cli.json("size", "--model", model, "--engine", "llamacpp", "--no-swa-full", "--seq", "4096")["kv"]
        assert {group["kind"] for group in kv["groups"]} == {"full"}
        assert {group["kind"] for group in cli.json("size", "--model", model, "--seq", "4096")["kv"]["groups"]} == {"sliding"}
    explain = cli("size", "--model", "phi3-mini-4k", "--engine", "llamacpp", "--seq", "4096", "--explain")
    assert "llama.cpp gives phi3 no sliding window (swa_type none)" in explain.stdout


def test_a_model_that_names_no_architecture_keeps_its_window_under_llama_cpp(cli, tmp_path) -> None:
    # absent `architecture`: the documented default, the layers as declared
    text = (presets.shipped_presets_dir() / "models" / "phi3-mini-4k.yaml").read_text()
    path = tmp_path / "phi3-copy.yaml"
    path.write_text(re.sub(r"(?m)^architecture:.*\n", "", text).replace("name: phi3-mini-4k", "name: phi3-copy"))
    kv = cli.json("size", "--model", str(path), "--engine", "llamacpp", "--no-swa-full", "--seq", "4096")["kv"]
    assert {group["kind"] for group in kv["groups"]} == {"sliding"}
    from_config = cli.json(  # config.json's model_type is the architecture
        "size", "--model", "tests/fixtures/hf/phi3-mini-4k-config.json", "--engine", "llamacpp", "--no-swa-full", "--seq", "4096"
    )["kv"]
    assert {group["kind"] for group in from_config["groups"]} == {"full"}


@pytest.mark.parametrize("entry", presets.list_presets("models"), ids=lambda entry: entry.name)
def test_every_windowed_preset_names_its_architecture(entry) -> None:
    # llama.cpp's window rule reads it: a windowed preset without one would keep a window llama.cpp may not have
    model = entry.spec
    if model.sliding_window is not None or model.attention_chunk_size is not None:
        assert model.architecture is not None, entry.name


def test_llama_cpp_caches_f16_whatever_the_checkpoints_dtype(cli) -> None:
    # -ctk and -ctv default to f16 (common/common.h), an fp32 checkpoint's cache too; --kv-dtype fp32 asks for f32
    args = ("fit", "--model", "olmo2-7b", "--engine", "llamacpp", "--seq", "4096", "--memory", "80GiB")
    (line,) = cli.json(*args)["engine_log"]
    assert line["line"].endswith("K (f16): 1024.00 MiB, V (f16): 1024.00 MiB")
    (line,) = cli.json(*args, "--kv-dtype", "fp32")["engine_log"]
    assert line["line"].endswith("K (f32): 2048.00 MiB, V (f32): 2048.00 MiB")
    kv = cli.json("size", "--model", "gpt2", "--engine", "llamacpp", "--seq", "1024")["kv"]
    assert kv["bytes_per_token"] == 12 * 2 * 768 * 2  # 12 layers, K and V, 768 wide, 2 B each
    assert cli.json("size", "--model", "gpt2", "--seq", "1024")["kv"]["bytes_per_token"] == 12 * 2 * 768 * 4  # textbook: fp32


def test_every_architecture_kvcalc_names_is_one_model_type_list() -> None:
    # spec.MODEL_TYPES is the one list `architecture` is checked against: what hf_config reads and the
    # architectures llama.cpp gives a window (src/llama-model.cpp 00342301, src/models/olmo2.cpp, afmoe.cpp) sit inside it
    from kvcalc.engines.llamacpp import LLAMACPP_WINDOWED_ARCHITECTURES
    from kvcalc.hf_config import SUPPORTED
    from kvcalc.spec import MODEL_TYPES

    assert LLAMACPP_WINDOWED_ARCHITECTURES <= MODEL_TYPES
    assert set(SUPPORTED) <= MODEL_TYPES
    assert {"exaone4", "olmo3", "afmoe", "smallthinker"} <= LLAMACPP_WINDOWED_ARCHITECTURES


@pytest.mark.parametrize(
    ("architecture", "expected"),
    [("Gemma2", "'Gemma2' is not a config.json model_type kvcalc knows (model_types are lower case, without spaces"),
     ("gemma 2", "'gemma 2' is not a config.json model_type kvcalc knows (model_types are lower case, without spaces"),
     ("gemma_2", "'gemma_2' is not a config.json model_type kvcalc knows: one of ")],
)  # fmt: skip
def test_an_architecture_kvcalc_does_not_know_is_refused(cli, tmp_path, architecture: str, expected: str) -> None:
    # a present-but-invalid value is an error: a typo would otherwise drop Gemma 2's windows under llama.cpp
    text = (presets.shipped_presets_dir() / "models" / "gemma2-9b.yaml").read_text()
    path = tmp_path / "gemma2-typo.yaml"
    path.write_text(re.sub(r"(?m)^architecture:.*$", f"architecture: {architecture}", text))
    result = cli("size", "--model", str(path), "--engine", "llamacpp", "--seq", "4096")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"{path}: architecture: " in line and expected in line
