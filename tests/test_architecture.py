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
    {"image_size", "fileio", "download"},  # "R or (H, W)"; atomic writes, a full disk; the one downloader
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


# -- single owners (issue 28) ------------------------------------------------------------------------------------
# What an architecture is (its fields, their flat form, the ResNet stem's conversion) is vitkit.models'; an image
# size "R or (H, W)" becomes a pair in vitkit.image_size.as_hw. The checks below find a copy by its shape in the
# syntax tree, so a re-added one fails here by file and line.

def _outside(owner: tuple[str, ...]) -> list[tuple[str, ast.AST]]:
    """(path, parsed module) of every module of the package not under ``owner`` (paths relative to src/vitkit)."""
    out = []
    for p in sorted((SRC / "vitkit").rglob("*.py")):
        rel = str(p.relative_to(SRC / "vitkit"))
        if not rel.startswith(owner):
            out.append((rel, ast.parse(p.read_text())))
    return out


def _field_lists(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines of tuple/list/set literals naming at least three of ``names`` (a list of architecture fields)."""
    return [node.lineno for node in ast.walk(tree) if isinstance(node, (ast.Tuple, ast.List, ast.Set))
            and sum(isinstance(e, ast.Constant) and e.value in names for e in node.elts) >= 3]


def _resnet_builds(tree: ast.AST) -> list[int]:
    """Lines that call ``ResNetConfig(...)`` (build or convert a ResNet stem config)."""
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "ResNetConfig"]


def _size_pairs(tree: ast.AST) -> list[int]:
    """Lines of functions that make a square pair of a value they test to be an int: ``(s, s) if isinstance(s, int)``
    in any spelling (``(int(s), int(s))``, ``if isinstance(v, int): return (v, v)``): an image-size normaliser."""
    def base(e: ast.AST) -> str | None:
        if isinstance(e, ast.Call) and getattr(e.func, "id", None) == "int" and len(e.args) == 1:
            e = e.args[0]
        return ast.dump(e) if isinstance(e, (ast.Name, ast.Attribute)) else None

    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        tested = {ast.dump(c.args[0]) for c in ast.walk(fn) if isinstance(c, ast.Call)
                  and getattr(c.func, "id", None) == "isinstance" and len(c.args) == 2
                  and "int" in ast.dump(c.args[1])}
        for t in ast.walk(fn):
            if isinstance(t, ast.Tuple) and len(t.elts) == 2 and base(t.elts[0]) is not None \
                    and base(t.elts[0]) == base(t.elts[1]) and base(t.elts[0]) in tested:
                found.append(t.lineno)
    return found


def test_owner_checks_find_copies():
    arch = {"patch_size", "hidden_size", "mlp_dim", "num_heads", "resnet_layers"}
    assert _field_lists(ast.parse('KEYS = ("patch_size", "hidden_size", "mlp_dim")\n'
                                  'told = {"num_heads", "resnet_layers", "x", "patch_size"}'), arch) == [1, 2]
    assert _field_lists(ast.parse('k = ("name", "num_heads", "gelu", "patch_size")'), arch) == []
    assert _resnet_builds(ast.parse("r = ResNetConfig(**d)\ns = config.ResNetConfig(num_layers=())")) == [1, 2]
    copies = ("def f(s):\n    return (s, s) if isinstance(s, int) else tuple(s)\n"
              "def g(v):\n    if isinstance(v, int):\n        return (v, v)\n    return v\n"
              "def h(d):\n    s = d.size\n    return (int(s), int(s)) if isinstance(s, int) else s\n"
              "def ok(side):\n    return (side, side)\n")
    assert _size_pairs(ast.parse(copies)) == [2, 5, 9]


def test_architecture_fields_have_one_owner():
    from vitkit.models.arch import ARCH_FIELDS, FLAT_RESNET

    names = set(ARCH_FIELDS) | set(FLAT_RESNET)
    copies = {f"{rel}:{line}" for rel, tree in _outside(("models/",)) for line in _field_lists(tree, names)}
    assert not copies, f"architecture fields listed outside vitkit.models (ask vitkit.models.arch): {sorted(copies)}"


def test_resnet_stem_configs_have_one_owner():
    copies = {f"{rel}:{line}" for rel, tree in _outside(("models/",)) for line in _resnet_builds(tree)}
    assert not copies, f"ResNetConfig built outside vitkit.models (ask models.arch.resnet_config): {sorted(copies)}"


def test_image_sizes_are_normalised_in_one_function():
    copies = {f"{rel}:{line}" for rel, tree in _outside(("image_size.py",)) for line in _size_pairs(tree)}
    assert not copies, f"'R or (H, W)' normalised outside vitkit.image_size.as_hw: {sorted(copies)}"
    from vitkit.image_size import as_hw

    assert as_hw(3) == (3, 3) and as_hw([4, 5]) == (4, 5)  # the one place it happens
