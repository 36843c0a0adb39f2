"""Every choice ``vitkit train --list-options`` offers for a vocabulary option trains one step (issue 17: the
config offers only what works). The choices are read from the config's types, so a new one is tested too."""

import dataclasses
import typing

import numpy as np
import pytest
from PIL import Image

from vitkit.train import loop
from vitkit.train.config import TrainConfig, apply_overrides
from vitkit.train.options import hints
from vitkit.train.presets import get_preset

# Choices that need hardware or processes this test does not have; each is run elsewhere or refused clearly.
ELSEWHERE = {("precision", "fp16"): "needs a GPU (refused on CPU with a clear error, below)",
             ("dist.backend", "nccl"): "needs GPUs", ("dist.strategy", "fsdp"): "test_train_processes.py",
             ("device", None): ""}
TINY = ["model.patch_size=4", "model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2", "model.num_layers=1",
        "data.image_size=8", "data.batch_size=4", "data.eval_batch_size=8", "data.num_workers=0", "schedule.steps=1",
        "schedule.warmup_steps=0", "eval_every=0", "checkpoint_every=0", "threads=1"]


def _choices(node, prefix=""):
    for f in dataclasses.fields(node):
        tp = hints(type(node))[f.name]
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from _choices(value, f"{prefix}{f.name}.")
            continue
        literals = [tp] if typing.get_origin(tp) is typing.Literal else \
            [a for a in typing.get_args(tp) if typing.get_origin(a) is typing.Literal]
        for lit in literals:
            for choice in typing.get_args(lit):
                if choice is not None and (f"{prefix}{f.name}", choice) not in ELSEWHERE:
                    yield f"{prefix}{f.name}", choice


CHOICES = list(_choices(TrainConfig()))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("option_folder")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_the_vocabularies_are_found():
    keys = {k for k, _ in CHOICES}
    assert {"data.eval_resize", "data.test_split", "precision", "model.classifier", "model.gelu", "loss",
            "optim.name", "schedule.decay"} <= keys


@pytest.mark.parametrize("key, choice", CHOICES, ids=[f"{k}={c}" for k, c in CHOICES])
def test_choice_trains_one_step(key, choice, folder, tmp_path):
    cfg = apply_overrides(get_preset("default"), [f"data.train=folder:{folder}", *TINY, f"{key}={choice}",
                                                  f"out={tmp_path}"])
    s = loop.train(cfg, progress=False)
    assert s["steps"] == 1 and np.isfinite(s["final_loss"])
    assert s["eval"]["examples"] == 8  # the test split (val and validation fall back to it)


def test_fp16_on_cpu_is_refused_clearly(folder, tmp_path):
    cfg = apply_overrides(get_preset("default"), [f"data.train=folder:{folder}", *TINY, "precision=fp16",
                                                  "device=cpu", f"out={tmp_path}"])
    with pytest.raises(ValueError, match="precision=fp16 needs a GPU"):
        loop.train(cfg, progress=False)
