"""The package's architecture, checked: every module in its layer (the table of
docs/internals.md), imports only downwards (or within its layer) and never in
a cycle, modules and functions of a readable size."""
from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "salicon"

#: Layer of every module, from the foundations (0) to the command line (top);
#: docs/internals.md draws the same table.
LAYERS = {
    # 0: foundations
    "salicon._version": 0, "salicon.types": 0, "salicon.errors": 0, "salicon.proto": 0,
    "salicon.proto.caffe_pb2": 0,
    # 1: arrays in, arrays out
    "salicon.image": 1, "salicon.preprocess": 1, "salicon.metrics": 1, "salicon.device": 1,
    "salicon.fixations": 1, "salicon.video.temporal": 1,
    # 2: what users name and see
    "salicon.inputs": 2, "salicon.visualize": 2, "salicon.postprocess": 2, "salicon.decode": 2,
    "salicon.video.reader": 2,
    # 3: everything written to disk
    "salicon.outputs": 3, "salicon.video.writer": 3,
    # 4: file formats
    "salicon.formats": 4,
    # 5: the engine, shipped files, data sets
    "salicon.engine.fillers": 5, "salicon.engine.layers": 5, "salicon.engine.pylayer": 5,
    "salicon.engine.python_layers": 5,
    "salicon.engine.net": 5, "salicon.engine.fast": 5, "salicon.engine": 5, "salicon.pretrained": 5, "salicon.data": 5,
    # 6: what runs on the engine
    "salicon.solver": 6, "salicon.evaluate": 6, "salicon.weights": 6, "salicon.export": 6,
    # the runtimes and their registry, and the one configuration that names a model and a runtime
    "salicon.runtimes": 6, "salicon.runtimes.base": 6, "salicon.runtimes.pytorch": 6,
    "salicon.runtimes.openvino": 6, "salicon.runtimes.onnxruntime": 6, "salicon.runtimes.caffe": 6,
    "salicon.config": 6,
    # 7: the model
    "salicon.model": 7, "salicon.video": 7, "salicon.video.pipeline": 7,
    # 8: applications of the model
    "salicon.train": 8, "salicon.batch": 8, "salicon.serve": 8, "salicon.jobs": 8, "salicon.serve_video": 8,
    "salicon.batch_video": 8, "salicon.pysaliency": 8,
    "salicon.pycaffe": 8, "salicon.pycaffe.__main__": 8, "salicon.pycaffe.net": 8, "salicon.pycaffe.solvers": 8,
    # 9: the web application, in one process or on Ray Serve
    "salicon.webapp": 9, "salicon.serve_ray": 9, "salicon.webauth": 9,
    # 10: the command line
    "salicon.cli.options": 10, "salicon.cli.predict": 10, "salicon.cli.evaluate": 10, "salicon.cli.train": 10,
    "salicon.cli.serve": 10, "salicon.cli.models": 10, "salicon.cli.export": 10, "salicon.cli": 10,
    "salicon.cli.video": 10, "salicon.cli.reference": 10,
    # 11: the package's front door
    "salicon": 11, "salicon.__main__": 11,
}
MAX_MODULE_LINES = 500
#: The engine's layer table: one small class per Caffe layer type, read as a table.
LONG_MODULES = {"salicon.engine.layers"}
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, at the top or inside functions."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{alias.name}" for alias in node.names]
            out.update([c for c in candidates if c in known] or [target])
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path that returns to its start, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_every_module_has_a_layer():
    missing = sorted(set(_modules()) - set(LAYERS))
    assert not missing, f"modules without a layer (add them here and to docs/internals.md): {missing}"
    gone = sorted(set(LAYERS) - set(_modules()))
    assert not gone, f"layers listed for modules that do not exist: {gone}"


def test_no_import_from_a_higher_layer():
    upward = [f"{m} (layer {LAYERS[m]}) imports {d} (layer {LAYERS[d]})"
              for m, deps in _graph().items() for d in sorted(deps) if LAYERS[d] > LAYERS[m]]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_modules_and_functions_are_of_a_readable_size():
    problems = []
    for name, path in _modules().items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES and name not in LONG_MODULES and not name.startswith("salicon.proto"):
            problems.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines "
                                    f"(at most {MAX_FUNCTION_LINES})")
    assert not problems, "\n".join(problems)


def test_path_like_is_defined_once():
    definitions = [str(p.relative_to(ROOT)) for p in _modules().values()
                   if "\nPathLike = " in p.read_text()]
    assert definitions == ["salicon/types.py"], definitions
