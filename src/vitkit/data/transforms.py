"""Decoding with bad-data accounting, and the official ViT preprocessing (Pillow + numpy).

Train: Inception-style crop (``tf.image.sample_distorted_bounding_box`` with area 5%-100% and TF's defaults: aspect
0.75-1.33, 100 attempts, whole image as fallback; see :func:`inception_crop_box`) resized to the training size,
horizontal flip with p=0.5, optional RandAugment.
Eval: the named preprocessing of :mod:`vitkit.data.preprocess` (``vit_jax``, ``big_vision``, ``big_vision_precise``:
TensorFlow's decode and resize exactly; ``pil``: Pillow's decode and the mode conversions below). Under ``pil``:
plain resize to the size with TF's bilinear resize (:func:`~vitkit.data.preprocess.tf_resize_float32`, the official
fine-tuning evaluation's resize: half-pixel centres, no anti-aliasing, float result not rounded to uint8), or resize
so the crop is 87.5% of the image and take the centre crop. Training crops and the centre-crop evaluation use
Pillow's bilinear resize (uint8; when downsizing Pillow filters with a wider, anti-aliasing kernel; upsizing is the
same interpolation as TF's up to the uint8 rounding).

Every random decision takes an explicit ``random.Random`` made by :func:`sample_rng` from the sample's identity
(Python's generator: seeding and scalar draws cost a fraction of numpy's, which matters at ~100 us per sample).

Mode conversion (counted in the loader stats under ``converted``):
grey (``L``/``1``) -> RGB by replication; RGBA/LA/PA and palette images with transparency -> alpha-composited on
white (so transparent backgrounds become white, not the undefined colour under alpha=0); palette -> RGB; CMYK -> RGB
with Pillow's plain conversion (embedded ICC profiles are ignored); 16-bit / 32-bit integer and float images ->
8-bit (values > 255 are scaled from 0..65535, otherwise clipped). EXIF orientation is not applied, as in the official
TF pipeline.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import struct
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError

from ..errors import UserError
from .options import EVAL_RESIZE, LOADER_DEFAULTS
from .preprocess import (
    TF_PREPROCESSINGS,
    DecodeError,
    check_preprocess,
    tf_decode,
    tf_resize_array,
    tf_resize_float32,
)

# Images above this many pixels are skipped as decompression bombs (Pillow's own default warns at 89M and
# refuses at 179M; a classification data set has no business holding 64-megapixel images).
MAX_IMAGE_PIXELS = 64 * 1024 * 1024

SKIP_REASONS = ("corrupt", "truncated", "unreadable", "too_large", "no_image", "no_label", "corrupt_shard")
CONVERT_REASONS = ("grey", "rgba", "palette", "cmyk", "high_bit_depth", "other_mode")


class BadImage(Exception):
    """A sample that cannot be used; ``reason`` is one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode encoded bytes fully (so truncation shows now); BadImage with the reason on failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:  # its message names our in-memory buffer, not the file: say what failed
            raise BadImage("unreadable", "Pillow recognises no image format in it (not an image file?)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise BadImage("too_large", str(e)) from None
        except OSError as e:  # a file cut inside its header
            raise BadImage("truncated" if "truncat" in str(e).lower() else "corrupt", str(e)) from None
        except Exception as e:  # Pillow raises many types on garbage headers
            raise BadImage("corrupt", f"{type(e).__name__}: {e}") from None
        # Pillow reads only the header in open(): check the size before allocating the pixels.
        if im.width * im.height > max_pixels:
            raise BadImage("too_large", f"{im.width}x{im.height} > {max_pixels} pixels")
        if im.width == 0 or im.height == 0:
            raise BadImage("corrupt", "zero-sized image")
        try:
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise BadImage("too_large", str(e)) from None
        except OSError as e:
            msg = str(e)
            raise BadImage("truncated" if "truncat" in msg.lower() else "corrupt", msg) from None
        except Exception as e:
            raise BadImage("corrupt", f"{type(e).__name__}: {e}") from None
    return im


def _to_8bit(im: Image.Image) -> Image.Image:
    a = np.asarray(im)
    if a.dtype == np.uint8:
        return Image.fromarray(a)
    a = a.astype(np.float64)
    if a.max(initial=0) > 255:
        a = a * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def to_mode(im: Image.Image, mode: str, counts: dict[str, int] | None = None) -> Image.Image:
    """Convert any Pillow mode to ``mode`` ('RGB' or 'L'); count the conversion kind in ``counts``."""

    def count(reason: str) -> None:
        if counts is not None:
            counts[reason] = counts.get(reason, 0) + 1

    m = im.mode
    if m == mode:
        return im
    if m in ("RGB", "L") and mode in ("RGB", "L"):
        if m == "L":
            count("grey")
        return im.convert(mode)
    if m == "1":
        count("grey")
        return im.convert("L").convert(mode)
    if m == "P":
        count("palette")
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        if im.mode == "RGB":
            return im.convert(mode)
        m = "RGBA"
    elif m in ("RGBA", "LA", "PA", "RGBa", "La"):
        count("rgba")
    if m in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert(mode)
    if m == "CMYK":
        count("cmyk")
        return im.convert("RGB").convert(mode)
    if m.startswith("I") or m == "F":
        count("high_bit_depth")
        return _to_8bit(im).convert(mode)
    count("other_mode")
    return im.convert("RGB").convert(mode)


# -------------------------------------------------------------------------------------------------------------------


def sample_rng(*parts: int) -> random.Random:
    """The augmentation generator of one sample, seeded by a hash of e.g. (seed, epoch, index): it depends on
    nothing else (no worker-global state), so batches do not depend on worker count or resumption."""
    words = [int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]
    digest = hashlib.blake2b(struct.pack(f"<{len(words)}Q", *words), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "little"))


