"""``vitkit analyze``: the paper's Section 4.5 figures (rollout, attention distance, posemb, filters)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..evaluate.data import add_preprocess_argument

    p = sub.add_parser("analyze", help="attention rollout, attention distance, posemb similarity, embedding filters")
    p.add_argument("--model", required=True, metavar="PATH", help="checkpoint to analyse (ViT or hybrid)")
    p.add_argument("--images", required=True, nargs="+", metavar="SPEC",
                   help="image files, folders, or a data spec (digits, folder:PATH, wds:..., mnist:..., cifar:...)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files and analysis.json")
    p.add_argument("--num-images", type=int, default=8, help="images to use (default 8)")
    p.add_argument("--split", default="test", help="split of a data spec (default test)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--image-size", type=int, default=None, metavar="R",
                   help="analyse at this resolution; position embeddings are resampled (default: the model's)")
    add_preprocess_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis import check_analyzable, write_figures
    from ..evaluate.data import check_batch_size, gather_images, load_for_inference
    from ..evaluate.images import resolve_preprocess

    check_batch_size(args.batch_size)
    if args.num_images < 1:
        raise ValueError(f"--num-images must be positive, got {args.num_images}")
    model = load_for_inference(args.model, args.image_size)
    check_analyzable(model)  # a BiT ResNet fails here, before any image is read
    images = gather_images(model.config, args.images, args.num_images, split=args.split, batch_size=args.batch_size,
                           preprocess=args.preprocess)
    res = write_figures(model, images, args.out, batch_size=args.batch_size)
    cfg = model.config
    print(f"preprocessing: {resolve_preprocess(args.preprocess, cfg.mean, cfg.std, cfg.in_chans)}")
    for name, path in res["figures"].items():
        print(f"wrote {path} ({name})")
    for name, why in res["skipped"].items():
        print(f"skipped {name}: {why}")
    print(f"wrote {res['json']}")
    return 0
