"""``vitkit convert --model SRC --out DST``: read any supported checkpoint, write it in another format.

The source format is detected from the file; the destination follows ``--format`` or the
suffix of --out (``.safetensors``: vitkit, ``.npz``: official, ``.pth``: timm; a Hugging Face
checkpoint is a directory, so it needs ``--format hf``). ``--num-classes``/``--image-size``
adapt the model on the way, as ``load_model`` does (new zero head, resampled position
embeddings).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import (
    add_command,
    add_image_size,
    add_json,
    add_model,
    add_out,
    check_out,
    non_negative_int,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "convert", help="convert a checkpoint between formats (vitkit, npz, hf, timm)",
                    description=__doc__, examples=[
                        "vitkit convert --model vit.safetensors --out vit.npz",
                        "vitkit convert --model imagenet21k/ViT-B_16 --out vit_b16_cifar.safetensors "
                        "--num-classes 10 --image-size 384",
                        "vitkit convert --model hf-hub:google/vit-base-patch16-224 --out vit_hf --format hf"])
    add_model(p, required=False, extra=" (the checkpoint to read)")
    add_out(p, what="where to write the converted checkpoint (a file; a folder for --format hf)")
    p.add_argument("src", nargs="?", help=argparse.SUPPRESS)  # the old positional SRC DST spelling still works
    p.add_argument("dst", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--format", dest="dst_format", default=None,
                   help="output format: vitkit, npz, hf or timm (default: from the suffix of --out)")
    p.add_argument("--src-format", default=None, help="input format, when detection should be skipped")
    p.add_argument("--npz-naming", choices=("released", "linen"), default="released",
                   help="encoder-block module names in a written .npz: released files' or Flax linen's")
    p.add_argument("--num-classes", type=non_negative_int, default=None,
                   help="new task: zero-initialised head of this size")
    p.add_argument("--representation-size", type=positive_int, default=None,
                   help="with --num-classes: keep/size a pre-logits layer instead of dropping it")
    add_image_size(p)
    p.add_argument("--classifier", default=None,
                   help="pooling the file cannot tell: token, gap, unpooled or token_unpooled")
    p.add_argument("--num-heads", type=positive_int, default=None,
                   help="attention heads, for files that cannot tell (timm)")
    p.add_argument("--gelu", default=None, help="override the GELU variant: tanh or exact")
    p.add_argument("--layer-norm-eps", type=float, default=None, help="override the LayerNorm epsilon")
    p.add_argument("--name", default=None, help="model name to record")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_json(p, what="what was read and written")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model, save_model
    from ..checkpoints.api import detect_format, writer_format
    from ..checkpoints.formats import get_format
    from ..checkpoints.sources import resolve

    source = _one(args.model, args.src, "--model SOURCE")
    target = _one(args.out, args.dst, "--out PATH")
    dst = Path(target)
    if dst.exists() and not args.force:
        raise UserError(f"{dst} exists; pass --force to overwrite it")
    dst_fmt = writer_format(dst, args.dst_format)
    check_out(target, folder=dst_fmt.name == "hf")  # before resolving SRC (a download, maybe)
    src = resolve(source).path  # any source: a URL is never turned into a Path
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
    options = {"naming": args.npz_naming} if dst_fmt.name == "npz" else {}
    save_model(model, dst, format=dst_fmt.name, **options)
    cfg = model.config
    arch = (f"{cfg.name}: {cfg.num_layers} blocks, hidden {cfg.hidden_size}, {cfg.num_heads} heads, "
            f"classifier {cfg.classifier}, {cfg.num_classes} classes, {cfg.image_size[0]}x{cfg.image_size[1]} px"
            if cfg.transformer else f"{cfg.name}: ResNet {cfg.resnet.num_layers}, {cfg.num_classes} classes")
    params = sum(p.numel() for p in model.parameters())
    sidecar = None
    if dst_fmt.name == "npz" and cfg.class_names:
        from ..checkpoints.sidecar import class_names_path

        sidecar = str(class_names_path(dst))  # an .npz has no place for class names; load_model reads them back
    if args.json:
        print(json.dumps({"source": source, "source_format": src_fmt.name, "adapted": overrides, "model": arch,
                          "parameters": params, "out": str(dst), "format": dst_fmt.name,
                          "class_names_file": sidecar}, indent=1))
        return 0
    print(f"read    {source} ({src_fmt.name})")
    if overrides:
        print("adapted " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    print(f"model   {arch}; {params:,} parameters")
    print(f"wrote   {dst} ({dst_fmt.name})")
    if sidecar:
        print(f"wrote   {sidecar} (the {len(cfg.class_names)} class names, which the .npz cannot hold; keep it "
              "beside the .npz)")
    return 0


def _one(flag: str | None, positional: str | None, name: str) -> str:
    if flag and positional:
        raise UserError(f"give {name} once (as the option, or positionally as before), not both")
    if not (flag or positional):
        raise UserError(f"{name} is required")
    return flag or positional  # type: ignore[return-value]
