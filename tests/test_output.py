"""Output that goes wrong: stdout closed, full or read by a reader that stops early, an encoding
without kvcalc's symbols, a terminal width out of range.

Each runs kvcalc in a fresh process (`python -m kvcalc`), as a shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvcalc.cli.streams import MAX_COLUMNS

from .conftest import FIXTURES

PASSING_PLAN = FIXTURES / "check" / "kv-budget.yaml"
FAILING_PLAN = "workloads:\n  - {name: big, model: llama3-8b, gpu: l4, seq: 8192, batch: 8, expect: {max_batch_at_least: 8}}\n"
SIZE = ["size", "--model", "llama3-8b", "--seq", "8"]
DOES_NOT_FIT = ["size", "--model", "llama3-70b", "--seq", "8192", "--gpu", "l4"]  # exit 1 when written whole
TINY_MEASURE = ["measure", "--device", "cpu", "--seq", "64", "--batch", "1", "--layers", "1"]


def _kvcalc(args: list[str], **options) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kvcalc", *map(str, args)], stderr=subprocess.PIPE, timeout=120, **options)


def _failing_plan(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(FAILING_PLAN)
    return path


def _one_error_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    return text


@pytest.mark.parametrize("args", [SIZE, [*SIZE, "--json"], DOES_NOT_FIT, ["--help"], ["--version"]], ids=" ".join)
def test_closed_stdout_is_one_error_line(args: list[str]) -> None:
    """`kvcalc ... >&-`: nothing can be written, which is an error (2), never "does not fit" (1)."""
    run = _kvcalc(args, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    assert run.returncode == 2 and "cannot write to stdout: it is closed" in _one_error_line(run.stderr)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("args", [SIZE, [*SIZE, "--json"], DOES_NOT_FIT, ["--help"]], ids=" ".join)
def test_full_disk_is_one_error_line(args: list[str]) -> None:
    """`kvcalc ... > /dev/full`: every write fails as on a full disk."""
    with open("/dev/full", "w") as full:
        run = _kvcalc(args, stdout=full)
    assert run.returncode == 2 and "cannot write to stdout" in _one_error_line(run.stderr)


@pytest.mark.parametrize(
    "args, code",
    [
        (["check", PASSING_PLAN], 0),
        (["check", "{failing}"], 1),  # the answer stands: the plan fails whether or not it was read
        ([*SIZE, "--json"], 0),
        (DOES_NOT_FIT, 1),
        (["presets", "list"], 0),
        (["--help"], 0),
    ],
    ids=lambda a: " ".join(map(str, a)) if isinstance(a, list) else str(a),
)
def test_reader_gone_drops_the_output_quietly(tmp_path: Path, args: list, code: int) -> None:
    """A pipe whose reader has gone (`| head -1` after its line): kvcalc stops writing and exits with
    its answer's code, no traceback and no "Exception ignored" at exit."""
    args = [str(_failing_plan(tmp_path)) if a == "{failing}" else a for a in args]
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        run = _kvcalc(args, stdout=write_end)
    finally:
        os.close(write_end)
    assert (run.returncode, run.stderr.decode()) == (code, "")


def test_pipefail_sees_a_passing_check_pass() -> None:
    """The report's case: `set -o pipefail; kvcalc check plan.yaml | head -1` in CI."""
    command = f"set -o pipefail; {sys.executable} -m kvcalc check {PASSING_PLAN} | head -1"
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("kvcalc check") and run.stderr == ""


