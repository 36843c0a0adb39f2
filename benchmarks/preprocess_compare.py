"""Top-1 of one checkpoint under each named evaluation preprocessing (vitkit.data.preprocess.PREPROCESSINGS).

The decoders differ on real JPEGs (TensorFlow's fast integer IDCT vs the accurate one, up to 8 grey levels), and
big_vision rounds the resized image down to uint8; this measures what that does to an accuracy. Each preprocessing
runs exactly the loader ``vitkit eval --preprocess NAME`` runs.

    python benchmarks/preprocess_compare.py --model runs/cifar/model.safetensors \\
        --data cifar10 --split test --out benchmarks/results/preprocess

Writes OUT/preprocess_compare.json: per preprocessing top-1/top-5, images, seconds, and the number of test images
whose top-1 prediction differs from the ``pil`` run's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vitkit.data.preprocess import PREPROCESSINGS
from vitkit.evaluate.data import open_loader
from vitkit.evaluate.model import load_for_inference


def predictions(model: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    preds, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            preds.append(model(x).topk(5, dim=1).indices)
            labels.append(y)
    return torch.cat(preds), torch.cat(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model = load_for_inference(args.model, args.image_size)
    size = list(model.config.image_size)
    res: dict = {"model": args.model, "data": args.data, "split": args.split, "image_size": size, "runs": {}}
    top1_pred = {}
    for name in PREPROCESSINGS:
        t0 = time.perf_counter()
        # The loader runs at the model's size (load_for_inference resampled it to --image-size).
        loader, _, _ = open_loader(args.data, model.config, split=args.split, batch_size=args.batch_size,
                                   limit=args.limit, num_workers=0, preprocess=name)
        p, y = predictions(model, loader)
        top1_pred[name] = p[:, 0]
        res["runs"][name] = {
            "top1": float((p[:, 0] == y).float().mean()), "top5": float((p == y[:, None]).any(1).float().mean()),
            "images": len(y), "seconds": round(time.perf_counter() - t0, 1), "loader": loader.stats.as_dict(),
        }
        print(f"{name:>20}: top-1 {100 * res['runs'][name]['top1']:.2f}%  top-5 {100 * res['runs'][name]['top5']:.2f}%"
              f"  ({len(y)} images, {res['runs'][name]['seconds']} s)", flush=True)
    for name in PREPROCESSINGS:
        res["runs"][name]["top1_changed_vs_pil"] = int((top1_pred[name] != top1_pred["pil"]).sum())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "preprocess_compare.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