def _tf_crop_size(width: int, height: int, area: tuple[float, float], ar: float,
                  rng: random.Random) -> tuple[int, int] | None:
    """One attempt of TF's ``GenerateRandomCrop`` for aspect ratio ``ar``: the crop *height* is uniform between
    the heights giving the minimum and the maximum area (so the area is not uniform), width = round(height * ar);
    None when the rounded box breaks the constraints."""
    min_area, max_area = area[0] * width * height, area[1] * width * height
    h = round(math.sqrt(min_area / ar))
    max_h = round(math.sqrt(max_area / ar))
    if round(max_h * ar) > width:  # the largest height whose rounded width still fits
        max_h = int((width + 0.5 - 1e-7) / ar)
        if round(max_h * ar) > width:
            max_h -= 1
    max_h = min(max_h, height)
    h = min(h, max_h)
    if h < max_h:
        h += rng.randint(0, max_h - h)
    w = round(h * ar)
    if w * h < min_area:  # rounding: try one pixel taller, then one shorter
        h += 1
        w = round(h * ar)
    if w * h > max_area:
        h -= 1
        w = round(h * ar)
    if w * h < min_area or w * h > max_area or not (0 < w <= width and 0 < h <= height):
        return None
    return w, h


def inception_crop_box(width: int, height: int, rng: random.Random,
                       area: tuple[float, float] = LOADER_DEFAULTS.crop_area,
                       aspect: tuple[float, float] = (0.75, 1.33), attempts: int = 100) -> tuple[int, int, int, int]:
    """A random (left, top, right, bottom) box as ``tf.image.sample_distorted_bounding_box`` draws it with
    ``min_object_covered=0`` and its defaults (aspect ratio uniform in (0.75, 1.33), 100 attempts, the whole image if
    none succeeds); the algorithm of TF's ``GenerateRandomCrop``, written out, including its offsets
    (uniform in ``[0, size - crop)``)."""
    for _ in range(attempts):
        ar = rng.uniform(aspect[0], aspect[1])
        size = _tf_crop_size(width, height, area, ar, rng)
        if size is None:
            continue
        w, h = size
        y = rng.randrange(height - h) if h < height else 0
        x = rng.randrange(width - w) if w < width else 0
        return x, y, x + w, y + h
    return 0, 0, width, height


# -- RandAugment (the op set and magnitude scaling of the TF EfficientNet/AugReg implementation, on Pillow) ----------

_FILL = (128, 128, 128)
_MAX_LEVEL = 10.0


def _signed(v: float, rng: random.Random) -> float:
    return -v if rng.random() < 0.5 else v


