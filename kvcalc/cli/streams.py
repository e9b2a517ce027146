"""What kvcalc writes to, made safe before any command runs:

- a reader that stops early (`kvcalc check plan.yaml | head -1`): the rest of the output is dropped
  quietly and kvcalc exits with its answer's code, as if it had all been read;
- stdout closed (`>&-`) or failing (a full disk): OutputError, one line on stderr and exit 2;
- characters stdout's encoding lacks (PYTHONIOENCODING=ascii): spelled in ASCII (µs as us);
- a terminal width (COLUMNS, and Typer's TERMINAL_WIDTH for --help) outside 40..500 is clamped,
  one that is not a positive integer ignored.
"""

from __future__ import annotations

import codecs
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from kvcalc.errors import KvcalcError

MIN_COLUMNS, MAX_COLUMNS = 40, 500  # narrower wraps every table cell; wider, Rich pads lines for long
WIDTH_VARIABLES = ("COLUMNS", "TERMINAL_WIDTH")
ASCII_ERRORS = "kvcalc-ascii"  # the codec error handler that spells unencodable characters in ASCII
_SPELLINGS = {
    "µ": "u",  # µs -> us
    "—": "-",
    "–": "-",
    "…": "...",
    "×": "x",
    "█": "#",  # the bar chart: a full cell, and partial cells rounded to the nearest whole one
    **dict.fromkeys("▉▊▋▌", "#"),
    **dict.fromkeys("▍▎▏", " "),
}


class OutputError(KvcalcError):
    """stdout is closed or cannot be written (exit code 2)."""


def _spell_in_ascii(error: UnicodeError) -> tuple[str, int]:
    """The codec error handler: kvcalc's own symbols by their ASCII spelling, accented letters
    without their accents, anything else as '?'."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    import unicodedata

    def spelled(char: str) -> str:
        if char in _SPELLINGS:
            return _SPELLINGS[char]
        return unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode() or "?"

    return "".join(spelled(c) for c in error.object[error.start : error.end]), error.end


def _discard(stream: TextIO) -> None:
    """Point the stream's file descriptor at /dev/null, so that what it still holds (and the
    interpreter's last flush at exit) goes nowhere instead of failing again."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # an in-memory stream (tests): nothing is left to fail at exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class _Guarded:
    """A standard stream that flushes every write, so a failure shows while kvcalc can still
    answer it: a reader gone drops the rest; any other failure of stdout is an OutputError, of
    stderr (nowhere left to say it) is dropped too. `stream` is None when the stream is closed."""

    def __init__(self, stream: TextIO | None, name: str, fatal: bool) -> None:
        self._stream = stream
        self._name = name
        self._fatal = fatal

    def write(self, text: str) -> int:
        if self._stream is None:
            if self._fatal:
                raise OutputError(f"cannot write to {self._name}: it is closed")
            return len(text)
        try:
            written = self._stream.write(text)
            self._stream.flush()
            return written
        except OSError as exc:
            _discard(self._stream)
            if self._fatal and not isinstance(exc, BrokenPipeError):
                raise OutputError(f"cannot write to {self._name}: {exc.strerror or exc}") from None
            return len(text)

    def flush(self) -> None:
        if self._stream is not None:
            self.write("")

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def _sane_widths() -> None:
    """Clamp each width variable set to a positive integer into MIN_COLUMNS..MAX_COLUMNS; unset any other."""
    for variable in WIDTH_VARIABLES:
        text = os.environ.get(variable)
        if text is None:
            continue
        try:
            width = int(text)
        except ValueError:  # "wide", "", "²", or more digits than Python reads
            width = 0
        if width > 0:
            os.environ[variable] = str(min(max(width, MIN_COLUMNS), MAX_COLUMNS))
        else:
            del os.environ[variable]


@contextmanager
def guarded() -> Iterator[None]:
    """sys.stdout and sys.stderr guarded, stdout spelling in ASCII what its encoding lacks, and
    the terminal width sane, while the command line runs."""
    _sane_widths()
    stdout, stderr = sys.stdout, sys.stderr
    spell = stdout is not None and hasattr(stdout, "reconfigure") and not stdout.encoding.lower().startswith("utf")
    if spell:  # stderr keeps Python's backslashreplace: a path in an error stays exact
        codecs.register_error(ASCII_ERRORS, _spell_in_ascii)
        errors = stdout.errors
        stdout.reconfigure(errors=ASCII_ERRORS)
    sys.stdout = _Guarded(stdout, "stdout", fatal=True)  # type: ignore[assignment]
    sys.stderr = _Guarded(stderr, "stderr", fatal=False)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        if spell:
            stdout.reconfigure(errors=errors)
