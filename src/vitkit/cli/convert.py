"""``vitkit convert SRC DST``: read any supported checkpoint, write it in another format.

The source format is detected from the file; the destination follows ``--format`` or the
suffix of DST (``.safetensors``: vitkit, ``.npz``: official, ``.pth``: timm; a Hugging Face
checkpoint is a directory, so it needs ``--format hf``). ``--num-classes``/``--image-size``
adapt the model on the way, as ``load_model`` does (new zero head, resampled position
embeddings).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    from ..models.config import CLASSIFIERS, GELU_VARIANTS

    p = sub.add_parser("convert", help="convert a checkpoint between formats (vitkit, npz, hf, timm)")
    p.add_argument("src", help="checkpoint to read: file, folder, run folder, URL, hf-hub:ORG/NAME or catalogue name")
    p.add_argument("dst", help="where to write")
    p.add_argument("--format", dest="dst_format", default=None,
                   help="output format: vitkit, npz, hf or timm (default: from the suffix of DST)")
    p.add_argument("--src-format", default=None, help="input format, when detection should be skipped")
    p.add_argument("--npz-naming", choices=("released", "linen"), default="released",
                   help="encoder-block module names in a written .npz (default: released files' names)")
    p.add_argument("--num-classes", type=int, default=None, help="new task: zero-initialised head of this size")
    p.add_argument("--representation-size", type=int, default=None,
                   help="with --num-classes: keep/size a pre-logits layer instead of dropping it")
    p.add_argument("--image-size", type=int, default=None, help="resample position embeddings for this resolution")
    p.add_argument("--classifier", choices=CLASSIFIERS, default=None,
                   help="pooling the file cannot tell (e.g. token_unpooled)")
    p.add_argument("--num-heads", type=int, default=None, help="attention heads, for files that cannot tell (timm)")
    p.add_argument("--gelu", choices=GELU_VARIANTS, default=None, help="override the GELU variant")
    p.add_argument("--layer-norm-eps", type=float, default=None, help="override the LayerNorm epsilon")
    p.add_argument("--name", default=None, help="model name to record")
    p.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model, save_model
    from ..checkpoints.api import detect_format, writer_format
    from ..checkpoints.formats import get_format
    from ..checkpoints.sources import resolve
    from .main import UserError

    src, dst = resolve(args.src).path, Path(args.dst)  # any source: a URL is never turned into a Path
    if dst.exists() and not args.force:
        raise UserError(f"{dst} exists; pass --force to overwrite it")
    if src.resolve() == dst.resolve():
        raise UserError("SRC and DST are the same path")
    src_fmt = get_format(args.src_format) if args.src_format else detect_format(src)
    overrides: dict[str, Any] = {}
    for key in ("num_classes", "representation_size", "image_size", "classifier", "num_heads", "gelu",
                "layer_norm_eps", "name"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if "representation_size" in overrides and "num_classes" not in overrides:
        raise UserError("--representation-size only applies together with --num-classes (a new head)")
    model = load_model(src, format=src_fmt.name, **overrides)
    dst_fmt = writer_format(dst, args.dst_format)
    options = {"naming": args.npz_naming} if dst_fmt.name == "npz" else {}
    save_model(model, dst, format=dst_fmt.name, **options)
    cfg = model.config
    arch = (f"{cfg.name}: {cfg.num_layers} blocks, hidden {cfg.hidden_size}, {cfg.num_heads} heads, "
            f"classifier {cfg.classifier}, {cfg.num_classes} classes, {cfg.image_size[0]}x{cfg.image_size[1]} px"
            if cfg.transformer else f"{cfg.name}: ResNet {cfg.resnet.num_layers}, {cfg.num_classes} classes")
    print(f"read    {args.src} ({src_fmt.name})")
    if overrides:
        print("adapted " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    print(f"model   {arch}; {sum(p.numel() for p in model.parameters()):,} parameters")
    print(f"wrote   {dst} ({dst_fmt.name})")
    return 0