def _affine(im: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    fill = _FILL if im.mode == "RGB" else _FILL[0]
    return im.transform(im.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR, fillcolor=fill)


def _cutout(im: Image.Image, size: int, rng: random.Random) -> Image.Image:
    a = np.array(im)
    h, w = a.shape[:2]
    cy, cx = rng.randrange(h), rng.randrange(w)
    a[max(0, cy - size):cy + size, max(0, cx - size):cx + size] = _FILL[0] if a.ndim == 2 else _FILL
    return Image.fromarray(a)


def _solarize_add(im: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    a = np.asarray(im).astype(np.int16)
    out = np.where(a < threshold, np.clip(a + add, 0, 255), a)
    return Image.fromarray(out.astype(np.uint8))


def _apply_op(name: str, im: Image.Image, level: float, rng: random.Random) -> Image.Image:
    f = level / _MAX_LEVEL
    w, h = im.size
    if name == "AutoContrast":
        return ImageOps.autocontrast(im)
    if name == "Equalize":
        return ImageOps.equalize(im)
    if name == "Invert":
        return ImageOps.invert(im)
    if name == "Rotate":
        fill = _FILL if im.mode == "RGB" else _FILL[0]
        return im.rotate(_signed(f * 30.0, rng), resample=Image.Resampling.BILINEAR, fillcolor=fill)
    if name == "Posterize":
        return ImageOps.posterize(im, max(1, min(8, int(f * 4))))
    if name == "Solarize":
        return ImageOps.solarize(im, min(256, int(f * 256)))
    if name == "SolarizeAdd":
        return _solarize_add(im, int(f * 110))
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        enhancer = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
                    "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}[name]
        return enhancer(im).enhance(max(0.0, f * 1.8 + 0.1))
    if name == "ShearX":
        return _affine(im, (1, _signed(f * 0.3, rng), 0, 0, 1, 0))
    if name == "ShearY":
        return _affine(im, (1, 0, 0, _signed(f * 0.3, rng), 1, 0))
    if name == "TranslateX":  # 100 px at 224 in the reference; scaled with the image width here
        return _affine(im, (1, 0, _signed(f * 100.0 * w / 224.0, rng), 0, 1, 0))
    if name == "TranslateY":
        return _affine(im, (1, 0, 0, 0, 1, _signed(f * 100.0 * h / 224.0, rng)))
    if name == "Cutout":  # 40 px half-size at 224 in the reference
        return _cutout(im, max(1, int(f * 40.0 * min(w, h) / 224.0)), rng)
    raise UserError(f"unknown RandAugment op {name!r}")


RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
                   "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")


def randaugment(im: Image.Image, num_ops: int, magnitude: float, rng: random.Random,
                prob: float = 1.0) -> Image.Image:
    """RandAugment as AugReg/big_vision run it (the TF EfficientNet ``distort_image_with_randaugment``): ``num_ops``
    times, one op drawn uniformly from RANDAUGMENT_OPS is applied (always: ``prob=1``; timm uses 0.5) at
    ``magnitude`` on the 0..10 scale (AugReg's randaug(2, 15) goes beyond 10 on purpose). Rotations, shears and
    translations get a random sign; fill value 128. Translate (100 px) and Cutout (40 px) are defined at 224 px and
    scaled with the image here, so they mean the same on smaller images."""
    for _ in range(num_ops):
        name = RANDAUGMENT_OPS[rng.randrange(len(RANDAUGMENT_OPS))]
        if prob >= 1.0 or rng.random() < prob:
            im = _apply_op(name, im, magnitude, rng)
    return im


# -------------------------------------------------------------------------------------------------------------------


MAX_CROP_PADDING = 1024


def check_crop(crop_area: tuple[float, float], crop_padding: int) -> None:
    """The one check of the training crop's options (the loader's and the training config's)."""
    if not (0 < crop_area[0] <= crop_area[1] <= 1):
        raise UserError(f"crop_area must satisfy 0 < min <= max <= 1, got {crop_area}")
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or not 0 <= crop_padding <= MAX_CROP_PADDING:
        raise UserError(f"crop_padding must be an integer in [0, {MAX_CROP_PADDING}], got {crop_padding!r}")
    if crop_padding and tuple(crop_area) != (1.0, 1.0):
        raise UserError(f"crop_padding={crop_padding} takes windows of the image's own size from the padded image "
                        f"(the CIFAR ResNets' crop), which crop_area={tuple(crop_area)} would also rescale: set "
                        "crop_area=1,1 with it")


def pad_crop_box(im: Image.Image, rng: random.Random, padding: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The CIFAR ResNets' augmentation (He et al. 2016, Section 4.2): the image reflect-padded by ``padding`` px on
    every side, and a random window of the image's own size in it (a translation by up to ``padding`` px).

    Reflect rather than zero padding: the edge pixels continue instead of a black frame (as fast CIFAR-10 training
    recipes do; it is also what ``cifar10_cpu`` was measured with)."""
    a = np.asarray(im)
    pads = ((padding, padding), (padding, padding)) + (((0, 0),) if a.ndim == 3 else ())
    padded = Image.fromarray(np.pad(a, pads, mode="reflect"))
    x0, y0 = rng.randint(0, 2 * padding), rng.randint(0, 2 * padding)
    return padded, (x0, y0, x0 + im.width, y0 + im.height)


class Preprocess:
    """Picklable per-sample transform: raw sample (uint8 array, encoded bytes, or a PIL image from a user's
    Dataset) -> HWC array with values in [0, 255] (uint8, or float32 from the TF-exact evaluation resize)."""

    def __init__(self, *, train: bool, image_size: tuple[int, int], in_chans: int = 3,
                 eval_resize: str = LOADER_DEFAULTS.eval_resize, randaugment: tuple[int, int] | None = None,
                 crop_area: tuple[float, float] = LOADER_DEFAULTS.crop_area, flip: bool = LOADER_DEFAULTS.flip,
                 max_pixels: int = MAX_IMAGE_PIXELS, crop_fraction: float = 0.875, preprocess: str = "pil",
                 crop_padding: int = LOADER_DEFAULTS.crop_padding):
        if in_chans not in (1, 3):
            raise UserError(f"in_chans must be 1 or 3, got {in_chans}")
        if eval_resize not in EVAL_RESIZE:
            raise UserError(f"eval_resize must be one of {', '.join(EVAL_RESIZE)}, got {eval_resize!r}")
        # the evaluation preprocessing (vitkit.data.preprocess); training augmentation is always Pillow's
        self.preprocess = check_preprocess(preprocess, 3 if train else in_chans)
        self.tf_eval = not train and preprocess in TF_PREPROCESSINGS
        if self.tf_eval and eval_resize != "resize":
            raise UserError(f"preprocessing {preprocess!r} resizes the whole image as the official code does; "
                             f"eval_resize={eval_resize!r} (a centre crop) needs preprocessing 'pil'")
        check_crop(crop_area, crop_padding)
        self.train = train
        self.size = image_size  # (h, w)
        self.mode = "RGB" if in_chans == 3 else "L"
        self.eval_resize = eval_resize
        self.randaugment = randaugment
        self.crop_area = crop_area
        self.crop_padding = crop_padding
        self.flip = flip
        self.max_pixels = max_pixels
        self.crop_fraction = crop_fraction

    def _tf_decode(self, raw: bytes, counts: dict[str, int]) -> np.ndarray:
        try:
            return tf_decode(raw, precise=self.preprocess == "big_vision_precise", max_pixels=self.max_pixels,
                             counts=counts)
        except DecodeError as e:
            raise BadImage(e.reason, str(e)) from None

    def to_image(self, raw: Any, counts: dict[str, int]) -> Image.Image:
        if isinstance(raw, np.ndarray):  # in-memory sources are known-format: no conversion counted
            im = Image.fromarray(raw)
            return im if im.mode == self.mode else im.convert(self.mode)
        if isinstance(raw, Image.Image):  # decoded by a user's Dataset: converted (and counted) as a decoded file
            if raw.width * raw.height > self.max_pixels:
                raise BadImage("too_large", f"{raw.width}x{raw.height} > {self.max_pixels} pixels")
            if raw.width == 0 or raw.height == 0:
                raise BadImage("corrupt", "zero-sized image")
            return to_mode(raw, self.mode, counts)
        if self.tf_eval:
            return Image.fromarray(self._tf_decode(raw, counts))
        return to_mode(decode_image(raw, self.max_pixels), self.mode, counts)

    def __call__(self, raw: Any, rng: random.Random | None, counts: dict[str, int]) -> np.ndarray:
        h, w = self.size
        if self.tf_eval:  # TensorFlow's decode and resize, exactly (vitkit.data.preprocess)
            if isinstance(raw, Image.Image):  # a user's decoded image: Pillow's conversion to RGB, then TF's resize
                raw = np.asarray(self.to_image(raw, counts), dtype=np.uint8)
            if isinstance(raw, np.ndarray):
                a = raw if raw.ndim == 3 else raw[:, :, None]
                a = np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a  # grey arrays: TF's grayscale_to_rgb
            else:
                a = self._tf_decode(raw, counts)
            return tf_resize_array(a, self.preprocess, h, w)
        im = self.to_image(raw, counts)
        if self.train:
            assert rng is not None
            if self.crop_padding:
                im, box = pad_crop_box(im, rng, self.crop_padding)
            else:
                box = inception_crop_box(im.width, im.height, rng, self.crop_area)
            if self.flip and rng.random() < 0.5:
                # mirror the source and the box instead of the output: same result, and the source is usually the
                # smaller image
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                box = (im.width - box[2], box[1], im.width - box[0], box[3])
            if (box[2] - box[0], box[3] - box[1]) == (w, h):
                im = im.crop(box)  # a window at the output size: the pixels themselves, no resampling
            else:
                im = im.resize((w, h), Image.Resampling.BILINEAR, box=box)
            if self.randaugment is not None:
                im = randaugment(im, self.randaugment[0], self.randaugment[1], rng)
        elif self.eval_resize == "resize":
            if im.size != (w, h):
                return tf_resize_float32(np.asarray(im, dtype=np.uint8), h, w)
        else:
            scale = max(h / self.crop_fraction / im.height, w / self.crop_fraction / im.width)
            rw, rh = max(w, int(round(im.width * scale))), max(h, int(round(im.height * scale)))
            im = im.resize((rw, rh), Image.Resampling.BILINEAR)
            left, top = (rw - w) // 2, (rh - h) // 2
            im = im.crop((left, top, left + w, top + h))
        a = np.asarray(im, dtype=np.uint8)
        return a[:, :, None] if a.ndim == 2 else a
