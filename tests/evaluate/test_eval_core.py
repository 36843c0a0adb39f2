"""Top-k accuracy over a loader, and image decoding for predict/analyze."""

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.evaluate import evaluate_accuracy, find_images, load_image, load_images


class _Fixed(torch.nn.Module):
    """A 'model' returning given logits, to count top-k hits by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.config = vitkit.create_model("ViT-Ti_16", num_classes=logits.shape[1], image_size=16, patch_size=4,
                                          num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64).config
        self.i = 0

    def forward(self, x):
        out = self.logits[self.i : self.i + len(x)]
        self.i += len(x)
        return out


def test_topk_counts_by_hand():
    # 6 classes; rows rank classes in a known order.
    logits = torch.tensor([
        [6.0, 5, 4, 3, 2, 1],  # label 0: top-1 hit
        [6.0, 5, 4, 3, 2, 1],  # label 4: top-5 hit only
        [6.0, 5, 4, 3, 2, 1],  # label 5: miss in top-5
        [1.0, 6, 2, 3, 4, 5],  # label 1: top-1 hit
    ])
    labels = torch.tensor([0, 4, 5, 1])
    x = torch.zeros(4, 3, 16, 16)
    loader = [(x[:3], labels[:3]), (x[3:], labels[3:])]
    res = evaluate_accuracy(_Fixed(logits), loader, progress=False, precision="fp32")
    assert res["top1"] == pytest.approx(2 / 4) and res["top5"] == pytest.approx(3 / 4)
    assert res["num_examples"] == 4


class _TopRow(_Fixed):
    """Logits = the first 3 pixels of channel 0's top row: a mirrored image scores differently."""

    def forward(self, x):
        return x[:, 0, 0, :3]


def test_flip_scores_the_mean_of_both_views_by_hand():
    x = torch.zeros(2, 3, 16, 16)
    x[0, 0, 0, 0] = 1.0  # single view [1, 0, 0]; mirrored [0, 0, 0]; mean -> class 0
    x[1, 0, 0, 0], x[1, 0, 0, 14] = 0.2, 1.0  # single [0.2, 0, 0] -> class 0; mirrored [0, 1, 0]; mean -> class 1
    labels = torch.tensor([0, 1])
    res = evaluate_accuracy(_TopRow(torch.zeros(1, 3)), [(x, labels)], progress=False, precision="fp32",
                            topk=(1,), flip=True)
    assert res["top1"] == pytest.approx(1 / 2) and res["flip_top1"] == pytest.approx(2 / 2)
    plain = evaluate_accuracy(_TopRow(torch.zeros(1, 3)), [(x, labels)], progress=False, precision="fp32", topk=(1,))
    assert "flip_top1" not in plain and plain["top1"] == res["top1"]


def test_topk_rejects_labels_outside_the_head():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="3 classes"):
        evaluate_accuracy(_Fixed(logits), [(torch.zeros(2, 3, 16, 16), torch.tensor([0, 7]))], progress=False)


def test_load_image_normalises_a_constant_colour(tmp_path):
    p = tmp_path / "c.png"
    Image.new("RGB", (10, 7), (255, 0, 51)).save(p)
    x = load_image(p, 8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.2))
    assert x.shape == (3, 8, 8)
    expected = [(1.0 - 0.5) / 0.5, (0.0 - 0.5) / 0.25, (0.2 - 0.5) / 0.2]
    for c in range(3):
        np.testing.assert_allclose(x[c].numpy(), expected[c], atol=1e-5)


def test_unreadable_and_missing_images_are_skipped_by_name(tmp_path, capsys):
    (tmp_path / "ok.png").write_bytes(b"")
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    found = find_images([tmp_path, tmp_path / "nope.png"])
    assert [p.name for p in found.paths] == ["broken.jpg", "ok.png"]
    assert found.skipped == [(str(tmp_path / "nope.png"), "no such file or folder")]
    x, ok, bad = load_images(found.paths, 4, (0.5,) * 3, (0.5,) * 3)
    assert x.shape == (1, 3, 4, 4) and [p.name for p in ok] == ["ok.png"]
    assert "broken.jpg" in bad[0][0]
    assert "broken.jpg" in capsys.readouterr().err


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files"):
        find_images([tmp_path])
