"""Preprocessing and Mixup/CutMix against hand-computed references."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import Mixup, Preprocess, randaugment, smooth_one_hot
from vitkit.data.transforms import RANDAUGMENT_OPS, _apply_op, inception_crop_box, sample_rng


def test_inception_crop_box_ranges() -> None:
    rng = random.Random(0)
    fracs, ratios, heights = [], [], []
    for _ in range(3000):
        x0, y0, x1, y1 = inception_crop_box(200, 100, rng)
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 100
        w, h = x1 - x0, y1 - y0
        if (w, h) != (200, 100):
            fracs.append(w * h / 20000)
            ratios.append(w / h)
    # area in [5%, 100%] and aspect in [0.75, 1.33] (TF's defaults), up to the rounding of sides to pixels
    assert min(fracs) >= 0.05 and max(fracs) <= 1.0
    assert min(ratios) >= 0.75 - 0.03 and max(ratios) <= 1.33 + 0.03
    assert inception_crop_box(10, 10, rng, area=(0.5, 0.5), aspect=(100, 100)) == (0, 0, 10, 10)  # fallback
    # TF documents that the crop's size (not its area) is uniform between its minimum and maximum for the drawn
    # aspect ratio. On a square image that predicts a mean height (as a fraction of the side) of the average over
    # aspect ratios of (sqrt(0.05 / ar) + min(1, 1 / ar)) / 2 = 0.572; a uniform area would give about 0.646.
    ar = np.linspace(0.75, 1.33, 10001)
    expected = float(((np.sqrt(0.05 / ar) + np.minimum(1, 1 / ar)) / 2).mean())
    for _ in range(4000):
        x0, y0, x1, y1 = inception_crop_box(400, 400, rng)
        heights.append((y1 - y0) / 400)
    assert abs(sum(heights) / len(heights) - expected) < 0.015


def _tf_bilinear_reference(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """TF2 ``tf.image.resize(..., 'bilinear')`` written from its definition: source coordinate
    (dst + 0.5) * in/out - 0.5, clamped at 0, linear between the two neighbours (clamped to the edge), float64."""
    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, fy = axis(a.shape[0], h)
    x0, x1, fx = axis(a.shape[1], w)
    a = a.astype(np.float64)
    top = a[y0][:, x0] * (1 - fx)[None, :, None] + a[y0][:, x1] * fx[None, :, None]
    bot = a[y1][:, x0] * (1 - fx)[None, :, None] + a[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


@pytest.mark.parametrize("src,dst", [((13, 17), (8, 11)), ((5, 7), (12, 9)), ((40, 40), (16, 16))])
def test_eval_resize_is_tf_bilinear(src: tuple[int, int], dst: tuple[int, int]) -> None:
    a = np.random.default_rng(0).integers(0, 256, (*src, 3), dtype=np.uint8)
    out = Preprocess(train=False, image_size=dst)(a, None, {})
    assert out.dtype == np.float32 and out.shape == (*dst, 3)
    assert np.abs(out - _tf_bilinear_reference(a, *dst)).max() < 1e-3
    ref = torch.nn.functional.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None].float(), size=dst,
                                          mode="bilinear", align_corners=False, antialias=False)
    assert np.abs(out - ref[0].permute(1, 2, 0).numpy()).max() < 1e-3


def test_eval_resize_crop() -> None:
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, 20:60] = 200  # the centre half in width is bright
    # resize_crop: shorter side -> 10/0.875 = 11.43 -> 11 px high, 23 wide; centre 10x10 lies inside the bright band
    out = Preprocess(train=False, image_size=(10, 10), eval_resize="resize_crop")(a, None, {})
    assert out.shape == (10, 10, 3) and out[:, 3:7].min() == 200
    same = Preprocess(train=False, image_size=(40, 80))(a, None, {})  # no resize needed: the pixels themselves
    assert np.array_equal(same, a)


def test_train_flip_and_determinism() -> None:
    a = np.tile(np.arange(16, dtype=np.uint8)[None, :, None] * 10, (16, 1, 3))
    pre = Preprocess(train=True, image_size=(16, 16), crop_area=(1.0, 1.0))
    outs = [pre(a, sample_rng(0, 0, i), {}) for i in range(20)]
    flipped = [o for o in outs if o[0, 0, 0] > o[0, -1, 0]]
    assert 0 < len(flipped) < 20  # both orientations occur
    for o in outs:  # the full-area crop is the whole image, possibly mirrored (aspect drawn near 1)
        assert np.array_equal(o, a) or np.array_equal(o, a[:, ::-1])
    again = pre(a, sample_rng(0, 0, 3), {})
    assert np.array_equal(again, outs[3])


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_randaugment_ops_run(mode: str) -> None:
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)).convert(mode)
    for name in RANDAUGMENT_OPS:
        out = _apply_op(name, im, 15.0, random.Random(1))
        assert out.size == im.size and out.mode == mode, name
    a = randaugment(im, 2, 15, random.Random(5))
    b = randaugment(im, 2, 15, random.Random(5))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(_apply_op("Invert", im, 5, random.Random(0))), 255 - np.asarray(im))


def test_smooth_one_hot() -> None:
    t = smooth_one_hot(torch.tensor([2, 0]), 4, 0.1)
    assert torch.allclose(t[0], torch.tensor([0.025, 0.025, 0.925, 0.025]))
    assert torch.allclose(t.sum(1), torch.ones(2))


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.arange(n)


def test_mixup_matches_formula() -> None:
    x, y = _batch()
    m = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=6)
    out, t = m(x, y, torch.Generator().manual_seed(3))
    lam = t[0, 0].item()
    assert 0 < lam < 1
    assert torch.allclose(out, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert torch.allclose(t[0, 5], torch.tensor(1 - lam)) and torch.allclose(t.sum(1), torch.ones(6))
    out2, t2 = m(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(out, out2) and torch.equal(t, t2)


def test_cutmix_pastes_area_of_lambda() -> None:
    x, y = _batch()
    m = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=6)
    for seed in range(5):
        out, t = m(x, y, torch.Generator().manual_seed(seed))
        pasted = (out[0] != x[0]).any(0)
        assert torch.equal(out[0][:, pasted], x.flip(0)[0][:, pasted])
        assert abs(pasted.float().mean().item() - (1 - t[0, 0].item())) < 1e-6


def test_mixup_prob_zero_only_smooths() -> None:
    x, y = _batch()
    out, t = Mixup(prob=0.0, label_smoothing=0.1, num_classes=6)(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and torch.allclose(t, smooth_one_hot(y, 6, 0.1))
    with pytest.raises(ValueError, match="labels must be in"):
        Mixup(num_classes=3)(x, y, torch.Generator())


@pytest.mark.parametrize("channels", [3, 1])
def test_pad_crop_is_a_window_of_the_reflect_padded_image(channels: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 6, channels), dtype=np.uint8)
    # Reference: torch's reflect padding (an independent implementation of the padding), every window of the
    # image's size, and their mirror images.
    padded = torch.nn.functional.pad(torch.from_numpy(a).permute(2, 0, 1)[None].float(), (2, 2, 2, 2), mode="reflect")
    padded = padded[0].permute(1, 2, 0).byte().numpy()
    windows = {(y, x): padded[y:y + 8, x:x + 6] for y in range(5) for x in range(5)}
    pre = Preprocess(train=True, image_size=(8, 6), in_chans=channels, crop_area=(1.0, 1.0), crop_padding=2)
    seen = set()
    for i in range(600):
        out = pre(a if channels == 3 else a[:, :, 0], sample_rng(0, 0, i), {})
        out = out if out.ndim == 3 else out[:, :, None]
        assert out.shape == (8, 6, channels)
        hits = [(k, False) for k, w in windows.items() if np.array_equal(out, w)]
        hits += [(k, True) for k, w in windows.items() if np.array_equal(out, w[:, ::-1])]
        assert hits, f"sample {i} is no window of the padded image"
        seen.update(hits)
    assert len(seen) == 2 * 25  # every offset, both orientations


def test_pad_crop_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"crop_padding=4 takes windows .* crop_area=\(0.9, 1.0\) .* crop_area=1,1"):
        Preprocess(train=True, image_size=(8, 8), crop_area=(0.9, 1.0), crop_padding=4)
    with pytest.raises(ValueError, match=r"crop_padding must be an integer in \[0, 1024\], got -1"):
        Preprocess(train=True, image_size=(8, 8), crop_area=(1.0, 1.0), crop_padding=-1)
    from vitkit.train.config import TrainConfig, apply_overrides

    with pytest.raises(ValueError, match=r"^data.crop_padding=4 takes windows"):
        apply_overrides(TrainConfig(), ["data.crop_padding=4", "data.crop_area=0.5,1"])
    assert apply_overrides(TrainConfig(), ["data.crop_padding=4", "data.crop_area=1,1"]).data.crop_padding == 4
