"""How well `kvcalc fit` reproduces the published start-up logs of vLLM, SGLang and TensorRT-LLM.

    python scripts/calibration.py            # print each engine's table of cases and errors

The cases live in tests/fixtures/engine_logs/<engine>.yaml, each with its URL, the flags that
reproduce the run and what it logged, and in published.yaml (scripts/import_published_logs.py: logs
no constant was fitted to); tests/test_calibration.py holds each case to the bar, and
scripts/update_docs.py writes these tables into docs/engines.md.

Errors are scored leave-one-source-out: a source (group) is one thread, table or repository of logs.
A constant fitted on a group's logs (IN_SAMPLE) leaves that whole group out of the error an engine
reports as its calibration error (the 90th percentile of the other groups' |errors|, in % of GPU
memory), which each engine module keeps as CALIBRATION_ERROR_PERCENT and `fit` uses for "tight".
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's kvcalc, not an installed one
    sys.path.insert(0, str(ROOT))
LOGS = ROOT / "tests" / "fixtures" / "engine_logs"
ENGINES = ("vllm", "sglang", "trtllm")
# llama.cpp's published start-ups, replayed to the log's MiB by tests/test_llamacpp_{recurrent,swa}_logs.py: they count
# hybrid and sliding-window models through llama.cpp's cache lines, not through a budget
LLAMACPP_LOGS = ("llamacpp_recurrent", "llamacpp_swa")
PRECISION_SUFFIX = re.compile(r"-(bf16|fp16|fp8|nvfp4|awq|gptq|w8a8|w4a16)$")
BAR_PERCENT = 2.0  # of GPU memory, for text-only models
GIB = 2**30
# Groups whose logs fitted a constant, and which: their errors are in-sample, so kept out of the calibration error.
IN_SAMPLE = {
    "llm-d-incubation/llm-d-planner": "vLLM SAMPLER_BYTES_PER_LOGIT, NON_TORCH_BYTES, NON_TORCH_TP_BYTES (v0.19 sweep)",
    "llm-d-incubation/llm-d-planner empirical-vllm-memory-results": (
        "vLLM SAMPLER_BYTES_PER_LOGIT_UNKNOWN_RELEASE, NON_TORCH_NO_CAPTURE_BYTES (the 0.11.0 table)"
    ),
}


def load_cases(engine: str) -> list[dict[str, Any]]:
    """The engine's cases, in the file's order, then its published (held-out) ones."""
    own = yaml.safe_load((LOGS / f"{engine}.yaml").read_text(encoding="utf-8"))
    return own + [case for case in published_cases() if case["engine"]["name"] == engine]


def published_cases() -> list[dict[str, Any]]:
    """The published logs scripts/import_published_logs.py could map, marked as such."""
    path = LOGS / "published.yaml"
    if not path.exists():
        return []
    return [{**case, "published": True} for case in yaml.safe_load(path.read_text(encoding="utf-8"))["cases"]]


def group(case: dict[str, Any]) -> str:
    """The source a case comes from: its `group`, else its thread (owner/repo#N) or repository."""
    if "group" in case:
        return case["group"]
    match = re.match(r"https://github.com/([^/]+/[^/]+)(?:/(?:issues|pull|discussions)/(\d+))?", case["url"])
    assert match, case["url"]
    return match.group(1) + (f"#{match.group(2)}" if match.group(2) else "")


def fit_args(case: dict[str, Any]) -> list[str]:
    """`kvcalc fit` arguments that reproduce the case's run."""
    model = case["model"]
    args = ["fit", "--model", str(LOGS / model) if model.startswith("models/") else model]
    args += ["--seq", str(case["seq"])] if "seq" in case else []
    args += ["--gpu", case["gpu"]] if "gpu" in case else []
    args += ["--memory", case["memory"]] if "memory" in case else []
    for key in ("tp", "pp", "kv_dtype", "weight_dtype", "reserve", "memory_in_use", "block_size", "interconnect"):
        if key in case:
            args += [f"--{key.replace('_', '-')}", str(case[key])]
    options = dict(case["engine"])
    args += ["--engine", options.pop("name")]
    for key, value in options.items():
        flag = key.replace("_", "-")
        args += ([f"--{flag}"] if value else [f"--no-{flag}"]) if isinstance(value, bool) else [f"--{flag}", str(value)]
    return [*args, "--json"]


def predict(case: dict[str, Any]) -> dict[str, Any]:
    """kvcalc's budget for the case: the fit document's budget, with the error against the log."""
    from typer.testing import CliRunner

    from kvcalc.cli import app

    result = CliRunner().invoke(app, fit_args(case), prog_name="kvcalc")
    if result.exit_code not in (0, 1):
        raise RuntimeError(f"{case['name']}: kvcalc {' '.join(fit_args(case))}: {result.output}")
    doc = json.loads(result.stdout)
    budget = doc["budget"]
    logged = round(case["logged"]["available_kv_gib"] * GIB)
    error = budget["usable_bytes"] - logged
    tokens = [line["value"] for line in doc.get("engine_log", []) if line["name"] == "gpu_kv_cache_tokens"]
    return {
        "usable_bytes": budget["usable_bytes"],
        "logged_bytes": logged,
        "error_gib": error / GIB,
        "error_percent": 100 * error / budget["memory_bytes"],
        "vision_bytes": budget["vision_bytes"],
        "kv_tokens": tokens[0] if tokens else None,  # vLLM's "GPU KV cache size" line as kvcalc prints it
    }


def token_line_errors(cases: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    """Each vLLM case that logs its "GPU KV cache size: N tokens" line, with kvcalc's error on it in % of the
    logged tokens (the case replayed as it is scored, at its own budget)."""
    found = []
    for case in cases:
        if case["engine"]["name"] != "vllm" or not case["logged"].get("kv_tokens"):
            continue
        predicted = predict(case)["kv_tokens"]
        if predicted is not None:
            found.append((case, 100 * (predicted / case["logged"]["kv_tokens"] - 1)))
    return found


def counts_the_whole_model(case: dict[str, Any], prediction: dict[str, Any]) -> bool:
    """Whether kvcalc's budget holds every weight the engine loaded: a text-only model, or a multimodal
    one whose model file carries its vision tower (`vision`, the shipped VL presets)."""
    return bool(case.get("text_only")) or prediction["vision_bytes"] > 0


def calibration_error(engine: str) -> float | None:
    """The 90th percentile of |error| (% of GPU memory) over the engine's cases from groups no constant
    was fitted to, rounded up to 0.1 (None without such cases)."""
    held_out = sorted(abs(predict(case)["error_percent"]) for case in load_cases(engine) if group(case) not in IN_SAMPLE)
    if not held_out:
        return None
    return math.ceil(10 * held_out[min(len(held_out) - 1, math.ceil(0.9 * len(held_out)) - 1)]) / 10


def gpu_family(case: dict[str, Any]) -> str:
    """The GPU generation a case ran on, for the summary (from its GPU preset or device)."""
    from kvcalc.gpu_families import sm_family

    return sm_family(case.get("gpu") or case.get("device")) or "unknown"


def loso_summary() -> str:
    """Leave-one-source-out errors by engine, GPU family and tensor parallelism: cases of groups that
    fitted no constant, and the in-sample groups apart."""
    rows = [
        "| engine | GPU family | TP | cases | groups | median abs. error | worst | within 2 % | kvcalc leaves >= 1 GiB more where the engine had < 2 GiB |"
    ]
    rows.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    cells: dict[tuple[str, str, int], list[tuple[str, float, float, float]]] = {}
    for engine in ENGINES:
        for case in load_cases(engine):
            if group(case) in IN_SAMPLE:
                continue
            p = predict(case)
            key = (engine, gpu_family(case), case.get("tp", 1))
            cells.setdefault(key, []).append(
                (group(case), p["error_percent"], p["error_gib"], case["logged"]["available_kv_gib"])
            )
    for (engine, family, tp), found in sorted(cells.items()):
        errors = [abs(e) for _, e, _, _ in found]
        unsafe = sum(gib >= 1 and logged < 2 for _, _, gib, logged in found)
        rows.append(
            f"| {engine} | {family} | {tp} | {len(found)} | {len({g for g, *_ in found})} | {statistics.median(errors):.2f} %"
            f" | {max(errors):.2f} % | {sum(e <= BAR_PERCENT for e in errors)} | {unsafe} |"
        )
    errors = ", ".join(f"{engine} {calibration_error(engine)} %" for engine in ENGINES)
    in_sample = "; ".join(f"{g}: {what}" for g, what in IN_SAMPLE.items())
    return "\n".join(
        [
            *rows,
            "",
            f"Calibration error (90th percentile of the held-out |errors|): {errors}. In-sample groups, left out above: {in_sample}.",
            "",
            coverage(),
        ]
    )


def coverage() -> str:
    """What the published logs cover: how many were collected and how many replay, over which GPUs,
    vLLM releases (a release range that scripts/import_published_logs.py read from a log counts as stated) and TP
    degrees, and how many dense text-only ones land within the bar (the issue's
    "done when"), from published.yaml."""
    from kvcalc.units import parse_engine_version

    doc = yaml.safe_load((LOGS / "published.yaml").read_text(encoding="utf-8"))
    cases = published_cases()
    named = {case["gpu"] for case in cases if "gpu" in case}
    unnamed = {case["memory"] for case in cases if "gpu" not in case}
    releases = set()
    for case in cases:
        if "vllm_version" in case["engine"]:
            releases.add(".".join(map(str, parse_engine_version(case["engine"]["vllm_version"])[:2])))
    vllm = [case for case in cases if case["engine"]["name"] == "vllm"]
    ranged = sum("version_range" in case for case in vllm)
    unstated = sum("vllm_version" not in case["engine"] for case in vllm)
    release_note = (
        f"; {ranged} vLLM logs that state no release replay over the releases their post date and log lines leave"
        if ranged
        else ""
    ) + (f" and {unstated} unstated releases" if unstated else "")
    by_engine = {engine: sum(case["engine"]["name"] == engine for case in cases) for engine in ENGINES}
    dense = [case for case in cases if case["kind"] == "dense" and case.get("text_only")]
    within = sum(abs(predict(case)["error_percent"]) <= BAR_PERCENT for case in dense)
    hybrid_cases = [case for case in cases if case["kind"] in ("hybrid", "sliding")]
    hybrid_models = sorted({counted_model(case["model"]) for case in hybrid_cases})
    token_errors = sorted(abs(error) for _, error in token_line_errors(hybrid_cases))
    token_note = (
        f' vLLM\'s token line ("GPU KV cache size") on the {len(token_errors)} of them that log it: median |error|'
        f" {statistics.median(token_errors):.1f} %, worst {token_errors[-1]:.0f} %."
        if token_errors
        else ""
    )
    return (
        f"Published logs: {len(cases) + len(doc['unmapped'])} collected, {len(cases)} replay"
        f" ({', '.join(f'{n} {engine}' for engine, n in by_engine.items() if n)}; {len({group(c) for c in cases})} sources)"
        f" on {len(named)} GPU models ({', '.join(sorted(named))}) and {len(unnamed)} GPUs known by their logged total, vLLM {', '.join(sorted(releases, key=lambda r: tuple(map(int, r.split('.')))))}"
        f"{release_note}, TP {', '.join(map(str, sorted({c.get('tp', 1) for c in cases})))}; {len(hybrid_cases)} cases of {len(hybrid_models)} hybrid or sliding-window models, misses included ({', '.join(hybrid_models)})."
        f"{token_note} Dense text-only: {within} of {len(dense)} within {BAR_PERCENT:g} % of GPU memory.\n\n"
        f"{hybrid_coverage(hybrid_cases)}"
    )


def counted_model(model: str) -> str:
    """A case's model as the coverage counts it: its preset or model file's name less a precision suffix, so
    a checkpoint's bf16 and fp8 copies count once (models/qwen3.6-27b-fp8.yaml is qwen3.6-27b)."""
    return PRECISION_SUFFIX.sub("", Path(model).name.removesuffix(".yaml"))


def llamacpp_cases() -> list[dict[str, Any]]:
    """The published llama.cpp start-ups of tests/fixtures/engine_logs/llamacpp_{recurrent,swa}.yaml."""
    return [case for name in LLAMACPP_LOGS for case in yaml.safe_load((LOGS / f"{name}.yaml").read_text(encoding="utf-8"))]


def exercises_window_or_state(case: dict[str, Any]) -> bool:
    """Whether a case tests a model's window or state, not only its full-attention layers: a serving engine's
    budget of a hybrid or sliding-window model (kind); a llama.cpp log that prints a recurrent state (rs) or an
    SWA cache of fewer cells than the non-SWA one (not a build without an SWA cache, a window as large as n_ctx,
    or an excerpt that stops before the SWA cache)."""
    logged = case["logged"]
    if "kind" in case:
        return case["kind"] in ("hybrid", "sliding")
    if "rs" in logged:
        return True
    return "swa" in logged and "full" in logged and logged["swa"]["cells"] < logged["full"]["cells"]


def counts_toward_coverage(case: dict[str, Any]) -> bool:
    """The one rule of both sides: a case that exercises its model's window or state and that kvcalc reproduces
    (a documented `miss` is left out, and a table `quoted` from a page rather than logged)."""
    return exercises_window_or_state(case) and "miss" not in case and "quoted" not in case


def covered_models(cases: list[dict[str, Any]]) -> dict[str, set[bool]]:
    """Each model the counted cases reach, with whether they have a public URL (True) or only an index id (False)."""
    found: dict[str, set[bool]] = {}
    for case in filter(counts_toward_coverage, cases):
        found.setdefault(counted_model(case["model"]), set()).add(bool(case.get("url")))
    return found


def hybrid_coverage(hybrid_cases: list[dict[str, Any]]) -> str:
    """How many hybrid or sliding-window models the published cases of all engines cover, one rule for every
    engine (counts_toward_coverage), and on what sources those models rest."""
    serving_cases = [case for case in hybrid_cases if counts_toward_coverage(case)]
    llamacpp_logs = [case for case in llamacpp_cases() if counts_toward_coverage(case)]
    serving, llamacpp = covered_models(serving_cases), covered_models(llamacpp_logs)
    models = {name: serving.get(name, set()) | llamacpp.get(name, set()) for name in serving | llamacpp}
    only_llamacpp = sorted(set(llamacpp) - set(serving))
    by_url = sorted(name for name, urls in models.items() if urls == {True})
    by_id = sorted(name for name, urls in models.items() if urls == {False})
    reached = {counted_model(case["model"]) for case in [*hybrid_cases, *llamacpp_cases()]}
    left_out = sorted(reached - set(models))
    return (
        f"Hybrid or sliding-window models whose window or state a published case exercises and kvcalc reproduces, all"
        f" engines: {len(models)} ({len(serving)} through vLLM/SGLang/TRT-LLM budgets: {len(serving_cases)} cases;"
        f" {len(llamacpp)} through llama.cpp's cache lines: {len(llamacpp_logs)} logs that print a recurrent state or an"
        f" SWA cache smaller than the full one; {len(only_llamacpp)} of them only there: {', '.join(only_llamacpp)})."
        f" Documented misses and tables quoted from a page are left out on both sides. {len(by_url)} of the"
        f" {len(models)} rest only on cases with a public URL, {len(by_id)} only on stored copies known by index id"
        f" ({', '.join(by_id)}), {len(models) - len(by_url) - len(by_id)} on both. Not counted: {', '.join(left_out)}"
        " (their cases miss, are a table quoted from a page, or test no window: a build without an SWA cache, a window"
        " as large as n_ctx, an excerpt that stops before it). A checkpoint's precision variants count once; a llama.cpp log run"
        " on a stand-in preset counts as that preset."
    )


def table(engine: str) -> str:
    """A Markdown table of the engine's cases (logged and predicted KV memory, the error in GiB and
    in % of GPU memory, why a case misses) and a line of median and worst errors; "summary": the
    leave-one-source-out errors by engine, GPU family and TP."""
    if engine == "summary":
        return loso_summary()
    rows = ["| case | logged KV | kvcalc | error | % of GPU | note |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    errors, text_only = [], []
    for case in load_cases(engine):
        p = predict(case)
        errors.append(abs(p["error_percent"]))
        if case.get("text_only"):
            text_only.append(abs(p["error_percent"]))
        note = case.get("miss", "") or ("" if counts_the_whole_model(case, p) else "multimodal: the vision tower is not counted")
        note = ("held out (published); " if case.get("published") else "") + note
        rows.append(
            f"| [{case['name']}]({case['url']}) | {case['logged']['available_kv_gib']:.2f} GiB | {p['usable_bytes'] / GIB:.2f} GiB"
            f" | {p['error_gib']:+.2f} GiB | {p['error_percent']:+.2f} | {note} |"
        )
    within = sum(e <= BAR_PERCENT for e in text_only)
    summary = (
        f"{len(errors)} cases: median |error| {statistics.median(errors):.2f} % of GPU memory, worst {max(errors):.2f} %."
        f" Text-only models: median {statistics.median(text_only):.2f} %, worst {max(text_only):.2f} %,"
        f" {within} of {len(text_only)} within {BAR_PERCENT:g} %."
    )
    return "\n".join([*rows, "", summary])


def main() -> int:
    for engine in (*ENGINES, "summary"):
        print(f"## {engine}\n\n{table(engine)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
