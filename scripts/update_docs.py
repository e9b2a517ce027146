"""Re-run the `$ kvcalc ...` examples in README.md and docs/*.md and write their real output.

    python scripts/update_docs.py            # rewrite the outputs in place
    python scripts/update_docs.py --check    # exit 1 when an output is stale (a test runs this)

Each fenced block whose first line is `$ kvcalc ...` is run from the repository root with
COLUMNS=120 (stdout and stderr, as a terminal shows them); a `$ echo $?` line records the exit code.
Hugging Face repo ids resolve in the fixture cache tests/fixtures/hf-cache, offline.
`measure` blocks are left alone: their timings differ from run to run. A command with
`--plot FILE` draws into a scratch folder; docs/img/FILE is replaced only when the chart's data changed (the
fingerprint kvcalc.plots writes into each figure), so a newer matplotlib alone never makes it stale. Between
`<!-- calibration:ENGINE -->` and `<!-- /calibration:ENGINE -->` goes the table of how `fit`
reproduces that engine's published start-up logs (scripts/calibration.py).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Hub repo ids in the examples read a fixture cache, offline, whatever the writer's own cache holds.
HUB_FIXTURE = {"HF_HUB_CACHE": "tests/fixtures/hf-cache", "HF_HUB_OFFLINE": "1"}
BLOCK = re.compile(r"```\n\$ (kvcalc [^\n]*)\n(.*?)```", re.DOTALL)
CALIBRATION = re.compile(r"(<!-- calibration:(\w+) -->\n).*?(<!-- /calibration:\2 -->)", re.DOTALL)
FIGURES = ROOT / "docs" / "img"
STALE_FIGURES: list[tuple[Path, Path]] = []  # (figure in the docs, its fresh drawing) whose data changed


def run(command: str, scratch: Path) -> str:
    """The command's output as a terminal 100 columns wide shows it; a --plot figure is drawn in `scratch`
    and noted in STALE_FIGURES when its data differs from the stored figure's."""
    argv = shlex.split(command)[1:]
    figure = Path(argv[argv.index("--plot") + 1]) if "--plot" in argv else None
    if figure is not None:
        argv[argv.index("--plot") + 1] = str(scratch / figure.name)
    env = {**os.environ, "COLUMNS": "120", "TERM": "dumb", "NO_COLOR": "1", **HUB_FIXTURE}
    done = subprocess.run([sys.executable, "-m", "kvcalc", *argv], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    output = done.stderr + done.stdout
    if figure is not None:
        output = output.replace(str(scratch / figure.name), str(figure))
        stored = FIGURES / figure.name  # the example writes into the reader's folder; the docs show docs/img's copy
        if (scratch / figure.name).exists() and _fingerprint(stored) != _fingerprint(scratch / figure.name):
            STALE_FIGURES.append((stored.relative_to(ROOT), scratch / figure.name))
    return output + (f"$ echo $?\n{done.returncode}\n" if done.returncode else "")


def _fingerprint(path: Path) -> str | None:
    sys.path.insert(0, str(ROOT))  # this checkout's kvcalc, as `python -m kvcalc` from ROOT runs
    from kvcalc.plots import fingerprint_of

    return fingerprint_of(path) if path.exists() else None


def refreshed(text: str, scratch: Path) -> str:
    def replace(match: re.Match[str]) -> str:
        command = match.group(1)
        if command.startswith("kvcalc measure"):
            return match.group(0)
        return f"```\n$ {command}\n{run(command, scratch)}```"

    def calibrated(match: re.Match[str]) -> str:
        import calibration  # scripts/calibration.py, beside this script

        return f"{match.group(1)}{calibration.table(match.group(2))}\n{match.group(3)}"

    return CALIBRATION.sub(calibrated, BLOCK.sub(replace, text))


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    with tempfile.TemporaryDirectory() as scratch:
        for doc in DOCS:
            text = doc.read_text(encoding="utf-8")
            new = refreshed(text, Path(scratch))
            if new != text:
                stale.append(doc.name)
                if not check:
                    doc.write_text(new, encoding="utf-8")
        for figure, drawn in STALE_FIGURES:
            stale.append(str(figure))
            if not check:
                shutil.copyfile(drawn, ROOT / figure)
    if stale:
        print(("stale: " if check else "updated: ") + ", ".join(stale))
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
