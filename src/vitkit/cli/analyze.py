"""``vitkit analyze``: the paper's Section 4.5 figures (rollout, attention distance, posemb, filters)."""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from .common import (
    add_batch_size,
    add_command,
    add_data,
    add_image_size,
    add_json,
    add_model,
    add_no_progress,
    add_out,
    add_preprocess,
    add_split,
    check_out,
    hidden_alias,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "analyze", help="attention rollout, attention distance, posemb similarity, embedding filters",
                    description="The paper's Section 4.5 figures as PNG files (rollout with the predicted and, for "
                                "a data spec, the true class; mean attention distance; position-embedding "
                                "similarity; patch-embedding filters) plus the numbers in analysis.json.",
                    examples=["vitkit analyze --model vit.safetensors photo.jpg --out runs/figures",
                              "vitkit analyze --model imagenet21k+imagenet2012/ViT-B_16 --data folder:imagenet/val "
                              "--num-images 16 --out runs/figures",
                              "vitkit analyze --model runs/c10 --data digits --image-size 32 --num-images 4 "
                              "--out runs/figures --html runs/figures/explorer.html"])
    add_model(p, extra=" (a ViT or hybrid)")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files, folders, or data specs (digits, folder:PATH, wds:..., mnist:..., cifar:...)")
    hidden_alias(p, "--images", dest="images_option", nargs="+")  # the old spelling
    add_data(p, required=False, extra=" (its examples are used after any IMAGEs; their labels give the true class)")
    add_split(p)
    add_out(p, what="folder for the PNG files and analysis.json", required=True)
    p.add_argument("--num-images", type=positive_int, default=8, help="images to use")
    add_image_size(p)
    add_preprocess(p)
    add_batch_size(p, default=8, extra=" (per forward pass)")
    p.add_argument("--html", metavar="OUT.html",
                   help="also write an interactive page: each query patch's attention per layer and head, the "
                        "figures' numbers; one self-contained file that opens from disk in a browser (no network)")
    p.add_argument("--layers", metavar="LIST",
                   help="with --html: the layers whose per-head attention the page stores: 'all', or numbers from 1 "
                        "such as 1,6,12 or 10-12 (default: as many as fit in about 10 MB, spread over the depth)")
    add_no_progress(p)  # accepted as by every command that reads data (scripts pass it to all of them)
    add_json(p, what="analysis.json's summary (figure paths, skipped figures)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis import check_analyzable, write_figures
    from ..evaluate.data import gather_images
    from ..evaluate.images import resolve_preprocess
    from ..evaluate.model import load_for_inference

    inputs = list(args.images) + list(getattr(args, "images_option", None) or []) + ([args.data] if args.data else [])
    if not inputs:
        raise UserError("no images: give image files or folders, or --data SPEC")
    check_out(args.out, folder=True)
    model = load_for_inference(args.model, args.image_size)
    check_analyzable(model)  # a BiT ResNet fails here, before any image is read
    layers = None
    if args.layers is not None:
        if not args.html:
            raise UserError("--layers chooses what the --html page stores: give --html OUT.html too")
        from ..analysis.explorer import parse_layers

        layers = parse_layers(args.layers, len(model.blocks))
    images, labels = gather_images(model.config, inputs, args.num_images, split=args.split,
                                   batch_size=args.batch_size, preprocess=args.preprocess, with_labels=True)
    res = write_figures(model, images, args.out, batch_size=args.batch_size, labels=labels)
    cfg = model.config
    res["preprocess"] = resolve_preprocess(args.preprocess, cfg.mean, cfg.std, cfg.in_chans)
    keys = ["figures", "skipped", "json", "image_size", "num_images", "preprocess"]
    if args.html:
        from ..analysis.explorer import write_explorer

        res["explorer"] = write_explorer(model, images, args.html, labels=labels, layers=layers,
                                         batch_size=args.batch_size)
        keys.append("explorer")
    if args.json:
        print(json.dumps({k: res[k] for k in keys}, indent=1))
        return 0
    print(f"preprocessing: {res['preprocess']}")
    for name, path in res["figures"].items():
        print(f"wrote {path} ({name})")
    for name, why in res["skipped"].items():
        print(f"skipped {name}: {why}")
    print(f"wrote {res['json']}")
    if args.html:
        ex = res["explorer"]
        print(f"wrote {ex['html']} ({ex['bytes'] / 1e6:.1f} MB; per-head attention of layers "
              f"{', '.join(map(str, ex['layers'])) or 'none'}): open it in a browser")
        for note in ex["notes"]:
            print(f"note: {note}")
    return 0