TABLES = [
    [*SIZE, "--gpu", "h100-sxm", "--explain"],
    ["fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--explain"],
    ["decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--explain"],  # t_compute in µs
    ["compare", "mha", "gqa", "mqa", "--gpu", "h100-sxm"],  # the bar chart's blocks
    ["check", "{failing}"],  # FAIL ... — kvcalc computes ...
    ["presets", "list"],
    ["presets", "show", "llama3-8b"],
    ["size", "--help"],
    TINY_MEASURE,  # µs in its timings
]


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
@pytest.mark.parametrize("args", TABLES, ids=lambda a: " ".join(a[:2]))
def test_tables_in_an_encoding_without_kvcalcs_symbols(tmp_path: Path, encoding: str, args: list[str]) -> None:
    """Rich draws ASCII boxes; kvcalc's own symbols are spelled in ASCII where the encoding lacks them."""
    if args[0] == "measure":
        pytest.importorskip("torch")
    args = [str(_failing_plan(tmp_path)) if a == "{failing}" else a for a in args]
    run = _kvcalc(args, stdout=subprocess.PIPE, env={**os.environ, "PYTHONIOENCODING": encoding})
    assert run.returncode == (1 if args[0] == "check" else 0), run.stderr.decode(encoding, "replace")
    text = run.stdout.decode(encoding)  # strict: every byte is the encoding's
    assert "Traceback" not in run.stderr.decode(encoding, "replace")
    assert "|" in text and not any(c in text for c in "█━│┃")  # Rich's ASCII boxes
    if args[0] == "decode":
        assert (" us\n" in text) if encoding == "ascii" else (" µs\n" in text)
    if args[0] == "check":
        assert "FAIL big: max_batch_at_least 8 - kvcalc computes" in text


def test_a_users_name_outside_the_encoding(tmp_path: Path) -> None:
    model = tmp_path / "m.yaml"
    model.write_text("name: modèle-7b\nlayers: 2\nheads: 8\nkv_heads: 2\nhead_dim: 64\ndtype: bf16\n", encoding="utf-8")
    run = _kvcalc(["size", "-m", model, "-s", "8"], stdout=subprocess.PIPE, env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert run.returncode == 0 and "KV cache: modele-7b" in run.stdout.decode("ascii")


@pytest.mark.parametrize("columns", ["0", "-5", "abc", "", "²", "10", "99999999"])
def test_terminal_width_out_of_range(columns: str) -> None:
    """COLUMNS is clamped to 40..500 and ignored unless a positive integer: nothing is swallowed, nothing hangs."""
    env = {**os.environ, "COLUMNS": columns}
    table = _kvcalc(SIZE, stdout=subprocess.PIPE, env=env)
    help_ = _kvcalc(["size", "--help"], stdout=subprocess.PIPE, env=env)
    error = _kvcalc(["size", "--model", "lama3-8b", "--seq", "8"], stdout=subprocess.PIPE, env=env)
    for run in (table, help_):
        lines = run.stdout.decode().splitlines()
        assert run.returncode == 0 and lines and max(len(line) for line in lines) <= MAX_COLUMNS
    assert "131,072 B" in table.stdout.decode() and "--seq" in help_.stdout.decode()
    assert error.returncode == 2 and "did you mean llama3-8b" in _one_error_line(error.stderr)


def test_typer_help_width_not_a_number() -> None:
    run = _kvcalc(["--help"], stdout=subprocess.PIPE, env={**os.environ, "TERMINAL_WIDTH": "wide"})
    assert run.returncode == 0 and b"Usage" in run.stdout


def test_presets_list_at_80_columns_splits_no_number_or_name() -> None:
    # issue 23 item 12: at 80 columns the table printed "163,8" / "40" and names in pieces; now it leaves
    # out the columns that do not fit, says which, and keeps every cell whole
    done = subprocess.run(
        [sys.executable, "-m", "kvcalc", "presets", "list"], env={**os.environ, "COLUMNS": "80"}, capture_output=True, text=True
    )
    assert done.returncode == 0
    from rich.cells import cell_len

    assert max(map(cell_len, done.stdout.splitlines())) <= 80
    listed = json.loads(
        subprocess.run([sys.executable, "-m", "kvcalc", "presets", "list", "--json"], capture_output=True, text=True).stdout
    )
    cells = {cell.strip() for line in done.stdout.splitlines() for cell in line.split("│")}
    for model in listed["models"]:
        assert model["name"] in cells
        if model["max_positions"]:
            assert f"{model['max_positions']:,}" in cells, model["name"]
    assert "left out at 80 columns" in done.stdout
