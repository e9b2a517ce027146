"""Write kvcalc/shipped.py: every preset in presets/, validated now and written as the Python that
builds it again without a validator, so that naming a shipped preset does not validate it at each start.

    python scripts/shipped_presets.py    # after adding or changing a shipped preset

tests/test_shipped_presets.py validates every file in presets/ and fails while kvcalc/shipped.py
builds anything else from it (a corrupted, changed or added preset).
"""

from __future__ import annotations

import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kvcalc.presets import load_file

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "kvcalc" / "shipped.py"
HEADER = '''"""The shipped presets (presets/), each validated when scripts/shipped_presets.py wrote this file, built
here without a validator (model_construct) when a command names one. Generated: run the script after
changing a preset; tests/test_shipped_presets.py fails until then."""

from kvcalc.spec import {specs}
from kvcalc.units import DType

'''


def source_of(value: Any, classes: set[str]) -> str:
    """Python that builds `value` again: a validated spec as model_construct with its fields and the
    fields it was given, an enum as its member, plain data as itself (adds the classes it names)."""
    if isinstance(value, BaseModel):
        classes.add(type(value).__name__)
        given = (
            "{" + ", ".join(repr(name) for name in sorted(value.model_fields_set)) + "}" if value.model_fields_set else "set()"
        )
        fields = "".join(f", {name}={source_of(field, classes)}" for name, field in value.__dict__.items())
        return f"{type(value).__name__}.model_construct({given}{fields})"
    if isinstance(value, Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{source_of(k, classes)}: {source_of(v, classes)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(source_of(item, classes) for item in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(f"{source_of(item, classes)}, " for item in value) + ")"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r}")


def render(folder: Path) -> str:
    """kvcalc/shipped.py for the presets in `folder` (its models/ and gpus/), each validated: a file
    that does not validate raises its InvalidPreset."""
    classes: set[str] = set()
    tables = []
    for kind in ("models", "gpus"):
        rows = []
        for path in sorted((folder / kind).glob("*.yaml")):
            spec = load_file(kind, path)
            if spec.name != path.stem:
                raise SystemExit(f"{path}: a shipped preset is named by its file: name {spec.name!r}")
            rows.append(f"    {spec.name!r}: lambda: {source_of(spec, classes)},\n")
        tables.append(f"{kind.upper()} = {{\n{''.join(rows)}}}\n")
    specs = ", ".join(sorted(classes - {"DType"}))
    return HEADER.format(specs=specs) + "\n".join(tables)


def main() -> None:
    TARGET.write_text(render(ROOT / "presets"), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", str(TARGET)], check=False)  # when ruff is there
    print(f"wrote {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
