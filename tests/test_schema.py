"""Every --json document matches the schema `kvcalc schema COMMAND` prints."""

from __future__ import annotations

import json

import pytest

from kvcalc.cli.schema import JSON_COMMANDS
from kvcalc.documents import SCHEMAS

from .conftest import FIXTURES

RUNS = {
    "size": ["size", "--model", "gemma2-9b", "--seq", "8192", "--gpu", "l40s"],
    "fit": ["fit", "--model", "llama3-8b", "--gpu", "h100-sxm"],
    "decode": ["decode", "--model", "mixtral-8x7b", "--gpu", "a100-80gb", "--tp", "2"],
    "compare": ["compare", "mha", "gqa", "mqa", "mla", "--gpu", "h100-sxm", "--kv-dtype", "bf16,fp8"],
    "measure": ["measure", "--device", "cpu", "--seq", "128", "--layers", "1", "--variants", "gqa,mqa"],
    "check": ["check", str(FIXTURES / "check" / "kv-budget.yaml")],
    "presets-list": ["presets", "list"],
    "presets-show": ["presets", "show", "deepseek-v3"],
}


def test_every_schema_has_a_run() -> None:
    assert set(RUNS) == set(SCHEMAS)


def test_schema_help_names_every_json_command(cli) -> None:
    """The CLI lists the commands in its help without importing the documents; the two lists agree."""
    assert JSON_COMMANDS == tuple(SCHEMAS)
    assert "presets-show" in cli("schema", "--help").stdout


@pytest.mark.parametrize("command", sorted(RUNS))
def test_output_matches_its_schema(cli, command: str) -> None:
    printed = cli.json(*RUNS[command])
    model = SCHEMAS[command]
    # Validates (no unknown keys anywhere: extra="forbid") and round-trips to the very same JSON.
    assert model.model_validate(printed).model_dump(mode="json") == printed
    assert printed["version"] == {"check": 1, "measure": 3}.get(command, 2)  # check's follows its plan files
    schema = json.loads(cli("schema", command).stdout)
    properties = [set(branch["properties"]) for branch in _branches(schema)]
    assert any(set(printed) <= keys and "version" in keys for keys in properties)


def _branches(schema: dict) -> list[dict]:
    """The object schemas a document may follow: the schema itself, or each of its oneOf (measure's
    measurement or its refusal)."""
    if "oneOf" not in schema:
        return [schema]
    return [schema["$defs"][ref["$ref"].removeprefix("#/$defs/")] for ref in schema["oneOf"]]


def test_unknown_schema(cli) -> None:
    result = cli("schema", "sizes")
    assert result.exit_code == 2 and "no command 'sizes' prints JSON" in result.stderr


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_schemas_use_json_schema_keywords_only(cli, command: str) -> None:
    # issue 23 item 13: pydantic's own constraint names (gt, le) leaked into the schema where a
    # validator stood before the constraint; JSON Schema says exclusiveMinimum and maximum.
    schema = json.loads(cli("schema", command).stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    leaked: list[str] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            is_schema = "type" in node or "anyOf" in node or "$ref" in node
            leaked.extend(f"{where}.{key}" for key in ("gt", "ge", "lt", "le") if is_schema and key in node)
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(schema, command)
    assert not leaked, leaked
    if command in ("size", "fit", "presets-show"):  # where the leak was: counts are positive, bounded integers
        assert '"exclusiveMinimum": 0' in json.dumps(schema) and '"maximum": 2147483648' in json.dumps(schema)
