"""Cold start of kvcalc commands against importing its four dependencies bare, measured in one run.

    python benchmarks/startup.py [--runs 15] [--instructions]

Prints the median wall time of each command over interleaved runs and its ratio to the bare
imports (the issue's floor) and to a minimal pydantic program (import the same four, validate one
three-field model read from YAML, print it as JSON): `import pydantic` alone is lazy and loads
none of pydantic's model machinery, which any program that validates a model pays for.
On a shared machine the ratios are the figures to read, not the absolute times; --instructions
counts each command's instructions once under valgrind's callgrind instead, which the machine's
load does not change.

kvcalc's modules are byte-compiled first, as pip does for an installed wheel and for the four
dependencies: with PYTHONDONTWRITEBYTECODE set, an editable checkout would otherwise compile
every kvcalc module from source on every run.
"""

from __future__ import annotations

import argparse
import compileall
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import kvcalc

ONE_PYDANTIC_MODEL = """
import typer, rich, yaml
from pydantic import BaseModel
class Spec(BaseModel):
    layers: int
    kv_heads: int
    head_dim: int
print(Spec.model_validate(yaml.safe_load("{layers: 32, kv_heads: 8, head_dim: 128}")).model_dump_json())
"""
SIZE = [sys.executable, "-m", "kvcalc", "size", "--model", "llama3-8b", "--seq", "8192"]
COMMANDS = {
    "bare imports": [sys.executable, "-c", "import typer, rich, pydantic, yaml"],
    "one pydantic model": [sys.executable, "-c", ONE_PYDANTIC_MODEL],
    "kvcalc size --json": [*SIZE, "--json"],
    "kvcalc size": SIZE,
    "kvcalc --help": [sys.executable, "-m", "kvcalc", "--help"],
}


def wall_times(runs: int) -> dict[str, float]:
    """Median seconds of each command over `runs` interleaved runs (a busy moment hits every command alike)."""
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def instructions() -> dict[str, float]:
    """Instructions each command executes, counted once by valgrind's callgrind."""
    counts = {}
    for name, command in COMMANDS.items():
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command], capture_output=True, text=True
        )
        counts[name] = float(re.search(r"Collected : (\d+)", run.stderr).group(1))  # type: ignore[union-attr]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--instructions", action="store_true", help="count instructions under valgrind instead")
    args = parser.parse_args()
    compileall.compile_dir(Path(kvcalc.__file__).parent, quiet=1)
    figures = instructions() if args.instructions else wall_times(args.runs)
    scale, unit, label = (1e-6, "M", "instructions") if args.instructions else (1e3, "ms", "median")
    floor, pydantic_floor = figures["bare imports"], figures["one pydantic model"]
    print(f"{'':20} {label:>12}  {'/ bare imports':>14}  {'/ one pydantic model':>20}")
    for name, value in figures.items():
        print(f"{name:20} {value * scale:9.1f} {unit:2}  {value / floor:13.2f}x  {value / pydantic_floor:19.2f}x")


if __name__ == "__main__":
    main()
