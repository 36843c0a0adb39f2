"""``vitkit download SOURCE...``: fetch weights into the cache now (a catalogue name, URL or
``hf-hub:ORG/NAME``) and print where they are, e.g. before going offline."""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from .common import add_command, add_json, add_no_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "download", help="fetch pre-trained weights into the cache (see `vitkit models --pretrained`)",
                    description="Download weights into vitkit's verified cache now (e.g. before going offline) and "
                                "print where they are. Any later --model SOURCE with the same name reads the cache.",
                    examples=["vitkit download https://example.org/weights/vit.safetensors --check",
                              "vitkit download imagenet21k/ViT-B_16 imagenet21k/ViT-L_16",
                              "vitkit download hf-hub:google/vit-base-patch16-224 --json"])
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="catalogue name (imagenet21k/ViT-B_16), http(s) URL or hf-hub:ORG/NAME[@REV]")
    p.add_argument("--check", action="store_true",
                   help="also load each one to check that vitkit reads it; a catalogue file is also re-hashed and its "
                        "width, depth and patch compared with the catalogue's model (a mismatch says what to delete)")
    p.add_argument("--force", action="store_true", help="download again even when cached")
    add_no_progress(p)
    add_json(p, what="one row per source")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints.sources import resolve
    from ..download import recorded_sha256

    rows = []
    for src in args.sources:
        r = resolve(src, force=args.force)
        row = {"source": src, "path": str(r.path), "sha256": recorded_sha256(r.path) if r.path.is_file() else None}
        if r.entry is not None:
            row["entry"] = r.entry.as_dict()
        if args.check and r.entry is not None:
            from ..checkpoints.verify import check_entry_file

            problem = check_entry_file(r.entry, r.path)
            if problem:
                raise UserError(problem)
        if args.check:
            from ..checkpoints import load_model

            cfg = load_model(src, progress=False).config
            row["model"] = f"{cfg.name}: {cfg.num_layers} blocks, hidden {cfg.hidden_size}, {cfg.num_heads} heads, " \
                           f"{cfg.num_classes} classes, {cfg.image_size[0]} px"
        rows.append(row)
        if not args.json:
            print(f"{src} -> {r.path}" + (f"\n  {row['model']}" if "model" in row else ""))
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


def kept_on_stop(args: argparse.Namespace) -> str:
    """An interrupted download keeps its .part file (main: stop.report)."""
    from ..download import cache_dir

    return f"the part downloaded so far is kept (a .part file under {cache_dir()}); the same command continues it"
