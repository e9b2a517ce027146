"""The house has no import circle and no upward import, read from the imports themselves (those inside
functions too, since a lazy import is still a dependency): each module may import only from its own
layer or the layers below it (DESIGN.md section 3)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kvcalc"

# Lowest first. A module's layer is the first entry naming it or a package above it.
LAYERS: list[set[str]] = [
    {"base", "errors"},
    # decode_fit: generated constants, pure data; quantization: a checkpoint's integer-quantized layers
    {"units", "decode_fit", "quantization", "gpu_families"},  # gpu_families: GPU generations by name
    {"spec", "decode_profiles", "gguf_mix"},  # gguf_mix: llama-quantize's per-tensor types, pure rules over names and shapes
    {"vision"},  # a multimodal config's tower: counted from vision_config, beneath hf_config
    {"state", "files", "hf_config"},  # files: safe YAML/JSON and validation, beneath every reader
    {"engines"},
    {"kvcache"},
    {"weights"},
    {"residents"},
    {"capacity"},
    {"latency"},
    {"speculative"},  # speculative decoding: rounds of draft steps and a verification, over latency's estimates
    {"placement"},  # llama.cpp placements across GPUs, host RAM and unified memory, and their speed
    {"throughput"},
    {"compare", "check"},
    {"sources"},  # GGUF, safetensors, Hub, vendors' GPU tools: readers, below the presets that dispatch to them
    {"presets", "shipped"},
    {"measure"},  # torch, in worker processes; the JSON documents describe its report
    {"documents", "size_document", "render", "plots"},  # size_document: the base of every document, and size's
    {"cli", "__main__", ""},  # "": the package's own __init__ (its public API is loaded lazily)
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The kvcalc modules `path` imports, as dotted names below the package ('' for kvcalc itself)."""
    found: set[str] = set()
    package = _module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {
                alias.name.removeprefix("kvcalc").lstrip(".") for alias in node.names if alias.name.split(".")[0] == "kvcalc"
            }
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package.split(".") if path.name == "__init__.py" else package.split(".")[:-1]
                module = ".".join([*base[: len(base) - node.level + 1], *([node.module] if node.module else [])])
            elif node.module and node.module.split(".")[0] == "kvcalc":
                module = node.module.removeprefix("kvcalc").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from kvcalc import capacity` imports the module kvcalc.capacity
                sub = f"{module}.{alias.name}".lstrip(".")
                found.add(sub if (PACKAGE / sub.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE / sub.replace(".", "/")).is_dir() else module)  # fmt: skip
    return found - {package}


GRAPH = {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"kvcalc.{module} is in no layer of tests/test_architecture.py: place it")


def test_every_module_has_a_layer() -> None:
    for module in GRAPH:
        _layer(module)


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [
        f"kvcalc.{module} -> kvcalc.{target}"
        for module, targets in GRAPH.items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert not upward, "upward imports: " + "; ".join(sorted(upward))


def test_the_import_graph_has_no_circle() -> None:
    # modules inside one package may import each other one way only; packages likewise (a circle through
    # two packages, such as presets -> sources -> presets, is a circle even if no one module repeats)
    def circle(graph: dict[str, set[str]]) -> list[str] | None:
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(node: str) -> list[str] | None:
            state[node] = 1
            path.append(node)
            for target in sorted(graph.get(node, ())):
                if state.get(target) == 1:
                    return path[path.index(target) :] + [target]
                if target not in state and (found := visit(target)):
                    return found
            state[node] = 2
            path.pop()
            return None

        for node in sorted(graph):
            if node not in state and (found := visit(node)):
                return found
        return None

    assert circle(GRAPH) is None, " -> ".join(circle(GRAPH) or [])
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        top = module.split(".")[0]
        packages.setdefault(top, set()).update(t.split(".")[0] for t in targets if t.split(".")[0] != top)
    assert circle(packages) is None, " -> ".join(circle(packages) or [])


def test_the_graph_sees_lazy_imports() -> None:
    # the readers once reached the presets from inside functions: the test must see imports there
    assert "weights" in GRAPH["sources.hub"] and "files" in GRAPH["sources.gguf_model"]
