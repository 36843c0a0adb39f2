"""The input pipeline's defaults have one owner, ``vitkit.data.options.LoaderOptions`` (issue 28 part 3): the
training config inherits them, ``build_loader`` and the transform ask them; ViTConfig's normalisation is the data
package's ``VIT_MEAN``/``VIT_STD``."""

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from vitkit.data import build_loader
from vitkit.data.options import LOADER_DEFAULTS, OPTION_NAMES, LoaderOptions
from vitkit.data.preprocess import VIT_MEAN, VIT_STD
from vitkit.models import ViTConfig
from vitkit.train.config import DataConfig

SRC = Path(__file__).resolve().parents[2] / "src" / "vitkit"


def literal_defaults(source: str) -> list[str]:
    """``function(name=value)`` / ``Class.name = value`` for every parameter or class field named as a loader
    option whose default is a literal other than None (None: "not given", which is no default value)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        pairs: list[tuple[str, str, ast.AST]] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs += [(node.name, x.arg, d) for x, d in zip(pos[len(pos) - len(a.defaults):], a.defaults)]
            pairs += [(node.name, x.arg, d) for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
        elif isinstance(node, ast.ClassDef):
            pairs += [(node.name, b.target.id, b.value) for b in node.body
                      if isinstance(b, ast.AnnAssign) and isinstance(b.target, ast.Name) and b.value is not None]
        for where, name, default in pairs:
            if name not in OPTION_NAMES:
                continue
            try:
                value = ast.literal_eval(default)
            except ValueError:
                continue  # an expression: it asks someone (LOADER_DEFAULTS.x)
            if value is not None:
                found.append(f"{where}({name}={value!r})")
    return found


def test_the_scan_finds_a_restated_default():
    src = ("def f(x, crop_area=(0.05, 1.0), flip=D.flip, randaugment=None):\n    pass\n"
           "class C:\n    shuffle_buffer: int = 9")
    assert literal_defaults(src) == ["f(crop_area=(0.05, 1.0))", "C(shuffle_buffer=9)"]


def test_no_loader_default_is_set_outside_its_owner():
    # data/preprocess.py is below the options (they import its vocabulary): its default_preprocess(eval_resize=
    # "resize") names the official whole-image resize its rule is about, and it is not scanned.
    paths = [p for d in ("data", "train") for p in sorted((SRC / d).glob("*.py"))
             if p.name not in ("options.py", "preprocess.py")]
    assert [f"{p.name}: {x}" for p in paths for x in literal_defaults(p.read_text())] == []


def test_the_training_config_inherits_the_options():
    assert issubclass(DataConfig, LoaderOptions)
    own = DataConfig.__dict__["__annotations__"]
    assert not set(own) & set(OPTION_NAMES)  # not restated
    d = DataConfig()
    assert {k: getattr(d, k) for k in OPTION_NAMES} == dataclasses.asdict(LOADER_DEFAULTS)


def test_build_loader_takes_options_and_fields_not_restated_defaults():
    params = inspect.signature(build_loader).parameters
    assert not set(params) & set(OPTION_NAMES)
    assert params["mean"].default == VIT_MEAN == ViTConfig().mean and params["std"].default == VIT_STD
    plain = build_loader("digits", image_size=8, batch_size=4, num_workers=0)
    assert (plain.pre.crop_area, plain.pre.flip, plain.shuffle_buffer) == (
        LOADER_DEFAULTS.crop_area, LOADER_DEFAULTS.flip, LOADER_DEFAULTS.shuffle_buffer)
    assert plain.num_workers == 0 and plain.pre.size == (8, 8)
    cfg = DataConfig(image_size=8, crop_area=(0.5, 1.0), flip=False, shuffle_buffer=7, num_workers=0)
    ld = build_loader("digits", cfg, batch_size=4)
    assert (ld.pre.crop_area, ld.pre.flip, ld.shuffle_buffer, ld.pre.size) == ((0.5, 1.0), False, 7, (8, 8))
    ld = build_loader("digits", cfg, batch_size=4, flip=True, image_size=12)  # a field by name beats the options
    assert (ld.pre.flip, ld.pre.crop_area, ld.pre.size) == (True, (0.5, 1.0), (12, 12))
    assert cfg.flip is False and cfg.image_size == 8  # the caller's options are not changed


def test_build_loader_keywords():
    ev = build_loader("digits", split="test", train=False, image_size=8, batch_size=4, num_workers=0,
                      preprocess="pil")
    assert ev.preprocess == "pil"  # the loader's earlier name for eval_preprocess
    with pytest.raises(TypeError, match="not both"):
        build_loader("digits", image_size=8, preprocess="pil", eval_preprocess="pil")
    with pytest.raises(TypeError, match=r"crop_aera.*the loader options are image_size, num_workers"):
        build_loader("digits", image_size=8, crop_aera=(0.5, 1.0))
