"""Evaluation and few-shot features straight from data: a spec string, a torch Dataset, a datasets.Dataset."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.data import build_loader
from vitkit.data.sources import open_map_source
from vitkit.errors import UserError
from vitkit.evaluate import evaluate_accuracy, extract_features
from vitkit.evaluate.data import open_loader

TEST = open_map_source("digits", "test")
NAMES = tuple(str(k) for k in range(10))


class Digits(torch.utils.data.Dataset):
    classes = list(NAMES)

    def __len__(self) -> int:
        return len(TEST)

    def __getitem__(self, i: int):
        return torch.from_numpy(TEST.images[i])[None], int(TEST.labels[i])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=8, patch_size=4, num_layers=1, hidden_size=32,
                            num_heads=2, mlp_dim=64, class_names=NAMES).eval()
    torch.nn.init.normal_(m.head.weight, std=1.0)
    return m


def test_evaluate_accuracy_takes_a_torch_dataset_as_it_takes_the_spec(model) -> None:
    want = evaluate_accuracy(model, "digits", progress=False)
    got = evaluate_accuracy(model, Digits(), progress=False)
    assert got == want and got["num_examples"] == len(TEST)
    # the same as the loader the caller builds with the model's own preprocessing
    loader, _, _ = open_loader(Digits(), model.config, split="test", batch_size=64)
    assert evaluate_accuracy(model, loader, progress=False) == want


def test_evaluate_accuracy_matches_a_datasets_dataset_by_class_name(model) -> None:
    datasets = pytest.importorskip("datasets", reason="the optional extra vitkit[hf] is not installed")
    perm = np.roll(np.arange(10), 4)  # class k is stored as label perm[k]: the same classes in another order
    names = [NAMES[int(np.flatnonzero(perm == j)[0])] for j in range(10)]
    images = []
    for a in TEST.images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"image": images, "label": perm[TEST.labels].tolist()}, features=feats)
    want = evaluate_accuracy(model, "digits", progress=False)
    got = evaluate_accuracy(model, ds, progress=False)
    assert got["top1"] == want["top1"] and got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    other = ds.cast_column("label", datasets.ClassLabel(names=[f"c{k}" for k in range(10)]))
    with pytest.raises(UserError, match="not classes of the model"):
        evaluate_accuracy(model, other, progress=False)


def test_extract_features_takes_data(model) -> None:
    f, y = extract_features(model, Digits(), split="test", progress=False)
    loader = build_loader("digits", split="test", train=False, image_size=8, batch_size=64, num_workers=0)
    f2, y2 = extract_features(model, loader, progress=False)
    assert f.shape == (len(TEST), 32) and np.array_equal(y, y2) and np.array_equal(f, f2)
