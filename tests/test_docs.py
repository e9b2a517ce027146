"""The outputs shown in README.md and docs/engines.md are what the commands print now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "update_docs.py"


def test_documented_outputs_are_current() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout}{done.stderr}: run python scripts/update_docs.py"


def test_readme_figures_are_drawn_by_their_commands() -> None:
    """Each figure the README shows is drawn by a `$ kvcalc ... --plot FILE` example there, carries
    its data's fingerprint (which the staleness check above compares), and is a PNG."""
    import re

    from kvcalc.plots import fingerprint_of

    root = SCRIPT.parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"!\[[^\]]*\]\((docs/img/[^)]+)\)", readme)
    drawn = re.findall(r"^\$ kvcalc .* --plot (\S+)", readme, flags=re.MULTILINE)
    assert shown and shown == drawn
    for figure in shown:
        assert (root / figure).read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and fingerprint_of(root / figure)
