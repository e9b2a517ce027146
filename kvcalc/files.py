"""Reading users' files safely: YAML (safe loading, no aliases, bounded nesting, no key given twice)
and JSON (no key given twice) that must hold one mapping, and validating a mapping as a spec with
strict types. Every failure is an InvalidPreset naming the file (and line or field) and the fix.

The readers of models and GPUs (kvcalc.sources, kvcalc.hf_config) and the presets (kvcalc.presets)
build on this module; it imports none of them.
"""

from __future__ import annotations

import difflib
import json
import re
import stat
import sys
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from kvcalc.errors import InvalidPreset, KvcalcError
from kvcalc.spec import GpuSpec, ModelSpec

Kind = Literal["models", "gpus"]
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader when built in: same rules, faster


class _UniqueKeysLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """The safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base loader's error
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


SPEC_TYPES: dict[str, type[BaseModel]] = {"models": ModelSpec, "gpus": GpuSpec}
MAX_NESTING = 64  # presets nest two levels (mla:, moe:); libyaml's composer recurses in C and crashes near 20,000


def what_is(path: Path) -> Literal["file", "folder", "missing", "other"]:
    """What `path` names; a path the system refuses to look up (too long, no permission) is an InvalidPreset."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL byte in the path
        return "missing"
    except OSError as exc:
        raise InvalidPreset(f"{path}: cannot open ({exc.strerror}); check the path") from None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def require_file(path: Path, what: str, folder_hint: str, error: type[KvcalcError]) -> None:
    """Raise `error` saying what `path` names unless it is a regular file."""
    found = what_is(path)
    if found == "missing":
        raise error(f"{path}: no such {what}")
    if found == "folder":
        raise error(f"{path}: is a folder, not a {what}; {folder_hint}")
    if found == "other":
        raise error(f"{path}: is not a regular file (a device, pipe or socket); give a {what}")


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPreset(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise InvalidPreset(f"{path}: cannot read ({exc.strerror})") from None


def _too_deep(path: Path) -> InvalidPreset:
    return InvalidPreset(f"{path}: nested too deeply (more than {MAX_NESTING} levels); a preset is a flat mapping")


def _flow_depth(text: str) -> int:
    """An upper bound on the flow nesting ('[' and '{' not yet closed) at the end of `text`."""
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


_BLOCK_PREFIX = re.compile(r"^[ \t]*(?:[-?:](?:[ \t]+|$))*", re.MULTILINE)  # indentation and leading - ? : indicators


def nesting_bound(text: str) -> int:
    """An upper bound on how deep the YAML `text` nests, read in one pass of a regular expression.

    A block collection starts where a line's content starts, after its indentation and leading '- ',
    '? ' or ': ' indicators; one nested in another starts further right, or at the same column once
    (a sequence as a mapping's value): block collections nest at most 2 * (widest such prefix + 1)
    deep. Flow collections, inside them, nest at most once per '[' or '{'.
    """
    widest = max(len(prefix) for prefix in _BLOCK_PREFIX.findall(text))
    return 2 * (widest + 1) + text.count("[") + text.count("{")


def _refuse_aliases_and_deep_nesting(path: Path, text: str) -> None:
    """Refuse YAML aliases and nesting deeper than MAX_NESTING before the (recursive) loader sees them.

    Walks the parser's events, which libyaml produces without recursion, only when the text has a '*'
    or could nest that deep (nesting_bound): a usual preset or plan, however long, is not walked.
    """
    if "*" not in text and nesting_bound(text) <= MAX_NESTING:
        return
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1
                raise InvalidPreset(f"{path}:{line}: YAML aliases (*name) are not accepted in presets; write the values out")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_NESTING:
                    raise _too_deep(path)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:  # the scanner reads a flow collection's openers before it yields their events
        mark = getattr(exc, "problem_mark", None)
        if mark is not None and _flow_depth(text[: mark.index + 1]) > MAX_NESTING:
            raise _too_deep(path) from None
        raise


class _KeyGivenTwice(ValueError):
    """A JSON object gives one key twice."""


def _unique_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: refuse a key given twice in one object (json would keep the last silently)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _KeyGivenTwice(key)
        data[key] = value
    return data


def _unreadable_value(path: Path, text: str, exc: ValueError) -> InvalidPreset:
    """A value the parser could not convert: an integer longer than Python converts (sys.get_int_max_str_digits,
    4,300 digits by default), or a YAML date that does not exist."""
    limit = sys.get_int_max_str_digits()
    number = re.search(rf"[0-9][0-9_]{{{limit},}}", text) if limit else None
    if number is not None:
        line = text.count("\n", 0, number.start()) + 1
        digits = len(number.group().replace("_", ""))
        return InvalidPreset(f"{path}:{line}: a number of {digits:,} digits; kvcalc reads numbers of up to {limit:,} digits")
    return InvalidPreset(f"{path}: a value cannot be read ({exc})")


def read_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML (safe loader) or JSON file that must hold one mapping; a key given twice is an error in both."""
    text = _read_text(path)
    try:
        if path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_unique_json_keys)
        else:
            _refuse_aliases_and_deep_nesting(path, text)
            data = yaml.load(text, Loader=_UniqueKeysLoader)
    except RecursionError:
        raise InvalidPreset(f"{path}: nested too deeply; a config.json nests a few levels at most") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidPreset(f"{path}{where}: invalid YAML: {problem}") from None
    except json.JSONDecodeError as exc:
        raise InvalidPreset(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except _KeyGivenTwice as exc:
        raise InvalidPreset(f"{path}: invalid JSON: {exc.args[0]!r} is given twice") from None
    except ValueError as exc:
        raise _unreadable_value(path, text, exc) from None
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise InvalidPreset(f"{path}: expected a mapping of fields, found {found}")
    return data


def validate(kind: Kind, data: dict[str, Any], origin: str) -> Any:
    """Validate a mapping as a model or GPU spec; errors name the origin, the field and the problem."""
    return validate_as(SPEC_TYPES[kind], data, origin)


def validate_as(spec_type: type[BaseModel], data: dict[str, Any], origin: str) -> Any:
    """Validate a mapping read from a file as `spec_type`, with strict types: "8192" is not a number,
    8192.0 not an integer, as `fits: yes` is not a boolean. The first error names the origin, the
    field and the problem."""
    try:
        return spec_type.model_validate(data, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        field = f"{where}: " if where else ""  # a rule on the whole spec names no field
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            owner = _model_at(spec_type, error["loc"][:-1])
            close = difflib.get_close_matches(str(error["loc"][-1]), list(owner.model_fields), n=1) if owner else []
            message = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise InvalidPreset(f"{origin}: {field}{message}{more}") from None


def _model_at(spec_type: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The nested model a validation error's location points into (for "did you mean")."""
    current: Any = spec_type
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part)) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return None
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            inner = (
                getattr(candidate, "__args__", (candidate,))[0] if getattr(candidate, "__origin__", None) is list else candidate
            )
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                current = inner
                break
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None
