"""``vitkit predict``: top-k classes with names and probabilities for images, folders or a data spec."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    from ..evaluate.data import MODEL_HELP, add_preprocess_argument
    from ..perf import PRECISIONS

    p = sub.add_parser("predict", help="classify image files, folders or a data spec")
    p.add_argument("--model", required=True, metavar="SOURCE", help=MODEL_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (searched recursively), or a data spec such as folder:PATH")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--image-size", type=int, default=None, metavar="R", help="input resolution (default: the model's)")
    p.add_argument("--split", default="test", help="split of a data spec (default test)")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples of a data spec")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="inference precision (default auto)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_preprocess_argument(p)
    p.set_defaults(func=run)


def _top(probs: Any, k: int, names: tuple[str, ...] | None) -> list[dict[str, Any]]:
    vals, idx = probs.topk(k)
    return [
        {"index": int(i), "name": names[int(i)] if names else str(int(i)), "probability": float(v)}
        for v, i in zip(vals, idx)
    ]


def run(args: argparse.Namespace) -> int:
    from ..evaluate import find_images, load_images, predict_probabilities
    from ..evaluate.data import check_batch_size, is_data_spec, load_for_inference, open_loader
    from ..evaluate.images import resolve_preprocess

    check_batch_size(args.batch_size)
    if args.top_k < 1:
        raise ValueError(f"--top-k must be positive, got {args.top_k}")
    model = load_for_inference(args.model, args.image_size)
    cfg = model.config
    if cfg.num_classes < 1:
        raise ValueError(f"{args.model}: the model has no classification head (num_classes=0); nothing to predict")
    names = cfg.class_names
    notes = []
    if not names:
        notes.append(f"{args.model} stores no class names; classes are shown as indices 0..{cfg.num_classes - 1}")
    k = min(args.top_k, cfg.num_classes)
    size = tuple(int(s) for s in cfg.image_size)
    preprocess = resolve_preprocess(args.preprocess, cfg.mean, cfg.std, cfg.in_chans)
    from ..perf import inference_model

    net = inference_model(model.to(args.device), args.precision)  # prepared once for all batches
    kw = {"precision": args.precision, "device": args.device, "prepared": True}

    paths_in = [s for s in args.images if Path(s).exists() or not is_data_spec(s)]
    specs = [s for s in args.images if s not in paths_in]
    found = find_images(paths_in)
    skipped = list(found.skipped)
    for p, why in found.skipped:
        print(f"warning: skipped {p}: {why}", file=sys.stderr)
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
        i = 0
        for x, y in loader:
            probs = predict_probabilities(net, x, **kw)
            for pr, label in zip(probs, y):
                name = f"{spec} ({args.split}) #{i}"
                row = {"image": name, "label": int(label), "top_k": _top(pr, k, names)}
                if data_names and int(label) < len(data_names):
                    row["label_name"] = str(data_names[int(label)])
                results.append(row)
                i += 1
    if not results:
        raise ValueError("no image could be read" + (f" ({len(skipped)} skipped)" if skipped else ""))
    if args.json:
        print(json.dumps({"model": str(args.model), "preprocess": preprocess, "predictions": results, "skipped": [
            {"image": p, "reason": r} for p, r in skipped], "notes": notes}, indent=1))
    else:
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        for r in results:
            top = ", ".join(f"{t['name']} {100 * t['probability']:.1f}%" for t in r["top_k"])
            label = f" (label {r.get('label_name', r['label'])})" if "label" in r else ""
            print(f"{r['image']}{label}: {top}")
        if skipped:
            print(f"{len(skipped)} input(s) skipped", file=sys.stderr)
    return 0
