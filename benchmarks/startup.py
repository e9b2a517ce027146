"""Cold start of `kvcalc size` against importing its four dependencies bare, measured in one run.

    python benchmarks/startup.py [--runs 15]

Prints the median wall time of each command over interleaved runs and the ratio between them;
on a shared machine the ratio is the figure to read, not the absolute times.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "bare imports": [sys.executable, "-c", "import typer, rich, pydantic, yaml"],
    "kvcalc size": [sys.executable, "-m", "kvcalc", "size", "--model", "llama3-8b", "--seq", "8192", "--json"],
    "kvcalc --help": [sys.executable, "-m", "kvcalc", "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):  # interleaved, so a busy moment hits every command alike
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["bare imports"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:14} median {median * 1e3:7.1f} ms  ({median / base:.2f}x bare imports)")


if __name__ == "__main__":
    main()
