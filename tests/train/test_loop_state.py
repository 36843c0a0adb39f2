"""The trainer's state is built in one place (issue 28 part 4): every attribute a class of ``train/`` (the
``Trainer`` in ``loop.py``, its parts in ``parts.py``, ``RunState``, ``StepInputs``, ``RunLog``, ...) assigns on
``self`` is first assigned in its ``__init__``; the other methods only change it."""

import ast
from pathlib import Path

import pytest

TRAIN = Path(__file__).resolve().parents[2] / "src" / "vitkit" / "train"


def _self_targets(fn: ast.AST) -> set[str]:
    """Names ``X`` of every ``self.X = ...`` (also ``+=``, annotated, tuple targets) in ``fn``."""
    out: set[str] = set()

    def collect(t: ast.AST) -> None:
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
            out.add(t.attr)
        elif isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                collect(e)
        elif isinstance(t, ast.Starred):
            collect(t.value)

    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                collect(t)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            collect(node.target)
        elif isinstance(node, ast.NamedExpr):
            collect(node.target)
    return out


def attributes_set_outside_init(source: str) -> dict[str, set[str]]:
    """Class -> attributes first assigned on ``self`` outside ``__init__`` (every method, nested functions too);
    a dataclass's fields (annotated in the class body) are made by its ``__init__``."""
    found: dict[str, set[str]] = {}
    for cls in ast.walk(ast.parse(source)):
        if not isinstance(cls, ast.ClassDef):
            continue
        methods = [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        in_init = set().union(*(_self_targets(m) for m in methods if m.name == "__init__"))
        in_init |= {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
        later = set().union(*(_self_targets(m) for m in methods if m.name != "__init__"))
        if later - in_init:
            found[cls.name] = later - in_init
    return found


def test_the_check_finds_an_attribute_first_set_in_a_method():
    src = """
class T:
    def __init__(self):
        self.a, self.b = 1, 2

    def run(self):
        self.a += 1
        (self.c, self.b) = (3, 4)
        def inner():
            self.d: int = 5

class D:
    n: int = 0

    def add(self):
        self.n += 1
        self.m = 1
"""
    assert attributes_set_outside_init(src) == {"T": {"c", "d"}, "D": {"m"}}


@pytest.mark.parametrize("module", sorted(p.name for p in TRAIN.glob("*.py")))
def test_trainer_state_is_built_at_construction(module):
    assert attributes_set_outside_init((TRAIN / module).read_text()) == {}


def test_run_summary_takes_what_it_reports():
    """``metrics.run_summary`` is given the parts, not the trainer (no ``Any``, no private calls)."""
    import inspect
    import typing

    from vitkit.train import metrics

    hints = typing.get_type_hints(metrics.run_summary)
    assert all(h is not typing.Any for h in hints.values())
    assert "_log" not in inspect.getsource(metrics)


def test_the_data_package_travels_typed():
    """No function of ``train/`` takes the data package, a loader or mixup as ``Any``."""
    untyped = []
    for path in sorted(TRAIN.glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for a in fn.args.args + fn.args.kwonlyargs:
                    if any(w in a.arg for w in ("data", "loader", "mixup")) and a.annotation is not None \
                            and ast.unparse(a.annotation) == "Any":
                        untyped.append(f"{path.name}:{fn.name}({a.arg})")
    assert untyped == []


def test_a_failed_construction_still_ends_the_process_group(tmp_path, monkeypatch):
    """``train`` starts the process group before the Trainer is built, so it ends it also when building fails."""
    import torch.distributed as tdist

    from vitkit.train import loop
    from vitkit.train.config import apply_overrides
    from vitkit.train.dist import DistInfo
    from vitkit.train.presets import get_preset

    def start(*a, **k):
        tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
        return DistInfo(initialized_here=True)

    def fail(*a, **k):
        raise RuntimeError("boom while building the run state")

    monkeypatch.setattr(loop, "init_distributed", start)
    monkeypatch.setattr(loop, "RunState", fail)  # after the model, loaders and optimiser are built
    cfg = apply_overrides(get_preset("default"), [f"out={tmp_path / 'r'}", "schedule.steps=1"])
    with pytest.raises(RuntimeError, match="boom"):
        loop.train(cfg, progress=False)
    assert not tdist.is_initialized()
