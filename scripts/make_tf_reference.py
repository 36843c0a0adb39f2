"""Write tests/data/tf_reference/: small test images and what TensorFlow's official evaluation ops make of them.

Runs ONLY in a separate environment with TensorFlow and without torch (the test suite never imports TensorFlow):

    python3 -m venv ../envs/tf && ../envs/tf/bin/pip install tensorflow-cpu pillow numpy
    ../envs/tf/bin/python scripts/make_tf_reference.py --data ../shared/data

Images: made here with Pillow (JPEG 4:2:0 / 4:2:2 / 4:4:4 / progressive / grey / CMYK; PNG RGB, RGB with tRNS, RGBA
with colour under transparent pixels, 8-bit and 2-bit grey, grey+alpha, 16-bit grey, 16-bit RGB, palette, palette
with tRNS; GIF still, with a transparent index, animated; WebP lossy and lossless RGBA; BMP 24-bit, 32-bit, 8-bit
palette, 1-bit) plus real JPEGs cut out of the
shared CIFAR-10 (JPEG q75, 32 px) and Imagenette (112 px) validation shards.

Arrays (``reference.npz``), for every image NAME:
* ``NAME/decode``: ``tf.io.decode_image(channels=3, expand_animations=False)`` (uint8, full size; the decode of
  vit_jax's tfds path and big_vision's ``decode``: libjpeg's fast integer IDCT, fancy upsampling);
  JPEGs also ``NAME/decode_precise`` (``tf.image.decode_jpeg(dct_method="INTEGER_ACCURATE")``, big_vision's
  ``decode(precise=True)``); ``NAME/decode_jpeg`` (``tf.image.decode_jpeg(channels=3)``, vit_jax's image-folder
  path) only where it differs from ``NAME/decode`` (it never did).
* ``NAME/vit_jax/S``: vit_jax ``input_pipeline`` eval: ``tf.image.resize(im, [S, S])`` then ``(im - 127.5) / 127.5``
  (float32). S = 48: the whole (S, S, 3) array; S = 224, 384: the values at ``positions/S`` only (a fixed set of
  (row, col) pixels: the four corners, the borders' middles and 300 drawn with numpy seed S), to keep the files
  small.
* ``NAME/big_vision/S`` and ``NAME/big_vision_precise/S``: ``decode[(precise=True)]|resize(S)|value_range(-1, 1)``
  stored as the uint8 image after big_vision's resize (its cast back to the input dtype), same layout as above;
  value_range(-1, 1) of it is ``x / 255 * 2 - 1``.
Images TensorFlow cannot decode are listed in ``tf_refused`` with TensorFlow's message.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

SIZES = (48, 224, 384)
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "tf_reference"


def _pattern(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour ramps, sharp edges and some noise: every IDCT and upsampling difference shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 120 * np.sin(x / 5.0 + seed)
    g = 127 + 120 * np.cos(y / 7.0 - x / 11.0)
    b = np.where((x // 8 + y // 8) % 2 == 0, 230.0, 20.0)
    a = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png16(a: np.ndarray) -> bytes:
    """A 16-bit PNG (grey or RGB) written by hand: Pillow cannot write 16-bit colour PNGs."""
    h, w = a.shape[:2]
    colour = 2 if a.ndim == 3 else 0
    raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw)) + \
        _png_chunk(b"IEND", b"")


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def synthetic_images() -> dict[str, bytes]:
    rgb = _pattern(40, 56, 1)
    im = Image.fromarray(rgb)
    grey = Image.fromarray(_pattern(36, 44, 2)[:, :, 1])
    alpha = np.zeros((40, 56), np.uint8)
    alpha[:, 20:] = 255
    alpha[10:30, 30:40] = 128
    rgba = Image.fromarray(np.dstack([rgb, alpha]))
    pal = im.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    pal_trns = pal.copy()
    pal_trns.info["transparency"] = int(np.asarray(pal)[0, 0])
    y16 = np.random.default_rng(3).integers(0, 65536, (24, 30)).astype(np.uint16)
    rgb16 = np.random.default_rng(4).integers(0, 65536, (24, 30, 3)).astype(np.uint16)
    frame2 = Image.fromarray(255 - rgb).quantize(colors=32)
    cmyk = Image.fromarray(np.dstack([rgb, rgb[:, :, :1] // 2])[:, :, :4], mode="CMYK")
    return {
        "jpeg_420.jpg": _save(im, "JPEG", quality=90, subsampling=2),
        "jpeg_422.jpg": _save(im, "JPEG", quality=85, subsampling=1),
        "jpeg_444.jpg": _save(im, "JPEG", quality=90, subsampling=0),
        "jpeg_progressive.jpg": _save(im, "JPEG", quality=80, progressive=True),
        "jpeg_grey.jpg": _save(grey, "JPEG", quality=90),
        "jpeg_cmyk.jpg": _save(cmyk, "JPEG", quality=90),
        "png_rgb.png": _save(im, "PNG"),
        "png_rgba.png": _save(rgba, "PNG"),
        "png_grey.png": _save(grey, "PNG"),
        "png_grey_alpha.png": _save(Image.fromarray(np.dstack([np.asarray(grey)] * 2)[:, :, :2], "LA"), "PNG"),
        "png_grey16.png": _png16(y16),
        "png_rgb16.png": _png16(rgb16),
        "png_palette.png": _save(pal, "PNG"),
        "png_palette_trns.png": _save(pal_trns, "PNG"),
        "gif_still.gif": _save(pal, "GIF"),
        "gif_transparent.gif": _save(pal, "GIF", transparency=int(np.asarray(pal)[0, 0])),
        "gif_animated.gif": _save(pal, "GIF", save_all=True, append_images=[frame2], duration=100, loop=0),
        "webp_lossy.webp": _save(im, "WEBP", quality=80),
        "webp_lossless_rgba.webp": _save(rgba, "WEBP", lossless=True),
        "bmp_rgb.bmp": _save(im, "BMP"),
        "bmp_rgba.bmp": _save(rgba, "BMP"),
        "bmp_palette8.bmp": _save(Image.fromarray(rgb).quantize(16), "BMP"),  # TF ignores the palette
        "bmp_1bit.bmp": _save(grey.convert("1"), "BMP"),  # TF refuses
        "png_grey_2bit.png": _save(grey.quantize(4).convert("L"), "PNG", bits=2),
        "png_rgb_trns.png": _save(im, "PNG", transparency=(1, 2, 3)),
    }


def shard_jpegs(data: Path) -> dict[str, bytes]:
    """A few real JPEGs: the first ones of the CIFAR-10 test shard and of the Imagenette validation shard."""
    out: dict[str, bytes] = {}
    for shard, n, tag in ((data / "cifar10" / "test-000000.tar.gz", 4, "cifar10"),
                          (data / "imagenette" / "val-000000.tar", 3, "imagenette")):
        with tarfile.open(shard) as tar:
            got = 0
            for m in tar:
                if m.name.lower().endswith((".jpg", ".jpeg")):
                    out[f"{tag}_{Path(m.name).name}"] = tar.extractfile(m).read()
                    got += 1
                    if got == n:
                        break
    return out


def positions(size: int) -> np.ndarray:
    """(K, 2) pixel positions at which the 224/384 px references are stored."""
    s = size - 1
    fixed = [(0, 0), (0, s), (s, 0), (s, s), (0, s // 2), (s // 2, 0), (s, s // 2), (s // 2, s), (s // 2, s // 2)]
    drawn = np.random.default_rng(size).integers(0, size, (300, 2))
    return np.concatenate([np.asarray(fixed), drawn]).astype(np.int32)


def _keep(a: np.ndarray, size: int) -> np.ndarray:
    if size == 48:
        return a
    p = positions(size)
    return a[p[:, 0], p[:, 1]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                    help="the shared data folder (default: ../shared/data beside the repository)")
    args = ap.parse_args()
    if not args.data.is_dir():
        ap.error(f"--data {args.data}: no such folder; pass the shared data folder (e.g. ../shared/data)")
    images = {**synthetic_images(), **shard_jpegs(args.data)}
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {f"positions/{s}": positions(s) for s in SIZES if s != 48}
    refused: dict[str, str] = {}
    for name, data in sorted(images.items()):
        (OUT / "images" / name).write_bytes(data)
        try:
            dec = tf.io.decode_image(data, channels=3, expand_animations=False)
        except tf.errors.OpError as e:
            refused[name] = e.message.splitlines()[0]
            continue
        arrays[f"{name}/decode"] = dec.numpy()
        decodes = {"vit_jax": dec, "big_vision": dec}
        if name.endswith(".jpg"):
            folder_path = tf.image.decode_jpeg(data, channels=3).numpy()  # vit_jax's image-folder decoder
            if not np.array_equal(folder_path, arrays[f"{name}/decode"]):
                arrays[f"{name}/decode_jpeg"] = folder_path
            precise = tf.image.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
            arrays[f"{name}/decode_precise"] = precise.numpy()
            decodes["big_vision_precise"] = precise
        for size in SIZES:
            # vit_jax/input_pipeline.py, eval: resize, then (im - 127.5) / 127.5
            im = tf.image.resize(decodes["vit_jax"], [size, size])
            arrays[f"{name}/vit_jax/{size}"] = _keep(((im - 127.5) / 127.5).numpy(), size)
            for pp in ("big_vision", "big_vision_precise"):
                if pp not in decodes:
                    continue
                # big_vision pp/ops_image.py resize: resize, clip to the dtype's range, cast back (uint8)
                im = decodes[pp]
                r = tf.image.resize(im, [size, size], method="bilinear", antialias=False)
                r = tf.cast(tf.clip_by_value(r, im.dtype.min, im.dtype.max), im.dtype)
                arrays[f"{name}/{pp}/{size}"] = _keep(r.numpy(), size)
    arrays["tf_refused"] = np.frombuffer(json.dumps(refused, sort_keys=True).encode(), np.uint8)
    arrays["tf_version"] = np.frombuffer(tf.__version__.encode(), np.uint8)
    np.savez_compressed(OUT / "reference.npz", **arrays)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{len(images)} images ({len(refused)} refused by TF: {refused}); {OUT}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
