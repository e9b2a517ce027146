"""`kvcalc presets list` with many user presets against none, measured in one run.

    python benchmarks/presets_scale.py [--presets 1000] [--runs 5]

Writes `--presets` user preset files in a temporary folder (models/ and gpus/, each a copy of a
shipped preset under a new name, so each is read and validated as a user's file is), runs
`kvcalc presets list --json` with and without `--presets FOLDER`, interleaved (a busy moment hits
both alike), and prints each one's median wall time and the difference (the goal: at most 0.5 s).
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import kvcalc
from kvcalc.presets import shipped_presets_dir


def write_presets(folder: Path, count: int) -> None:
    """`count` user presets in `folder`: copies of the shipped ones in turn (a model, then a GPU), renamed."""
    shipped = {kind: sorted((shipped_presets_dir() / kind).glob("*.yaml")) for kind in ("models", "gpus")}
    for kind in shipped:
        (folder / kind).mkdir()
    for i in range(count):
        kind = ("models", "gpus")[i % 2]
        source = shipped[kind][i // 2 % len(shipped[kind])]
        data = yaml.safe_load(source.read_text())
        data["name"] = f"user-{i}-{data['name']}"
        data.pop("aliases", None)  # an alias names one GPU only
        (folder / kind / f"{data['name']}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def run(extra: list[str], folder: Path) -> float:
    """Seconds `kvcalc presets list --json` takes, run from `folder` with the kvcalc this script
    imported (PYTHONPATH=/other/checkout measures another)."""
    env = {**os.environ, "PYTHONPATH": str(Path(kvcalc.__file__).parent.parent)}
    start = time.perf_counter()
    command = [sys.executable, "-m", "kvcalc", "presets", "list", "--json", *extra]
    subprocess.run(command, check=True, capture_output=True, cwd=folder, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    compileall.compile_dir(Path(kvcalc.__file__).parent, quiet=1)  # as an installed wheel is
    with tempfile.TemporaryDirectory() as tmp:
        write_presets(Path(tmp), args.presets)
        sides = {"shipped only": [], f"+ {args.presets:,} user presets": ["--presets", tmp]}
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.runs):
            for name, extra in sides.items():
                times[name].append(run(extra, Path(tmp)))
    without, with_user = (statistics.median(values) for values in times.values())
    for name, values in times.items():
        print(f"{name:26} {statistics.median(values) * 1e3:8.1f} ms (median of {args.runs})")
    print(f"difference: {(with_user - without) * 1e3:.1f} ms (goal: at most 500 ms)")


if __name__ == "__main__":
    main()
