"""Masked patch prediction (models/masked.py): targets, corruption rates, the loss's reach."""

import math

import pytest
import torch

import vitkit
from vitkit.models.masked import (
    MaskedPatchModel,
    downsized_color_targets,
    draw_corruption,
    masked_patch_loss,
    mean_color_targets,
    pixel_targets,
)


def _independent_mean_color(pixels, p, bits):
    """Loops over patches and channels, written from the issue's definition."""
    n, _, h, w = pixels.shape
    out = torch.empty(n, (h // p) * (w // p), dtype=torch.int64)
    for i in range(n):
        k = 0
        for r in range(0, h, p):
            for c in range(0, w, p):
                q = [min(math.floor(float(pixels[i, ch, r:r + p, c:c + p].double().mean()) * 2**bits), 2**bits - 1)
                     for ch in range(3)]
                out[i, k] = q[0] * 2 ** (2 * bits) + q[1] * 2**bits + q[2]
                k += 1
    return out


def test_mean_color_targets():
    px = torch.zeros(3, 3, 8, 8)
    px[1] = 1.0  # white
    px[2, 0] = 1.0  # pure red
    t = mean_color_targets(px, 4)
    assert t.dtype == torch.int64 and t.shape == (3, 4)
    assert t[0].tolist() == [0] * 4 and t[1].tolist() == [511] * 4 and t[2].tolist() == [448] * 4
    rnd = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mean_color_targets(rnd, 4, bits=3), _independent_mean_color(rnd, 4, 3))
    assert torch.equal(mean_color_targets(rnd, 4, bits=2), _independent_mean_color(rnd, 4, 2))
    # row-major patch order: only the top-right patch white
    one = torch.zeros(1, 3, 8, 8)
    one[:, :, :4, 4:] = 1
    assert mean_color_targets(one, 4).tolist() == [[0, 511, 0, 0]]


def test_other_targets():
    px = torch.rand(2, 3, 8, 8)
    down = downsized_color_targets(px, 8, size=4)
    assert down.shape == (2, 1, 16)
    cell = px[:, :, :2, :2]  # the first 2x2 cell of the one 8x8 patch
    assert torch.equal(down[:, 0, 0], mean_color_targets(cell, 2)[:, 0])
    pix = pixel_targets(px, 4)
    assert pix.shape == (2, 4, 48) and torch.equal(pix[0, 1], px[0, :, :4, 4:].reshape(-1))


def test_corruption_rates_are_the_papers():
    n, k = 64, 196
    c = draw_corruption(n, k, torch.Generator().manual_seed(0))
    total, m = n * k, int(c.corrupted.sum())

    def within(count, trials, p):  # 5 standard deviations of a binomial
        return abs(count - trials * p) <= 5 * math.sqrt(trials * p * (1 - p))

    assert within(m, total, 0.5)
    assert within(int((c.action == 1).sum()), m, 0.8) and within(int((c.action == 2).sum()), m, 0.1)
    assert not c.action[~c.corrupted].any()
    own = torch.arange(total).reshape(n, k)
    assert (c.source != own).all() and c.source.min() >= 0 and c.source.max() < total
    again = draw_corruption(n, k, torch.Generator().manual_seed(0))
    assert torch.equal(again.action, c.action) and torch.equal(again.source, c.source)


def _mpp(target="mean_color"):
    torch.manual_seed(0)
    enc = vitkit.create_model("ViT-Ti_16", num_classes=0, image_size=16, patch_size=4, num_layers=1, hidden_size=16,
                              num_heads=2, mlp_dim=32)
    return MaskedPatchModel(enc, target=target)


@pytest.mark.parametrize("target", ["mean_color", "downsized", "pixels"])
def test_the_loss_counts_only_corrupted_patches(target):
    model = _mpp(target).train()
    torch.nn.init.normal_(model.head.weight, std=0.1)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    c = draw_corruption(2, 16, torch.Generator().manual_seed(1))
    enc = model.encoder
    outputs = {}
    hook = enc.norm.register_forward_hook(lambda m, i, o: outputs.setdefault("h", o))
    out = model(x, corruption=c)
    hook.remove()
    outputs["h"].retain_grad()
    masked_patch_loss(out).backward()
    g = outputs["h"].grad[:, 1:].abs().sum(-1)  # per patch token (class token dropped)
    assert (g[c.corrupted] > 0).all() and (g[~c.corrupted] == 0).all()
    assert out.predictions.shape[0] == int(c.corrupted.sum())


def test_training_forwards_draw_new_corruption_from_the_step_counter():
    model = _mpp().train()
    x = torch.rand(2, 3, 16, 16)
    masks = []
    for step in range(3):
        model.corruption_step.fill_(step)
        masks.append(draw_corruption(2, 16, model._generator()).corrupted)
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    model.corruption_step.zero_()
    assert model(x).predictions.shape[0] == int(masks[0].sum()) and int(model.corruption_step) == 1
    assert model(x).predictions.shape[0] == int(masks[1].sum()) and int(model.corruption_step) == 2
    model.eval()
    model(x)
    assert int(model.corruption_step) == 2  # evaluation draws without advancing the run's counter
