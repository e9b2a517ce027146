"""Cold start of kvcalc commands against importing its four dependencies bare, measured in one run.

    python benchmarks/startup.py [--runs 15]

Prints the median wall time of each command over interleaved runs and its ratio to the bare
imports (the issue's floor) and to a minimal pydantic program (import the same four, validate one
three-field model read from YAML, print it as JSON): `import pydantic` alone is lazy and loads
none of pydantic's model machinery, which any program that validates a model pays for.
On a shared machine the ratios are the figures to read, not the absolute times.

kvcalc's modules are byte-compiled first, as pip does for an installed wheel and for the four
dependencies: with PYTHONDONTWRITEBYTECODE set, an editable checkout would otherwise compile
every kvcalc module from source on every run.
"""

from __future__ import annotations

import argparse
import compileall
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    compileall.compile_dir(Path(kvcalc.__file__).parent, quiet=1)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):  # interleaved, so a busy moment hits every command alike
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    floor, pydantic_floor = medians["bare imports"], medians["one pydantic model"]
    print(f"{'':20} {'median':>9}  {'/ bare imports':>14}  {'/ one pydantic model':>20}")
    for name, median in medians.items():
        print(f"{name:20} {median * 1e3:6.1f} ms  {median / floor:13.2f}x  {median / pydantic_floor:19.2f}x")


if __name__ == "__main__":
    main()
