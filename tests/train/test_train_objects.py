"""Training on the user's own data objects (issue 30 part 2) and the test set that belongs to the run (part 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vitkit.cli.main import main
from vitkit.data.sources import open_map_source
from vitkit.errors import UserError
from vitkit.train import loop
from vitkit.train.config import apply_overrides
from vitkit.train.presets import get_preset

datasets = pytest.importorskip("datasets", reason="the optional extra vitkit[hf] is not installed")
datasets.disable_progress_bars()

TINY = ["model.patch_size=4", "model.hidden_size=32", "model.mlp_dim=64", "model.num_heads=2", "model.num_layers=2",
        "data.image_size=8", "data.batch_size=16", "data.eval_batch_size=128", "data.num_workers=0",
        "optim.lr=0.003", "schedule.warmup_steps=1", "schedule.steps=2", "log_every=1", "threads=1",
        "precision=fp32", "checkpoint_every=0"]
TRAIN, TEST = open_map_source("digits", "train"), open_map_source("digits", "test")
NAMES = [f"digit {k}" for k in range(10)]


def tiny(out: Path, *extra: str):
    return apply_overrides(get_preset("default"), [*TINY, f"out={out}", *extra])


class Digits(torch.utils.data.Dataset):
    """A user's Dataset: PIL images and int labels, torchvision's ``classes``."""

    classes = NAMES

    def __init__(self, src):
        self.src = src

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int):
        return Image.fromarray(self.src.images[i]), int(self.src.labels[i])


def hf_digits(src, names=NAMES, order=None):
    """``src`` as a datasets.Dataset of PNG images; ``order``: class k is called names[order[k]] (labels follow)."""
    import io

    order = np.arange(10) if order is None else np.asarray(order)
    images = []
    for a in src.images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    return datasets.Dataset.from_dict({"image": images, "label": order[src.labels].tolist()}, features=feats)


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_torch_dataset_trains_and_evaluates(tmp_path: Path) -> None:
    s = loop.train(tiny(tmp_path / "r"), progress=False, train_data=Digits(TRAIN), test_data=Digits(TEST))
    assert s["steps"] == 2 and s["eval"]["examples"] == len(TEST) and 0 <= s["eval_top1"] <= 1
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["data"]["train"] == "<torch Dataset Digits (1438 items)>"
    import vitkit

    assert list(vitkit.load_model(tmp_path / "r" / "model.safetensors").config.class_names) == NAMES
    # config.yaml records the object; reading it back as a spec says how to resume
    with pytest.raises(UserError, match="resumed from Python"):
        loop.train(tiny(tmp_path / "x", f"data.train={saved['data']['train']}"), progress=False)
    # no test data: no evaluation (a single Dataset is not its own test set)
    s = loop.train(tiny(tmp_path / "n"), progress=False, train_data=Digits(TRAIN))
    assert "eval" not in s or not s["eval"]


def test_hf_dataset_trains_and_evaluates_with_classes_in_another_order(tmp_path: Path) -> None:
    train = hf_digits(TRAIN)
    s = loop.train(tiny(tmp_path / "a"), progress=False, train_data=train, test_data=hf_digits(TEST))
    assert s["steps"] == 2 and s["eval"]["examples"] == len(TEST)
    # the test set names the same classes in another order: its labels are remapped by name (vitkit eval's rule),
    # so the score is the same
    perm = np.roll(np.arange(10), 3)
    renamed = [NAMES[int(np.flatnonzero(perm == k)[0])] for k in range(10)]
    s2 = loop.train(tiny(tmp_path / "b"), progress=False, train_data=train,
                    test_data=hf_digits(TEST, renamed, perm))
    assert s2["eval"]["top1"] == s["eval"]["top1"] and s2["eval"]["loss"] == pytest.approx(s["eval"]["loss"])
    # other classes: refused before training
    with pytest.raises(UserError, match=r"does not hold the classes of data.train.*not classes of the training data"):
        loop.train(tiny(tmp_path / "c"), progress=False, train_data=train,
                   test_data=hf_digits(TEST, [f"class {k}" for k in range(10)]))
    assert not (tmp_path / "c" / "config.yaml").exists()


def test_hf_folder_trains_and_evaluates_from_the_cli(tmp_path: Path) -> None:
    datasets.DatasetDict(train=hf_digits(TRAIN), test=hf_digits(TEST)).save_to_disk(str(tmp_path / "dd"))
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--no-progress", "--data", f"hf:{tmp_path / 'dd'}", *TINY]) == 0
    s = _summary(out)
    assert s["steps"] == 2 and s["eval"]["examples"] == len(TEST)
    assert main(["eval", "--model", str(out / "model.safetensors"), "--data", f"hf:{tmp_path / 'dd'}",
                 "--batch-size", "128", "--json", "--no-progress"]) == 0


def test_test_set_without_the_training_classes_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "f" / "cat").mkdir(parents=True)
    (tmp_path / "f" / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "f" / "cat" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "f" / "dog" / "b.png")
    rc = main(["train", "--out", str(tmp_path / "r"), "--no-progress", "--data", "digits",
               f"data.test=folder:{tmp_path / 'f'}", *TINY])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "does not hold the classes of data.train='digits'" in err and "cat, dog" in err


def test_preset_with_other_training_data_but_its_own_test_set_is_an_error(tmp_path: Path, capsys) -> None:
    own = get_preset("cifar10_cpu").data
    assert own.test is not None  # the preset tests on its own data
    rc = main(["train", "--preset", "cifar10_cpu", "--out", str(tmp_path / "r"), "--no-progress", "data.train=digits"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "preset 'cifar10_cpu' tests on its own data" in err and "--data digits" in err
    with pytest.raises(UserError, match="pass test_data= as well"):
        loop.train(apply_overrides(get_preset("cifar10_cpu"), [f"out={tmp_path / 'p'}"]), train_data=Digits(TRAIN))


def test_data_flag_sets_both_splits_of_a_preset(tmp_path: Path) -> None:
    """``--preset cifar10_cpu --data digits`` trains and tests on digits (not on the preset's CIFAR-10)."""
    out = tmp_path / "r"
    assert main(["train", "--preset", "cifar10_cpu", "--out", str(out), "--no-progress", "--data", "digits",
                 "schedule.steps=2", "schedule.warmup_steps=1", "data.batch_size=16", "data.num_workers=0",
                 "data.progressive_resize=none", "threads=1", "precision=fp32", "checkpoint_every=0",
                 "data.eval_limit=64"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["train"] == "digits" and saved["data"]["test"] is None
    s = _summary(out)
    assert s["steps"] == 2 and s["eval"]["examples"] == 64


def test_streaming_iterable_dataset_trains(tmp_path: Path) -> None:
    stream = hf_digits(TRAIN).to_iterable_dataset(num_shards=2)
    s = loop.train(tiny(tmp_path / "r"), progress=False, train_data=stream, test_data=hf_digits(TEST))
    assert s["steps"] == 2 and s["eval"]["examples"] == len(TEST)
