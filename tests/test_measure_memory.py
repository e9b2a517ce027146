"""measure under a memory limit (RLIMIT_AS in the subprocess): out of memory at any stage, whether
importing torch, starting its threads, planning or allocating, is one line and exit 1, never a
traceback, an abort without a kvcalc message, or "measure needs torch" while torch is installed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

resource = pytest.importorskip("resource")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS bounds mmap on Linux")
MiB = 2**20


def limited(limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))

    return subprocess.run([sys.executable, *args], preexec_fn=cap, capture_output=True, text=True, timeout=300)


def torch_import_peak() -> int:
    """Bytes of address space a process needs to import torch, on this platform."""
    probe = "import torch\nprint(next(l for l in open('/proc/self/status') if l.startswith('VmPeak:')).split()[1])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) * 1024


def test_out_of_memory_at_every_stage_is_one_line_and_exit_1() -> None:
    peak = torch_import_peak()
    command = ["-m", "kvcalc", "measure", "--device", "cpu", "--seq", "256", "--layers", "2", "--json"]
    stages, codes = {}, {}
    for limit in (peak // 2, peak - 40 * MiB, peak + 40 * MiB, peak + 70 * MiB, peak + 100 * MiB, peak + 600 * MiB):
        result = limited(limit, *command)
        stderr = result.stderr.strip()
        stages[limit], codes[limit] = stderr, result.returncode
        assert result.returncode in (0, 1), (limit, stderr)
        assert "Traceback" not in result.stderr and "measure needs torch" not in result.stderr, (limit, stderr)
        if result.returncode == 1:
            assert len(stderr.splitlines()) == 1 and stderr.startswith("Error: "), (limit, stderr)
            assert "out of memory" in stderr or "nothing was allocated" in stderr, (limit, stderr)
            assert json.loads(result.stdout)["fits"] is False  # --json: "does not fit" is an answer, printed as one
    assert stages[peak // 2].startswith("Error: out of memory while importing torch"), stages
    assert codes[peak + 600 * MiB] == 0, stages  # enough for the planned cache: it runs


def test_missing_torch_is_only_reported_when_torch_is_missing() -> None:
    """A process that cannot find torch at all (it is hidden from the path) gets the install hint, exit 2."""
    hide = "import sys; sys.modules['torch'] = None; from kvcalc.cli import app; app(prog_name='kvcalc')"
    done = subprocess.run([sys.executable, "-c", hide, "measure", "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        'Error: measure needs torch: pip install "kvcalc[measure]"'
    ]
