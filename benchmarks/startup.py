"""Cold start of kvcalc commands against importing its four dependencies bare, measured in one run.

    python benchmarks/startup.py [--runs 15] [--instructions | --ladder]

Prints the median wall time of each command over interleaved runs and its ratio to the bare
imports, to a minimal pydantic program (import the same four, validate one three-field model read
from YAML, print it as JSON) and, when shared/ is beside the checkout, to the design card's floor
(shared/bench/startup_floor.py: a Typer command of 20 options validating one model, printing JSON): `import pydantic` alone is lazy and loads
none of pydantic's model machinery, which any program that validates a model pays for.
On a shared machine the ratios are the figures to read, not the absolute times; --instructions
counts each command's instructions once under valgrind's callgrind instead, which the machine's
load does not change; --ladder counts the steps from the bare imports to `kvcalc size --json`, each
adding to the one above it (a pydantic model class, validating it, kvcalc's core, Typer building
the command, running it), to show where the start-up goes.

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
BARE = "import typer, rich, pydantic, yaml"
ONE_CLASS = """
import typer, rich, pydantic, yaml
from pydantic import BaseModel, ConfigDict
class Spec(BaseModel):
    model_config = ConfigDict(defer_build=True)
    layers: int
    kv_heads: int
    head_dim: int
"""
SIZE_BUILT = f"{BARE}; import kvcalc.cli; kvcalc.cli.built_command('size')"
SIZE = [sys.executable, "-m", "kvcalc", "size", "--model", "llama3-8b", "--seq", "8192"]
LADDER = {  # each step adds to the one above it; --ladder counts each one's instructions
    "bare imports": [sys.executable, "-c", BARE],
    "+ import BaseModel": [sys.executable, "-c", f"{BARE}; from pydantic import BaseModel"],
    "+ one model class": [sys.executable, "-c", ONE_CLASS],
    "+ validate it (floor)": [sys.executable, "-c", ONE_PYDANTIC_MODEL],
    "kvcalc's core": [sys.executable, "-c", f"{BARE}; import kvcalc.capacity, kvcalc.kvcache, kvcalc.latency"],
    "+ size's modules": [sys.executable, "-c", f"{BARE}; import kvcalc.cli.size"],
    "+ Typer builds size": [sys.executable, "-c", SIZE_BUILT],
    "+ run: size --json": [*SIZE, "--json"],
}
# The design card's floor (shared/bench/startup_floor.py beside the checkout): a Typer command of 20 options
# that validates one pydantic model and prints JSON, the least any program on kvcalc's design can do.
STARTUP_FLOOR = Path(__file__).resolve().parents[2] / "shared" / "bench" / "startup_floor.py"
COMMANDS = {
    "bare imports": [sys.executable, "-c", BARE],
    "one pydantic model": [sys.executable, "-c", ONE_PYDANTIC_MODEL],
    **(
        {"startup floor": [sys.executable, str(STARTUP_FLOOR), "size", "--model", "llama3-8b", "--seq", "8192", "--json"]}
        if STARTUP_FLOOR.is_file()
        else {}
    ),  # fmt: skip
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


def instructions(commands: dict[str, list[str]]) -> dict[str, float]:
    """Instructions each command executes, counted once by valgrind's callgrind."""
    counts = {}
    for name, command in commands.items():
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command], capture_output=True, text=True
        )
        counts[name] = float(re.search(r"Collected : (\d+)", run.stderr).group(1))  # type: ignore[union-attr]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--instructions", action="store_true", help="count instructions under valgrind instead")
    parser.add_argument("--ladder", action="store_true", help="count the instructions of each step from the floor to size --json")
    args = parser.parse_args()
    compileall.compile_dir(Path(kvcalc.__file__).parent, quiet=1)
    if args.ladder:
        counts = instructions(LADDER)
        print(f"{'':24} {'instructions':>12}  {'/ bare imports':>14}  {'step':>9}")
        previous = None
        for name, value in counts.items():
            step = f"{(value - previous) * 1e-6:+8.1f}M" if previous is not None and name.startswith("+") else ""
            print(f"{name:24} {value * 1e-6:9.1f} M  {value / counts['bare imports']:13.2f}x  {step:>9}")
            previous = value
        return
    figures = instructions(COMMANDS) if args.instructions else wall_times(args.runs)
    scale, unit, label = (1e-6, "M", "instructions") if args.instructions else (1e3, "ms", "median")
    floor, pydantic_floor = figures["bare imports"], figures["one pydantic model"]
    card = figures.get("startup floor")
    print(f"{'':20} {label:>12}  {'/ bare imports':>14}  {'/ one pydantic model':>20}" + ("  / startup floor" if card else ""))
    for name, value in figures.items():
        ratios = f"{value / floor:13.2f}x  {value / pydantic_floor:19.2f}x" + (f"  {value / card:15.2f}x" if card else "")
        print(f"{name:20} {value * scale:9.1f} {unit:2}  {ratios}")


if __name__ == "__main__":
    main()
