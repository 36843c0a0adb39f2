"""``vitkit predict``: top-k classes with names and probabilities for images, folders or a data spec."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import (
    add_batch_size,
    add_command,
    add_data,
    add_device,
    add_image_size,
    add_json,
    add_limit,
    add_model,
    add_no_progress,
    add_precision,
    add_preprocess,
    add_split,
    load_command_model,
    log,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "predict", help="classify image files, folders or a data spec",
                    description="Top-k classes with names and probabilities for image files, folders (searched "
                                "recursively) or the examples of a data spec.",
                    examples=["vitkit predict --model vit.safetensors photo.jpg",
                              "vitkit predict --model imagenet21k+imagenet2012/ViT-B_16 photos/ --top-k 3 --json",
                              "vitkit predict --model runs/c10 --data cifar:cifar-10-batches-py --limit 8"])
    add_model(p)
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files, folders (searched recursively), or data specs such as folder:PATH")
    add_data(p, required=False, extra=" (its examples are classified, after any IMAGEs)")
    add_split(p)
    add_limit(p, extra=" of a data spec")
    p.add_argument("--top-k", type=positive_int, default=5, help="classes to show per image")
    add_image_size(p)
    add_preprocess(p)
    add_batch_size(p, default=32)
    add_precision(p)
    add_device(p)
    add_no_progress(p)
    add_json(p, what="the predictions")
    p.set_defaults(func=run)


def _top(probs: Any, k: int, names: tuple[str, ...] | None) -> list[dict[str, Any]]:
    vals, idx = probs.topk(k)
    return [
        {"index": int(i), "name": names[int(i)] if names else str(int(i)), "probability": float(v)}
        for v, i in zip(vals, idx)
    ]


def run(args: argparse.Namespace) -> int:
    from ..data.spec import is_data_spec
    from ..evaluate import find_images, load_images, predict_probabilities
    from ..evaluate.data import open_loader
    from ..evaluate.images import resolve_preprocess
    from ..perf import inference_model

    if not args.images and not args.data:
        raise UserError("nothing to classify: give image files or folders, or --data SPEC")
    model, device, precision = load_command_model(args, no_head=" (num_classes=0); nothing to predict")
    cfg = model.config
    names = cfg.class_names
    notes = []
    if not names:
        notes.append(f"{args.model} stores no class names; classes are shown as indices 0..{cfg.num_classes - 1}")
    k = min(args.top_k, cfg.num_classes)
    size = tuple(int(s) for s in cfg.image_size)
    preprocess = resolve_preprocess(args.preprocess, cfg.mean, cfg.std, cfg.in_chans)
    net = inference_model(model.to(device), precision)  # prepared once for all batches
    kw = {"precision": precision, "device": device, "prepared": True}

    paths_in = [s for s in args.images if Path(s).exists() or not is_data_spec(s)]
    specs = [s for s in args.images if s not in paths_in] + ([args.data] if args.data else [])
    found = find_images(paths_in)
    skipped = list(found.skipped)
    for p, why in found.skipped:
        log.warning("warning: skipped %s: %s", p, why)
    results: list[dict[str, Any]] = []
    for start in range(0, len(found.paths), args.batch_size):
        chunk = found.paths[start : start + args.batch_size]
        x, ok, bad = load_images(chunk, size, cfg.mean, cfg.std, cfg.in_chans, preprocess=preprocess)
        skipped.extend(bad)
        if len(ok):
            probs = predict_probabilities(net, x, **kw)
            results.extend({"image": str(p), "top_k": _top(pr, k, names)} for p, pr in zip(ok, probs))
    for spec in specs:
        loader, info, _ = open_loader(spec, cfg, split=args.split, batch_size=args.batch_size, limit=args.limit,
                                      preprocess=preprocess)
        data_names = getattr(info, "class_names", None)
        split = str(getattr(info, "split", None) or args.split)
        i = 0
        for x, y in loader:
            probs = predict_probabilities(net, x, **kw)
            for pr, label in zip(probs, y):
                row = {"image": f"{spec} ({split}) #{i}", "label": int(label), "top_k": _top(pr, k, names)}
                if data_names and int(label) < len(data_names):
                    row["label_name"] = str(data_names[int(label)])
                results.append(row)
                i += 1
    if not results:
        raise UserError("no image could be read" + (f" ({len(skipped)} skipped)" if skipped else ""))
    if args.json:
        print(json.dumps({"model": str(args.model), "precision": precision, "device": str(device),
                          "preprocess": preprocess, "predictions": results,
                          "skipped": [{"image": p, "reason": r} for p, r in skipped], "notes": notes}, indent=1))
        return 0
    for n in notes:
        log.info("note: %s", n)
    for r in results:
        top = ", ".join(f"{t['name']} {100 * t['probability']:.1f}%" for t in r["top_k"])
        label = f" (label {r.get('label_name', r['label'])})" if "label" in r else ""
        print(f"{r['image']}{label}: {top}")
    if skipped:
        log.warning("%d input(s) skipped", len(skipped))
    return 0
