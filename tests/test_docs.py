"""The outputs shown in README.md and docs/*.md are what the commands print now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "update_docs.py"


def test_documented_outputs_are_current() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout}{done.stderr}: run python scripts/update_docs.py"


def test_documented_figures_are_drawn_by_their_commands() -> None:
    """Each figure a docs page shows is drawn by a `$ kvcalc ... --plot FILE` example there (into the
    reader's folder: no example writes a tracked file), is kept as docs/img/FILE, carries its data's
    fingerprint (which the staleness check above compares), and is a PNG."""
    import re

    from kvcalc.plots import fingerprint_of

    root = SCRIPT.parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    shown = [f for page in pages for f in re.findall(r"!\[[^\]]*\]\((?:docs/)?img/([^)]+)\)", page.read_text(encoding="utf-8"))]
    drawn = [f for page in pages for f in re.findall(r"^\$ kvcalc .* --plot (\S+)", page.read_text(encoding="utf-8"), flags=re.M)]
    assert shown and shown == drawn and all("/" not in figure for figure in drawn)
    for figure in shown:
        stored = root / "docs" / "img" / figure
        assert stored.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and fingerprint_of(stored)
