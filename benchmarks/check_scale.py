"""`kvcalc check` on a plan of many workloads against a plan of one, measured in one run.

    python benchmarks/check_scale.py [--workloads 1000] [--runs 5]

Writes two plans in a temporary folder: one workload, and `--workloads` workloads cycling over
models (full attention, sliding windows, MLA, MoE), GPUs, engines (all six, some with their page
and pool options), contexts, batches and tensor/pipeline splits drawn at random (seeded), each with every
expectation. Runs `kvcalc check --json` on each, interleaved (a busy moment hits both alike),
and prints each one's median wall time and the ratio (the goal: at most 4x). The exit code of
check (0 or 1) is not judged; a 2 (a bad plan) stops the script.
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import kvcalc

MODELS = [
    "llama3.1-8b",
    "llama3.1-70b",
    "qwen2.5-7b",
    "gemma3-27b",
    "gemma3-4b",
    "mistral-7b",
    "deepseek-v2-lite",
    "gpt-oss-20b",
    "qwen3-30b-a3b",
]
GPUS = ["h100-sxm", "a100-80gb", "l40s", "rtx4090", "h200"]
ENGINES: list[str | dict[str, object]] = [
    "textbook",
    "hf",
    "vllm",
    {"name": "vllm", "max_num_batched_tokens": 2048},
    "llamacpp",
    {"name": "llamacpp", "swa_full": False},
    "sglang",
    {"name": "sglang", "page_size": 16},
    "trtllm",
]
CONTEXTS = [2048, 8192, 32768]
BATCHES = [1, 4, 16]
SPLITS = [(1, 1), (2, 1), (1, 2)]


def workloads(count: int) -> list[dict[str, object]]:
    """`count` workloads, each a model, GPU, engine, context, batch and split drawn at random (seeded)."""
    rng = random.Random(15)
    result = []
    for i in range(count):
        model, engine, gpu, seq, batch, (tp, pp) = (rng.choice(c) for c in (MODELS, ENGINES, GPUS, CONTEXTS, BATCHES, SPLITS))
        if engine == "llamacpp" or isinstance(engine, dict) and engine["name"] == "llamacpp":
            seq *= batch  # n_ctx is shared by the sequences
        result.append(
            {
                "name": f"w{i}",
                "model": model,
                "gpu": gpu,
                "engine": dict(engine) if isinstance(engine, dict) else engine,  # a copy: YAML writes no aliases
                "seq": seq,
                "batch": batch,
                "tp": tp,
                "pp": pp,
                "expect": {"fits": True, "max_batch_at_least": 1, "max_context_at_least": 1024, "decode_ms_at_most": 100},
            }
        )
    return result


def write_plan(folder: Path, count: int) -> Path:
    """A plan of `count` workloads in `folder`."""
    path = folder / f"plan-{count}.yaml"
    path.write_text(yaml.safe_dump({"workloads": workloads(count)}, sort_keys=False))
    return path


def run(plan: Path) -> float:
    """Seconds `kvcalc check --json` takes on the plan, run from the plan's folder with the kvcalc this
    script imported (PYTHONPATH=/other/checkout measures another); a bad plan (exit 2) stops the script."""
    env = {**os.environ, "PYTHONPATH": str(Path(kvcalc.__file__).parent.parent)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kvcalc", "check", str(plan), "--json"], capture_output=True, text=True, cwd=plan.parent, env=env
    )
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"kvcalc check {plan} exited {done.returncode}: {done.stderr.strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    compileall.compile_dir(Path(kvcalc.__file__).parent, quiet=1)  # as an installed wheel is
    with tempfile.TemporaryDirectory() as tmp:
        one, many = write_plan(Path(tmp), 1), write_plan(Path(tmp), args.workloads)
        times: dict[Path, list[float]] = {one: [], many: []}
        for _ in range(args.runs):
            for plan in (one, many):
                times[plan].append(run(plan))
    small, large = statistics.median(times[one]), statistics.median(times[many])
    print(f"plan of 1 workload:      {small * 1e3:8.1f} ms (median of {args.runs})")
    print(
        f"plan of {args.workloads:,} workloads: {large * 1e3:8.1f} ms ({(large - small) / args.workloads * 1e3:.2f} ms per extra workload)"
    )
    print(f"ratio: {large / small:.2f}x (goal: at most 4x)")


if __name__ == "__main__":
    main()
