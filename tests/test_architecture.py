"""Structure of the package: no import cycles (lazy imports inside functions count), no oversized modules
(issue 17 item 5), and imports only go down the layers (issue 28). No exceptions."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 410  # "about 400"

# The house, lowest layer first: a package or top-level module may import from layers below its own, never from
# its own layer's other members or from above (lazy imports inside functions count). A new package gets a row.
LAYERS: list[set[str]] = [
    {"errors", "progress"},  # progress: bars or log lines (imports nothing of vitkit)
    {"kernels", "data", "training_checkpoint"},
    {"models", "perf"},  # perf: the run-time policy (precision, autocast, allocator); benchmarking is bench's
    {"checkpoints"},
    {"factory", "evaluate", "export", "bench"},
    {"train", "analysis"},  # analysis: the explorer asks evaluate for the predictions
    {"cli"},
    {"__main__"},
]


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return mods


def _graph() -> dict[str, set[str]]:
    """Module -> modules it imports (any import statement, also inside functions)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (p, is_pkg) in mods.items():
        pkg = m if is_pkg else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            # A module's own parent packages are imported before it anyway (``from . import sibling``): no edge.
            graph[m].update(n for n in names if n in mods and n != m and not m.startswith(n + "."))
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _part(module: str) -> str:
    """``vitkit.checkpoints.hf`` -> ``checkpoints``; ``vitkit.errors`` -> ``errors``."""
    return module.split(".")[1]


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go sideways or up the layers: ``module -> imported``."""
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    return sorted(
        f"{m} -> {d}" for m, deps in graph.items() if m != "vitkit" for d in deps
        if d != "vitkit" and _part(m) != _part(d) and rank[_part(d)] >= rank[_part(m)]
    )


# The one edge from models/ up into checkpoints/: the Hub verbs timm and HF users call on the model
# (model.save_pretrained, VisionTransformer.from_pretrained) are lazy facades over the checkpoint formats.
FACADE_EDGES = {("vitkit.models.model_api", "vitkit.checkpoints.hub")}


def test_layer_check_finds_an_upward_import():
    # the upward import issue 28 removed: checkpoints.sources reached into train for the run-folder file names
    assert _upward({"vitkit.checkpoints.sources": {"vitkit.train.checkpoint", "vitkit.models.config"}}) == [
        "vitkit.checkpoints.sources -> vitkit.train.checkpoint"]
    assert _upward({"vitkit.perf.hf_reference": {"vitkit.checkpoints.hf"}}) == [
        "vitkit.perf.hf_reference -> vitkit.checkpoints.hf"]  # what issue 28 moved to bench/
    assert _upward({"vitkit.train.loop": {"vitkit.evaluate.core"}, "vitkit.evaluate.core": {"vitkit.export"}}) == [
        "vitkit.evaluate.core -> vitkit.export"]  # a layer's members do not import each other either


def test_every_package_has_a_layer():
    placed = set().union(*LAYERS)
    assert {_part(m) for m in _modules() if m != "vitkit"} <= placed


def test_imports_go_down_the_layers():
    assert _upward(_without_facades(_graph())) == []


def test_the_inference_path_imports_no_benchmarking():
    # spelt out (the layers imply it): perf is what every command runs; checkpoints and bench are above it
    graph = {m: {d for d in deps if d != "vitkit"} for m, deps in _graph().items() if m != "vitkit"}

    def imported_by(part: str) -> set[str]:
        return {_part(d) for m, deps in graph.items() if _part(m) == part for d in deps}

    assert not imported_by("perf") & {"checkpoints", "bench"}
    assert not imported_by("checkpoints") & {"train", "perf", "bench", "evaluate", "cli"}


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _without_facades(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    for a, b in FACADE_EDGES:
        assert b in graph[a], f"{a} no longer imports {b}: drop it from FACADE_EDGES"
        graph[a].discard(b)
    return graph


def test_no_import_cycles():
    assert _cycles(_without_facades(_graph())) == []


@pytest.mark.parametrize("path", sorted(str(p.relative_to(SRC / "vitkit")) for p in (SRC / "vitkit").rglob("*.py")))
def test_module_size(path):
    n = len((SRC / "vitkit" / path).read_text().splitlines())
    assert n <= MAX_LINES, f"{path}: {n} lines; split it by job"
