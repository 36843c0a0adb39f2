"""The named evaluation preprocessings, each equal to the code it is named after.

============================  ====================================================================================
``vit_jax``                   google-research/vision_transformer ``input_pipeline.py`` (eval): TensorFlow's decode
                              (``tf.io.decode_image(channels=3)``: libjpeg's fast integer IDCT with fancy
                              upsampling, TF's rules for alpha, 16-bit, palette, grey, CMYK), ``tf.image.resize``
                              (bilinear, half-pixel centres, float32 coordinates and arithmetic, no rounding), then
                              the normalisation.
``big_vision``                big_vision ``decode|resize(S)|value_range(-1, 1)``: the same decode and resize, then
                              big_vision's cast of the resized image back to uint8 (clip, truncate).
``big_vision_precise``        the same with ``decode(precise=True)`` (``dct_method="INTEGER_ACCURATE"``, libjpeg's
                              accurate IDCT, which is what Pillow/PyTorch decoders give).
``pil``                       vitkit's Pillow pipeline (accurate IDCT; transparency composited on white; 16-bit
                              scaled; TIFF/PPM read too) with the same TF resize in float64 coordinates.
============================  ====================================================================================

:data:`PREPROCESSINGS` is the vocabulary; the CLI's ``--preprocess``, the training config's
``data.eval_preprocess`` and ``load_image(..., preprocess=)`` all take their choices from it, and
:func:`default_preprocess` is the one rule for the default: ``vit_jax`` for 3-channel checkpoints with the
official [-1, 1] normalisation (mean = std = 0.5), ``pil`` otherwise. The normalisation itself is always the
checkpoint's ``(x / 255 - mean) / std``; with mean = std = 0.5 that is vit_jax's ``(x - 127.5) / 127.5`` and
big_vision's ``value_range(-1, 1)`` to within one float32 rounding.

JPEG decoding uses simplejpeg, a maintained libjpeg-turbo binding with wheels that carry the library, because it
exposes the two switches TensorFlow sets (``fastdct`` = JDCT_IFAST, ``fastupsample=False`` = fancy upsampling);
Pillow offers neither (it always uses the accurate IDCT), and writing a decoder would be an own, unreviewed copy of
libjpeg. Measured: simplejpeg 1.9 equals ``tf.io.decode_image`` of TensorFlow 2.21 bit for bit on 300 JPEGs of the
shared CIFAR-10 and Imagenette shards, with both IDCTs (tests/data/test_preprocess.py holds the committed check).
Other formats are lossless (PNG, GIF, BMP) or decoded by the same libwebp as TensorFlow's (WebP), so Pillow decodes
them and only TensorFlow's channel rules are applied on top (:func:`tf_decode`).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError

PREPROCESSINGS = ("vit_jax", "big_vision", "big_vision_precise", "pil")
# The official ViT input normalisation, [-1, 1]: ViTConfig's mean/std default to it, build_loader's too.
VIT_MEAN = (0.5, 0.5, 0.5)
VIT_STD = (0.5, 0.5, 0.5)
TF_PREPROCESSINGS = ("vit_jax", "big_vision", "big_vision_precise")
# Every suffix vitkit treats as an image file (folders of images, ``predict`` inputs); TensorFlow's decoders read
# the first five kinds only (JPEG, PNG, GIF, BMP, WebP).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def check_preprocess(name: str, in_chans: int = 3) -> str:
    """``name`` if it is a known preprocessing usable with ``in_chans``; otherwise a ValueError naming the choices."""
    if name not in PREPROCESSINGS:
        raise UserError(f"unknown preprocessing {name!r}; choose one of {', '.join(PREPROCESSINGS)}")
    if name in TF_PREPROCESSINGS and in_chans != 3:
        raise UserError(f"preprocessing {name!r} is the official 3-channel pipeline; this model takes {in_chans} "
                         "channel(s): use 'pil'")
    return name


def default_preprocess(mean: tuple[float, ...] | list[float], std: tuple[float, ...] | list[float],
                       in_chans: int = 3, eval_resize: str = "resize") -> str:
    """``vit_jax`` for checkpoints normalised as the official ones ([-1, 1]: mean = std = 0.5, 3 channels),
    ``pil`` for the rest (their authors' pipelines are not TensorFlow's) and for the centre-crop evaluation
    (``eval_resize`` other than "resize": vitkit's Pillow crop, which the official evaluation has not)."""
    official = in_chans == 3 and (tuple(map(float, mean)), tuple(map(float, std))) == (VIT_MEAN, VIT_STD)
    return "vit_jax" if official and eval_resize == "resize" else "pil"


# -- TensorFlow's decode ---------------------------------------------------------------------------------------------


class DecodeError(Exception):
    """TensorFlow's decoder would refuse these bytes; ``reason`` is a loader skip reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def sniff(data: bytes) -> str | None:
    """The format by magic number, as TensorFlow's ``decode_image`` tells them apart."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"GIF8":
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _count(counts: dict[str, int] | None, kind: str) -> None:
    if counts is not None:
        counts[kind] = counts.get(kind, 0) + 1


def _jpeg(data: bytes, precise: bool, counts: dict[str, int] | None) -> np.ndarray:
    import simplejpeg

    try:
        _, _, colour, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as e:
        # libjpeg-turbo's header message does not say why; a file without the end-of-image marker was cut short
        raise DecodeError("corrupt" if data.rstrip(b"\0").endswith(b"\xff\xd9") else "truncated",
                          f"JPEG header: {e}") from None
    cmyk = colour in ("CMYK", "YCCK")
    if cmyk or colour == "Gray":
        _count(counts, "cmyk" if cmyk else "grey")
    kw = dict(colorspace="CMYK" if cmyk else "RGB", fastdct=not precise, fastupsample=False)
    try:
        a = simplejpeg.decode_jpeg(data, strict=True, **kw)
    except ValueError as e:
        msg = str(e)
        if "premature" in msg.lower() or "truncat" in msg.lower():
            raise DecodeError("truncated", f"JPEG: {msg}") from None  # TF refuses truncated JPEGs too
        try:  # a libjpeg warning (e.g. extraneous bytes): TensorFlow counts warnings and decodes on
            a = simplejpeg.decode_jpeg(data, strict=False, **kw)
        except ValueError as e2:
            raise DecodeError("corrupt", f"JPEG: {e2}") from None
    if not cmyk:
        return a
    # TF's jpeg_mem.cc: libjpeg outputs CMYK, converted with integer arithmetic; Adobe files store it inverted
    with Image.open(io.BytesIO(data)) as im:
        adobe = "adobe" in im.info
    c = a.astype(np.int32)
    k = c[..., 3:4]
    rgb = k * c[..., :3] // 255 if adobe else (255 - k) * (255 - c[..., :3]) // 255
    return rgb.astype(np.uint8)


def _gif_first_frame(im: Image.Image) -> np.ndarray:
    """TF's gif_io.cc for the first frame: palette colours; pixels of the transparent index and the canvas outside
    the frame are black (0, 0, 0)."""
    index = np.asarray(im)  # Pillow's first frame of a GIF is its raw palette indices on the full canvas
    palette = np.asarray(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = palette[:256]
    out = lut[index]
    trns = im.info.get("transparency")
    if isinstance(trns, int):
        out[index == trns] = 0
    return out


def tf_decode(data: bytes, precise: bool = False, max_pixels: int | None = None,
              counts: dict[str, int] | None = None) -> np.ndarray:
    """``tf.io.decode_image(data, channels=3, expand_animations=False)`` as (H, W, 3) uint8; ``precise`` gives
    ``tf.image.decode_jpeg(..., dct_method="INTEGER_ACCURATE")`` for JPEGs. DecodeError where TensorFlow refuses.
    Conversions from other modes are counted in ``counts`` (the loader's CONVERT_REASONS)."""
    fmt = sniff(data)
    if fmt is None:
        raise DecodeError("unreadable", "TensorFlow's decode_image reads JPEG, PNG, GIF, BMP and WebP only "
                                        "(use the 'pil' preprocessing for other formats)")
    if fmt == "jpeg":
        return _jpeg(data, precise, counts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise DecodeError("too_large", f"{im.width}x{im.height} > {max_pixels} pixels")
            im.load()
        except DecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DecodeError("too_large", str(e)) from None
        except Exception as e:  # Pillow raises many types on damaged files
            msg = f"{type(e).__name__}: {e}"
            if isinstance(e, UnidentifiedImageError):  # its message names our in-memory buffer, not the file
                msg = f"Pillow recognises no {fmt.upper()} image in it (a damaged header?)"
            raise DecodeError("truncated" if "truncat" in msg.lower() else "corrupt", msg) from None
    mode = im.mode
    if fmt == "bmp":
        bpp = int.from_bytes(data[28:30], "little") if len(data) >= 30 else 0
        if bpp not in (8, 24, 32):  # TF's decode_bmp: channels = bits per pixel / 8 must be 1, 3 or 4
            raise DecodeError("unreadable", f"TensorFlow's BMP decoder reads 8-, 24- and 32-bit BMPs only; this one "
                                            f"has {bpp} bits per pixel (use the 'pil' preprocessing)")
        if bpp == 8:  # TF reads the 8-bit values as grey levels and ignores the palette
            _count(counts, "palette" if mode == "P" else "grey")
            return np.repeat(np.asarray(im, dtype=np.uint8)[:, :, None], 3, axis=2)
    if fmt == "gif":
        _count(counts, "palette")
        return _gif_first_frame(im)
    if fmt == "webp" and mode == "RGBA":
        # TF's WebP decoder refuses to drop alpha: "Number of channels requested does not match input"
        raise DecodeError("unreadable", "TensorFlow's decode_image(channels=3) refuses WebP images with alpha "
                                        "(use the 'pil' preprocessing)")
    kind = {"1": "grey", "L": "grey", "LA": "rgba", "RGBA": "rgba", "P": "palette"}.get(mode, "high_bit_depth")
    if mode != "RGB":
        _count(counts, kind)
    if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey PNG: libpng's png_set_strip_16 keeps the high byte
        a = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
    elif mode == "P":
        a = np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
    elif mode in ("1", "L", "LA", "RGB", "RGBA"):
        a = np.asarray(im.convert("L") if mode == "1" else im)
    else:
        raise DecodeError("unreadable", f"{fmt.upper()} image mode {mode!r} is not one vitkit reproduces "
                                        "TensorFlow's decode for (use the 'pil' preprocessing)")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] in (2, 4):  # TF (libpng's strip_alpha, BMP, WebP) drops alpha and keeps the colour under it
        a = a[:, :, : a.shape[2] - 1]
    if a.shape[2] == 1:  # grey -> RGB by replication (png_set_gray_to_rgb)
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a, dtype=np.uint8)


# -- TensorFlow's resize ---------------------------------------------------------------------------------------------


def _tf_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF's ``compute_interpolation_weights`` with ``HalfPixelScaler``, all in float32 as its kernel computes it:
    ``in = (i + 0.5) * scale - 0.5``, lower = max(floor(in), 0), upper = min(ceil(in), n - 1), lerp = in - floor(in)."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    fl = np.floor(src)
    lower = np.maximum(fl, 0).astype(np.intp)
    upper = np.minimum(np.ceil(src), n_in - 1).astype(np.intp)
    return lower, upper, (src - fl).astype(np.float32)


def tf_resize_float32(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """``tf.image.resize(a, [h, w])`` (bilinear, no anti-aliasing) on HWC uint8: float32 HWC, TF's arithmetic
    (``top = tl + (tr - tl) * x_lerp``, ``bottom`` likewise, ``top + (bottom - top) * y_lerp``)."""
    x = (a if a.ndim == 3 else a[:, :, None]).astype(np.float32)
    y0, y1, fy = _tf_axis(x.shape[0], h)
    x0, x1, fx = _tf_axis(x.shape[1], w)
    fx = fx[None, :, None]
    top, bot = x[y0], x[y1]
    top = top[:, x0] + (top[:, x1] - top[:, x0]) * fx
    bot = bot[:, x0] + (bot[:, x1] - bot[:, x0]) * fx
    return top + (bot - top) * fy[:, None, None]


def big_vision_resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """big_vision's ``resize``: TF's bilinear resize, clipped to [0, 255] and cast back to uint8 (truncation)."""
    return np.clip(tf_resize_float32(a, h, w), 0, 255).astype(np.uint8)


def tf_preprocess(data: bytes, name: str, h: int, w: int, max_pixels: int | None = None) -> np.ndarray:
    """Encoded bytes -> (h, w, 3) array in [0, 255] as the named TF pipeline makes it before its normalisation
    (float32 for ``vit_jax``, uint8 for the big_vision ones)."""
    a = tf_decode(data, precise=name == "big_vision_precise", max_pixels=max_pixels)
    return tf_resize_array(a, name, h, w)


def tf_resize_array(a: np.ndarray, name: str, h: int, w: int) -> np.ndarray:
    """The resize step of the named TF pipeline on a decoded HWC uint8 array (in-memory data sets)."""
    if name == "vit_jax":
        return tf_resize_float32(a, h, w)
    return big_vision_resize(a, h, w)
